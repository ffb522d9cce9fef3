"""mtkit vs JoeyNMT 2.3 end to end: each toolkit's own `train` command, one epoch, same data.

`compare_joeynmt.py` puts both models in one process on mtkit's batches and fused Adam: it
compares model and loss code. This script compares what a user of each toolkit gets: its
command line, its batching, its optimizer, its data pipeline. Both train the same model
(d_model 256, 3+3 layers, 4 heads, FFN 1024, tied joint BPE vocabulary of 8000, dropout 0.1,
label smoothing 0.1, clipping at 1.0, Adam) for one epoch over the first `--pairs` pairs of
Multi30k en-de with the same sentencepiece model, one after the other, `--repeats` times.

JoeyNMT needs its own environment (its requirements pin protobuf<3.21 and pull tensorboard;
it imports importlib_metadata without requiring it, and calls a sentencepiece method that
0.2.1 removed):

    python3 -m venv /tmp/joeyvenv
    /tmp/joeyvenv/bin/pip install torch==2.13.0 && /tmp/joeyvenv/bin/pip install joeynmt==2.3.0
    /tmp/joeyvenv/bin/pip install importlib_metadata sentencepiece==0.2.0
    .venv/bin/python benchmarks/compare_joeynmt_cli.py --joey-python /tmp/joeyvenv/bin/python

Tokens/s counts the non-padding source + target tokens of the epoch (the same for both) over
each toolkit's own training time (mtkit: `elapsed` in last.pt; JoeyNMT: its epoch log line);
the command's whole wall time (start-up, data loading, checkpoint) is reported beside it.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.bench_common import MAX_TOKENS, MODEL, VOCAB, require_multi30k, summary  # noqa: E402
from benchmarks.compare_joeynmt import joey_model_config  # noqa: E402

MTKIT = [sys.executable, "-m", "mtkit"]
JOEY_EPOCH = re.compile(
    r"Epoch\s+1, total training loss: [\d.]+, num\. of seqs: (\d+), num\. of tokens: (\d+), "
    r"([\d.]+)\[sec\]"
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--joey-python",
        type=Path,
        default=Path("/tmp/joeyvenv/bin/python"),
        help="python of an environment where joeynmt 2.3 is installed",
    )
    p.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--work-dir", type=Path, default=REPO / "bench_results" / "joeynmt_cli")
    p.add_argument("--out", type=Path, default=REPO / "bench_results" / "joeynmt_cli.json")
    p.add_argument("--pairs", type=int, default=4000, help="training pairs (first N)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--max-tokens",
        type=int,
        default=MAX_TOKENS,
        help="mtkit training.max_tokens (source + target, padded)",
    )
    p.add_argument(
        "--joey-batch-size",
        type=int,
        default=MAX_TOKENS,
        help="JoeyNMT batch_size with batch_type token (max(src, trg) x sentences)",
    )
    return p.parse_args(argv)


def write_subset(src_prefix: Path, dst_prefix: Path, n: int) -> None:
    """The first n lines of src_prefix.{en,de} as dst_prefix.{en,de}."""
    for lang in ("en", "de"):
        lines = (src_prefix.parent / f"{src_prefix.name}.{lang}").read_text("utf-8").splitlines()
        (dst_prefix.parent / f"{dst_prefix.name}.{lang}").write_text(
            "\n".join(lines[:n]) + "\n", encoding="utf-8"
        )


def mtkit_config(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """mtkit's experiment: the benchmark model, one epoch, no validation or extra saves."""
    return {
        "name": "joey_cli_mtkit",
        "run_dir": str(work / "mtkit_run"),
        "data": {"train": str(work / "train"), "valid": str(work / "val"),
                 "prepared_dir": str(work / "prepared")},
        "tokenizer": {"vocab_size": VOCAB, "joint": True},
        "model": {**MODEL, "dropout": 0.1, "norm": "pre"},
        "training": {"device": "cpu", "threads": args.threads, "max_tokens": args.max_tokens,
                     "max_epochs": 1, "max_steps": 10**6, "valid_every": 10**6,
                     "lr": 5e-4, "warmup_steps": 100, "valid_bleu_sentences": 0,
                     "best_metric": "loss", "label_smoothing": 0.1, "clip_norm": 1.0,
                     "log_every": 50},
    }  # fmt: skip


def joey_config(args: argparse.Namespace, work: Path, spm_model: Path) -> dict[str, Any]:
    """The same experiment in JoeyNMT 2.3's format, on the same sentencepiece model."""
    side = {"level": "bpe", "tokenizer_type": "sentencepiece", "max_length": 100,
            "voc_file": str(work / "joey_vocab.txt"),
            "tokenizer_cfg": {"model_file": str(spm_model)}}  # fmt: skip
    return {
        "name": "joey_cli",
        "joeynmt_version": "2.3.0",
        "model_dir": str(work / "joey_run"),
        "use_cuda": False,
        "data": {"train": str(work / "train"), "dev": str(work / "val"),
                 "dataset_type": "plain", "src": {"lang": "en", **copy.deepcopy(side)},
                 "trg": {"lang": "de", **copy.deepcopy(side)}},
        "testing": {"beam_size": 1},
        "training": {"optimizer": "adam", "adam_betas": [0.9, 0.98], "learning_rate": 5e-4,
                     "scheduling": "warmupinversesquareroot", "learning_rate_warmup": 100,
                     "learning_rate_min": 1e-8, "label_smoothing": 0.1,
                     "clip_grad_norm": 1.0, "batch_size": args.joey_batch_size,
                     "batch_type": "token", "normalization": "tokens", "epochs": 1,
                     "validation_freq": 10**6, "logging_freq": 50, "overwrite": True,
                     "shuffle": True, "random_seed": 42},
        "model": joey_model_config(),
    }  # fmt: skip


