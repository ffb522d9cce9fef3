"""`make bench`: training throughput and MFU, decoding speed, data preparation time and memory.

    .venv/bin/python benchmarks/bench.py            # full run (~15-20 min on 2 CPU cores)
    .venv/bin/python benchmarks/bench.py --quick    # smoke run (~1-2 min)
    .venv/bin/python benchmarks/bench.py --data-scale   # also prepare 1,000,000 pairs

One fixed setup: d_model 256, 3+3 layers, 4 heads, FFN 1024, joint BPE vocabulary of 8000 and
a token budget of 4096 per batch, on Multi30k en-de (`--data-dir`, default ../shared/data).
Prints a table and writes JSON (bench_results/bench.json by default).
This file parses the arguments and runs each section in a subprocess (`--section NAME`); the
sections are in bench_train_sections.py, bench_decode_sections.py and bench_prepare_sections.py,
what they share (fixed model, config, batches, measurements) in bench_common.py.

How the figures are made (see README "Performance"):
- Every figure is the median (min-max) of `--repeats` repetitions. Each section runs in its
  own subprocess, so peak RSS is that section's alone.
- Precisions: `--precision float32,bfloat16` measures both side by side, alternating
  repetition by repetition in one process, from the same initial weights and batches. The
  default is float32, plus bfloat16 where `precision: auto` would pick it (CUDA with bf16; a
  CPU with AVX512-BF16/AMX whose bf16 matmul probes >= 1.5x fp32); the table's first line
  says what the CPU supports. Peak RSS comes from one more process per precision.
- Peak: the best of 3 large matmuls in the repetition's precision on the same threads,
  measured right before each repetition. MFU of a repetition = its model FLOP/s divided by
  the peak measured next to it: on a shared machine both see the same load.
- Model FLOPs come from the architecture (benchmarks/flops.py, checked against
  torch.utils.flop_counter in tests/unit/test_bench_flops.py); padding counts as waste.
- Training times mtkit.training.update.update (forward, loss, backward, clipping, optimizer
  step) plus building the batch from the prepared dataset, i.e. what `mtkit train` does per
  update. After the timed updates each precision's model is scored on the validation split
  (mean NLL per token, evaluated in float32): equal within noise means bf16 trains as well.
- Decoding times mtkit.search over test2016.en in token-budget batches (as translate does).
  Its model is the benchmark model trained for `--model-steps` updates (cached under
  bench_results/): decoding speed depends on output lengths, and a random model stops at
  random. `--decode-model random` uses random weights and forces every output to exactly
  FORCED_LEN tokens instead (also what `--quick` does when no trained model is cached).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make `benchmarks` and `mtkit` importable
    sys.path.insert(0, str(REPO))

from benchmarks.bench_common import (  # noqa: E402
    MAX_TOKENS,
    bf16_support,
    meta,
    model_path,
    require_multi30k,
    setup_torch,
    summary,
)
from benchmarks.bench_decode_sections import section_decode  # noqa: E402
from benchmarks.bench_prepare_sections import build_scale_corpus, section_prepare  # noqa: E402
from benchmarks.bench_table import format_table  # noqa: E402
from benchmarks.bench_train_sections import (  # noqa: E402
    section_model,
    section_train,
    section_train_memory,
)

logger = logging.getLogger("bench")


# --------------------------------------------------------------------------- arguments


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a ~1-2 minute smoke run")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument(
        "--precision", type=precision_list, default=None,
        help="comma-separated float32,bfloat16 (default: float32, and bfloat16 where `auto` "
        "picks it)",
    )  # fmt: skip
    p.add_argument("--compile", action="store_true", help="torch.compile the training model")
    p.add_argument("--threads", type=int, default=0, help="torch threads; 0 = all cores")
    p.add_argument(
        "--system-malloc", action="store_true",
        help="skip mtkit.runtime.keep_freed_memory (what train/translate do), to measure it",
    )  # fmt: skip
    p.add_argument(
        "--onednn-caches", action="store_true",
        help="skip mtkit.runtime.limit_onednn_caches in training (what train does), to measure it",
    )  # fmt: skip
    p.add_argument("--max-tokens", type=int, default=MAX_TOKENS, help="training token budget")
    p.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--out", type=Path, default=REPO / "bench_results" / "bench.json")
    p.add_argument("--cache-dir", type=Path, default=REPO / "bench_results")
    p.add_argument("--sections", default="train,decode,data", help="comma-separated subset")
    p.add_argument("--repeats", type=int, help="repetitions per figure (default 5; quick 3)")
    p.add_argument("--train-steps", type=int, help="updates per repetition (default 20)")
    p.add_argument("--warmup-steps", type=int, help="untimed updates first (default 5)")
    p.add_argument("--rss-steps", type=int, help="extra updates watching RSS (default 150)")
    p.add_argument("--decode-sentences", type=int, help="test2016 sentences (default 1000)")
    p.add_argument("--uncached-sentences", type=int, help="subset for cached/uncached (200)")
    p.add_argument("--decode-max-tokens", type=int, default=4000, help="source tokens/batch")
    p.add_argument("--decode-model", choices=["trained", "random"], default=None)
    p.add_argument("--model-steps", type=int, default=300, help="updates of the decode model")
    p.add_argument("--data-scale", action="store_true", help="also prepare 1,000,000 pairs")
    p.add_argument("--scale-pairs", type=int, default=1_000_000)
    p.add_argument("--section", help=argparse.SUPPRESS)  # internal: run one section
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)  # internal: its JSON
    p.add_argument("--corpus", default="multi30k", help=argparse.SUPPRESS)  # internal
    args = p.parse_args(argv)
    quick = args.quick
    defaults = {
        "repeats": 3 if quick else 5,
        "train_steps": 3 if quick else 20,
        "warmup_steps": 2 if quick else 5,
        "rss_steps": 0 if quick else 150,
        "decode_sentences": 100 if quick else 1000,
        "uncached_sentences": 30 if quick else 200,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.precisions = args.precision or ["float32"]  # main() adds bf16 where auto picks it
    args.precision = ",".join(args.precisions)
    if args.decode_model is None:
        trained_cached = model_path(args).exists()
        args.decode_model = "random" if quick and not trained_cached else "trained"
    return args


def precision_list(text: str) -> list[str]:
    """'float32,bfloat16' -> ['float32', 'bfloat16'] (argparse type)."""
    names = list(dict.fromkeys(x.strip() for x in text.split(",") if x.strip()))
    bad = [x for x in names if x not in ("float32", "bfloat16")]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"expected float32 and/or bfloat16, got {text!r}")
    return names


def forwarded(argv: list[str]) -> list[str]:
    """The user's arguments, without the internal ones, for a section subprocess."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--section", "--result", "--corpus"):
            skip = True
            continue
        if a.split("=")[0] in ("--section", "--result", "--corpus"):
            continue
        out.append(a)
    return out


