"""A tiny parallel corpus and config for the prepare tests (en-de, word-by-word "translations")."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before datasets is imported: never wait on the hub

import datasets

from mtkit.config.load import config_from_dict
from mtkit.config.schema import ExperimentConfig
from mtkit.data.prepare import load_stats, prepare

EN = "the a cat dog sees runs house tree big small red green walks sleeps old new".split()
DE = "der die Katze Hund sieht läuft Haus Baum groß klein rot grün geht schläft alt neu".split()
LEXICON = dict(zip(EN, DE, strict=True))


def corpus(n: int = 200, seed: int = 0) -> tuple[list[str], list[str]]:
    """n distinct (en, de) pairs; de is a word-by-word 'translation' so lengths match."""
    rng = random.Random(seed)
    seen: dict[str, str] = {}
    while len(seen) < n:
        words = [rng.choice(EN) for _ in range(rng.randint(3, 8))]
        seen[" ".join(words)] = " ".join(LEXICON[w] for w in words)
    return list(seen), list(seen.values())


SRC, TGT = corpus()


def write_pair(prefix: Path, src: list[str], tgt: list[str]) -> Path:
    prefix.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{prefix}.en").write_text("".join(s + "\n" for s in src), encoding="utf-8")
    Path(f"{prefix}.de").write_text("".join(t + "\n" for t in tgt), encoding="utf-8")
    return prefix


def make_cfg(tmp_path: Path, **data: Any) -> ExperimentConfig:
    """Tiny config: no valid/test files unless given, 20 pairs carved for valid, vocab 80."""
    tokenizer, model = data.pop("tokenizer", {}), data.pop("model", {})
    raw = {
        "data": {
            "train": str(tmp_path / "train"),
            "valid": None,
            "valid_size": 20,
            "test": None,
            "prepared_dir": str(tmp_path / "prepared"),
            "max_ratio": 9.0,  # tiny vocabularies split some German words a lot
            **data,
        },
        "tokenizer": {"vocab_size": 80, **tokenizer},
        "model": model,
    }
    return config_from_dict(raw)


def run(
    tmp_path: Path, src: list[str] | None = None, tgt: list[str] | None = None, **data: Any
) -> dict[str, Any]:
    """Write train.{en,de}, prepare, return the train stats."""
    write_pair(tmp_path / "train", SRC if src is None else src, TGT if tgt is None else tgt)
    out = prepare(make_cfg(tmp_path, **data))
    stats: dict[str, Any] = load_stats(out)["splits"]["train"]
    return stats


def text_split(tmp_path: Path, split: str = "train") -> datasets.Dataset:
    return datasets.load_from_disk(str(tmp_path / "prepared" / "text"))[split]