def write_joey_vocab(spm_model: Path, path: Path) -> int:
    """JoeyNMT's vocabulary file: the sentencepiece pieces in id order (its specials dedupe)."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(spm_model))
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    path.write_text("\n".join(pieces) + "\n", encoding="utf-8")
    return len(pieces)


def run(cmd: list[str], log: Path, env: dict[str, str]) -> float:
    """Run a command to completion with its output in log; its wall time in seconds."""
    t = time.perf_counter()
    with log.open("w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"compare_joeynmt_cli: {' '.join(cmd[:4])} failed; see {log}")
    return wall


def mtkit_epoch(work: Path) -> tuple[float, int]:
    """mtkit's training seconds and updates for the finished run (from last.pt)."""
    import torch

    state = torch.load(work / "mtkit_run" / "last.pt", weights_only=True)["train_state"]
    return float(state["elapsed"]), int(state["step"])


def joey_epoch(work: Path, log: Path) -> tuple[float, int, int]:
    """JoeyNMT's training seconds, target tokens and updates of its epoch."""
    m = JOEY_EPOCH.search(log.read_text("utf-8", errors="replace"))
    if m is None:
        raise SystemExit(f"compare_joeynmt_cli: no epoch summary line in {log}")
    steps = max(int(p.stem) for p in (work / "joey_run").glob("*.ckpt") if p.stem.isdigit())
    return float(m.group(3)), int(m.group(2)), steps


def setup(args: argparse.Namespace, work: Path, env: dict[str, str]) -> dict[str, Any]:
    """Write the data subset and both configs, prepare mtkit's data once (untimed)."""
    import yaml

    from mtkit.data.batching import load_prepared

    m30k = require_multi30k(args.data_dir, "compare_joeynmt_cli")
    write_subset(m30k / "train", work / "train", args.pairs)
    write_subset(m30k / "val", work / "val", 200)
    (work / "mtkit.yaml").write_text(yaml.safe_dump(mtkit_config(args, work)), encoding="utf-8")
    run([*MTKIT, "prepare", str(work / "mtkit.yaml")], work / "mtkit_prepare.log", env)
    spm_model = work / "prepared" / "spm.model"
    vocab = write_joey_vocab(spm_model, work / "joey_vocab.txt")
    joey = yaml.safe_dump(joey_config(args, work, spm_model))
    (work / "joey.yaml").write_text(joey, encoding="utf-8")
    train = load_prepared(work / "prepared")["train"]
    tokens = sum(len(r) for r in train["src_ids"]) + sum(len(r) for r in train["tgt_ids"])
    return {"vocab": vocab, "tokens_per_epoch": tokens}


def one_repeat(
    args: argparse.Namespace, work: Path, env: dict[str, str], rep: int, tokens: int
) -> dict[str, float]:
    """One epoch with mtkit, then one with JoeyNMT: their rates, times and update counts."""
    wall_m = run([*MTKIT, "train", str(work / "mtkit.yaml"), "--overwrite"],
                 work / f"mtkit_train_{rep}.log", env)  # fmt: skip
    sec_m, steps_m = mtkit_epoch(work)
    log = work / f"joey_train_{rep}.log"
    joey = [str(args.joey_python), "-m", "joeynmt", "train", str(work / "joey.yaml"), "--skip-test"]
    wall_j = run(joey, log, env)
    sec_j, joey_tgt_tokens, steps_j = joey_epoch(work, log)
    line = f"mtkit {sec_m:.1f} s ({wall_m:.1f} s wall), JoeyNMT {sec_j:.1f} s ({wall_j:.1f})"
    print(f"repeat {rep + 1}: {line}", file=sys.stderr, flush=True)
    return {
        "mtkit_tok_s": tokens / sec_m, "joey_tok_s": tokens / sec_j, "ratio": sec_j / sec_m,
        "mtkit_wall_s": wall_m, "joey_wall_s": wall_j, "wall_ratio": wall_j / wall_m,
        "mtkit_updates": steps_m, "joey_updates": steps_j, "joey_target_tokens": joey_tgt_tokens,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.joey_python.exists():
        raise SystemExit(f"compare_joeynmt_cli: {args.joey_python} not found; see the docstring")
    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    threads = str(args.threads)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    meta = setup(args, work, env)
    reps = [one_repeat(args, work, env, r, meta["tokens_per_epoch"]) for r in range(args.repeats)]
    result = {
        "meta": {**meta, "pairs": args.pairs, "threads": args.threads,
                 "mtkit_max_tokens": args.max_tokens, "joey_batch_size": args.joey_batch_size,
                 "load_avg": os.getloadavg()},
        **{k: summary([r[k] for r in reps]) for k in reps[0]},
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