# --------------------------------------------------------------------------- orchestration

SECTIONS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "train": section_train,
    "train_memory": section_train_memory,
    "model": section_model,
    "decode": section_decode,
    "prepare": section_prepare,
}


def run_section(name: str, argv: list[str], *extra: str) -> dict[str, Any]:
    """Run one section in a fresh Python process (its own peak RSS); returns its JSON."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        result = Path(f.name)
    try:
        cmd = [sys.executable, __file__, *forwarded(argv), "--section", name]
        cmd += ["--result", str(result), *extra]
        load = os.getloadavg()[0]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=REPO)
        data: dict[str, Any] = json.loads(result.read_text())
        data["wall_s"] = time.perf_counter() - start
        data["load_avg_1min_before"] = load
        data["load_avg_1min_after"] = os.getloadavg()[0]
        return data
    finally:
        result.unlink(missing_ok=True)


def data_section(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    """Prepare time and peak RSS, each repetition in its own process."""
    out: dict[str, Any] = {}
    corpora = ["multi30k"] + (["scale"] if args.data_scale else [])
    for corpus in corpora:
        if corpus == "scale":
            build_scale_corpus(args)
        runs = [run_section("prepare", argv, "--corpus", corpus) for _ in range(args.repeats)]
        out[corpus] = {
            "seconds": summary([r["seconds"] for r in runs]),
            "peak_rss_mb": summary([r["peak_rss_mb"] for r in runs]),
            "rss_after_imports_mb": summary([r["rss_after_imports_mb"] for r in runs]),
            "train_pairs_kept": runs[0]["train_pairs_kept"],
            "dedup": runs[0]["dedup"],
        }
        if corpus == "scale":
            out[corpus]["pairs_in"] = args.scale_pairs
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.section:
        result = SECTIONS[args.section](args)
        args.result.write_text(json.dumps(result, indent=2))
        return 0
    device = setup_torch(args)  # fails early and clearly on --device cuda without CUDA
    require_multi30k(args.data_dir, "bench")
    bf16 = bf16_support(device)
    choose_precisions(args, argv, bf16)
    wanted = [s.strip() for s in args.sections.split(",") if s.strip()]
    results: dict[str, Any] = {"meta": {**meta(args), "bf16": bf16}}
    start = time.perf_counter()
    if "train" in wanted:
        results["train"] = train_sections(args, argv)
    if "decode" in wanted:
        if args.decode_model == "trained" and not model_path(args).exists():
            logger.info("training the decode model (%d updates, cached) ...", args.model_steps)
            results["decode_model"] = run_section("model", argv)
        logger.info("decoding (%s) ...", args.precision)
        results["decode"] = run_section("decode", argv)
    if "data" in wanted:
        logger.info("data preparation ...")
        results["data"] = data_section(args, argv)
    results["meta"]["total_s"] = time.perf_counter() - start
    results["meta"]["load_avg_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(format_table(results))
    print(f"\nwrote {args.out}")
    return 0


def choose_precisions(args: argparse.Namespace, argv: list[str], bf16: dict[str, Any]) -> None:
    """Without --precision: float32, plus bfloat16 where `auto` picks it. The choice is passed
    on to the section processes (appended to `argv`)."""
    if not any(a.split("=")[0] == "--precision" for a in argv):
        args.precisions = ["float32"] + (["bfloat16"] if bf16["auto"] == "bfloat16" else [])
        args.precision = ",".join(args.precisions)
        argv += ["--precision", args.precision]
    if "bfloat16" in args.precisions and bf16["auto"] != "bfloat16":
        logger.warning("bfloat16 here: %s; expect tiny numbers", bf16["reason"])
    logger.info("precisions: %s (precision auto -> %s: %s)", args.precision, bf16["auto"],
                bf16["reason"])  # fmt: skip


def train_sections(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    """Timing of all precisions in one process, then one memory process per precision."""
    logger.info("training throughput (%s) ...", args.precision)
    timing = run_section("train", argv)
    out: dict[str, Any] = {k: v for k, v in timing.items() if k not in args.precisions}
    for p in args.precisions:
        logger.info("training memory (%s) ...", p)
        memory = run_section("train_memory", argv, "--precision", p)
        out[p] = {**timing[p], **{k: memory[k] for k in memory if "rss" in k or "gpu" in k}}
    return out


if __name__ == "__main__":
    sys.exit(main())
