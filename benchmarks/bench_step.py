"""What one cached decoder step costs, by the number of rows it carries.

    .venv/bin/python benchmarks/bench_step.py runs/demo
    .venv/bin/python benchmarks/bench_step.py RUN --rows 1,5,40,165,320,1500 \
        --precisions float32,bfloat16 --repeats 2 --threads 1

For each precision and row count: a KV cache of that many rows (source sentences of `--src-len`
tokens) is filled to `--position` target tokens, then one step is timed as the searches run it:
`DecoderCache.select` (a beam reorder), `decode_step` and the float32 log-softmax over the
vocabulary, with the kernels `--kernels` picks (the values of `decoding.attention_kernel`;
default: the run's, so native where they build). CPU time per step (`time.process_time`, so
other jobs on a shared machine count little) and per row; each figure is the median over
`--repeats` passes over all sizes. It tells the fixed cost of a step (few rows: the tail of a
search, a server with few clients) from the cost per row (`translate`'s large batches). Prints a
table and writes JSON.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make `mtkit` importable
    sys.path.insert(0, str(REPO))

from benchmarks.bench_common import cpu_model, report_or_error  # noqa: E402


def cpu_ms(fn: Callable[[], object], calls: int) -> float:
    """CPU milliseconds per call of `fn`, after one warm-up call."""
    fn()
    start = time.process_time()
    for _ in range(calls):
        fn()
    return (time.process_time() - start) / calls * 1000.0


def step_ms(model: Any, rows: int, src_len: int, position: int, token: int) -> float:
    """CPU ms of select + decode_step + log-softmax for `rows` rows at `position`."""
    import torch

    from mtkit.search.common import normalise

    src = torch.full((rows, src_len), token)  # (rows, src_len)
    src_mask = torch.ones(rows, src_len, dtype=torch.bool)  # (rows, src_len)
    cache = model.init_cache(model.encode(src, src_mask), src_mask)
    tokens = torch.full((rows,), token)  # (rows,)
    for _ in range(position):
        model.decode_step(tokens, cache)
    order = torch.arange(rows)  # (rows,) a reorder that keeps every row

    def step() -> object:
        stepped = cache.select(order)  # a fresh cache each call: the position stays fixed
        return normalise(model.decode_step(tokens, stepped), model.log_softmax_kernel)

    return cpu_ms(step, max(5, 300 // rows))


def bench_step(
    run: Path, *, rows: list[int], precisions: list[str], repeats: int, threads: int,
    src_len: int, position: int, kernels: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Median CPU ms per step for each (precision, rows), sizes alternating within a pass."""
    import torch

    from mtkit.config.schema import AttentionKernel
    from mtkit.model.transformer import Transformer
    from mtkit.runtime import autocast_context
    from mtkit.translation.translator import Translator

    if threads:
        torch.set_num_threads(threads)
    translator = Translator.load(run, device="cpu")
    dec = translator.config.decoding
    choice = dec.attention_kernel if kernels is None else cast(AttentionKernel, kernels)
    translator.use_attention_kernel(replace(dec, attention_kernel=choice))
    native = translator.kernels[choice] is not None
    model = translator.model
    if not isinstance(model, Transformer):
        raise ValueError(f"{run}: one model expected, not an ensemble")
    token = translator.tokenizers.src.vocab_size - 1  # any real piece
    taken: dict[str, dict[int, list[float]]] = {p: {n: [] for n in rows} for p in precisions}
    with torch.inference_mode():
        for _ in range(repeats):
            for precision in precisions:
                with autocast_context(translator.device, precision):
                    for n in rows:
                        taken[precision][n].append(step_ms(model, n, src_len, position, token))
    results = {
        p: {str(n): statistics.median(ms) for n, ms in by_rows.items()}
        for p, by_rows in taken.items()
    }
    return {
        "run": str(run), "rows": rows, "src_len": src_len, "position": position,
        "repeats": repeats, "threads": torch.get_num_threads(),
        "kernels": "native" if native else "torch",
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
        "ms_per_step": results,
    }  # fmt: skip


def format_table(report: dict[str, Any]) -> str:
    """A Markdown table: ms per step and us per row, one row per batch size."""
    precisions = list(report["ms_per_step"])
    head = " | ".join(f"{p} ms/step | {p} us/row" for p in precisions)
    lines = [f"| rows | {head} |", "|---" * (1 + 2 * len(precisions)) + "|"]
    for n in report["rows"]:
        cells = []
        for p in precisions:
            ms = report["ms_per_step"][p][str(n)]
            cells.append(f"{ms:.2f} | {ms / n * 1000:.0f}")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    cpu = f"{report['cpu']}, {report['cpu_capability']}, torch {report['torch']}"
    lines.append(
        f"\nCPU time, median of {report['repeats']}; {report['threads']} thread(s); "
        f"{report['kernels']} kernels; {cpu}"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("run", type=Path, help="run directory or checkpoint")
    parser.add_argument("--rows", default="1,5,40,165,320,1500", help="comma-separated sizes")
    parser.add_argument("--precisions", default="float32,bfloat16", help="comma-separated")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="0: torch's default")
    parser.add_argument("--src-len", type=int, default=15, help="source tokens per row")
    parser.add_argument("--position", type=int, default=8, help="target tokens already cached")
    parser.add_argument("--kernels", choices=["auto", "native", "torch"], default=None,
                        help="decoding.attention_kernel (default: the run's)")  # fmt: skip
    parser.add_argument("--json", type=Path, default=Path("bench_results/bench_step.json"))
    args = parser.parse_args(argv)
    return report_or_error(  # a bad --rows is a ValueError: one error line too
        lambda: bench_step(
            args.run, rows=[int(n) for n in args.rows.split(",")],
            precisions=args.precisions.split(","), repeats=args.repeats,
            threads=args.threads, src_len=args.src_len, position=args.position,
            kernels=args.kernels,
        ),
        format_table, args.json,
    )  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
