"""mtkit's native kernels for decoding steps (kernels/decoding.c), and the choice of them.

A decoding step attends from one query per row (or one per beam) to a few dozen cached keys;
PyTorch's attention spends most of such a call on per-(row, head) overhead. The attention
kernel does each (row, head, query) in one pass. The step then normalises (rows, vocab) logits;
the log-softmax kernel does it in one pass per row, in place, and gives the maxima of each
row's 64-token chunks that the searches' argmax and top-k read (mtkit.search.common).
They are compiled once per machine with the system's C compiler (`CC`, else `cc`) at
`-O3 -march=native`, cached under ~/.cache/mtkit/kernels (or $XDG_CACHE_HOME/mtkit/kernels) by
a hash of the source, compiler, flags and CPU, and checked against PyTorch before they are used.
`decoding.attention_kernel` picks them: auto takes them where they build, else PyTorch's
(logged); native requires them; torch never builds them.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import math
import os
import platform
import shlex
import shutil
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from mtkit.errors import MtkitError, UsageError
from mtkit.files import atomic_write_bytes
from mtkit.model.layers import attention
from mtkit.search.common import chunk_maxima

KERNEL_SOURCE = Path(__file__).with_name("kernels") / "decoding.c"
FLAGS = ("-O3", "-march=native", "-shared", "-fPIC")
MAX_QUERIES = 16  # queries per row the kernel takes; more (teacher-forced passes): PyTorch's
TOLERANCE = 1e-5  # the largest difference from PyTorch's results the check accepts

logger = logging.getLogger(__name__)


class KernelError(MtkitError):
    """The native kernels cannot be built, loaded or trusted on this machine (the message says
    why); `attention_kernel: auto` then uses PyTorch's."""


# `struct problem` of kernels/decoding.c, packed with the platform's alignment: q, k, v, mask,
# out pointers; q/k/v strides (3 each), mask strides (4); batch, heads, lq, lk, d; scale; rows
# pointer, its 2 strides, k_rows. Packing one bytes object per call costs ~1 us, a
# ctypes.Structure with its stride arrays ~10 (a decoding step makes 2 calls per layer).
_PROBLEM = struct.Struct("@5P13q5qfP3q")


