"""`make bench`'s data-preparation section (bench.py `--section prepare`): one prepare run
from scratch, its wall time and peak RSS; and the repeated corpus for `--data-scale`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_common import VOCAB, peak_rss_mb, rss_mb

# --------------------------------------------------------------------------- section: prepare


def section_prepare(args: argparse.Namespace) -> dict[str, Any]:
    """One `mtkit.data.prepare.prepare` run from scratch: wall time and this process's peak RSS."""
    import datasets

    from mtkit.config.load import config_from_dict
    from mtkit.data.prepare import prepare

    datasets.disable_progress_bars()
    if args.corpus == "multi30k":
        base = args.data_dir / "multi30k"
        train, valid, test = base / "train", base / "val", base / "test2016"
        dedup = True
    else:
        base, tat = args.cache_dir / "scale", args.data_dir / "tatoeba_anki_en_de"
        train, valid, test, dedup = base / "train", tat / "val", tat / "test", False
    rss_before = rss_mb()
    with tempfile.TemporaryDirectory(dir=args.cache_dir) as tmp:
        cfg = config_from_dict({
            "data": {
                "train": str(train), "valid": str(valid), "test": str(test),
                "prepared_dir": str(Path(tmp) / "prepared"), "dedup": dedup,
            },
            "tokenizer": {"vocab_size": VOCAB, "joint": True},
        })  # fmt: skip
        t = time.perf_counter()
        prepare(cfg, force=True)
        seconds = time.perf_counter() - t
        stats = json.loads((Path(tmp) / "prepared" / "stats.json").read_text())
    pairs = _train_pairs(stats)
    return {
        "seconds": seconds, "peak_rss_mb": peak_rss_mb(), "rss_after_imports_mb": rss_before,
        "train_pairs_kept": pairs, "dedup": dedup,
    }  # fmt: skip


def _train_pairs(stats: dict[str, Any]) -> int | None:
    """Kept training pairs from prepare's stats.json, wherever its layout puts them."""
    train = stats.get("train", stats.get("splits", {}).get("train"))
    if isinstance(train, dict):
        for key in ("kept", "pairs", "rows"):
            if isinstance(train.get(key), int):
                return int(train[key])
    return None


def build_scale_corpus(args: argparse.Namespace) -> Path:
    """`--scale-pairs` pairs made by repeating the Tatoeba en-de training set (cached)."""
    tat = args.data_dir / "tatoeba_anki_en_de"
    out = Path(args.cache_dir) / "scale"
    done = out / f".done-{args.scale_pairs}"
    if done.exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    for lang in ("en", "de"):
        lines = (tat / f"train.{lang}").read_bytes().splitlines(keepends=True)
        with open(out / f"train.{lang}", "wb") as f:
            for i in range(args.scale_pairs):
                f.write(lines[i % len(lines)])
    done.touch()
    return out
