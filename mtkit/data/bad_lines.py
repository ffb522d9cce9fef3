"""Lines that cannot become a pair: reporting them, and finding the ones that are not UTF-8.

A bad line is skipped and counted (the first few are named in the log), or is fatal under
`data.strict`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from mtkit.config.schema import DataConfig
from mtkit.data.rows import DataError
from mtkit.data.sources import Source

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


def without_bad_utf8(data: DataConfig, source: Source, path: Path, work: Path) -> tuple[Path, int]:
    """`path`, or a copy in `work` without its undecodable lines; and how many were removed."""
    bad = scan_utf8(path)
    if not bad:
        return path, 0
    seen = [0]
    for line in bad:
        report_bad_line(data, path, line, seen)
    copy = work / ".cache" / f"{source.split}-{path.name}"
    copy.parent.mkdir(parents=True, exist_ok=True)
    skip = set(bad)
    with open(path, "rb") as f, open(copy, "wb") as out:
        for n, raw in enumerate(f, start=1):
            if n not in skip:
                out.write(raw)
    return copy, len(bad)


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
