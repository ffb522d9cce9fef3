"""Decoding speed of one trained model: mtkit and CTranslate2, float32 and int8, in one table.

    .venv/bin/python benchmarks/bench_decode.py runs/demo data/test.en --ref data/test.de
    .venv/bin/python benchmarks/bench_decode.py RUN SRC --ref REF --lines 500 --threads 1

Engines: mtkit float32 (the run's `decoding.attention_kernel`, auto: the native kernels where
they build), mtkit float32 with `--early-stopping heuristic` (beam search stops a sentence once
its best live hypothesis, ended now, would not win; the default rule searches until none could
win at any length), mtkit float32 with PyTorch's attention and log-softmax (`--attention-kernel
torch`), mtkit bfloat16 (`decoding.precision: bfloat16`, where this CPU runs it natively fast:
where `precision: auto` picks it, or always with `--bf16 always`), mtkit int8 (`--quantize
int8`: dynamic int8 Linears), CTranslate2 float32 and int8 (the
run exported once to a temporary folder; int8 is its compute type, as `--engine ctranslate2
--quantize int8` runs it). Every engine translates the same first `--lines` lines with the run's
decoding options; each repetition runs every engine once, in a rotating order, so on a shared
machine all of them see the same load; a figure is the median of `--repeats`. Two clocks: wall
time, and the process's CPU time (steadier when other processes take turns on the cores).
Printed: sentences/s and output tokens/s (pieces + EOS) for greedy and beam 5, BLEU of each
engine on `--ref`, outputs identical to mtkit float32, the mtkit/CTranslate2 ratios at equal
precision (and mtkit's native / PyTorch kernels, bfloat16 / float32), and what `precision: auto`
chose here and why; then decode time per sentence at beams 1, 5,
10 and at three `--batch-tokens` budgets; the CPU model, its torch capability and the flags that
matter (AVX-512, VNNI, BF16, AMX). Writes the report as JSON too.
"""

from __future__ import annotations

import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make `mtkit` importable
    sys.path.insert(0, str(REPO))

from benchmarks.bench_common import (  # noqa: E402
    cpu_fields,
    cpu_flags,
    cpu_model,
    report_or_error,
    run_source_parser,
)
from mtkit.config.schema import DecodingConfig  # noqa: E402

ENGINES = (
    "mtkit-fp32",
    "mtkit-fp32-heuristic",
    "mtkit-fp32-torch-kernels",
    "mtkit-int8",
    "ct2-fp32",
    "ct2-int8",
)
BF16 = "mtkit-bf16"  # an engine only where bf16 is timed (`--bf16`)
PAIRS = (  # equal precision; the first: mtkit's native kernels; the last: bf16 against fp32
    ("mtkit-fp32", "mtkit-fp32-torch-kernels"),
    ("mtkit-fp32", "ct2-fp32"),
    ("mtkit-fp32-heuristic", "ct2-fp32"),
    ("mtkit-int8", "ct2-int8"),
    (BF16, "mtkit-fp32"),
)
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_info() -> dict[str, Any]:
    """CPU model, torch's CPU capability and the instruction-set flags decoding depends on."""
    import torch

    fields = cpu_fields()
    flags = cpu_flags(fields)
    return {
        "cpu_model": cpu_model(fields),
        "cpus": os.cpu_count(),
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
        "flags": [f for f in FLAGS if f in flags],
    }


@dataclass(frozen=True)
class WithOptions:
    """An engine that decodes with some decoding keys changed (e.g. early_stopping)."""

    engine: Any
    changes: dict[str, Any]

    def translate(self, lines: list[str], dec: DecodingConfig) -> Any:
        return self.engine.translate(lines, replace(dec, **self.changes))


def bf16_choice(mode: str) -> dict[str, Any]:
    """Whether to time mtkit in bfloat16 (`mode` auto: where `precision: auto` picks it on
    this CPU; always; never), with auto's choice and its reason."""
    import torch

    from mtkit.runtime import choose_precision, probe_bf16

    choice = choose_precision(torch.device("cpu"), probe_bf16(torch.device("cpu")))
    timed = mode == "always" or (mode == "auto" and choice.precision == "bfloat16")
    return {"timed": timed, "auto": choice.precision, "reason": choice.reason}


def load_engines(run: Path, folder: Path, threads: int, bf16: bool = False) -> dict[str, Any]:
    """The six engines (seven with `bf16`); the run is exported (float32) into `folder` for
    CTranslate2."""
    from mtkit.export.ctranslate2 import export_ctranslate2
    from mtkit.translation.ctranslate2_engine import CT2Translator
    from mtkit.translation.translator import Translator

    export = export_ctranslate2(run, folder / "ct2")
    fp32 = Translator.load(run, device="cpu")
    return {
        "mtkit-fp32": fp32,
        "mtkit-fp32-heuristic": WithOptions(fp32, {"early_stopping": "heuristic"}),
        "mtkit-fp32-torch-kernels": WithOptions(fp32, {"attention_kernel": "torch"}),
        "mtkit-int8": Translator.load(run, device="cpu", quantize="int8"),
        **({BF16: WithOptions(fp32, {"precision": "bfloat16"})} if bf16 else {}),
        "ct2-fp32": CT2Translator.load(export, device="cpu", threads=threads),
        "ct2-int8": CT2Translator.load(export, device="cpu", threads=threads, compute_type="int8"),
    }


