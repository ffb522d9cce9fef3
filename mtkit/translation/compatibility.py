"""Do these fit together: a checkpoint's weights and its tokenizer, the members of an ensemble.

A model only means something with the tokenizer it was trained with: the same vocabulary size
is not enough (a sentencepiece model retrained on other text numbers its pieces differently),
so ensemble members must have the same tokenizer files, byte for byte.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mtkit.checkpoint import CheckpointError
from mtkit.config.schema import ConfigError
from mtkit.data.tokenizer import TokenizerPair

# the weights whose first dimension is a vocabulary size: source embedding, output projection
VOCAB_WEIGHTS = ("src_embed.weight", "out_proj.weight")


def check_vocabulary(weights: Any, tokenizers: TokenizerPair) -> None:
    """CheckpointError when the embedding/output rows differ from the tokenizers' sizes."""
    if not isinstance(weights, dict):
        return  # check_weights names that problem
    sizes = (tokenizers.src.vocab_size, tokenizers.tgt.vocab_size)
    found = [weights.get(name) for name in VOCAB_WEIGHTS]
    rows = tuple(int(w.shape[0]) if torch.is_tensor(w) and w.dim() > 0 else -1 for w in found)
    if -1 in rows or rows == sizes:
        return  # a missing or odd tensor: check_weights names it
    raise CheckpointError(
        f"its weights do not fit its tokenizer: they are for a vocabulary of {rows[0]}/{rows[1]} "
        f"source/target pieces, the tokenizer has {sizes[0]}/{sizes[1]} (they were not trained "
        "together: was the run's tokenizer replaced?)"
    )


class EnsembleError(ConfigError):
    """Runs that cannot be ensembled (a usage error: exit code 2); the message names them."""


def check_same_tokenizers(named: list[tuple[Path, TokenizerPair]]) -> None:
    """EnsembleError unless every run has the first one's tokenizer files, byte for byte."""
    first_path, first = named[0]
    for path, pair in named[1:]:
        if pair.model_files() != first.model_files():
            raise EnsembleError(
                f"{path} and {first_path} have different tokenizers; an ensemble needs models "
                "trained with the same tokenizer (e.g. runs of one config with other seeds, or "
                "runs started with --init-from the same parent)"
            )
