"""Batched beam search with length-normalised ranking, n-best lists and early stopping.

Conventions (lengths, bans, what a Hypothesis holds) are in mtkit.search.common.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mtkit.config.schema import DecodingConfig
from mtkit.search.common import (
    Hypothesis,
    Seq2Seq,
    Stepper,
    constrain_,
    length_normaliser,
    max_lengths,
    ngram_ban,
)


def beam_search(
    model: Seq2Seq,
    src: Tensor,
    src_mask: Tensor,
    dec: DecodingConfig,
    *,
    bos_id: int,
    eos_id: int,
    use_cache: bool = True,
) -> list[list[Hypothesis]]:
    """Batched beam search; per sentence up to `dec.nbest` distinct hypotheses, best first.

    Scores are GNMT-normalised: log_prob / ((5 + len) / 6) ** dec.length_penalty (len counts
    EOS); `dec.length_norm` "average" divides by len instead, "none" ranks by raw log_prob.
    A sentence stops once it has `dec.nbest` finished hypotheses that no live one can beat:
    its n-best list is then final (later hypotheses could only rank below it).
    Also uses the length keys and dec.no_repeat_ngram (sampling keys are ignored).
    Shapes: src (batch, src_len), src_mask (batch, src_len) bool.
    """
    with torch.inference_mode():
        kept = _beam_search(model, src, src_mask, dec, bos_id, eos_id, use_cache)
    return [hyps[: dec.nbest] for hyps in kept]


def top_candidates(lp: Tensor, scores: Tensor, k: int, chunk: int = 64) -> tuple[Tensor, Tensor]:
    """The `k` best of each sentence's `beam * vocab` candidate scores lp + score, best first.

    The same values as `(lp + scores[..., None]).view(n, -1).topk(k)` (ties aside), without
    adding to or ranking all of them: each row's vocabulary is cut into chunks of `chunk`
    tokens, and the k best candidates lie in the k chunks with the best maxima (a chunk holding
    one of them has a maximum at least the k-th best value). Adding a row's score to a chunk's
    maximum gives the maximum of the chunk plus the score exactly (rounding is monotone).
    Shapes: lp (n*beam, vocab), scores (n, beam) -> values (n, k), indices into beam*vocab (n, k).
    """
    rows, vocab = lp.shape
    n, beam = scores.shape
    whole = vocab // chunk * chunk
    maxima = lp[:, :whole].view(rows, whole // chunk, chunk).amax(dim=-1)  # (n*beam, chunks)
    if whole < vocab:  # the last, shorter chunk
        maxima = torch.cat([maxima, lp[:, whole:].amax(dim=-1, keepdim=True)], dim=1)
    chunks = maxima.size(1)
    best = (maxima + scores.view(rows, 1)).view(n, beam * chunks)  # (n, beam*chunks)
    picked = best.topk(min(k, beam * chunks), dim=1).indices  # (n, k') best chunks
    origin = picked // chunks  # (n, k') beam of each chunk
    cols = (picked % chunks * chunk)[..., None] + torch.arange(chunk, device=lp.device)
    inside = cols < vocab  # (n, k', chunk) False past the last token
    cols = cols.clamp(max=vocab - 1)  # (n, k', chunk)
    rows_of = (torch.arange(n, device=lp.device)[:, None] * beam + origin)[..., None]
    values = lp[rows_of, cols] + scores.gather(1, origin)[..., None]  # (n, k', chunk)
    values = values.masked_fill_(~inside, -math.inf).view(n, -1)  # (n, k' * chunk)
    top, where = values.topk(k, dim=1)  # (n, k) each
    index = (origin[..., None] * vocab + cols).view(n, -1).gather(1, where)  # (n, k)
    return top, index


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
    normaliser: float,
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
        kept[i] = _add_finished(kept[i], Hypothesis(tk, raw / normaliser, raw), beam)


def _sentence_done(
    kept: list[Hypothesis], best_live: float, step: int, max_len: int, dec: DecodingConfig
) -> bool:
    """True when no live hypothesis of this sentence can still enter its n-best list.

    A live prefix of `step + 1` tokens with raw log-prob `best_live` (<= 0) ends at a length
    (EOS counted) in [step + 2, max_len + 1] with raw log-prob <= best_live; the normaliser is
    monotone in length, so its best normalised score is at one of the two ends. A later
    hypothesis that only ties the `nbest`-th score sorts after it, so the list is final.
    """
    if step >= max_len or best_live == -math.inf:
        return True
    if len(kept) < dec.nbest:
        return False
    ends = (step + 2, max_len + 1)
    bound = max(best_live / length_normaliser(n, dec.length_penalty, dec.length_norm) for n in ends)
    return bound <= kept[dec.nbest - 1].score


def _beam_search(
    model: Seq2Seq,
    src: Tensor,
    src_mask: Tensor,
    dec: DecodingConfig,
    bos_id: int,
    eos_id: int,
    use_cache: bool,
) -> list[list[Hypothesis]]:
    """The beam loop; rows are (sentence, beam) pairs flattened to batch*beam."""
    batch, device, beam = src.size(0), src.device, dec.beam_size
    max_list = max_lengths(src_mask, dec.max_len_a, dec.max_len_b, model.max_positions)
    max_lens = torch.tensor(max_list, device=device)  # (batch,)
    stepper = Stepper.start(model, src, src_mask, use_cache)  # encoder + cross K/V once
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
        ngram = dec.no_repeat_ngram
        banned = ngram_ban(prefix[:, 1:], ngram, vocab) if ngram else None  # (n*beam, vocab)
        lp = constrain_(
            lp, step, max_lens.repeat_interleave(beam), bos_id=bos_id, eos_id=eos_id,
            pad_id=model.pad_id, min_len=dec.min_len, banned=banned,
        )  # fmt: skip
        k = min(2 * beam, beam * vocab)  # 2 x beam in case half are EOS
        top, idx = top_candidates(lp, scores, k)  # (n, k) each, over beam*vocab
        origin, token = idx // vocab, idx % vocab  # (n, k) each
        is_eos = token == eos_id  # (n, k)
        # 1) EOS candidates ranked within the beam finish a hypothesis
        ends = is_eos & (torch.arange(k, device=device) < beam) & (top > -math.inf)  # (n, k)
        normaliser = length_normaliser(step + 1, dec.length_penalty, dec.length_norm)
        _collect_finished(kept, alive, prefix, ends, top, origin, beam, normaliser)
        # 2) the best `beam` non-EOS candidates stay live (stable sort keeps rank order)
        live = is_eos.int().argsort(dim=1, stable=True)[:, :beam]  # (n, beam)
        scores, origin, token = top.gather(1, live), origin.gather(1, live), token.gather(1, live)
        rows_2d = torch.arange(n, device=device)[:, None] * beam + origin  # (n, beam)
        # 3) finished sentences leave the batch
        best_live: list[float] = scores.max(dim=1).values.tolist()
        keep = [
            s for s in range(n)
            if not _sentence_done(kept[alive[s]], best_live[s], step, max_list[s], dec)
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
