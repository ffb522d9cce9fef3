"""Continuous batching: lines join a running beam search between its steps.

A `TranslationStream` serves one set of decoding options. `add` encodes lines and lets them
join at the next step; `step` advances every live sentence by one token and hands back the
`Translation`s of those that finished, as `Translator.translate_full` would make them (same
tokenization, truncation and output conversion). A sentence is decoded as it would be alone
(mtkit.search.beam.BeamSearch), so the server's outputs match `mtkit translate`'s.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mtkit.config.schema import DecodingConfig
from mtkit.data.batching import pad
from mtkit.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from mtkit.model.masks import pad_mask
from mtkit.model.transformer import Transformer
from mtkit.runtime import autocast_context
from mtkit.search.beam import BeamSearch
from mtkit.search.ensemble import Ensemble
from mtkit.translation.results import Translation
from mtkit.translation.translator import Decoded, Translator


def can_stream(translator: object, dec: DecodingConfig) -> bool:
    """Whether lines decoded with `dec` can join a running search: beam search (beam over 1)
    without an n-gram ban, on a PyTorch model or ensemble."""
    return (
        isinstance(translator, Translator)
        and isinstance(translator.model, Transformer | Ensemble)
        and not dec.sampling
        and dec.beam_size > 1
        and dec.no_repeat_ngram == 0
    )


@dataclass
class _Live:
    """A sentence in the search: the caller's key, its source ids, its share of step time."""

    key: Any
    translation: Translation
    src_ids: list[int]
    seconds: float = 0.0


class TranslationStream:
    """One running beam search over lines that arrive at any time (see the module doc)."""

    def __init__(self, translator: Translator, dec: DecodingConfig) -> None:
        if not can_stream(translator, dec):
            raise ValueError("these decoding options cannot join a running search")
        self.translator, self.dec = translator, dec
        self.precision = translator.precision_for(dec)
        translator.use_attention_kernel(dec)
        self.search = BeamSearch(
            translator.model, dec, bos_id=BOS_ID, eos_id=EOS_ID, use_cache=True
        )
        self.live: dict[int, _Live] = {}
        self.width = 0  # longest source of the live sentences (tokens, EOS included)
        self._next = 0

    @property
    def sentences(self) -> int:
        """Sentences being decoded."""
        return len(self.live)

    def fits(self, lengths: Sequence[int]) -> bool:
        """Whether sources of these `lengths` (tokens) can join together within
        `dec.max_tokens`, counted as a batch is: sentences x longest source (a sentence alone
        always fits)."""
        rows = len(self.live) + len(lengths)
        return rows <= 1 or rows * max([self.width, *lengths]) <= self.dec.max_tokens

    def add(self, lines: Sequence[str], keys: Sequence[Any]) -> list[tuple[Any, Translation]]:
        """Lines join the search; empty lines are done at once and come back here."""
        out, keep, src_ids = self.translator.sources(lines)
        kept = set(keep)
        done = [(key, t) for i, (key, t) in enumerate(zip(keys, out, strict=True)) if i not in kept]
        if not keep:
            return done
        ids: list[int] = []
        for i, source in zip(keep, src_ids, strict=True):
            self.live[self._next] = _Live(keys[i], out[i], source)
            ids.append(self._next)
            self._next += 1
            self.width = max(self.width, len(source))
        src = pad(src_ids).to(self.translator.device)  # (n_new, src_len)
        with torch.inference_mode(), autocast_context(self.translator.device, self.precision):
            self.search.add(src, pad_mask(src, PAD_ID), ids)
        return done

    def step(self) -> list[tuple[Any, Translation]]:
        """One token for every live sentence; the translations now finished."""
        start = time.perf_counter()
        with torch.inference_mode(), autocast_context(self.translator.device, self.precision):
            finished = self.search.step()
        share = (time.perf_counter() - start) / max(len(self.live), 1)
        for sentence in self.live.values():
            sentence.seconds += share
        done = []
        for ident, hyps in finished:
            sentence = self.live.pop(ident)
            decoded = Decoded(hyps, sentence.seconds)
            self.translator.fill(sentence.translation, sentence.src_ids, decoded)
            done.append((sentence.key, sentence.translation))
        if finished:
            self.width = max((len(s.src_ids) for s in self.live.values()), default=0)
        return done
