"""Greedy, beam and sampling search over `encode` / `init_cache` / `decode_step`.

Conventions shared by every search:
- Max output length per sentence = int(max_len_a * src_len + max_len_b) tokens, EOS excluded,
  with src_len the real (unpadded) source tokens; at that length EOS is forced (its log-prob
  counts). It is also capped so positions fit in the model's `max_positions`.
- `min_len` forbids EOS before that many tokens (the max length wins if they clash).
- PAD and BOS are never generated.
- Hypothesis tokens exclude BOS and EOS; `log_prob` includes the EOS log-prob.
- Call `model.eval()` first: dropout would make cached and uncached decoding differ.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from mtkit.model.cache import DecoderCache


class Seq2Seq(Protocol):
    """What search needs from a model (mtkit.model.transformer.Transformer, or a stub in tests)."""

    pad_id: int
    max_positions: int

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


# --------------------------------------------------------------------------- helpers


@dataclass
class _Stepper:
    """Next-token log-probs for a batch of prefixes, with or without the KV cache."""

    model: Seq2Seq
    memory: Tensor  # (rows, src_len, d_model); unused when `cache` is set
    src_mask: Tensor  # (rows, src_len)
    cache: DecoderCache | None

    @staticmethod
    def start(model: Seq2Seq, src: Tensor, src_mask: Tensor, use_cache: bool) -> _Stepper:
        """Run the encoder once (and project cross-attention K/V once when caching)."""
        memory = model.encode(src, src_mask)  # (batch, src_len, d_model)
        cache = model.init_cache(memory, src_mask) if use_cache else None
        return _Stepper(model, memory, src_mask, cache)

    def log_probs(self, prefix: Tensor) -> Tensor:
        """Shapes: prefix (rows, t) starting with BOS -> (rows, vocab) float32 log-probs."""
        if self.cache is not None:
            logits = self.model.decode_step(prefix[:, -1], self.cache)  # (rows, vocab)
        else:
            logits = self.model.decode(prefix, self.memory, self.src_mask)[:, -1]  # (rows, vocab)
        return logits.float().log_softmax(dim=-1)  # (rows, vocab)

    def select(self, index: Tensor) -> _Stepper:
        """Rows `index` (reorder beams, drop finished sentences, repeat for beams)."""
        if self.cache is not None:
            return _Stepper(self.model, self.memory, self.src_mask, self.cache.select(index))
        memory = self.memory.index_select(0, index)  # (new_rows, src_len, d_model)
        return _Stepper(self.model, memory, self.src_mask.index_select(0, index), None)

    def repeat(self, beam: int) -> _Stepper:
        """Each row `beam` times, sentence-major (the cache shares the per-sentence memory)."""
        if self.cache is not None:
            return _Stepper(self.model, self.memory, self.src_mask, self.cache.repeat(beam))
        rows = torch.arange(self.src_mask.size(0), device=self.src_mask.device)  # (batch,)
        return self.select(rows.repeat_interleave(beam))  # (batch*beam,) rows


def max_lengths(src_mask: Tensor, a: float, b: float, max_positions: int) -> list[int]:
    """int(a * src_len + b) per sentence, capped at max_positions - 1 (BOS takes a position).

    Shapes: src_mask (batch, src_len) -> batch ints.
    """
    src_lens: list[int] = src_mask.sum(dim=1).tolist()
    return [max(0, min(int(a * n + b), max_positions - 1)) for n in src_lens]


def gnmt_penalty(length: int, alpha: float) -> float:
    """GNMT length penalty ((5 + length) / 6) ** alpha; `length` counts EOS."""
    return float(((5.0 + length) / 6.0) ** alpha)


LENGTH_NORMS = ("gnmt", "average", "none")


def length_normaliser(length: int, alpha: float, norm: str) -> float:
    """What a finished hypothesis's log-prob is divided by to rank it; `length` counts EOS.

    gnmt: ((5 + length) / 6) ** alpha; average: length (per-token mean log-prob); none: 1.
    Each is positive and non-decreasing in length, which `_sentence_done` relies on.
    """
    if norm == "gnmt":
        return gnmt_penalty(length, alpha)
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
    step: int,
    max_lens: Tensor,
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    min_len: int,
    banned: Tensor | None = None,
) -> Tensor:
    """Set forbidden tokens to -inf in place: PAD, BOS, early EOS, `banned`; only EOS at max length.

    Shapes: log_probs (rows, vocab), max_lens (rows,), banned (rows, vocab) -> (rows, vocab).
    `step` is the number of tokens generated so far. Writes only the columns and rows it bans.

    The searches call this once per step on a (rows, vocab) tensor they own: no (rows, vocab)
    mask or copy is made unless `banned` is given.
    """
    forced = (max_lens <= step).nonzero()[:, 0]  # (n_forced,) rows at their max length
    eos_kept = log_probs[forced, eos_id]  # (n_forced,) their EOS log-prob survives any ban
    log_probs[:, pad_id] = -math.inf
    log_probs[:, bos_id] = -math.inf
    if step < min_len:
        log_probs[:, eos_id] = -math.inf
    if banned is not None:
        log_probs.masked_fill_(banned, -math.inf)
    if forced.numel() > 0:
        log_probs.index_fill_(0, forced, -math.inf)
        log_probs[forced, eos_id] = eos_kept
    return log_probs  # (rows, vocab)


# --------------------------------------------------------------------------- one path per row


def _one_path_search(
    model: Seq2Seq,
    src: Tensor,
    src_mask: Tensor,
    choose: Callable[[Tensor], Tensor],
    *,
    bos_id: int,
    eos_id: int,
    max_len_a: float,
    max_len_b: float,
    min_len: int,
    use_cache: bool,
) -> list[Hypothesis]:
    """Extend each sentence by `choose(log_probs)` until EOS; finished rows leave the batch."""
    batch = src.size(0)
    max_list = max_lengths(src_mask, max_len_a, max_len_b, model.max_positions)
    max_lens = torch.tensor(max_list, device=src.device)  # (batch,)
    stepper = _Stepper.start(model, src, src_mask, use_cache)
    prefix = src.new_full((batch, 1), bos_id)  # (batch, 1)
    total = torch.zeros(batch, device=src.device)  # (batch,)
    alive = torch.arange(batch, device=src.device)  # (batch,) original sentence index per row
    results: list[Hypothesis] = [Hypothesis([], 0.0, 0.0) for _ in range(batch)]
    step = 0
    while alive.numel() > 0:
        lp = stepper.log_probs(prefix)  # (rows, vocab)
        lp = constrain_(
            lp, step, max_lens, bos_id=bos_id, eos_id=eos_id, pad_id=model.pad_id, min_len=min_len
        )
        token = choose(lp)  # (rows,)
        total = total + lp.gather(1, token[:, None])[:, 0]  # (rows,)
        prefix = torch.cat([prefix, token[:, None]], dim=1)  # (rows, step + 2)
        done = token == eos_id  # (rows,)
        if bool(done.any()):
            fin = done.nonzero()[:, 0]  # (n_done,)
            tokens = prefix[fin, 1:-1].tolist()
            for i, toks, lp_sum in zip(
                alive[fin].tolist(), tokens, total[fin].tolist(), strict=True
            ):
                results[i] = Hypothesis(toks, lp_sum, lp_sum)
            keep = (~done).nonzero()[:, 0]  # (n_alive,)
            alive, prefix, total = alive[keep], prefix[keep], total[keep]
            max_lens = max_lens[keep]
            stepper = stepper.select(keep)
        step += 1
    return results


def greedy_search(
    model: Seq2Seq,
    src: Tensor,
    src_mask: Tensor,
    *,
    bos_id: int,
    eos_id: int,
    max_len_a: float = 1.5,
    max_len_b: float = 10,
    min_len: int = 0,
    use_cache: bool = True,
) -> list[Hypothesis]:
    """Most probable next token at each step; one hypothesis per sentence (score = log_prob).

    Shapes: src (batch, src_len), src_mask (batch, src_len) bool.
    """
    with torch.inference_mode():
        return _one_path_search(
            model, src, src_mask, lambda lp: lp.argmax(dim=-1),
            bos_id=bos_id, eos_id=eos_id, max_len_a=max_len_a, max_len_b=max_len_b,
            min_len=min_len, use_cache=use_cache,
        )  # fmt: skip


def sampling_probs(log_probs: Tensor, temperature: float, top_k: int, top_p: float) -> Tensor:
    """Temperature, then top-k, then nucleus (top-p) filtering; returns probabilities.

    Shapes: (rows, vocab) -> (rows, vocab).
    """
    logits = log_probs / temperature  # (rows, vocab)
    if top_k > 0:
        kth = logits.topk(min(top_k, logits.size(-1)), dim=-1).values[:, -1:]  # (rows, 1)
        logits = logits.masked_fill(logits < kth, -math.inf)
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)  # (rows, vocab) each
        probs = sorted_logits.softmax(dim=-1)  # (rows, vocab)
        before = probs.cumsum(dim=-1) - probs  # (rows, vocab) mass of better tokens
        drop = (before >= top_p).scatter(1, order, before >= top_p)  # (rows, vocab)
        logits = logits.masked_fill(drop, -math.inf)
    return logits.softmax(dim=-1)  # (rows, vocab)


def sample(
    model: Seq2Seq,
    src: Tensor,
    src_mask: Tensor,
    *,
    bos_id: int,
    eos_id: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    max_len_a: float = 1.5,
    max_len_b: float = 10,
    min_len: int = 0,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
) -> list[Hypothesis]:
    """Ancestral sampling; `log_prob`/`score` are under the model (before temperature/filters).

    Shapes: src (batch, src_len), src_mask (batch, src_len) bool.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")

    def choose(lp: Tensor) -> Tensor:
        probs = sampling_probs(lp, temperature, top_k, top_p)  # (rows, vocab)
        return torch.multinomial(probs, 1, generator=generator)[:, 0]  # (rows,)

    with torch.inference_mode():
        return _one_path_search(
            model, src, src_mask, choose,
            bos_id=bos_id, eos_id=eos_id, max_len_a=max_len_a, max_len_b=max_len_b,
            min_len=min_len, use_cache=use_cache,
        )  # fmt: skip


