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
    """

    self_kv: list[KV]
    cross_kv: list[KV]
    src_mask: Tensor  # (rows / beam, src_len) bool
    position: int  # index of the next target position to be fed
    beam: int = 1  # rows per sentence

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
        )
