"""Self-describing checkpoints: written atomically, loaded without executing pickled code."""

from __future__ import annotations

import errno
import io
import logging
import os
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from mtkit.errors import MtkitError
from mtkit.files import atomic_write_bytes, fsync_dir

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "config", "model", "vocab", "tokenizer")


class CheckpointError(MtkitError):
    """A checkpoint that cannot be used; the message names the file and the reason."""


def serialize_checkpoint(state: dict[str, Any]) -> bytes:
    """`state` (tensors, numbers, strings, bytes, dicts, lists) as checkpoint file bytes."""
    buffer = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, **state}, buffer)
    return buffer.getvalue()


def write_checkpoint_bytes(path: Path, data: bytes) -> None:
    """Atomic write; an OS error (disk full, permissions) becomes one CheckpointError line."""
    try:
        atomic_write_bytes(path, data)
    except OSError as e:
        reason = os.strerror(e.errno) if e.errno else str(e)
        hint = " (disk full? free some space, then resume)" if e.errno == errno.ENOSPC else ""
        raise CheckpointError(
            f"{path}: could not write checkpoint: {reason}{hint}; the previous checkpoint is intact"
        ) from None


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Serialise `state` atomically to `path`."""
    write_checkpoint_bytes(path, serialize_checkpoint(state))


_STEP_FILE = re.compile(r"^step_(\d+)\.pt$")


def step_checkpoint_name(step: int) -> str:
    """'step_000500.pt': zero-padded so names sort by step."""
    return f"step_{step:06d}.pt"


def step_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """The run's step_NNNNNN.pt files as (step, path), oldest first."""
    found = []
    for path in run_dir.glob("step_*.pt"):
        match = _STEP_FILE.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def save_run_checkpoint(
    run_dir: Path, state: dict[str, Any], step: int, *, best: bool, keep_last: int
) -> Path:
    """Write step_NNNNNN.pt, point last.pt (and best.pt if `best`) at it, keep the newest K.

    last.pt and best.pt are hard links to the step file (atomically swapped in), so the bytes
    are written once; where hard links fail they are written as copies.
    """
    data = serialize_checkpoint(state)
    step_path = run_dir / step_checkpoint_name(step)
    write_checkpoint_bytes(step_path, data)
    _publish(step_path, run_dir / "last.pt", data)
    if best:
        _publish(step_path, run_dir / "best.pt", data)
    kept = step_checkpoints(run_dir)
    for _, old in kept[: max(len(kept) - keep_last, 0)]:
        old.unlink(missing_ok=True)
    return step_path


def _publish(src: Path, dst: Path, data: bytes) -> None:
    """Atomically make `dst` another name of `src` (or a copy of `data` where links fail)."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.link.tmp")
    try:
        tmp.unlink(missing_ok=True)
        os.link(src, tmp)
        os.replace(tmp, dst)
    except OSError:
        tmp.unlink(missing_ok=True)
        write_checkpoint_bytes(dst, data)
        return
    fsync_dir(dst.parent)


def find_resume_checkpoint(run_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest complete checkpoint of a run: last.pt, or a newer readable step file.

    last.pt is normally the newest; a crash between writing step_N.pt and swapping last.pt
    leaves step_N.pt newer. Unreadable files are skipped with a warning.
    """
    found: tuple[Path, dict[str, Any]] | None = None
    last = run_dir / "last.pt"
    if last.is_file():
        try:
            found = (last, load_checkpoint(last))
        except CheckpointError as e:
            logger.warning("skipping %s", e)
    newest = found[1].get("train_state", {}).get("step", -1) if found else -1
    for step, path in reversed(step_checkpoints(run_dir)):
        if step <= newest:
            break
        try:
            return path, load_checkpoint(path)
        except CheckpointError as e:
            logger.warning("skipping %s", e)
    return found


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with `weights_only=True`; any problem becomes one CheckpointError line."""
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    if path.is_dir():
        raise CheckpointError(f"{path}: expected a checkpoint file, found a directory")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4" on a foreign file
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "global" in str(e).lower():  # a class/function reference: never imported or called
            raise CheckpointError(
                f"{path}: refused: the file contains pickled Python objects that could run code "
                "when loaded (only tensors and plain data are accepted)"
            ) from None
        raise CheckpointError(
            f"{path}: not a readable checkpoint (not written by torch.save, or corrupt)"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path}: not a readable checkpoint (truncated or corrupt: {reason})"
        ) from None
    except Exception as e:  # untrusted bytes can trip the unpickler in many ways
        raise CheckpointError(
            f"{path}: not a readable checkpoint (corrupt: {type(e).__name__})"
        ) from None
    if not isinstance(state, dict) or any(k not in state for k in REQUIRED_KEYS):
        raise CheckpointError(f"{path}: not an mtkit checkpoint (missing model/config/tokenizer)")
    if state["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {state['format_version']} is not supported "
            f"(this mtkit reads format {FORMAT_VERSION})"
        )
    return state


def resolve_checkpoint(path: Path) -> Path:
    """A run directory means its best checkpoint (else last); a file means itself."""
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"{path}: no best.pt or last.pt in this run directory")
    if not path.exists():
        raise CheckpointError(f"{path}: no such run directory or checkpoint file")
    return path


def load_weights(module: torch.nn.Module, weights: Any) -> None:
    """`module.load_state_dict(weights)`; a mismatch becomes one CheckpointError line.

    A checkpoint of another vocabulary or architecture (or an edited one) would otherwise end
    in torch's many-line RuntimeError.
    """
    check_weights(module.state_dict(), weights)
    try:
        module.load_state_dict(weights)
    except (RuntimeError, TypeError, AttributeError):
        raise _mismatch_error(["incompatible tensors"]) from None


def check_weights(expected: dict[str, torch.Tensor], found: Any) -> None:
    """CheckpointError unless `found` has exactly the names and shapes of `expected`.

    `expected` may come from a model built on the meta device: a config that asks for a huge
    model is then rejected before any memory is allocated for it.
    """
    if not isinstance(found, dict):
        raise CheckpointError("the model weights are not a mapping of names to tensors")
    problems = weight_problems(expected, found)
    if problems:
        raise _mismatch_error(problems)


def _mismatch_error(problems: list[str]) -> CheckpointError:
    return CheckpointError(
        f"the weights do not fit the model its config describes ({'; '.join(problems)}): "
        "a checkpoint of another vocabulary or architecture, or an edited file"
    )


def weight_problems(expected: dict[str, torch.Tensor], found: dict[Any, Any]) -> list[str]:
    """The first shape mismatch, non-tensor, missing and unexpected entry, with counts."""
    shapes = [
        f"{k} is {list(v.shape)} in the file but {list(expected[k].shape)} in the model"
        for k, v in found.items()
        if k in expected and torch.is_tensor(v) and v.shape != expected[k].shape
    ]
    problems = {
        "shape mismatch": shapes,
        "not a tensor": [repr(k) for k, v in found.items() if not torch.is_tensor(v)],
        "missing": [str(k) for k in expected if k not in found],
        "unexpected": [repr(k) for k in found if k not in expected],
    }
    parts = []
    for what, items in problems.items():
        if items:
            more = f" (and {len(items) - 1} more)" if len(items) > 1 else ""
            parts.append(f"{what}: {items[0][:200]}{more}")
    return parts