# --------------------------------------------------------------------------- beam search


def _add_finished(kept: list[Hypothesis], hyp: Hypothesis, beam_size: int) -> list[Hypothesis]:
    """The `beam_size` best finished hypotheses, best first."""
    return sorted([*kept, hyp], key=lambda h: -h.score)[:beam_size]


def _collect_finished(
    kept: list[list[Hypothesis]],
    alive: list[int],
    prefix: Tensor,
    ends: Tensor,
    top: Tensor,
    origin: Tensor,
    beam: int,
    penalty: float,
) -> None:
    """Add the candidates flagged in `ends` to their sentence's kept hypotheses.

    Shapes: prefix (n*beam, t) with BOS, ends/top/origin (n, k) over the ranked candidates.
    """
    sent, rank = ends.nonzero().unbind(dim=1)  # (n_ends,) each
    if sent.numel() == 0:
        return
    rows = sent * beam + origin[sent, rank]  # (n_ends,)
    tokens, raws = prefix[rows, 1:].tolist(), top[sent, rank].tolist()
    for s, tk, raw in zip(sent.tolist(), tokens, raws, strict=True):
        i = alive[s]
        kept[i] = _add_finished(kept[i], Hypothesis(tk, raw / penalty, raw), beam)


def _sentence_done(
    kept: list[Hypothesis],
    best_live: float,
    step: int,
    max_len: int,
    beam_size: int,
    alpha: float,
    norm: str = "gnmt",
) -> bool:
    """True when no live hypothesis of this sentence can still enter the kept set.

    A live prefix of `step + 1` tokens with raw log-prob `best_live` (<= 0) ends at a length
    (EOS counted) in [step + 2, max_len + 1] with raw log-prob <= best_live; the penalty is
    monotone in length, so its best normalised score is at one of the two ends.
    """
    if step >= max_len or best_live == -math.inf:
        return True
    if len(kept) < beam_size:
        return False
    ends = (step + 2, max_len + 1)
    bound = max(best_live / length_normaliser(n, alpha, norm) for n in ends)
    return bound <= kept[-1].score