def time_alternating(
    engines: dict[str, Any], lines: list[str], dec: DecodingConfig, repeats: int
) -> tuple[dict[str, dict[str, list[float]]], dict[str, list[str]]]:
    """Seconds (wall, cpu) of each repetition per engine, and each engine's outputs."""
    names = list(engines)
    for name in names:  # warm-up: first calls allocate, load kernels, build primitives
        engines[name].translate(lines[:20], dec)
    seconds: dict[str, dict[str, list[float]]] = {n: {"wall": [], "cpu": []} for n in names}
    outputs: dict[str, list[str]] = {}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            wall, cpu = time.perf_counter(), time.process_time()
            outputs[name] = engines[name].translate(lines, dec)
            seconds[name]["wall"].append(time.perf_counter() - wall)
            seconds[name]["cpu"].append(time.process_time() - cpu)
    return seconds, outputs


def section_engines(
    engines: dict[str, Any],
    lines: list[str],
    refs: list[str] | None,
    dec: DecodingConfig,
    repeats: int,
    tokenize: str,
) -> dict[str, Any]:
    """Greedy and beam 5: speed, BLEU and agreement of every engine."""
    from mtkit.evaluation.metrics import corpus_scores

    tgt = engines["mtkit-fp32"].tokenizers.tgt
    report: dict[str, Any] = {}
    for mode, beam in (("greedy", 1), ("beam 5", 5)):
        seconds, outputs = time_alternating(engines, lines, replace(dec, beam_size=beam), repeats)
        rows = {}
        for name, hyps in outputs.items():
            tokens = sum(len(p) + 1 for p in tgt.encode(hyps))  # output pieces + EOS
            wall, cpu = (statistics.median(seconds[name][c]) for c in ("wall", "cpu"))
            rows[name] = {
                "sentences_per_s": len(lines) / wall, "tokens_per_s": tokens / wall,
                "cpu_sentences_per_s": len(lines) / cpu, "cpu_tokens_per_s": tokens / cpu,
                "seconds": seconds[name],
                "same_as_mtkit_fp32": sum(
                    a == b for a, b in zip(hyps, outputs["mtkit-fp32"], strict=True)
                ),
            }  # fmt: skip
            if refs is not None:
                found = corpus_scores(hyps, [refs], ["bleu"], tokenize)
                rows[name]["bleu"] = found[0].score
        report[mode] = rows
    return report


def section_scaling(
    engines: dict[str, Any],
    lines: list[str],
    dec: DecodingConfig,
    repeats: int,
    settings: Sequence[tuple[str, DecodingConfig]],
) -> dict[str, dict[str, float]]:
    """Milliseconds (CPU time) per sentence of the float32 engines under each setting."""
    pair = {n: engines[n] for n in ("mtkit-fp32", "ct2-fp32")}
    result: dict[str, dict[str, float]] = {}
    for label, options in settings:
        seconds, _ = time_alternating(pair, lines, options, repeats)
        result[label] = {
            n: 1000 * statistics.median(s["cpu"]) / len(lines) for n, s in seconds.items()
        }
    return result


def bench_decode(
    run: Path,
    source: Path,
    ref: Path | None,
    *,
    lines: int = 500,
    repeats: int = 3,
    threads: int = 1,
    tokenize: str | None = None,
    scaling_lines: int = 200,
    bf16: str = "auto",
) -> dict[str, Any]:
    """The whole report (see the module docstring) as a dict; the scaling sections use the
    first `scaling_lines` lines and one repetition fewer, to keep the run to a few minutes."""
    import torch

    torch.set_num_threads(threads)
    text = source.read_text(encoding="utf-8").splitlines()[:lines]
    refs = ref.read_text(encoding="utf-8").splitlines()[:lines] if ref else None
    load_start = os.getloadavg()
    precision = bf16_choice(bf16)
    with tempfile.TemporaryDirectory(prefix="bench_decode_") as tmp:
        engines = load_engines(run, Path(tmp), threads, precision["timed"])
        # float32 for every engine but mtkit-bf16 (the run's `auto` may pick bf16 on this CPU)
        dec = replace(engines["mtkit-fp32"].config.decoding, precision="float32")
        tokenize = tokenize or engines["mtkit-fp32"].config.evaluation.tokenize
        main = section_engines(engines, text, refs, dec, repeats, tokenize)
        native = engines["mtkit-fp32"].kernels.get(dec.attention_kernel) is not None
        scaling_repeats = max(1, repeats - 1)
        beams = [(f"beam {b}", replace(dec, beam_size=b)) for b in (1, 5, 10)]
        budgets = [
            (f"{t} tokens", replace(dec, beam_size=5, max_tokens=t)) for t in (500, 2000, 8000)
        ]
        few = text[:scaling_lines]
        by_beam = section_scaling(engines, few, dec, scaling_repeats, beams)
        by_batch = section_scaling(engines, few, dec, scaling_repeats, budgets)
    return {
        "run": str(run), "source": str(source), "reference": str(ref) if ref else None,
        "sentences": len(text), "scaling_sentences": min(scaling_lines, len(text)),
        "repeats": repeats, "threads": threads, "tokenize": tokenize,
        "decoding": {"length_penalty": dec.length_penalty, "max_tokens": dec.max_tokens},
        "torch": torch.__version__, "ctranslate2": _ct2_version(), **cpu_info(),
        "mtkit_kernels": "native" if native else "torch", "bf16": precision,
        "load_avg_start": load_start, "load_avg_end": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "engines": main, "beam_scaling_ms": by_beam, "batch_tokens_ms": by_batch,
    }  # fmt: skip


