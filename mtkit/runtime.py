"""Device, precision, threads and seeding: the one place these decisions are made."""

from __future__ import annotations

import contextlib
import ctypes
import random
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from mtkit.errors import UsageError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class RuntimeConfigError(UsageError):
    """A device/precision combination that cannot run on this machine (exit 2)."""


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when available, else CPU; 'cuda' without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeConfigError("training.device: 'cuda' was asked for but no GPU is available")
    return torch.device(name)


def check_precision(precision: str, device: torch.device) -> None:
    """float16 needs CUDA (it trains with a gradient scaler); bfloat16 works everywhere."""
    if precision == "float16" and device.type != "cuda":
        raise RuntimeConfigError(
            "training.precision: float16 needs a CUDA device; use float32 (or bfloat16) on CPU"
        )


def autocast_context(
    device: torch.device, precision: str
) -> contextlib.AbstractContextManager[Any]:
    """Autocast for reduced precision; a no-op for float32."""
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])


def set_threads(threads: int) -> None:
    """Set torch's intra-op thread count (0 keeps torch's default)."""
    if threads > 0:
        torch.set_num_threads(threads)


def keep_freed_memory() -> bool:
    """Let glibc reuse freed large blocks instead of mapping fresh pages (Linux; else a no-op).

    glibc serves every allocation of 32 MB or more (its highest mmap threshold) with new
    mmap'ed pages and unmaps them on free. On CPU each step's logits, log-probs and their
    gradients (tens of MB at vocabulary 8000) then arrive as fresh pages that the kernel
    faults in and zeroes. On an idle machine that costs little (no measurable difference in
    `make bench`); on a busy one, where that kernel work waits for CPU time, it measured 45%
    of a beam-search run and 20% of a training step (one thread, load average ~5).
    M_MMAP_MAX=0 serves them from the heap, and a high M_TRIM_THRESHOLD keeps the heap from
    being handed back after every step, so RSS stays at its high-water mark instead of rising
    and falling each step. Returns True when applied.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # glibc; musl has no mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # from <malloc.h>
    return bool(mallopt(m_mmap_max, 0) == 1 and mallopt(m_trim_threshold, 2**31 - 1) == 1)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA) RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every global RNG's state as checkpoint-safe values (tensors, lists, numbers)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), pos, has_gauss, cached],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured (a checkpoint's lists come back as lists or tuples)."""
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))
    if "numpy" in state:
        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block (e.g. validation) without moving the training RNG streams."""
    saved = rng_state()
    try:
        yield
    finally:
        set_rng_state(saved)
