"""Device, precision, threads and seeding: the one place these decisions are made."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import random
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mtkit.errors import UsageError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
BF16_MIN_SPEEDUP = 1.5  # `auto` picks bf16 on a CPU only if its matmuls run this much faster
PROBE_SHAPE = (1024, 256, 1024)  # (m, k, n): the size of a batch through one model projection
PROBE_BUDGET_S = 1.0  # the probe stops timing after this long

logger = logging.getLogger(__name__)


class RuntimeConfigError(UsageError):
    """A device/precision combination that cannot run on this machine (exit 2)."""


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when available, else CPU; 'cuda' without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeConfigError("training.device: 'cuda' was asked for but no GPU is available")
    return torch.device(name)


@dataclass(frozen=True)
class Bf16Probe:
    """What a device says about bfloat16: native support as torch reports it, and its speed."""

    native: str  # e.g. "AVX512_BF16", "AMX", "CUDA (NVIDIA H100)"; "" when bf16 is not native
    speedup: float | None = None  # bf16 / fp32 FLOP/s of the probe matmul; None: not measured


@dataclass(frozen=True)
class PrecisionChoice:
    """What `precision: auto` resolved to, and why (one log line)."""

    precision: str  # "float32" or "bfloat16"
    reason: str

    def __str__(self) -> str:
        return f"precision auto -> {self.precision}: {self.reason}"


def choose_precision(device: torch.device, probe: Bf16Probe) -> PrecisionChoice:
    """bfloat16 where the hardware runs it natively fast, float32 elsewhere (no side effects).

    CUDA: bf16 when the GPU supports it natively. CPU: bf16 only when torch reports
    AVX512-BF16 or AMX *and* the probe's bf16 matmul ran >= BF16_MIN_SPEEDUP times the fp32
    one; CPUs without them emulate bf16 at 1-2% of the fp32 speed.
    """
    if device.type == "cuda":
        if probe.native:
            return PrecisionChoice("bfloat16", f"{probe.native} runs bf16 natively")
        return PrecisionChoice("float32", "this GPU has no native bf16")
    if device.type != "cpu":
        return PrecisionChoice("float32", f"no bf16 rule for device {device.type}")
    if not probe.native:
        return PrecisionChoice("float32", "CPU has no AVX512_BF16 or AMX (bf16 would be slow)")
    if probe.speedup is None:
        return PrecisionChoice("float32", f"CPU has {probe.native}, bf16 speed not measured")
    speed = f"bf16 matmul {probe.speedup:.1f}x fp32"
    if probe.speedup < BF16_MIN_SPEEDUP:
        return PrecisionChoice(
            "float32", f"CPU has {probe.native} but {speed} (< {BF16_MIN_SPEEDUP}x)"
        )
    return PrecisionChoice("bfloat16", f"CPU has {probe.native}, {speed}")


def cpu_bf16_features() -> str:
    """The native bf16 instruction sets torch reports for this CPU ("" if none)."""
    checks = {"AMX": "_is_amx_tile_supported", "AVX512_BF16": "_is_avx512_bf16_supported"}
    found = [name for name, fn in checks.items() if getattr(torch.cpu, fn, lambda: False)()]
    capabilities: Mapping[str, Any] = getattr(torch.cpu, "get_capabilities", dict)()  # >= 2.9
    if capabilities.get("sve_bf16") or capabilities.get("bf16"):  # ARM
        found.append("ARM BF16")
    return ", ".join(found)


def matmul_speedup(
    shape: tuple[int, int, int] = PROBE_SHAPE, budget_s: float = PROBE_BUDGET_S
) -> float:
    """bf16 / fp32 speed of an (m, k) x (k, n) matmul on one CPU core (best of alternating runs).

    Timed in CPU time at one thread: on a busy machine wall time swung between 1.2x and 6.7x
    (load average 8), CPU time stayed at 2.1-2.2x. Uses its own random generator (the global
    RNG streams do not move) and stops after `budget_s` seconds.
    """
    m, k, n = shape
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(m, k, generator=gen), torch.randn(k, n, generator=gen)
    pairs = {torch.float32: (a, b), torch.bfloat16: (a.bfloat16(), b.bfloat16())}
    best = dict.fromkeys(pairs, float("inf"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.perf_counter()
    try:
        with torch.inference_mode():
            for x, y in pairs.values():
                x @ y  # warm-up: kernel selection, packing buffers
            for _ in range(10):
                for dtype, (x, y) in pairs.items():
                    t = time.process_time()
                    x @ y
                    best[dtype] = min(best[dtype], time.process_time() - t)
                if time.perf_counter() - start > budget_s:
                    break
    finally:
        torch.set_num_threads(threads)
    return best[torch.float32] / max(best[torch.bfloat16], 1e-9)


def probe_bf16(device: torch.device) -> Bf16Probe:
    """Ask torch whether `device` runs bf16 natively; on such a CPU, time it (< 1 s)."""
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return Bf16Probe(f"CUDA ({torch.cuda.get_device_name(device)})")
        return Bf16Probe("")
    if device.type != "cpu":
        return Bf16Probe("")
    native = cpu_bf16_features()
    return Bf16Probe(native, matmul_speedup() if native else None)


def resolve_precision(precision: str, device: torch.device) -> str:
    """An explicit precision as is; `auto` through `choose_precision`, logging the choice."""
    if precision != "auto":
        return precision
    choice = choose_precision(device, probe_bf16(device))
    logger.info("%s", choice)
    return choice.precision


def check_precision(precision: str, device: torch.device, key: str = "training.precision") -> None:
    """float16 needs CUDA (it trains with a gradient scaler); bfloat16 works everywhere."""
    if precision == "float16" and device.type != "cuda":
        raise RuntimeConfigError(
            f"{key}: float16 needs a CUDA device; use auto, float32 or bfloat16 on CPU"
        )


def autocast_context(
    device: torch.device, precision: str
) -> contextlib.AbstractContextManager[Any]:
    """Autocast for reduced precision; a no-op for float32 (`resolve_precision` first)."""
    if precision == "float32":
        return contextlib.nullcontext()
    if precision not in DTYPES:
        raise ValueError(f"precision {precision!r}: resolve it with resolve_precision first")
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


ONEDNN_CACHE = "16"  # primitives kept: one update's ~30 distinct ones are mostly reused per layer


def limit_onednn_caches() -> bool:
    """Keep oneDNN (bf16 matmuls on CPU) from holding a primitive per batch shape.

    oneDNN caches each primitive it builds (up to 1024), scratchpad and packed operands
    included: tens of MB for the output projection's weight gradient, whose inner dimension
    is the batch's token count. Training batches come in hundreds of shapes, so a bf16 run's
    RSS grew by ~1 GB over its first hundred updates (2.0-2.2 GB against 1.3 GB in fp32).
    Measured at one thread (CPU s per bf16 update, peak RSS over 20 updates): default caches
    0.80-0.82 s, 2.0-2.2 GB; 16 primitives 0.77-0.79 s, 1.27-1.29 GB; none 0.80-0.84 s,
    1.11-1.17 GB. Decoding (Translator.load) too: its batches shrink step by step, so the
    shapes are many; translating 3,000 Tatoeba lines with a Multi30k model in bf16, peak RSS
    912 -> 434 MB greedy and 1,190 -> 690 MB beam 5 (fp32: 668 MB), time within noise
    (alternated: greedy 17.7/16.1 s default, 15.3/16.5 s limited). With no cache at all
    greedy bf16 ran 18% slower. Sets ONEDNN_PRIMITIVE_CACHE_CAPACITY=16 and
    LRU_CACHE_CAPACITY=1 (ideep's cache; 0 crashes) unless the user set either; both are
    read at the first oneDNN call, so this must run before any bf16 matmul. Returns True
    when applied.
    """
    if "ONEDNN_PRIMITIVE_CACHE_CAPACITY" in os.environ or "LRU_CACHE_CAPACITY" in os.environ:
        return False
    os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = ONEDNN_CACHE
    os.environ["LRU_CACHE_CAPACITY"] = "1"
    return True


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
