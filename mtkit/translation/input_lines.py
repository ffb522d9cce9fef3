"""Input lines for translation from stdin, decoded leniently (files go through `files.read_lines`).

Both split on "\\n" only, so a stray "\\r" never adds a line (and shifts the outputs).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

from mtkit.config.schema import ConfigError

logger = logging.getLogger(__name__)


def stdin_is_terminal() -> bool:
    """stdin is an interactive terminal (False when it is closed: `mtkit ... <&-`)."""
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except ValueError:  # a stdin object that was closed
        return False


def check_stdin(option: str) -> None:
    """Refuse (exit 2) to read stdin when there is none: it was closed (`<&-`, some daemons)."""
    if sys.stdin is None:
        raise ConfigError(f"no input: stdin is closed; pass {option} FILE or pipe text in")


def stdin_lines() -> Iterator[str]:
    """stdin lines split on "\\n" only (a stray "\\r" must not add a line), decoded as UTF-8;
    undecodable bytes become U+FFFD with a warning naming the line (never a traceback)."""
    check_stdin("--input")
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is None:  # a text-only stdin (embedding, some test runners)
        for line in sys.stdin:
            yield line.rstrip("\n").rstrip("\r")
        return
    bad = 0
    for n, raw in enumerate(buffer, start=1):  # binary lines end at b"\n" only
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("utf-8", errors="replace")
            bad += 1
            if bad <= 5:
                logger.warning(
                    "stdin line %d: invalid UTF-8; undecodable bytes replaced by U+FFFD", n
                )
        yield text.rstrip("\n").rstrip("\r")
    if bad > 5:
        logger.warning("%d stdin lines had invalid UTF-8 in all", bad)
