"""An ensemble of Transformers that the searches run like one model.

At each step every model scores the next token from its own encoder memory and its own KV
cache; the ensemble's log-probabilities are the log of the mean of the models' probabilities,
logsumexp_i(log p_i) - log(n), as fairseq's EnsembleModel averages them. Its memory is the
models' memories side by side on the last axis, and its cache one DecoderCache holding every
model's layers in turn, so the searches' row bookkeeping (select, repeat) needs no change.
Members must share the target vocabulary (translation/ensemble.py checks their tokenizers).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mtkit.model.cache import DecoderCache
from mtkit.model.transformer import LogSoftmaxKernel, Transformer


class Ensemble(nn.Module):
    """Several Transformers as one Seq2Seq (see mtkit.search.common) that outputs log-probs."""

    def __init__(self, models: list[Transformer]) -> None:
        super().__init__()
        if not models:
            raise ValueError("an ensemble needs at least one model")
        vocabs = {m.out_proj.out_features for m in models}
        if len(vocabs) != 1 or len({m.pad_id for m in models}) != 1:
            raise ValueError(f"ensemble members differ in target vocabulary: {sorted(vocabs)}")
        self.members = nn.ModuleList(models)
        self.pad_id = models[0].pad_id
        self.max_positions = min(m.max_positions for m in models)
        self.widths = [m.cfg.d_model for m in models]  # each member's slice of the memory
        self.depths = [m.cfg.decoder_layers for m in models]  # its layers in the cache
        self.log_softmax_kernel: LogSoftmaxKernel | None = None  # decode_step gives log-probs

    def _models(self) -> list[Transformer]:
        return [m for m in self.members if isinstance(m, Transformer)]

    def _memories(self, memory: Tensor) -> list[Tensor]:
        """Shapes: (batch, src_len, sum of d_model) -> each member's (batch, src_len, d_model)."""
        starts = [sum(self.widths[:i]) for i in range(len(self.widths))]
        return [memory[..., a : a + w] for a, w in zip(starts, self.widths, strict=True)]

    def encode(self, src: Tensor, src_mask: Tensor) -> Tensor:
        """Shapes: src (batch, src_len) -> memory (batch, src_len, sum of the d_models)."""
        return torch.cat([m.encode(src, src_mask) for m in self._models()], dim=-1)

    def decode(self, tgt_in: Tensor, memory: Tensor, src_mask: Tensor) -> Tensor:
        """Teacher-forced pass. Shapes: tgt_in (batch, tgt_len) -> (batch, tgt_len, vocab)."""
        models, memories = self._models(), self._memories(memory)
        return _mean_probs(
            [m.decode(tgt_in, mem, src_mask) for m, mem in zip(models, memories, strict=True)]
        )

    def init_cache(self, memory: Tensor, src_mask: Tensor) -> DecoderCache:
        """Every member's cache, their layers one after the other."""
        caches = [
            m.init_cache(mem, src_mask, back_pointers=False)
            for m, mem in zip(self._models(), self._memories(memory), strict=True)
        ]
        return DecoderCache(
            self_kv=[kv for c in caches for kv in c.self_kv],
            cross_kv=[kv for c in caches for kv in c.cross_kv],
            src_mask=src_mask,
            position=0,
        )

    def decode_step(self, tokens: Tensor, cache: DecoderCache) -> Tensor:
        """Feed one token per row to every member; updates `cache` in place.

        Shapes: tokens (rows,) -> log-probs (rows, vocab).
        """
        logits, start = [], 0
        for model, depth in zip(self._models(), self.depths, strict=True):
            layers = slice(start, start + depth)
            own = DecoderCache(
                cache.self_kv[layers], cache.cross_kv[layers], cache.src_mask, cache.position,
                cache.beam, cache.start, single=cache.single,
            )  # fmt: skip
            logits.append(model.decode_step(tokens, own))  # (rows, vocab)
            cache.self_kv[layers] = own.self_kv
            start += depth
        cache.position += 1
        return _mean_probs(logits)  # (rows, vocab)


def _mean_probs(logits: list[Tensor]) -> Tensor:
    """log(mean_i softmax(logits_i)), in float32. Shapes: each (..., vocab) -> (..., vocab)."""
    log_probs = torch.stack([x.float().log_softmax(dim=-1) for x in logits])  # (n, ..., vocab)
    return torch.logsumexp(log_probs, dim=0) - math.log(len(logits))  # (..., vocab)
