"""Device, precision, threads and seeding: the one place these decisions are made."""

from __future__ import annotations

import contextlib
import random
from typing import Any

import torch

from mtkit.errors import MtkitError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class RuntimeConfigError(MtkitError):
    """A device/precision combination that cannot run on this machine."""


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


def seed_everything(seed: int) -> None:
    """Seed Python and torch (CPU and CUDA) RNGs."""
    random.seed(seed)
    torch.manual_seed(seed)
