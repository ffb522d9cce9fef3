"""Continuous batching without HTTP: a running search that sentences join, against `translate`.

    .venv/bin/python benchmarks/bench_stream.py runs/demo data/test.en
    .venv/bin/python benchmarks/bench_stream.py RUN SRC --lines 384 --in-flight 64 \
        --join-every 1,4 --repeats 3 --threads 1

What `mtkit serve --batching continuous` does with its model, in one process: `--in-flight`
sentences are kept in a `TranslationStream`; every `--join-every` steps, the sentences that
finished are replaced by the next lines of the source (as many clients sending one sentence
each would). Each repetition runs every cadence and then `Translator.translate` on all the
lines (sorted token-budget batches), so on a shared machine all see similar load; a figure is
the median (min-max) of the repetitions. Also reported: search steps, mean sentences per step
and outputs equal to `translate`'s. The run's decoding options (beam search) are used as they
are. Prints a table and writes JSON.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make `mtkit` importable
    sys.path.insert(0, str(REPO))

from benchmarks.bench_common import cpu_model, report_or_error, run_source_parser  # noqa: E402


def run_stream(translator: Any, lines: list[str], in_flight: int, every: int) -> dict[str, Any]:
    """Keep `in_flight` lines in one stream, refilled every `every` steps; outputs and counts."""
    from mtkit.translation.streaming import TranslationStream

    stream = TranslationStream(translator, translator.config.decoding)
    results: dict[int, str] = {}
    sent, steps, live = 0, 0, 0
    start = time.perf_counter()
    while len(results) < len(lines):
        free = min(in_flight - stream.sentences, len(lines) - sent)
        if steps % every == 0 and free > 0:
            keys = list(range(sent, sent + free))
            results.update((k, t.text) for k, t in stream.add(lines[sent : sent + free], keys))
            sent += free
        live += stream.sentences
        results.update((k, t.text) for k, t in stream.step())
        steps += 1
    seconds = time.perf_counter() - start
    outputs = [results[i] for i in range(len(lines))]
    return {"seconds": seconds, "steps": steps, "per_step": live / steps, "outputs": outputs}


def bench_stream(
    run: Path, source: Path, *, lines: int, in_flight: int, every: list[int], repeats: int,
    threads: int,
) -> dict[str, Any]:  # fmt: skip
    """Sentences/s of each join cadence and of `translate`, alternating (see the module doc)."""
    import torch

    from mtkit.translation.translator import Translator

    threads = threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    text = source.read_text(encoding="utf-8").splitlines()[:lines]
    translator = Translator.load(run, device="cpu")
    dec = translator.config.decoding
    translator.translate(text[:20], dec)  # warm-up: first calls allocate and load kernels
    names = [f"join every {n}" for n in every]
    seconds: dict[str, list[float]] = {name: [] for name in [*names, "translate"]}
    counts: dict[str, dict[str, Any]] = {}
    for _ in range(repeats):
        for name, n in zip(names, every, strict=True):
            counts[name] = run_stream(translator, text, in_flight, n)
            seconds[name].append(counts[name]["seconds"])
        start = time.perf_counter()
        reference = translator.translate(text, dec)
        seconds["translate"].append(time.perf_counter() - start)
    results: dict[str, dict[str, Any]] = {}
    for name, taken in seconds.items():
        speeds = [len(text) / s for s in taken]
        row: dict[str, Any] = {
            "sentences_per_s": statistics.median(speeds), "min": min(speeds), "max": max(speeds),
        }  # fmt: skip
        if name in counts:
            outputs = counts[name].pop("outputs")
            row |= {k: counts[name][k] for k in ("steps", "per_step")}
            row["same_as_translate"] = sum(a == b for a, b in zip(outputs, reference, strict=True))
        results[name] = row
    return {
        "run": str(run), "source": str(source), "sentences": len(text), "in_flight": in_flight,
        "beam": dec.beam_size, "precision": translator.precision_for(dec), "repeats": repeats,
        "threads": threads, "cpu": cpu_model(),
        "torch": torch.__version__, "results": results,
    }  # fmt: skip


def format_table(report: dict[str, Any]) -> str:
    """A Markdown table of the report's results."""
    base = report["results"]["translate"]["sentences_per_s"]
    rows = [
        f"| mode ({report['in_flight']} in flight) | sentences/s | min-max | vs translate | "
        "steps | sentences per step | same as translate |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in report["results"].items():
        extra = (
            f"{r['steps']} | {r['per_step']:.1f} | {r['same_as_translate']}/{report['sentences']}"
            if "steps" in r
            else " | | "
        )
        rows.append(
            f"| {name} | {r['sentences_per_s']:.1f} | {r['min']:.1f}-{r['max']:.1f} | "
            f"{r['sentences_per_s'] / base:.2f}x | {extra} |"
        )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = run_source_parser(__doc__, 384, "first N lines of the source")
    parser.add_argument("--in-flight", type=int, default=64, help="sentences kept in the search")
    parser.add_argument("--join-every", default="1,4", help="comma-separated step cadences")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="0: all CPUs available")
    parser.add_argument("--json", type=Path, default=Path("bench_results/bench_stream.json"))
    args = parser.parse_args(argv)
    return report_or_error(  # a bad --join-every is a ValueError: one error line too
        lambda: bench_stream(
            args.run, args.source, lines=args.lines, in_flight=args.in_flight,
            every=[int(n) for n in args.join_every.split(",")],
            repeats=args.repeats, threads=args.threads,
        ),
        format_table, args.json,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
