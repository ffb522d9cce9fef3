"""Incremental decoding state: per-layer self-attention K/V and the projected encoder memory."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

KV = tuple[Tensor, Tensor]  # keys, values: each (batch, n_heads, len, head_dim)


@dataclass
class DecoderCache:
    """Incremental decoding state for `Transformer.decode_step`.

    Rows are sentences (greedy) or sentence-major beams: with `beam` > 1, rows
    g*beam .. g*beam + beam - 1 all decode sentence g. `self_kv[i]` holds layer i's
    keys/values of the positions fed so far, one per row, each (rows, n_heads, position,
    head_dim); `cross_kv[i]` the encoder memory projected once, one per *sentence*, each
    (rows / beam, n_heads, src_len, head_dim). Beam bookkeeping therefore never copies the
    cross-attention K/V: only dropping finished sentences does.

    Sentences may join a running search (`join`, continuous batching): then `start` holds the
    column at which each sentence's first token was fed. Its self-attention ignores the columns
    before it, and its positions count from it; `compact` drops the columns no sentence needs.
    """

    self_kv: list[KV]
    cross_kv: list[KV]
    src_mask: Tensor  # (rows / beam, src_len) bool
    position: int  # index of the next target position to be fed
    beam: int = 1  # rows per sentence
    start: Tensor | None = None  # (rows / beam,) long: first column of each sentence; None: all 0

    def repeat(self, beam: int) -> DecoderCache:
        """Each row repeated `beam` times (sentence-major); sentence-level tensors are shared.

        Shapes: rows -> rows * beam.
        """
        index = torch.arange(self.rows, device=self.src_mask.device).repeat_interleave(beam)
        return DecoderCache(
            self_kv=[(k.index_select(0, index), v.index_select(0, index)) for k, v in self.self_kv],
            cross_kv=self.cross_kv,
            src_mask=self.src_mask,
            position=self.position,
            beam=self.beam * beam,
            start=self.start,
        )

    @property
    def rows(self) -> int:
        return int(self.src_mask.size(0)) * self.beam

    def select(self, index: Tensor) -> DecoderCache:
        """Rows `index` of the cache: reorders beams, drops finished sentences, repeats rows.

        With `beam` > 1 the new rows must again come in whole groups, each from one sentence
        (beam search's sentence-major order); then a sentence's memory is kept or dropped as
        one, and not copied at all while no sentence leaves.
        Shapes: index (new_rows,) long -> cache with new_rows rows.
        """
        sentences = index if self.beam == 1 else index[:: self.beam] // self.beam  # (new_sent,)
        same = sentences.numel() == self.src_mask.size(0) and bool(
            (sentences == torch.arange(sentences.numel(), device=sentences.device)).all()
        )

        def pick(kv: KV, rows: Tensor) -> KV:
            return kv[0].index_select(0, rows), kv[1].index_select(0, rows)

        return DecoderCache(
            self_kv=[pick(kv, index) for kv in self.self_kv],
            cross_kv=self.cross_kv if same else [pick(kv, sentences) for kv in self.cross_kv],
            src_mask=self.src_mask if same else self.src_mask.index_select(0, sentences),
            position=self.position,
            beam=self.beam,
            start=self.start if same or self.start is None else self.start[sentences],
        )

    def row_positions(self) -> Tensor:
        """Position of the token fed next in each row, counted from its sentence's start.

        Shapes: -> (rows,) long.
        """
        position = torch.full((self.rows,), self.position, device=self.src_mask.device)
        if self.start is None:
            return position  # (rows,)
        return position - self.start.repeat_interleave(self.beam)  # (rows,)

    def self_mask(self) -> Tensor | None:
        """Which self-attention columns (those cached and the one fed next) each row may attend
        to: its sentence's own. None while every sentence started at column 0.

        Shapes: -> (rows, 1, 1, position + 1) bool.
        """
        if self.start is None:
            return None
        columns = torch.arange(self.position + 1, device=self.start.device)  # (position + 1,)
        own = columns[None, :] >= self.start.repeat_interleave(self.beam)[:, None]
        return own[:, None, None, :]  # (rows, 1, 1, position + 1)

    def join(self, fresh: DecoderCache) -> DecoderCache:
        """This cache's sentences, then `fresh`'s (nothing fed yet, same beam), which start at
        the next column. Cross-attention memories are padded to a common source length (first
        trimmed to the longest source still here).

        Shapes: rows + fresh.rows rows; self K/V (.., position, ..) for both.
        """
        if fresh.position != 0 or fresh.beam != self.beam:
            raise ValueError("only a fresh cache with the same beam can join")
        width = max(int(self.src_mask.sum(dim=1).max()), int(fresh.src_mask.shape[1]))

        def stack(old: Tensor, new: Tensor, dim: int) -> Tensor:
            old = old.narrow(dim, 0, min(width, old.size(dim)))
            parts = [_pad_to(old, dim, width), _pad_to(new, dim, width)]
            return torch.cat(parts)

        def grow(kv: KV, new: KV) -> KV:
            k, v = (_pad_to(t, 2, self.position) for t in new)  # zeros before their start
            return torch.cat([kv[0], k]), torch.cat([kv[1], v])

        start = self.start if self.start is not None else self._zeros(self.src_mask.size(0))
        joined = torch.full((fresh.src_mask.size(0),), self.position, device=start.device)
        return DecoderCache(
            self_kv=[grow(kv, new) for kv, new in zip(self.self_kv, fresh.self_kv, strict=True)],
            cross_kv=[
                (stack(kv[0], new[0], 2), stack(kv[1], new[1], 2))
                for kv, new in zip(self.cross_kv, fresh.cross_kv, strict=True)
            ],
            src_mask=stack(self.src_mask, fresh.src_mask, 1),
            position=self.position,
            beam=self.beam,
            start=torch.cat([start, joined]) if self.position > 0 else self.start,
        )

    def compact(self) -> DecoderCache:
        """Without the columns before the earliest start of the sentences still here."""
        if self.start is None:
            return self
        first = int(self.start.min())
        if first == 0:
            return self
        start = self.start - first
        return DecoderCache(
            self_kv=[(k[:, :, first:], v[:, :, first:]) for k, v in self.self_kv],
            cross_kv=self.cross_kv,
            src_mask=self.src_mask,
            position=self.position - first,
            beam=self.beam,
            start=start if bool(start.any()) else None,
        )

    def _zeros(self, n: int) -> Tensor:
        return torch.zeros(n, dtype=torch.long, device=self.src_mask.device)


def _pad_to(x: Tensor, dim: int, size: int) -> Tensor:
    """`x` with zeros (False for bool) appended along `dim` up to `size`."""
    missing = size - x.size(dim)
    if missing <= 0:
        return x
    shape = list(x.shape)
    shape[dim] = missing
    return torch.cat([x, x.new_zeros(shape)], dim=dim)
