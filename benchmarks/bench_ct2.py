"""Beam-search speed of one model in mtkit (PyTorch) and in CTranslate2 (float32 and int8).

    .venv/bin/python benchmarks/bench_ct2.py runs/demo data/test.en
    .venv/bin/python benchmarks/bench_ct2.py runs/demo data/test.en --lines 300 --threads 2

The run (or checkpoint) is exported to CTranslate2 twice (float32, int8) in a temporary folder.
Each repetition translates the same lines with every engine in turn (mtkit, float32, int8), so
on a shared machine all three see similar load; a figure is the median (min-max) of
`--repeats` repetitions, after one untimed warm-up batch per engine. Same decoding options for
all: the run's `decoding` section with `--beam`. Also reported: mean output length in pieces
(speed depends on it) and how many outputs equal mtkit's. Prints a table and writes JSON.
`bench_ct2(...)` returns the same dict, for benchmarks/bench.py.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make `mtkit` importable
    sys.path.insert(0, str(REPO))

from benchmarks.bench_common import cpu_model, report_or_error, run_source_parser  # noqa: E402

ENGINES = ("mtkit", "ct2-float32", "ct2-int8")


def _time(fn: Callable[[], list[str]]) -> tuple[float, list[str]]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def bench_ct2(
    run: Path,
    source: Path,
    *,
    lines: int = 500,
    beam: int = 5,
    repeats: int = 3,
    threads: int = 0,
) -> dict[str, Any]:
    """Sentences/s of mtkit and CTranslate2 float32/int8 on the first `lines` lines of `source`.

    `threads` 0 means every CPU this process may use (torch and CTranslate2 alike).
    """
    import torch

    from mtkit.export.ctranslate2 import export_ctranslate2
    from mtkit.translation.ctranslate2_engine import CT2Translator
    from mtkit.translation.translator import Translator

    threads = threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    text = source.read_text(encoding="utf-8").splitlines()[:lines]
    mtkit = Translator.load(run, device="cpu")
    options = replace(mtkit.config.decoding, beam_size=beam)
    translators: dict[str, Any] = {"mtkit": mtkit}
    with tempfile.TemporaryDirectory(prefix="bench_ct2_") as tmp:
        for quantization in ("float32", "int8"):
            out = export_ctranslate2(run, Path(tmp) / quantization, quantization=quantization)
            translators[f"ct2-{quantization}"] = CT2Translator.load(
                out, device="cpu", threads=threads
            )
        seconds: dict[str, list[float]] = {name: [] for name in ENGINES}
        outputs: dict[str, list[str]] = {}
        for name in ENGINES:  # warm-up: first calls allocate and load kernels
            translators[name].translate(text[:20], options)
        for _ in range(repeats):
            for name in ENGINES:
                took, outputs[name] = _time(partial(translators[name].translate, text, options))
                seconds[name].append(took)
    results = _engine_results(len(text), seconds, outputs, mtkit.tokenizers.tgt)
    return {
        "run": str(run),
        "source": str(source),
        "sentences": len(text),
        "beam": beam,
        "repeats": repeats,
        "threads": threads,
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "ctranslate2": _ct2_version(),
        "results": results,
    }


def _engine_results(
    sentences: int, seconds: dict[str, list[float]], outputs: dict[str, list[str]], tgt: Any
) -> dict[str, dict[str, Any]]:
    """Per engine: sentences/s (median, min, max), mean output pieces, outputs equal to mtkit's."""
    results = {}
    for name in ENGINES:
        hyps = outputs[name]
        speeds = [sentences / s for s in seconds[name]]
        results[name] = {
            "sentences_per_s": statistics.median(speeds),
            "min": min(speeds),
            "max": max(speeds),
            "mean_output_pieces": sum(map(len, tgt.encode(hyps))) / max(1, len(hyps)),
            "same_as_mtkit": sum(a == b for a, b in zip(hyps, outputs["mtkit"], strict=True)),
        }
    return results


def _ct2_version() -> str:
    from mtkit.translation.ctranslate2_engine import require_ctranslate2

    return str(require_ctranslate2().__version__)


def format_table(report: dict[str, Any]) -> str:
    """A Markdown table of the report's results (README-ready)."""
    mtkit = report["results"]["mtkit"]["sentences_per_s"]
    n = report["sentences"]
    rows = [
        f"| engine | sentences/s (beam {report['beam']}) | min-max | speed-up | "
        f"mean output pieces | same output as mtkit |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in report["results"].items():
        rows.append(
            f"| {name} | {r['sentences_per_s']:.1f} | {r['min']:.1f}-{r['max']:.1f} | "
            f"{r['sentences_per_s'] / mtkit:.1f}x | {r['mean_output_pieces']:.1f} | "
            f"{r['same_as_mtkit']}/{n} |"
        )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = run_source_parser(__doc__, 500, "first N lines of the source")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="0: all CPUs available")
    parser.add_argument("--json", type=Path, default=Path("bench_results/bench_ct2.json"))
    args = parser.parse_args(argv)
    return report_or_error(
        lambda: bench_ct2(
            args.run, args.source, lines=args.lines, beam=args.beam, repeats=args.repeats,
            threads=args.threads,
        ),
        format_table, args.json,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
