"""Which search a DecodingConfig asks for (sampling, greedy or beam search), and running it."""

from __future__ import annotations

import torch
from torch import Tensor

from mtkit.config.schema import DecodingConfig
from mtkit.search.beam import beam_search
from mtkit.search.common import Hypothesis, Seq2Seq
from mtkit.search.greedy import greedy_search, sample


def uses_beam(dec: DecodingConfig) -> bool:
    """True where beam search runs (and scores are length-normalised): not sampling, and a beam
    over 1 or an n-gram ban (only the beam code bans n-grams). Greedy search otherwise."""
    return not dec.sampling and (dec.beam_size > 1 or dec.no_repeat_ngram > 0)


def search(
    model: Seq2Seq,
    src: Tensor,
    src_mask: Tensor,
    dec: DecodingConfig,
    *,
    bos_id: int,
    eos_id: int,
    generator: torch.Generator | None = None,
) -> list[list[Hypothesis]]:
    """The search `dec` asks for; per sentence up to `dec.nbest` hypotheses, best first.

    Sampling draws `dec.nbest` samples per sentence (with `generator`), sorted by log-prob.
    Shapes: src (batch, src_len), src_mask (batch, src_len) bool.
    """
    if dec.sampling:
        k = dec.nbest
        rows = torch.arange(src.size(0), device=src.device).repeat_interleave(k)  # (batch*k,)
        samples = sample(
            model, src[rows], src_mask[rows], dec, bos_id=bos_id, eos_id=eos_id,
            generator=generator,
        )  # fmt: skip
        groups = [samples[i : i + k] for i in range(0, len(samples), k)]
        return [sorted(g, key=lambda h: -h.score) for g in groups]
    if not uses_beam(dec):
        return [[h] for h in greedy_search(model, src, src_mask, dec, bos_id=bos_id, eos_id=eos_id)]
    return beam_search(model, src, src_mask, dec, bos_id=bos_id, eos_id=eos_id)
