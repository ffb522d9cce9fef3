"""A checkpoint's config, tokenizers and model, each checked before the weights are loaded."""

from __future__ import annotations

from typing import Any

import torch

from mtkit.checkpoint import CheckpointError, check_weights, load_weights
from mtkit.config.load import config_from_dict
from mtkit.config.schema import ConfigError, ExperimentConfig
from mtkit.data.tokenizer import PAD_ID, TokenizerPair
from mtkit.model.transformer import Transformer, build_model, state_dict_size
from mtkit.translation.compatibility import check_vocabulary


def restore(state: dict[str, Any]) -> tuple[ExperimentConfig, TokenizerPair, Transformer]:
    """Config, tokenizers and model of a loaded checkpoint; an MtkitError says what is wrong."""
    if not isinstance(state["config"], dict):
        raise CheckpointError("the embedded config is not a mapping")
    try:
        cfg = config_from_dict(state["config"])
    except ConfigError as e:
        raise CheckpointError(f"the embedded config is invalid: {e}") from None
    files = state["tokenizer"]
    if not isinstance(files, dict) or not all(isinstance(v, bytes) for v in files.values()):
        raise CheckpointError("the embedded tokenizer is not a set of sentencepiece model files")
    tokenizers = TokenizerPair.from_model_files(files)
    sizes = (tokenizers.src.vocab_size, tokenizers.tgt.vocab_size)
    vocab = state["vocab"]
    if not isinstance(vocab, dict) or (vocab.get("src"), vocab.get("tgt")) != sizes:
        raise CheckpointError(
            f"its vocabulary sizes do not match its tokenizers ({sizes[0]}/{sizes[1]} pieces)"
        )
    check_vocabulary(state["model"], tokenizers)
    if not _sizes_agree(cfg, sizes, state["model"]):  # name the difference, allocating nothing
        with torch.device("meta"):
            check_weights(_build(cfg, sizes).state_dict(), state["model"])
    model = _build(cfg, sizes)
    load_weights(model, state["model"])
    return cfg, tokenizers, model


def _sizes_agree(cfg: ExperimentConfig, sizes: tuple[int, int], weights: Any) -> bool:
    """Whether `weights` hold exactly as many elements as the config's model: then building it
    allocates no more than the loaded file already did (load_weights still checks every name
    and shape). A build on the meta device costs ~1 s the first time (PyTorch imports its
    compiler for `normal_` on meta tensors), so it is kept for checkpoints that do not fit."""
    if not isinstance(weights, dict) or not all(torch.is_tensor(w) for w in weights.values()):
        return False
    held = sum(int(w.numel()) for w in weights.values())
    return held == state_dict_size(cfg.model, *sizes)


def _build(cfg: ExperimentConfig, sizes: tuple[int, int]) -> Transformer:
    try:
        return build_model(cfg, *sizes, pad_id=PAD_ID)
    except (ValueError, RuntimeError) as e:  # share_embeddings with two vocabularies, memory
        raise CheckpointError(f"cannot build its model: {e}") from None
