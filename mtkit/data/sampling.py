"""Subword regularisation: each epoch's training data re-segmented at random from its text.

`tokenizer.sampling_alpha` > 0 turns it on. At the start of every epoch all rows of the
prepared `text/train` split (row-aligned with `encoded/train`) are encoded again with
sentencepiece sampling: BPE-dropout for BPE models (Provilkov et al. 2020), sampling from all
segmentations for unigram models (Kudo 2018). The epoch's batches are then planned on those
sampled lengths with the one token-budget batcher, so a batch holds `training.max_tokens`
tokens and little padding, as without sampling. Sampled segmentations are longer (Multi30k,
8k joint BPE: about 35 % more tokens at alpha 0.1), so an epoch has more batches, and their
number changes a little from epoch to epoch.

The seeds come from the training seed and the epoch, so a resumed run re-segments and re-plans
its epoch exactly as an uninterrupted one does. Valid/test keep their one deterministic
encoding. Like `prepare`, ids are cut to `data.max_len` tokens (plus BOS/EOS). The epoch's ids
are held in memory (a list per row): about 1 GB per 5 M pairs of 30 tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import datasets
import numpy as np

from mtkit.data.batching import Batch, TokenBatchSampler, collate_columns
from mtkit.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer, TokenizerPair

_NO_SEED = 2**32 - 1  # sentencepiece reads this seed as "seed from the clock"


def position_seed(seed: int, *position: int) -> int:
    """A 32-bit sentencepiece seed from the training seed and a position (epoch, side)."""
    state = np.random.SeedSequence([seed, *position]).generate_state(1, dtype=np.uint32)
    return int(state[0]) % _NO_SEED


def segment(tokenizer: Tokenizer, lines: list[str], alpha: float, seed: int) -> list[list[int]]:
    """Token ids of `lines`: sampled when alpha > 0, the deterministic encoding when 0."""
    if alpha > 0:
        return tokenizer.encode_sampled(lines, alpha, seed)
    return tokenizer.encode(lines)


@dataclass
class SampledEpoch:
    """One epoch of training data: every row segmented once, batches planned on those lengths."""

    epoch: int
    src: list[list[int]]  # per row: sampled ids + [EOS]
    tgt: list[list[int]]  # per row: [BOS] + sampled ids + [EOS]
    sampler: TokenBatchSampler  # this rank's batches of the epoch, planned on src/tgt lengths

    def batch(self, indices: Sequence[int]) -> Batch:
        """The padded batch of rows `indices`."""
        src, tgt = [self.src[i] for i in indices], [self.tgt[i] for i in indices]
        return collate_columns(src, tgt, PAD_ID)


@dataclass
class SubwordSampler:
    """Segments the training text anew for every epoch and plans its batches."""

    tokenizers: TokenizerPair
    text: datasets.Dataset  # text/train: columns src, tgt, row-aligned with encoded/train
    alpha: float  # tokenizer.sampling_alpha (0: the prepared ids, re-encoded)
    max_len: int  # data.max_len: longer segmentations are cut, as prepare cuts valid/test
    seed: int  # training.seed

    def ids(self, epoch: int) -> tuple[list[list[int]], list[list[int]]]:
        """(src_ids + [EOS], [BOS] + tgt_ids + [EOS]) of every row, as `prepare` lays them out."""
        src_seed, tgt_seed = (position_seed(self.seed, epoch, side) for side in (0, 1))
        src = segment(self.tokenizers.src, list(self.text["src"]), self.alpha, src_seed)
        tgt = segment(self.tokenizers.tgt, list(self.text["tgt"]), self.alpha, tgt_seed)
        n = self.max_len
        return [[*s[:n], EOS_ID] for s in src], [[BOS_ID, *t[:n], EOS_ID] for t in tgt]

    def epoch(self, epoch: int, like: TokenBatchSampler) -> SampledEpoch:
        """Epoch `epoch`'s rows and batches, with `like`'s budget, seed, rank and world size."""
        src, tgt = self.ids(epoch)
        src_len = np.fromiter(map(len, src), dtype=np.int64, count=len(src))
        tgt_len = np.fromiter(map(len, tgt), dtype=np.int64, count=len(tgt)) - 1  # tgt_in
        sampler = TokenBatchSampler(
            src_len, tgt_len, like.max_tokens, shuffle=like.shuffle, seed=like.seed,
            rank=like.rank, world_size=like.world_size,
        )  # fmt: skip
        sampler.set_epoch(epoch)
        return SampledEpoch(epoch, src, tgt, sampler)
