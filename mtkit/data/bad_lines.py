"""Lines that cannot become a pair: reporting them, and finding the ones that are not UTF-8.

An undecodable line (or one with a NUL byte) is skipped and counted (the first few are named in
the log), or is fatal under `data.strict`. A row that does not have the shape of its format
(`BadRows`: columns, JSON object, keys) fails prepare naming the first few (file:line) and
their count, or with `data.on_bad_row: skip` is dropped and counted as `bad_row`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from mtkit.config.schema import DataConfig
from mtkit.data.rows import DataError
from mtkit.data.sources import Source
from mtkit.errors import plural

logger = logging.getLogger(__name__)

MAX_REPORTED = 5  # bad lines named individually in the log before summarising
NUL_BYTE = "a NUL byte (binary data?)"  # valid UTF-8, but never part of a sentence


def report_bad_line(
    data: DataConfig, path: Path, line: int, seen: list[int], what: str = "invalid UTF-8"
) -> None:
    """Fail (strict) or log (first few) an undecodable line."""
    if data.strict:
        raise DataError(f"{path}:{line}: {what} (data.strict is true; fix or drop the line)")
    seen[0] += 1
    if seen[0] <= MAX_REPORTED:
        logger.warning("%s:%d: %s; skipping the pair", path, line, what)


SHOWN = 3  # bad rows named in the error message


class BadRows:
    """The rows of one file that do not have the shape of its format, as they are found:
    logged (the first few) and dropped under `data.on_bad_row: skip`, else one DataError at
    `finish` naming the first few and the count."""

    def __init__(self, data: DataConfig, path: Path, key: str) -> None:
        self.skip = data.on_bad_row == "skip" and not data.strict
        self.path, self.key = path, key  # the file, and its config key (data.train)
        self.found: list[str] = []  # "FILE:LINE: what", the first few
        self.count = 0

    def add(self, line: int, what: str) -> None:
        self.count += 1
        if self.count <= max(SHOWN, MAX_REPORTED):
            self.found.append(f"{self.path}:{line}: {what}")
        if self.skip and self.count <= MAX_REPORTED:
            logger.warning("%s:%d: %s; dropping the row (data.on_bad_row: skip)", self.path,
                           line, what)  # fmt: skip

    def finish(self) -> None:
        """Fail when rows were found and are not to be skipped; else log their number."""
        if not self.count:
            return
        if self.skip:
            if self.count > MAX_REPORTED:
                logger.warning("%s: %d malformed rows dropped in all", self.path, self.count)
            return
        more = f"; and {self.count - SHOWN} more" if self.count > SHOWN else ""
        rows = plural(self.count, "malformed row")
        raise DataError(
            f"{self.key}: {rows}: {'; '.join(self.found[:SHOWN])}{more}"
            " (fix them, or set data.on_bad_row: skip to drop and count them)"
        )


def without_bad_utf8(data: DataConfig, source: Source, path: Path, work: Path) -> tuple[Path, int]:
    """`path`, or a copy in `work` without its undecodable lines; and how many were removed."""
    bad = scan_utf8(path)
    if not bad:
        return path, 0
    seen = [0]
    for line in bad:
        report_bad_line(data, path, line, seen)
    return without_lines(path, set(bad), work / ".cache" / f"{source.split}-{path.name}"), len(bad)


def without_lines(path: Path, skip: set[int], copy: Path) -> Path:
    """A copy of `path` at `copy` without the lines (1-based) in `skip`."""
    copy.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "rb") as f, open(copy, "wb") as out:
        for n, raw in enumerate(f, start=1):
            if n not in skip:
                out.write(raw)
    return copy


def scan_utf8(path: Path, chunk: int = 8 << 20) -> list[int]:
    """Line numbers (1-based) that are not valid UTF-8; fast path decodes whole chunks."""
    bad: list[int] = []
    line = 1
    with open(path, "rb") as f:
        rest = b""
        while True:
            block = f.read(chunk)
            if not block:
                break
            block = rest + block
            cut = block.rfind(b"\n") + 1
            block, rest = block[:cut], block[cut:]
            line = _scan_block(block, line, bad)
        _scan_block(rest, line, bad)
    return bad


def _scan_block(block: bytes, line: int, bad: list[int]) -> int:
    try:
        block.decode("utf-8")
    except UnicodeDecodeError:
        for i, raw in enumerate(block.split(b"\n")):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                bad.append(line + i)
    return line + block.count(b"\n")
