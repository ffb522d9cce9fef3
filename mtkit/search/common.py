"""What every search shares: the model protocol, hypotheses, length limits and normalisers,
and the per-step constraints (PAD/BOS/early-EOS bans, forced EOS, n-gram bans).

Conventions shared by every search:
- Max output length per sentence = int(max_len_a * src_len + max_len_b) tokens, EOS excluded,
  with src_len the real (unpadded) source tokens; at that length EOS is forced (its log-prob
  counts). It is also capped so positions fit in the model's `max_positions`.
- `min_len` forbids EOS before that many tokens (the max length wins if they clash).
- PAD and BOS are never generated.
- Hypothesis tokens exclude BOS and EOS; `log_prob` includes the EOS log-prob.
- Call `model.eval()` first: dropout would make cached and uncached decoding differ.
- The searches take a `DecodingConfig` that `mtkit.config.schema.validate_decoding` accepted.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from mtkit.config.schema import LengthNorm
from mtkit.model.cache import DecoderCache
from mtkit.model.transformer import LogSoftmaxKernel

CHUNK = 64  # vocabulary slice whose maxima the searches' argmax and top-k read first


class Seq2Seq(Protocol):
    """What search needs from a model (mtkit.model.transformer.Transformer, or a stub in tests)."""

    pad_id: int
    max_positions: int
    log_softmax_kernel: LogSoftmaxKernel | None  # normalises decode_step's logits; None: PyTorch

    def encode(self, src: Tensor, src_mask: Tensor) -> Tensor: ...
    def decode(self, tgt_in: Tensor, memory: Tensor, src_mask: Tensor) -> Tensor: ...
    def init_cache(self, memory: Tensor, src_mask: Tensor) -> DecoderCache: ...
    def decode_step(self, tokens: Tensor, cache: DecoderCache) -> Tensor: ...


@dataclass
class Hypothesis:
    """One output sentence."""

    tokens: list[int]  # without BOS/EOS
    score: float  # length-normalised score used for ranking
    log_prob: float  # total log-probability, EOS included


@dataclass
class Stepper:
    """Next-token log-probs for a batch of prefixes, with or without the KV cache."""

    model: Seq2Seq
    memory: Tensor  # (rows, src_len, d_model); unused when `cache` is set
    src_mask: Tensor  # (rows, src_len)
    cache: DecoderCache | None

    @staticmethod
    def start(model: Seq2Seq, src: Tensor, src_mask: Tensor, use_cache: bool) -> Stepper:
        """Run the encoder once (and project cross-attention K/V once when caching)."""
        memory = model.encode(src, src_mask)  # (batch, src_len, d_model)
        cache = model.init_cache(memory, src_mask) if use_cache else None
        return Stepper(model, memory, src_mask, cache)

    def log_probs(self, prefix: Tensor) -> tuple[Tensor, Tensor | None]:
        """Next-token log-probs, and the maxima of their CHUNK-wide slices where the model's
        log-softmax kernel gave them (else None).

        Shapes: prefix (rows, t) starting with BOS -> (rows, vocab) float32 log-probs,
        (rows, ceil(vocab / CHUNK)) maxima.
        """
        if self.cache is not None:
            logits = self.model.decode_step(prefix[:, -1], self.cache)  # (rows, vocab)
        else:
            logits = self.model.decode(prefix, self.memory, self.src_mask)[:, -1]  # (rows, vocab)
        return normalise(logits, self.model.log_softmax_kernel)

    def select(self, index: Tensor) -> Stepper:
        """Rows `index` (reorder beams, drop finished sentences, repeat for beams)."""
        if self.cache is not None:
            return Stepper(self.model, self.memory, self.src_mask, self.cache.select(index))
        memory = self.memory.index_select(0, index)  # (new_rows, src_len, d_model)
        return Stepper(self.model, memory, self.src_mask.index_select(0, index), None)

    def join(self, fresh: Stepper) -> Stepper:
        """These rows, then `fresh`'s (sentences that start now); needs the KV cache."""
        if self.cache is None or fresh.cache is None:
            raise ValueError("sentences can join a running search only with the KV cache")
        return Stepper(self.model, self.memory, self.src_mask, self.cache.join(fresh.cache))

    def as_single(self, beam: int) -> Stepper:
        """These fresh rows (one a sentence) as sentences that get `beam` rows at the `select`
        after their first step (DecoderCache.single; without a cache rows are rows)."""
        if self.cache is None:
            return self
        return Stepper(self.model, self.memory, self.src_mask, self.cache.as_single(beam))

    @property
    def mixes(self) -> bool:
        """Whether sentences of one row can join these (DecoderCache.cross_view)."""
        return self.cache is not None and self.cache.cross_rows is not None

    def repeat(self, beam: int) -> Stepper:
        """Each row `beam` times, sentence-major (the cache shares the per-sentence memory)."""
        if self.cache is not None:
            return Stepper(self.model, self.memory, self.src_mask, self.cache.repeat(beam))
        rows = torch.arange(self.src_mask.size(0), device=self.src_mask.device)  # (batch,)
        return self.select(rows.repeat_interleave(beam))  # (batch*beam,) rows


