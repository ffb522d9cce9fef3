"""`mtkit` that SIGKILLs itself halfway through writing its first checkpoint (.pt) file.

The crash tests run it in place of `python -m mtkit` (also under torchrun, as a script):
the half-written temp file stays on disk, exactly as after a real crash mid-write.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from mtkit import files
from mtkit.cli.main import app


def write_half_then_die(f: Any, data: bytes, path: Path) -> None:
    """Stand-in for files.write_payload: a checkpoint gets half its bytes, then SIGKILL."""
    if path.suffix != ".pt":
        f.write(data)
        return
    f.write(data[: len(data) // 2])
    f.flush()
    os.fsync(f.fileno())
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    files.write_payload = write_half_then_die
    app()
