"""Subword regularisation: training batches re-segmented at random from their text.

`tokenizer.sampling_alpha` > 0 turns it on. Each training batch's rows are read from the
prepared `text/train` split (row-aligned with `encoded/train`) and encoded again with
sentencepiece sampling: BPE-dropout for BPE models (Provilkov et al. 2020), sampling from all
segmentations for unigram models (Kudo 2018). The seed of a batch is derived from the training
seed and the batch's position (epoch, batch in epoch, rank), so a resumed run re-segments every
batch exactly as an uninterrupted one does. Valid/test keep their one deterministic encoding.

The batches were planned on the deterministic lengths; sampled segmentations are longer
(Multi30k, 8k joint BPE: about 20 % more tokens at alpha 0.05, 35 % at 0.1), so a batch can
exceed `training.max_tokens` by as much. Like `prepare`, ids are cut to `data.max_len` tokens
(plus BOS/EOS).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import datasets
import numpy as np

from mtkit.data.batching import Batch, collate_columns
from mtkit.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer, TokenizerPair

_NO_SEED = 2**32 - 1  # sentencepiece reads this seed as "seed from the clock"


def batch_seed(seed: int, *position: int) -> int:
    """A 32-bit sentencepiece seed for one batch, from the training seed and its position."""
    state = np.random.SeedSequence([seed, *position]).generate_state(1, dtype=np.uint32)
    return int(state[0]) % _NO_SEED


def segment(tokenizer: Tokenizer, lines: list[str], alpha: float, seed: int) -> list[list[int]]:
    """Token ids of `lines`: sampled when alpha > 0, the deterministic encoding when 0."""
    if alpha > 0:
        return tokenizer.encode_sampled(lines, alpha, seed)
    return tokenizer.encode(lines)


@dataclass
class SubwordSampler:
    """Builds training batches from text with a fresh random segmentation each time."""

    tokenizers: TokenizerPair
    text: datasets.Dataset  # text/train: columns src, tgt, row-aligned with encoded/train
    alpha: float  # tokenizer.sampling_alpha (0: the prepared ids, re-encoded)
    max_len: int  # data.max_len: longer segmentations are cut, as prepare cuts valid/test
    seed: int  # training.seed

    def ids(self, indices: Sequence[int], *position: int) -> tuple[list[list[int]], ...]:
        """(src_ids + [EOS], [BOS] + tgt_ids + [EOS]) of the rows, as `prepare` lays them out."""
        rows = self.text[list(indices)]
        src_seed, tgt_seed = (batch_seed(self.seed, *position, side) for side in (0, 1))
        src = segment(self.tokenizers.src, list(rows["src"]), self.alpha, src_seed)
        tgt = segment(self.tokenizers.tgt, list(rows["tgt"]), self.alpha, tgt_seed)
        n = self.max_len
        return [[*s[:n], EOS_ID] for s in src], [[BOS_ID, *t[:n], EOS_ID] for t in tgt]

    def batch(self, indices: Sequence[int], *position: int) -> Batch:
        """The padded batch of rows `indices`, segmented with the seed of `position`."""
        src, tgt = self.ids(indices, *position)
        return collate_columns(src, tgt, PAD_ID)
