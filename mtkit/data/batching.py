"""Prepared data -> padded batches: load_prepared, the token-budget batcher, pad, collate.

Token budget, the one cost formula for training, validation and translation: a batch costs
`len(batch) * (max src_len + max tgt_len)`, padding included, where src_len counts `src_ids`
(with EOS) and tgt_len counts `tgt_in` (= tgt_ids without its last token). That is what the
encoder plus decoder actually process; it matches `training.max_tokens` ("source + target,
padding included"). Translation does not know target lengths before decoding, so it passes
none (0) and its budget, `decoding.max_tokens`, counts padded source tokens.

`datasets` and `pyarrow` are imported on first use, so translation (which only batches and
pads) starts without them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from mtkit.data.tokenizer import PAD_ID
from mtkit.errors import MtkitError
from mtkit.model.masks import pad_mask

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)


@dataclass
class Batch:
    """One padded training batch (teacher forcing: tgt_in predicts tgt_out).

    Shapes:
        src, src_mask: (batch, src_len); src_mask is True at real tokens
        tgt_in, tgt_out: (batch, tgt_len), tgt_in = tgt_ids[:, :-1], tgt_out = tgt_ids[:, 1:]
    """

    src: Tensor  # (batch, src_len) long, padded with PAD_ID
    src_mask: Tensor  # (batch, src_len) bool, True = real token
    tgt_in: Tensor  # (batch, tgt_len) long, starts with BOS
    tgt_out: Tensor  # (batch, tgt_len) long, ends with EOS then padding
    n_src_tokens: int  # non-pad source tokens
    n_tgt_tokens: int  # non-pad tokens in tgt_out (the ones the loss counts)

    def __len__(self) -> int:
        return int(self.src.shape[0])

    def to(self, device: torch.device | str) -> Batch:
        """The same batch on `device` (non_blocking when the source is pinned memory)."""
        return Batch(
            src=self.src.to(device, non_blocking=True),
            src_mask=self.src_mask.to(device, non_blocking=True),
            tgt_in=self.tgt_in.to(device, non_blocking=True),
            tgt_out=self.tgt_out.to(device, non_blocking=True),
            n_src_tokens=self.n_src_tokens,
            n_tgt_tokens=self.n_tgt_tokens,
        )

    def pin_memory(self) -> Batch:
        """Page-locked copy, for fast asynchronous host-to-GPU transfer."""
        return Batch(
            self.src.pin_memory(),
            self.src_mask.pin_memory(),
            self.tgt_in.pin_memory(),
            self.tgt_out.pin_memory(),
            self.n_src_tokens,
            self.n_tgt_tokens,
        )


def load_prepared(prepared_dir: Path) -> datasets.DatasetDict:
    """The encoded splits (columns src_ids, tgt_ids), memory-mapped from disk."""
    import datasets

    path = Path(prepared_dir) / "encoded"
    if not (path / "dataset_dict.json").is_file():
        raise MtkitError(f"{prepared_dir}: no prepared data found; run `mtkit prepare` first")
    return datasets.load_from_disk(str(path))


def load_prepared_text(prepared_dir: Path) -> datasets.DatasetDict:
    """The cleaned text splits (columns src, tgt), row-aligned with `load_prepared`."""
    import datasets

    path = Path(prepared_dir) / "text"
    if not (path / "dataset_dict.json").is_file():
        raise MtkitError(f"{prepared_dir}: no prepared text found; run `mtkit prepare` first")
    return datasets.load_from_disk(str(path))


def pad(seqs: Sequence[Sequence[int]], pad_id: int = PAD_ID) -> Tensor:
    """Right-pad int sequences into one long tensor (on the CPU).

    Shapes: -> (batch, max_len)
    """
    width = max((len(s) for s in seqs), default=0)
    out = torch.full((len(seqs), width), pad_id, dtype=torch.long)  # (batch, max_len)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


def collate_columns(
    src_ids: Sequence[Sequence[int]], tgt_ids: Sequence[Sequence[int]], pad_id: int = PAD_ID
) -> Batch:
    """Pad encoded pairs (columns, as `dataset[indices]` returns them) into a Batch.

    `tgt_ids` are [BOS, ..., EOS]; src_ids end in EOS.
    """
    src = pad(src_ids, pad_id)  # (batch, src_len)
    tgt = pad(tgt_ids, pad_id)  # (batch, tgt_len + 1)
    tgt_in, tgt_out = tgt[:, :-1], tgt[:, 1:]  # (batch, tgt_len) each
    src_mask = pad_mask(src, pad_id)  # (batch, src_len)
    return Batch(
        src=src,
        src_mask=src_mask,
        tgt_in=tgt_in,
        tgt_out=tgt_out,
        n_src_tokens=int(src_mask.sum()),
        n_tgt_tokens=int((tgt_out != pad_id).sum()),
    )


def lengths(split: datasets.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Per-example (src_len, tgt_len) from the Arrow list offsets, without reading the ids.

    tgt_len is len(tgt_ids) - 1: the length of tgt_in/tgt_out.
    """
    import pyarrow.compute as pc  # type: ignore[import-untyped]

    table = split.with_format("arrow")
    src = pc.list_value_length(table["src_ids"]).to_numpy(zero_copy_only=False)
    tgt = pc.list_value_length(table["tgt_ids"]).to_numpy(zero_copy_only=False) - 1
    return src.astype(np.int64), tgt.astype(np.int64)