@dataclass(frozen=True)
class NativeKernels:
    """The loaded kernels: `attention` (as `mtkit.model.layers.attention` is called, for
    decoding steps) and `log_softmax_`."""

    library: ctypes.CDLL
    path: Path  # the shared library

    def attention(
        self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, rows: Tensor | None = None
    ) -> Tensor | None:
        """softmax(q k^T / sqrt(head_dim)) v, or None for a call it does not take (not on CPU,
        more than MAX_QUERIES queries, head_dim not a multiple of 8, k/v not one per q row
        and head, a non-bool mask).

        Shapes: q (batch, n_heads, q_len, head_dim), k/v (batch, n_heads, k_len, head_dim),
        mask bool broadcastable to (batch, n_heads, q_len, k_len)
        -> (batch, n_heads, q_len, head_dim), a view of a (batch, q_len, n_heads, head_dim)
        tensor (merging the heads afterwards copies nothing). bfloat16 is computed in float32.
        `rows` (batch, k_len) long: key j of row b is k[rows[b, j], :, j] (k/v then have any
        number of rows; a pointer outside them is a ValueError, never a read).
        """
        batch, heads, q_len, head_dim = q.shape
        if not _takes(q, k, v, mask, rows):
            return None
        dtype = q.dtype
        q, k, v = _float_rows(q), _float_rows(k), _float_rows(v)
        out = q.new_empty(batch, q_len, heads, head_dim)  # (batch, q_len, n_heads, head_dim)
        shape = (batch, heads, q_len, k.size(2))
        problem = _PROBLEM.pack(
            q.data_ptr(), k.data_ptr(), v.data_ptr(), 0 if mask is None else mask.data_ptr(),
            out.data_ptr(), *q.stride()[:3], *k.stride()[:3], *v.stride()[:3],
            *(_broadcast_strides(mask, shape) if mask is not None else (0, 0, 0, 0)),
            *shape, head_dim, 1.0 / math.sqrt(head_dim),
            0 if rows is None else rows.data_ptr(),
            *(rows.stride() if rows is not None else (0, 0)), k.size(0),
        )  # fmt: skip
        done = self.library.mtk_attention(problem)
        if done == -2:
            raise ValueError("native attention: a key row pointer outside the keys")
        if done != 0:
            raise MemoryError("native attention: out of memory")
        out = out.transpose(1, 2)  # (batch, n_heads, q_len, head_dim)
        return out if dtype == torch.float32 else out.to(dtype)

    def log_softmax_(self, x: Tensor, chunk: int) -> Tensor | None:
        """`x` becomes `x.log_softmax(dim=-1)` in place (to float rounding); returns the maxima
        of each row's consecutive `chunk`-wide slices of the result, exactly (the last slice may
        be shorter). None, with `x` untouched, for a tensor it does not take (not float32 on
        CPU, the last dimension not contiguous, an empty vocabulary).

        Shapes: x (rows, vocab) -> (rows, ceil(vocab / chunk)).
        """
        rows, vocab = x.shape
        if x.device.type != "cpu" or x.dtype != torch.float32 or vocab == 0 or chunk < 1:
            return None
        if x.stride(1) != 1 and vocab > 1:
            return None
        maxima = x.new_empty(rows, -(-vocab // chunk))  # (rows, chunks)
        self.library.mtk_log_softmax(x.data_ptr(), rows, vocab, x.stride(0), chunk,
                                     maxima.data_ptr())  # fmt: skip
        return maxima


def _takes(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, rows: Tensor | None) -> bool:
    """Whether the kernel takes this call (see `NativeKernels.__call__`)."""
    batch, heads, q_len, head_dim = q.shape
    if rows is None:
        keys_fit = k.size(0) == batch
    else:
        keys_fit = rows.dtype == torch.int64 and rows.shape == (batch, k.size(2))
    return (
        q.device.type == "cpu"
        and q_len <= MAX_QUERIES
        and head_dim % 8 == 0
        and q.dtype in (torch.float32, torch.bfloat16)
        and k.shape == v.shape
        and keys_fit
        and k.size(1) == heads
        and k.size(3) == head_dim
        and (mask is None or mask.dtype == torch.bool)
    )


def _float_rows(x: Tensor) -> Tensor:
    """`x` as float32 with a contiguous last dimension (a copy only when it is not)."""
    x = x if x.dtype == torch.float32 else x.float()
    return x if x.stride(-1) == 1 else x.contiguous()


def _broadcast_strides(mask: Tensor, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The strides of `mask` expanded to `shape` (0 along its broadcast dimensions), without
    making the expanded view; ValueError, as `expand` gives, when it does not broadcast."""
    pad = len(shape) - mask.dim()
    sizes, strides = (1,) * pad + tuple(mask.shape), (0,) * pad + mask.stride()
    if pad < 0 or any(n not in (1, want) for n, want in zip(sizes, shape, strict=True)):
        raise ValueError(f"a mask of shape {tuple(mask.shape)} does not broadcast to {shape}")
    return tuple(0 if n == 1 else stride for n, stride in zip(sizes, strides, strict=True))


def cache_dir() -> Path:
    """Where built kernels are kept: $XDG_CACHE_HOME/mtkit/kernels, else ~/.cache/..."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mtkit" / "kernels"


def _machine() -> str:
    """What -march=native compiles for: the CPU's model and flags (Linux), else platform's."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    wanted = ("model name", "flags", "Features", "CPU part")
    lines = [ln for ln in text.splitlines() if ln.split(":")[0].strip() in wanted]
    return "\n".join(sorted(set(lines))) or f"{platform.machine()} {platform.processor()}"


def _compiler() -> list[str]:
    """The C compiler command: $CC, else cc; KernelError when it is not installed."""
    command = shlex.split(os.environ.get("CC") or "cc")
    if not command or shutil.which(command[0]) is None:
        name = command[0] if command else "$CC"
        raise KernelError(f"no C compiler ({name}) found: install gcc or clang, or set CC")
    return command


def library_path(directory: Path, compiler: list[str]) -> Path:
    """The cached library's path: a hash of the source, compiler, flags and CPU."""
    key = hashlib.sha256()
    for part in (KERNEL_SOURCE.read_bytes(), " ".join([*compiler, *FLAGS]).encode(),
                 _machine().encode()):  # fmt: skip
        key.update(part)
        key.update(b"\0")
    return directory / f"decoding-{key.hexdigest()[:16]}.so"


def _compile(compiler: list[str], target: Path) -> None:
    """Compile kernels/decoding.c into `target` (written atomically); KernelError on failure."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            built = Path(tmp) / target.name
            done = subprocess.run(
                [*compiler, *FLAGS, "-o", str(built), str(KERNEL_SOURCE)],
                capture_output=True, text=True, timeout=300, check=False,
            )  # fmt: skip
            if done.returncode != 0:
                first = (done.stderr.strip().splitlines() or ["no message"])[0]
                raise KernelError(f"{compiler[0]} failed on {KERNEL_SOURCE.name}: {first}")
            atomic_write_bytes(target, built.read_bytes())
    except (OSError, subprocess.TimeoutExpired) as e:
        raise KernelError(f"cannot build the kernel in {target.parent}: {e}") from None


def _load(path: Path) -> NativeKernels:
    """Load the library and declare its functions' signatures."""
    try:
        library = ctypes.CDLL(str(path))
    except OSError as e:
        raise KernelError(f"cannot load {path}: {e}") from None
    library.mtk_attention.argtypes = [ctypes.c_char_p]  # a packed _PROBLEM
    library.mtk_attention.restype = ctypes.c_int
    i64, pointer = ctypes.c_int64, ctypes.c_void_p
    library.mtk_log_softmax.argtypes = [pointer, i64, i64, i64, i64, pointer]
    library.mtk_log_softmax.restype = ctypes.c_int
    return NativeKernels(library, path)


def check_kernel(kernel: NativeKernels) -> float:
    """The largest difference between the kernels and PyTorch on small random problems:
    attention (head sizes 32, 64 and 40, masks broadcast over rows or per row, 1 and 3
    queries) and log-softmax (with its chunk maxima). KernelError when it exceeds TOLERANCE
    or a chunk maximum is not exact (a miscompiled kernel is never used)."""
    gen = torch.Generator().manual_seed(0)
    worst = _check_log_softmax(kernel, gen)
    for head_dim, q_len, per_row in ((32, 1, True), (64, 3, False), (40, 2, True)):
        q = torch.randn(4, 2, q_len, head_dim, generator=gen)
        k, v = (torch.randn(4, 2, 9, head_dim, generator=gen) for _ in range(2))
        mask = torch.rand(4 if per_row else 1, 1, 1, 9, generator=gen) > 0.3
        mask[..., 0] = True  # every row may attend somewhere
        got = kernel.attention(q, k, v, mask)
        if got is None:
            raise KernelError(f"the kernel refused a {head_dim}-dimension test problem")
        worst = max(worst, float((got - attention(q, k, v, mask)).abs().max()))
    if not worst <= TOLERANCE:
        raise KernelError(f"{kernel.path} differs from PyTorch by {worst:.1e} (> {TOLERANCE})")
    return worst


def _check_log_softmax(kernel: NativeKernels, gen: torch.Generator) -> float:
    """The largest difference from PyTorch's log_softmax on a (3, 1000) problem with a short
    last chunk; KernelError when the chunk maxima are not those of the result."""
    x = torch.randn(3, 1000, generator=gen) * 4.0  # (3, 1000)
    got = x.clone()
    maxima = kernel.log_softmax_(got, 64)
    if maxima is None or not torch.equal(maxima, chunk_maxima(got, 64)):
        raise KernelError(f"{kernel.path}: the log-softmax's chunk maxima are wrong")
    return float((got - x.log_softmax(dim=-1)).abs().max())


def build_native_kernels(directory: Path | None = None) -> NativeKernels:
    """The kernels for this machine: built (or found in `directory`, default `cache_dir()`),
    loaded and checked. KernelError says why not."""
    compiler = _compiler()
    path = library_path(directory or cache_dir(), compiler)
    if not path.is_file():
        start = time.perf_counter()
        _compile(compiler, path)
        logger.info("built the native decoding kernels in %.1f s: %s",
                    time.perf_counter() - start, path)  # fmt: skip
    kernel = _load(path)
    check_kernel(kernel)
    return kernel


def resolve_native_kernels(choice: str, device: torch.device) -> NativeKernels | None:
    """`decoding.attention_kernel` on `device`: the native kernels, or None for PyTorch's
    attention and log-softmax; the choice is logged. `native` that cannot be had is an error."""
    if choice == "torch":
        return None
    if device.type != "cpu":
        if choice == "native":
            raise UsageError(f"decoding.attention_kernel: native runs on CPU, not {device.type}")
        return None
    try:
        kernel = build_native_kernels()
    except KernelError as e:
        if choice == "native":
            raise
        logger.info("attention kernel auto -> torch: %s", e)
        return None
    logger.info("attention kernel %s -> native (%s)", choice, kernel.path.name)
    return kernel
