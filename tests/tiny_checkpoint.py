"""A tiny random-weight checkpoint built in a second, for tests that only need *a* model.

Untrained weights translate to gibberish, which is all the robustness tests need: they check
line counts, errors and files, never the translation itself.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from mtkit.checkpoint import save_checkpoint
from mtkit.config.load import config_from_dict, config_to_dict
from mtkit.config.schema import ExperimentConfig
from mtkit.data.tokenizer import PAD_ID, TokenizerPair, train_tokenizers
from mtkit.model.transformer import Transformer

WORDS_EN = "the a cat dog sees runs house tree big small red green walks sleeps".split()
WORDS_DE = "der die das Katze Hund sieht läuft Haus Baum groß klein rot grün schläft".split()


def sentences(words: list[str], n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 9))) for _ in range(n)]


def tiny_config(
    vocab_size: int = 60, byte_fallback: bool = False, d_model: int = 16
) -> ExperimentConfig:
    """A tiny model and a short decoding budget (random weights rarely stop on their own)."""
    raw: dict[str, Any] = {
        "name": "tiny",
        "data": {"max_len": 30},
        "tokenizer": {"vocab_size": vocab_size, "byte_fallback": byte_fallback},
        "model": {
            "d_model": d_model, "n_heads": 2, "encoder_layers": 1, "decoder_layers": 1, "d_ff": 32,
            "dropout": 0.0, "max_positions": 64,
        },
        "training": {"device": "cpu"},
        "decoding": {"beam_size": 2, "max_len_a": 0.0, "max_len_b": 4, "max_tokens": 2000},
    }  # fmt: skip
    return config_from_dict(raw)


def train_tiny_tokenizers(
    directory: Path, vocab_size: int = 60, byte_fallback: bool = False
) -> TokenizerPair:
    cfg = tiny_config(vocab_size, byte_fallback).tokenizer
    src, tgt = sentences(WORDS_EN, 200, 0), sentences(WORDS_DE, 200, 1)
    return train_tokenizers(src, tgt, directory, cfg, "en", "de", seed=1)


def checkpoint_state(cfg: ExperimentConfig, tokenizers: TokenizerPair) -> dict[str, Any]:
    """The keys `Translator.load` reads, as train.py writes them."""
    torch.manual_seed(0)
    model = Transformer(
        cfg.model, tokenizers.src.vocab_size, tokenizers.tgt.vocab_size, pad_id=PAD_ID
    )
    return {
        "config": config_to_dict(cfg),
        "model": model.state_dict(),
        "vocab": {"src": tokenizers.src.vocab_size, "tgt": tokenizers.tgt.vocab_size},
        "tokenizer": tokenizers.model_files(),
    }


def write_tiny_run(directory: Path, byte_fallback: bool = False) -> Path:
    """A run directory holding best.pt (random weights); returns the directory.

    With `byte_fallback` the vocabulary holds the 256 byte pieces, so the random model can
    emit any byte, a newline included.
    """
    directory.mkdir(parents=True, exist_ok=True)
    vocab_size = 320 if byte_fallback else 60
    tokenizers = train_tiny_tokenizers(directory / "spm", vocab_size, byte_fallback)
    cfg = tiny_config(vocab_size, byte_fallback)
    save_checkpoint(directory / "best.pt", checkpoint_state(cfg, tokenizers))
    return directory
