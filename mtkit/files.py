"""The one atomic writer, the one rule for where it may write, and the one UTF-8 line reader.

Every file mtkit writes goes through `atomic_writer` (or `atomic_write_bytes`): a temp file
beside the target, fsynced and renamed into place, so a crash leaves the old file or the new
one, never half of one. Before a command does any work, `OutputGuard` checks each of its
outputs: it never replaces a file the command reads, a file of a run, or,
without --overwrite, any existing file. Every text file mtkit reads line by line goes through
`numbered_lines` (or `read_lines`), which splits on "\\n" only, so a stray "\\r" can never
shift a parallel corpus out of alignment.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Literal, TextIO, overload

from mtkit.errors import MtkitError, UsageError


class InputFileError(MtkitError):
    """A file mtkit was asked to read that is missing, not a regular file, or not UTF-8."""


class OutputError(UsageError):
    """An output that would replace something the user has: refused before any work (exit 2)."""


# --------------------------------------------------------------------------- reading


def check_readable(path: Path, what: str = "input file") -> None:
    """Fail with one line unless `path` is an existing regular file (not a dir, FIFO, device)."""
    if not path.exists():
        raise InputFileError(f"{path}: {what} not found")
    if path.is_dir():
        raise InputFileError(f"{path}: {what} is a directory, expected a text file")
    if not path.is_file():
        raise InputFileError(f"{path}: {what} is {special_kind(path)}, expected a regular file")


def special_kind(path: Path) -> str:
    """What a path that is neither a regular file nor a directory is, for messages."""
    mode = path.stat().st_mode
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    return "a socket" if stat.S_ISSOCK(mode) else "not a regular file"


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
    `path` as it was; a crash leaves at most a hidden `.NAME.*.tmp` file. A device or FIFO
    (`-o /dev/null`) is written to as it is, never replaced.
    """
    if path.exists() and not path.is_file() and not path.is_dir():
        return _special_writer(path, mode)
    return _atomic_writer(path, mode)


@contextlib.contextmanager
def _special_writer(path: Path, mode: str) -> Iterator[Any]:
    encoding, newline = ("utf-8", "\n") if mode == "w" else (None, None)
    with open(path, mode, encoding=encoding, newline=newline) as f:
        yield f


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


# --------------------------------------------------------------------------- where to write

# Folders that mtkit built, known by a file only they hold: what they are, and which of their
# files no output may replace (a name pattern, or "DIR/**": everything under DIR).
RUN_FILES = ("last.pt", "best.pt", "step_*.pt", "config.yaml", "spm*.model", "train.log",
             "metrics.jsonl", "parent.json", "train.lock")  # fmt: skip
PREPARED_FILES = ("fingerprint.json", "stats.json", "spm*.model", "text/**", "encoded/**")
EXPORT_FILES = ("mtkit_export.yaml", "model.bin", "config.json", "*vocabulary*", "spm*.model")
OWNED_BY_MARKER = {
    "last.pt": ("run", RUN_FILES),
    "best.pt": ("run", RUN_FILES),
    "train.lock": ("run", RUN_FILES),
    "fingerprint.json": ("prepared data", PREPARED_FILES),
    "mtkit_export.yaml": ("export", EXPORT_FILES),
}


def _owned(parts: tuple[str, ...], patterns: tuple[str, ...]) -> bool:
    """Whether the path `parts` (relative to a folder) matches one of its owned `patterns`."""
    for pattern in patterns:
        if pattern.endswith("/**") and parts[0] == pattern[:-3]:
            return True
        if len(parts) == 1 and fnmatch.fnmatchcase(parts[0], pattern):
            return True
    return False


def same_file(a: Path, b: Path) -> bool:
    """The same file by resolved path, or by (device, inode): a symlink or hard link of it."""
    if a.resolve() == b.resolve():
        return True
    try:
        sa, sb = a.stat(), b.stat()
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def owner_of(path: Path, run_dirs: list[Path]) -> tuple[str, Path] | None:
    """(what, folder) when `path` is one of the files of a run, prepared data or an export;
    `run_dirs` count as runs whatever they hold."""
    target = path.resolve()
    runs = {d.resolve() for d in run_dirs}
    for folder in target.parents:
        owners = [OWNED_BY_MARKER[m] for m in OWNED_BY_MARKER if (folder / m).is_file()]
        if folder in runs:
            owners.append(("run", RUN_FILES))
        parts = target.relative_to(folder).parts
        for what, patterns in owners:
            if _owned(parts, patterns):
                return what, folder
    return None


@dataclasses.dataclass
class OutputGuard:
    """The one rule for every file a command writes, checked before the command does any work.

    An output never replaces a file the command reads (the same path, or the same inode: a
    symlink or hard link), a file of a run (checkpoints, config, tokenizer, logs), prepared
    data or an export, nor another output of the same command; an existing file only with
    `overwrite` (--overwrite). A device or FIFO (`-o /dev/null`) is written to, never replaced.
    Each refusal is one OutputError line naming the path and what to do instead (exit 2).
    """

    reads: list[Path] = dataclasses.field(default_factory=list)  # files the command reads
    run_dirs: list[Path] = dataclasses.field(default_factory=list)  # runs it uses
    overwrite: bool = False  # --overwrite: an existing output file may be replaced
    checked: list[Path] = dataclasses.field(default_factory=list)  # outputs checked so far

    def check(self, path: Path, option: str = "--output") -> Path:
        """`path`, if this command may write it; else OutputError."""
        if path.is_dir():
            raise OutputError(f"{path}: {option} is a directory; expected a file name")
        if path.exists() and not path.is_file():
            return path  # a device or FIFO: written to as it is
        for other in [*self.reads, *self.checked]:
            if same_file(path, other):
                role = "an input" if other in self.reads else "another output"
                raise OutputError(
                    f"{path}: {option} is also {role} of this command ({other}); "
                    "write it to another file"
                )
        owner = owner_of(path, self.run_dirs)
        if owner is not None:
            raise OutputError(
                f"{path}: {option} is a file of the {owner[0]} in {owner[1]}, which outputs "
                "never replace; write it to another file"
            )
        if path.exists() and not self.overwrite:
            raise OutputError(f"{path}: {option} exists; pass --overwrite to replace it")
        self.checked.append(path)
        return path