def beam_search(
    model: Seq2Seq,
    src: Tensor,
    src_mask: Tensor,
    *,
    bos_id: int,
    eos_id: int,
    beam_size: int = 5,
    length_penalty: float = 1.0,
    length_norm: str = "gnmt",
    max_len_a: float = 1.5,
    max_len_b: float = 10,
    min_len: int = 0,
    nbest: int = 1,
    no_repeat_ngram: int = 0,
    use_cache: bool = True,
) -> list[list[Hypothesis]]:
    """Batched beam search; per sentence up to `nbest` distinct hypotheses, best first.

    Scores are GNMT-normalised: log_prob / ((5 + len) / 6) ** length_penalty (len counts EOS);
    `length_norm` "average" divides by len instead, "none" ranks by raw log_prob.
    A sentence stops once it has `beam_size` finished hypotheses that no live one can beat.
    Shapes: src (batch, src_len), src_mask (batch, src_len) bool.
    """
    if beam_size < 1 or not 1 <= nbest <= beam_size:
        raise ValueError(f"need 1 <= nbest <= beam_size, got nbest={nbest}, beam_size={beam_size}")
    if length_norm not in LENGTH_NORMS:
        raise ValueError(f"length_norm must be one of {LENGTH_NORMS}, got {length_norm!r}")
    with torch.inference_mode():
        kept = _beam_search(
            model, src, src_mask, bos_id=bos_id, eos_id=eos_id, beam=beam_size,
            alpha=length_penalty, norm=length_norm, max_len_a=max_len_a, max_len_b=max_len_b,
            min_len=min_len, no_repeat_ngram=no_repeat_ngram, use_cache=use_cache,
        )  # fmt: skip
    return [hyps[:nbest] for hyps in kept]


