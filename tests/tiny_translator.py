"""A tiny random-weight `Translator` (and its checkpoint file) built in about a second.

Random weights translate to gibberish, which is all the translate/evaluate plumbing tests need:
they check order, counts, formats, scores and files, never translation quality.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mtkit.checkpoint import save_checkpoint
from mtkit.config.load import config_from_dict, config_to_dict
from mtkit.config.schema import ExperimentConfig
from mtkit.data.tokenizer import TokenizerPair, train_tokenizers
from mtkit.model.transformer import build_model
from mtkit.translation.translator import Translator

DATA = Path(__file__).resolve().parents[1] / "data"


def tiny_config(**decoding: Any) -> ExperimentConfig:
    raw: dict[str, Any] = {
        "name": "tiny",
        "data": {"max_len": 30},
        "tokenizer": {"vocab_size": 120},
        "model": {
            "d_model": 16, "n_heads": 2, "encoder_layers": 1, "decoder_layers": 2, "d_ff": 32,
            "dropout": 0.0, "max_positions": 40,
        },
        "training": {"device": "cpu"},
        "decoding": {"beam_size": 4, "max_len_a": 0.5, "max_len_b": 4, "max_tokens": 200,
                     **decoding},
    }  # fmt: skip
    return config_from_dict(raw)


def head(path: Path, n: int) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:n]


def make_translator(directory: Path, seed: int = 0) -> Translator:
    """Tokenizers trained on 300 bundled pairs, a model with seeded random weights."""
    cfg = tiny_config()
    src, tgt = head(DATA / "train.en", 300), head(DATA / "train.de", 300)
    tokenizers = train_tokenizers(src, tgt, directory, cfg.tokenizer, "en", "de", seed=1)
    torch.manual_seed(seed)
    model = build_model(cfg, tokenizers.src.vocab_size, tokenizers.tgt.vocab_size).eval()
    return Translator(model, tokenizers, cfg, torch.device("cpu"), directory / "best.pt")


def save(translator: Translator) -> Path:
    """Write `translator.checkpoint` with the keys `Translator.load` reads; returns its path."""
    tok: TokenizerPair = translator.tokenizers
    save_checkpoint(
        translator.checkpoint,
        {
            "config": config_to_dict(translator.config),
            "model": translator.model.state_dict(),
            "vocab": {"src": tok.src.vocab_size, "tgt": tok.tgt.vocab_size},
            "tokenizer": tok.model_files(),
        },
    )
    return translator.checkpoint