def _ct2_version() -> str:
    from mtkit.translation.ctranslate2_engine import require_ctranslate2

    return str(require_ctranslate2().__version__)


def format_report(r: dict[str, Any]) -> str:
    """Markdown tables: engines, ratios, beam and batch scaling."""
    lines = [
        f"{r['cpu_model']} ({r['torch_capability']}; {' '.join(r['flags'])}), {r['threads']} "
        f"thread(s), torch {r['torch']}, CTranslate2 {r['ctranslate2']}, mtkit-fp32 kernels "
        f"{r['mtkit_kernels']}, {r['sentences']} "
        f"sentences, median of {r['repeats']}, load average {r['load_avg_start'][0]:.1f} -> "
        f"{r['load_avg_end'][0]:.1f}",
        f"precision auto -> {r['bf16']['auto']} ({r['bf16']['reason']}); mtkit-bf16 "
        + ("timed" if r["bf16"]["timed"] else "not timed (`--bf16 always` times it)"),
        "",
        "| search | engine | sent/s (CPU) | tokens/s (CPU) | sent/s (wall) | BLEU | same as "
        "mtkit fp32 |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, rows in r["engines"].items():
        for name, x in rows.items():
            bleu = f"{x['bleu']:.2f}" if "bleu" in x else "-"
            lines.append(
                f"| {mode} | {name} | {x['cpu_sentences_per_s']:.1f} | "
                f"{x['cpu_tokens_per_s']:.0f} | {x['sentences_per_s']:.1f} | {bleu} | "
                f"{x['same_as_mtkit_fp32']}/{r['sentences']} |"
            )
    lines += ["", "| search | engines | CPU time | wall |", "|---|---|---|---|"]
    for mode, rows in r["engines"].items():
        for ours, theirs in PAIRS:
            if ours not in rows:
                continue
            cpu = rows[ours]["cpu_sentences_per_s"] / rows[theirs]["cpu_sentences_per_s"]
            wall = rows[ours]["sentences_per_s"] / rows[theirs]["sentences_per_s"]
            lines.append(f"| {mode} | {ours} / {theirs} | {cpu:.2f}x | {wall:.2f}x |")
    for title, key in (("beam", "beam_scaling_ms"), ("batch", "batch_tokens_ms")):
        lines += [
            "", f"| {title} ({r['scaling_sentences']} sentences) | mtkit-fp32 CPU ms/sent | "
            "ct2-fp32 CPU ms/sent | ratio |", "|---|---|---|---|",
        ]  # fmt: skip
        for label, ms in r[key].items():
            ratio = ms["ct2-fp32"] / ms["mtkit-fp32"]
            lines.append(
                f"| {label} | {ms['mtkit-fp32']:.2f} | {ms['ct2-fp32']:.2f} | {ratio:.2f}x |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = run_source_parser(__doc__ or "", 500, "first N lines of the source")
    parser.add_argument("--ref", type=Path, help="reference translations (for BLEU)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tokenize", help="sacreBLEU tokenizer (default: the run's)")
    parser.add_argument("--scaling-lines", type=int, default=200, help="lines for the scaling")
    parser.add_argument(
        "--bf16",
        choices=["auto", "always", "never"],
        default="auto",
        help="time mtkit in bfloat16: where precision auto picks it (auto)",
    )
    parser.add_argument("--json", type=Path, default=Path("bench_results/bench_decode.json"))
    args = parser.parse_args(argv)
    logging.getLogger("sacrebleu").setLevel(logging.ERROR)  # its hints on tokenized text
    return report_or_error(
        lambda: bench_decode(
            args.run, args.source, args.ref, lines=args.lines, repeats=args.repeats,
            threads=args.threads, tokenize=args.tokenize, scaling_lines=args.scaling_lines,
            bf16=args.bf16,
        ),
        format_report, args.json,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