def normalise(logits: Tensor, kernel: LogSoftmaxKernel | None) -> tuple[Tensor, Tensor | None]:
    """A step's float32 log-probs, with `kernel` where it takes them (it overwrites `logits`,
    which the caller owns, and gives their CHUNK-wide maxima), else PyTorch's (maxima None).

    Shapes: logits (rows, vocab) -> (rows, vocab), None or (rows, ceil(vocab / CHUNK)).
    """
    logits = logits.float()  # (rows, vocab)
    maxima = None if kernel is None else kernel(logits, CHUNK)  # (rows, chunks)
    if maxima is None:
        return logits.log_softmax(dim=-1), None  # (rows, vocab)
    return logits, maxima


def chunk_maxima(x: Tensor, chunk: int = CHUNK) -> Tensor:
    """The maximum of each row's consecutive `chunk`-wide slices (the last may be shorter).

    Shapes: (rows, vocab) -> (rows, ceil(vocab / chunk)).
    """
    rows, vocab = x.shape
    whole = vocab // chunk * chunk
    maxima = x[:, :whole].view(rows, whole // chunk, chunk).amax(dim=-1)  # (rows, chunks)
    if whole < vocab:  # the last, shorter chunk
        maxima = torch.cat([maxima, x[:, whole:].amax(dim=-1, keepdim=True)], dim=1)
    return maxima


def row_argmax(x: Tensor, maxima: Tensor | None = None, chunk: int = CHUNK) -> Tensor:
    """`x.argmax(dim=-1)`: the first index of each row's maximum, found in the first chunk that
    holds it. PyTorch's CPU argmax reads a row element by element (2.2 ms for 165 x 8,000,
    one thread); the vectorized chunk maxima and a 64-wide argmax take a fifth of that.
    `maxima`: `chunk_maxima(x, chunk)` when the caller has them.

    Shapes: x (rows, vocab), maxima (rows, chunks) -> (rows,) long.
    """
    rows, vocab = x.shape
    if maxima is None and (rows < 8 or vocab <= chunk):  # a few rows: argmax is fast enough
        return x.argmax(dim=-1)
    if maxima is None:
        maxima = chunk_maxima(x, chunk)  # (rows, chunks)
    first = maxima.argmax(dim=-1)  # (rows,) first chunk holding the maximum
    cols = first[:, None] * chunk + torch.arange(chunk, device=x.device)  # (rows, chunk)
    inside = cols < vocab  # False past the last token
    cols = cols.clamp(max=vocab - 1)
    values = x.gather(1, cols).masked_fill_(~inside, -math.inf)  # (rows, chunk)
    return cols.gather(1, values.argmax(dim=-1, keepdim=True))[:, 0]  # (rows,)


def max_lengths(src_mask: Tensor, a: float, b: float, max_positions: int) -> list[int]:
    """int(a * src_len + b) per sentence, capped at max_positions - 1 (BOS takes a position).

    Shapes: src_mask (batch, src_len) -> batch ints.
    """
    src_lens: list[int] = src_mask.sum(dim=1).tolist()
    return [max(0, min(int(a * n + b), max_positions - 1)) for n in src_lens]


def gnmt_penalty(length: int, length_penalty: float) -> float:
    """GNMT length penalty ((5 + length) / 6) ** length_penalty; `length` counts EOS."""
    return float(((5.0 + length) / 6.0) ** length_penalty)


LENGTH_NORMS: tuple[str, ...] = typing.get_args(LengthNorm)  # gnmt, average, none


def length_normaliser(length: int, length_penalty: float, norm: str) -> float:
    """What a finished hypothesis's log-prob is divided by to rank it; `length` counts EOS.

    gnmt: ((5 + length) / 6) ** length_penalty; average: length (per-token mean log-prob);
    none: 1. Each is positive and non-decreasing in length, which beam search's stopping
    bound relies on.
    """
    if norm == "gnmt":
        return gnmt_penalty(length, length_penalty)
    if norm == "average":
        return float(length)
    return 1.0


def ngram_ban(generated: Tensor, n: int, vocab: int) -> Tensor:
    """Tokens that would repeat an n-gram already in each row.

    Shapes: generated (rows, t) tokens without BOS -> (rows, vocab) bool, True = banned.
    """
    rows, t = generated.shape
    ban = torch.zeros(rows, vocab, dtype=torch.bool, device=generated.device)  # (rows, vocab)
    if n <= 0 or t < n:
        return ban
    grams = generated.unfold(1, n, 1)  # (rows, t - n + 1, n)
    context = generated[:, t - n + 1 :]  # (rows, n - 1)
    hit = (grams[:, :, :-1] == context[:, None, :]).all(dim=-1)  # (rows, t - n + 1)
    counts = torch.zeros(rows, vocab, device=generated.device)  # (rows, vocab)
    counts.scatter_add_(1, grams[:, :, -1], hit.float())
    return counts > 0  # (rows, vocab)


def constrain_(
    log_probs: Tensor,
    step: int | Tensor,
    max_lens: Tensor,
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    min_len: int,
    banned: Tensor | None = None,
    maxima: Tensor | None = None,
) -> Tensor:
    """Set forbidden tokens to -inf in place: PAD, BOS, early EOS, `banned`; only EOS at max length.

    Shapes: log_probs (rows, vocab), max_lens (rows,), banned (rows, vocab) -> (rows, vocab).
    `step` is the number of tokens generated so far: one for all rows, or (rows,) long when
    rows are at different steps. Writes only the columns and rows it bans. `maxima`, the
    CHUNK-wide slice maxima of `log_probs` (rows, chunks), are kept up to date in place.

    The searches call this once per step on a (rows, vocab) tensor they own: no (rows, vocab)
    mask or copy is made unless `banned` is given.
    """
    forced = (max_lens <= step).nonzero()[:, 0]  # (n_forced,) rows at their max length
    eos_kept = log_probs[forced, eos_id]  # (n_forced,) their EOS log-prob survives any ban
    log_probs[:, pad_id] = -math.inf
    log_probs[:, bos_id] = -math.inf
    if isinstance(step, Tensor):
        early = (step < min_len).nonzero()[:, 0]  # (n_early,)
        log_probs[early, eos_id] = -math.inf
    elif step < min_len:
        log_probs[:, eos_id] = -math.inf
    if banned is not None:
        log_probs.masked_fill_(banned, -math.inf)
    if forced.numel() > 0:
        log_probs.index_fill_(0, forced, -math.inf)
        log_probs[forced, eos_id] = eos_kept
    if maxima is not None:
        _refresh_maxima_(maxima, log_probs, (pad_id, bos_id, eos_id), forced, banned is not None)
    return log_probs  # (rows, vocab)


def _refresh_maxima_(
    maxima: Tensor, lp: Tensor, columns: tuple[int, ...], rows: Tensor, everywhere: bool
) -> None:
    """Recompute the chunk maxima `constrain_` may have lowered: the chunks holding `columns`
    in every row, and all chunks of `rows` (or all of them when `everywhere`).

    Shapes: maxima (rows, chunks), lp (rows, vocab), rows (n,) long.
    """
    if everywhere:
        maxima.copy_(chunk_maxima(lp))
        return
    for c in sorted({col // CHUNK for col in columns}):
        maxima[:, c] = lp[:, c * CHUNK : (c + 1) * CHUNK].amax(dim=1)  # (rows,)
    if rows.numel() > 0:
        maxima[rows] = chunk_maxima(lp[rows])  # (n, chunks)
