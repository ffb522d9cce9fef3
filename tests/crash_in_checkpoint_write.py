"""`mtkit` that SIGKILLs itself at one point of saving a checkpoint, as a crash there would.

The crash tests run it in place of `python -m mtkit` (also under torchrun, as a script). Where
it dies is chosen by the environment variable MTKIT_CRASH_AT (read here, never by mtkit):

- `write` (the default): halfway through writing the first checkpoint (.pt) file, so the
  half-written temp file stays on disk;
- `link-last` / `link-best`: when last.pt / best.pt is about to be swapped for the new step
  file, i.e. after its hard link `.last.pt.PID.link.tmp` exists and before the rename;
- `prune`: right after the first old step_NNNNNN.pt was deleted to keep `keep_last`.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from mtkit import files
from mtkit.cli.main import app

CRASH_AT = os.environ.get("MTKIT_CRASH_AT", "write")


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def write_half_then_die(f: Any, data: bytes, path: Path) -> None:
    """Stand-in for files.write_payload: a checkpoint gets half its bytes, then SIGKILL."""
    if path.suffix != ".pt":
        f.write(data)
        return
    f.write(data[: len(data) // 2])
    f.flush()
    os.fsync(f.fileno())
    die()


def die_before_publishing(name: str) -> None:
    """Wrap os.replace: SIGKILL instead of renaming the hard link of a step file onto `name`."""
    replace = os.replace

    def replace_or_die(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if Path(dst).name == name and str(src).endswith(".link.tmp"):
            die()
        replace(src, dst, *args, **kwargs)

    os.replace = replace_or_die


def die_after_pruning() -> None:
    """Wrap Path.unlink: SIGKILL once the first old step checkpoint is gone."""
    unlink = Path.unlink

    def unlink_then_die(self: Path, missing_ok: bool = False) -> None:
        unlink(self, missing_ok=missing_ok)
        if self.name.startswith("step_") and self.suffix == ".pt":
            die()

    Path.unlink = unlink_then_die  # type: ignore[method-assign]


if __name__ == "__main__":
    if CRASH_AT == "write":
        files.write_payload = write_half_then_die
    elif CRASH_AT in ("link-last", "link-best"):
        die_before_publishing(CRASH_AT.removeprefix("link-") + ".pt")
    elif CRASH_AT == "prune":
        die_after_pruning()
    else:
        raise SystemExit(
            f"MTKIT_CRASH_AT: expected write, link-last, link-best or prune, got {CRASH_AT}"
        )
    app()