def _budget_bounds(
    src_sorted: np.ndarray, tgt_sorted: np.ndarray, max_tokens: int
) -> list[tuple[int, int]]:
    """[start, end) slices of length-sorted examples, cut where the next example would push
    `len(batch) * (max src_len + max tgt_len)` over `max_tokens`; an example that alone
    exceeds it forms its own batch."""
    bounds: list[tuple[int, int]] = []
    start, max_src, max_tgt = 0, 0, 0
    for i, (s, t) in enumerate(zip(src_sorted.tolist(), tgt_sorted.tolist(), strict=True)):
        new_src, new_tgt = max(max_src, s), max(max_tgt, t)
        if i > start and (i - start + 1) * (new_src + new_tgt) > max_tokens:
            bounds.append((start, i))
            start, new_src, new_tgt = i, s, t
        max_src, max_tgt = new_src, new_tgt
    if len(src_sorted) > start:
        bounds.append((start, len(src_sorted)))
    return bounds


def token_batches(
    src_lengths: Sequence[int], max_tokens: int, tgt_lengths: Sequence[int] | None = None
) -> list[list[int]]:
    """Indices sorted by (src_len, tgt_len), stable, cut into batches that fit `max_tokens`
    (the budget of `_budget_bounds`). Translation gives no target lengths: they count as 0."""
    src = np.asarray(src_lengths, dtype=np.int64).reshape(-1)
    tgt = np.zeros_like(src) if tgt_lengths is None else np.asarray(tgt_lengths, dtype=np.int64)
    order = np.lexsort((tgt, src))  # stable: equal lengths keep their input order
    return [order[a:b].tolist() for a, b in _budget_bounds(src[order], tgt[order], max_tokens)]


class TokenBatchSampler:
    """Yields lists of example indices whose padded size fits a token budget.

    - Budget: `len(batch) * (max src_len + max tgt_len) <= max_tokens`; an example that alone
      exceeds it forms its own batch.
    - Examples are sorted by (src_len, tgt_len) so batches hold similar lengths; when shuffling,
      ties are broken at random and the batch order is shuffled, both from (seed, epoch).
      Because only equal-length examples trade places, the number of batches is the same in
      every epoch.
    - Sharding: rank r gets batches r, r + world_size, ... When the batch count is not a multiple
      of world_size, the largest batches are split in two (still within budget), so every rank
      gets the same number of batches and nothing is dropped or repeated. Only with fewer
      examples than ranks are batches repeated.
    """

    def __init__(
        self,
        src_lengths: Sequence[int] | np.ndarray,
        tgt_lengths: Sequence[int] | np.ndarray,
        max_tokens: int,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.src_len = np.asarray(src_lengths, dtype=np.int64)
        self.tgt_len = np.asarray(tgt_lengths, dtype=np.int64)
        if self.src_len.shape != self.tgt_len.shape or self.src_len.ndim != 1:
            raise ValueError("src_lengths and tgt_lengths must be 1-D and of equal length")
        if max_tokens <= 0:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.max_tokens = max_tokens
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        sorted_order = np.lexsort((self.tgt_len, self.src_len))
        self._bounds = self._plan(self.src_len[sorted_order], self.tgt_len[sorted_order])

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order `__iter__` yields (same seed + epoch = same order)."""
        self.epoch = epoch

    def _plan(self, src: np.ndarray, tgt: np.ndarray) -> list[tuple[int, int]]:
        """[start, end) slices of the length-sorted order, one per batch."""
        return _even_out(_budget_bounds(src, tgt, self.max_tokens), self.world_size)

    def _batches(self) -> list[np.ndarray]:
        """All ranks' batches for the current epoch, in iteration order."""
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.shuffle:
            ties = rng.random(len(self.src_len))
            order = np.lexsort((ties, self.tgt_len, self.src_len))
        else:
            order = np.lexsort((self.tgt_len, self.src_len))
        batches = [order[a:b] for a, b in self._bounds]
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self._batches()[self.rank :: self.world_size]:
            yield batch.tolist()

    def __len__(self) -> int:
        return len(self._bounds) // self.world_size


def _even_out(bounds: list[tuple[int, int]], world_size: int) -> list[tuple[int, int]]:
    """Split the largest batches until the count is a multiple of world_size (see sampler)."""
    bounds = list(bounds)
    while bounds and len(bounds) % world_size:
        a, b = max(bounds, key=lambda ab: ab[1] - ab[0])
        if b - a < 2:  # fewer examples than ranks: repeat batches from the start
            need = world_size - len(bounds) % world_size
            return bounds + [bounds[i % len(bounds)] for i in range(need)]
        i = bounds.index((a, b))
        mid = (a + b) // 2
        bounds[i : i + 1] = [(a, mid), (mid, b)]
    return bounds
