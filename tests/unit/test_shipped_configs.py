"""Each shipped config loads, validates and builds a model of the size its header documents."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mtkit.config.load import load_config
from mtkit.model.transformer import Transformer, num_parameters

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def documented_parameters(path: Path) -> int:
    match = re.search(r"^# parameters: ([\d,]+)", path.read_text(encoding="utf-8"), re.M)
    assert match, f"{path.name} lacks a '# parameters: N' header line"
    return int(match.group(1).replace(",", ""))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_builds_documented_model(path: Path) -> None:
    cfg = load_config(path)
    vocab = cfg.tokenizer.vocab_size
    model = Transformer(cfg.model, src_vocab=vocab, tgt_vocab=vocab)
    assert num_parameters(model) == documented_parameters(path)


def test_there_are_recipes_for_both_directions() -> None:
    names = {p.stem for p in CONFIGS}
    assert {"demo", "multi30k_en_de", "multi30k_de_en"} <= names
