"""The one atomic writer and the one UTF-8 line reader.

Every file mtkit writes goes through `atomic_writer` (or `atomic_write_bytes`): a temp file
beside the target, fsynced and renamed into place, so a crash leaves the old file or the new
one, never half of one. Every text file mtkit reads line by line goes through `numbered_lines`
(or `read_lines`), which splits on "\\n" only, so a stray "\\r" can never shift a parallel
corpus out of alignment.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Literal, TextIO, overload

from mtkit.errors import MtkitError


class InputFileError(MtkitError):
    """A file mtkit was asked to read that is missing, not a regular file, or not UTF-8."""


# --------------------------------------------------------------------------- reading


def check_readable(path: Path, what: str = "input file") -> None:
    """Fail with one line unless `path` is an existing regular file (not a dir, FIFO, device)."""
    if not path.exists():
        raise InputFileError(f"{path}: {what} not found")
    if path.is_dir():
        raise InputFileError(f"{path}: {what} is a directory, expected a text file")
    if not path.is_file():
        raise InputFileError(
            f"{path}: {what} is a device, FIFO or socket, expected a regular text file"
        )


def numbered_lines(path: Path) -> Iterator[tuple[int, str | None]]:
    """(line number, text, or None where the line is not valid UTF-8), split on "\\n" only.

    `open()` in text mode also splits on a lone "\\r"; here a stray "\\r" stays inside its
    line, a "\\r\\n" ending is accepted, and a UTF-8 byte-order mark on line 1 is dropped.
    """
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            raw = raw[:-1] if raw.endswith(b"\n") else raw
            raw = raw[:-1] if raw.endswith(b"\r") else raw
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                yield n, None
                continue
            yield n, text.lstrip("\ufeff") if n == 1 else text


def read_lines(path: Path, what: str = "input file") -> Iterator[str]:
    """The lines of a UTF-8 text file, lazily; a bad line raises one error naming file:line."""
    check_readable(path, what)
    for n, text in numbered_lines(path):
        if text is None:
            raise InputFileError(f"{path}:{n}: invalid UTF-8 (expected UTF-8 text)")
        yield text


def count_lines(path: Path) -> int | None:
    """How many lines `numbered_lines(path)` gives, by one fast pass over the bytes (for a
    progress ETA); None when `path` is not a regular file (reading it names the problem)."""
    if not path.is_file():
        return None
    n, last = 0, b"\n"
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            n += block.count(b"\n")
            last = block[-1:]
    return n + (last != b"\n")


# --------------------------------------------------------------------------- writing


def new_file_mode(path: Path) -> int:
    """The permissions `open(path, "w")` would leave: an existing file's, else 0o666 - umask.

    (mkstemp creates its temp files 0o600, which would make every output private.)
    """
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        mask = os.umask(0o022)
        os.umask(mask)
        return 0o666 & ~mask


def fsync_dir(directory: Path) -> None:
    """Make a rename inside `directory` durable."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_payload(f: IO[bytes], data: bytes, path: Path) -> None:
    """Write the bytes meant for `path` to its open temp file (a seam the crash tests replace)."""
    f.write(data)


@overload
def atomic_writer(
    path: Path, mode: Literal["w"] = "w"
) -> contextlib.AbstractContextManager[TextIO]: ...
@overload
def atomic_writer(
    path: Path, mode: Literal["wb"]
) -> contextlib.AbstractContextManager[IO[bytes]]: ...
def atomic_writer(path: Path, mode: str = "w") -> contextlib.AbstractContextManager[Any]:
    """A file opened under a temp name beside `path`, renamed onto `path` once complete.

    A failure (bad input, Ctrl-C, disk full) removes the temp file and leaves an older
    `path` as it was; a crash leaves at most a hidden `.NAME.*.tmp` file.
    """
    return _atomic_writer(path, mode)


@contextlib.contextmanager
def _atomic_writer(path: Path, mode: str) -> Iterator[Any]:
    path.parent.mkdir(parents=True, exist_ok=True)
    permissions = new_file_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, permissions)
        encoding, newline = ("utf-8", "\n") if mode == "w" else (None, None)
        with os.fdopen(fd, mode, encoding=encoding, newline=newline) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (see `atomic_writer`)."""
    with atomic_writer(path, "wb") as f:
        write_payload(f, data, path)


def atomic_write_text(path: Path, text: str) -> None:
    """Write UTF-8 `text` to `path` atomically (see `atomic_writer`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def remove_temp_files(directory: Path) -> list[Path]:
    """Delete temp files a crashed write left behind (`.NAME.*.tmp`); return them."""
    stray = sorted(directory.glob(".*.tmp"))
    for path in stray:
        path.unlink(missing_ok=True)
    return stray


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists (on this host), e.g. the writer of a lock or a temp dir."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