def _beam_search(
    model: Seq2Seq,
    src: Tensor,
    src_mask: Tensor,
    *,
    bos_id: int,
    eos_id: int,
    beam: int,
    alpha: float,
    norm: str,
    max_len_a: float,
    max_len_b: float,
    min_len: int,
    no_repeat_ngram: int,
    use_cache: bool,
) -> list[list[Hypothesis]]:
    """The beam loop; rows are (sentence, beam) pairs flattened to batch*beam."""
    batch, device = src.size(0), src.device
    max_list = max_lengths(src_mask, max_len_a, max_len_b, model.max_positions)
    max_lens = torch.tensor(max_list, device=device)  # (batch,)
    stepper = _Stepper.start(model, src, src_mask, use_cache)  # encoder + cross K/V once
    stepper = stepper.repeat(beam)  # (batch*beam) rows, sentence-major
    prefix = src.new_full((batch * beam, 1), bos_id)  # (batch*beam, 1)
    scores = torch.full((batch, beam), -math.inf, device=device)  # (batch, beam)
    scores[:, 0] = 0.0  # all beams start identical: only the first one is live
    alive = list(range(batch))  # original sentence index of each active sentence
    kept: list[list[Hypothesis]] = [[] for _ in range(batch)]
    step = 0
    while alive:
        n = len(alive)
        lp = stepper.log_probs(prefix)  # (n*beam, vocab)
        vocab = lp.size(1)
        banned = ngram_ban(prefix[:, 1:], no_repeat_ngram, vocab) if no_repeat_ngram else None
        lp = constrain_(
            lp, step, max_lens.repeat_interleave(beam), bos_id=bos_id, eos_id=eos_id,
            pad_id=model.pad_id, min_len=min_len, banned=banned,
        )  # fmt: skip
        cand = lp.add_(scores.view(-1, 1)).view(n, beam * vocab)  # (n, beam*vocab), in place
        k = min(2 * beam, beam * vocab)  # 2 x beam in case half are EOS
        top, idx = cand.topk(k, dim=1)  # (n, k) each
        origin, token = idx // vocab, idx % vocab  # (n, k) each
        is_eos = token == eos_id  # (n, k)
        # 1) EOS candidates ranked within the beam finish a hypothesis
        ends = is_eos & (torch.arange(k, device=device) < beam) & (top > -math.inf)  # (n, k)
        _collect_finished(
            kept, alive, prefix, ends, top, origin, beam, length_normaliser(step + 1, alpha, norm)
        )
        # 2) the best `beam` non-EOS candidates stay live (stable sort keeps rank order)
        live = is_eos.int().argsort(dim=1, stable=True)[:, :beam]  # (n, beam)
        scores, origin, token = top.gather(1, live), origin.gather(1, live), token.gather(1, live)
        rows_2d = torch.arange(n, device=device)[:, None] * beam + origin  # (n, beam)
        # 3) finished sentences leave the batch
        best_live: list[float] = scores.max(dim=1).values.tolist()
        keep = [
            s for s in range(n)
            if not _sentence_done(
                kept[alive[s]], best_live[s], step, max_list[s], beam, alpha, norm
            )
        ]  # fmt: skip
        if len(keep) < n:
            keep_t = torch.tensor(keep, dtype=torch.long, device=device)  # (n_keep,)
            rows_2d, scores, token = rows_2d[keep_t], scores[keep_t], token[keep_t]
            max_lens = max_lens[keep_t]
            alive, max_list = [alive[s] for s in keep], [max_list[s] for s in keep]
        rows = rows_2d.view(-1)  # (n_keep*beam,)
        prefix = torch.cat([prefix[rows], token.view(-1, 1)], dim=1)  # (n_keep*beam, step + 2)
        stepper = stepper.select(rows)
        step += 1
    return kept
