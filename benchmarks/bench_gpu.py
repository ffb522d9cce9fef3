"""`make bench` on one CUDA GPU in under 5 minutes: bf16 autocast, SDPA, torch.compile.

    .venv/bin/python benchmarks/bench_gpu.py [extra bench.py options]

Same sections, same fixed model and data, same JSON format as benchmarks/bench.py (whose
docstring says how every figure is made); this only picks GPU settings and a size that fits
the time budget:
- `--precision bfloat16`: training runs under torch.autocast(bfloat16) and the MFU peak is a
  bf16 matmul (8192^3, best of 3 x 20) on the same GPU;
- `--compile`: the training model goes through torch.compile (the first updates compile; the
  warm-up is long enough to include the recompile for dynamic shapes);
- attention is F.scaled_dot_product_attention (the model's default), which picks the fused
  memory-efficient kernel on CUDA.
The decode model (300 updates) is trained on the GPU first if it is not cached. Written to
bench_results/bench_gpu.json. Without CUDA it stops at once with a message saying so.

At a token budget of 4096 an H100/H200-class GPU is mostly waiting for kernel launches and
the host; the figures say how far that is from the bf16 peak, not what a large batch reaches
(`--max-tokens 32768` measures that instead).
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import bench  # noqa: E402

GPU_ARGS = [
    "--device", "cuda", "--precision", "bfloat16", "--compile",
    "--repeats", "3", "--warmup-steps", "15", "--train-steps", "40", "--rss-steps", "0",
    "--decode-sentences", "1000", "--uncached-sentences", "200",
    "--decode-max-tokens", "16000", "--threads", "8",
    "--out", str(REPO / "bench_results" / "bench_gpu.json"),
]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    extra = list(sys.argv[1:] if argv is None else argv)
    return bench.main([*GPU_ARGS, *extra])  # later options override the defaults above


if __name__ == "__main__":
    sys.exit(main())
