"""Batched beam search with length-normalised ranking, n-best lists and early stopping.

Conventions (lengths, bans, what a Hypothesis holds) are in mtkit.search.common.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from mtkit.config.schema import DecodingConfig
from mtkit.search.common import (
    CHUNK,
    Hypothesis,
    Seq2Seq,
    Stepper,
    chunk_maxima,
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


def top_candidates(
    lp: Tensor,
    scores: Tensor,
    k: int,
    maxima: Tensor | None = None,
    chunk: int = CHUNK,
    rows: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The `k` best of each sentence's `beam * vocab` candidate scores lp + score, best first.

    The same values as `(lp + scores[..., None]).view(n, -1).topk(k)` (ties aside), without
    adding to or ranking all of them: each row's vocabulary is cut into chunks of `chunk`
    tokens, and the k best candidates lie in the k chunks with the best maxima (a chunk holding
    one of them has a maximum at least the k-th best value). Adding a row's score to a chunk's
    maximum gives the maximum of the chunk plus the score exactly (rounding is monotone).
    `maxima`: `chunk_maxima(lp, chunk)` when the caller has them.
    `lp` may also hold one row per sentence that all its beams share (a batch's first step,
    where every beam is the same prefix): the candidates, their order and ties are then those
    of that row repeated `beam` times. `rows` says which row of `lp` each (sentence, beam)
    reads where sentences differ in that (some share one row, others have `beam`).
    Shapes: lp (n*beam or n or any, vocab), scores (n, beam), maxima (like lp's rows, chunks),
    rows None or (n, beam) long -> values (n, k), indices into beam*vocab (n, k).
    """
    vocab = lp.size(1)
    n, beam = scores.shape
    shared = rows is None and lp.size(0) == n and beam > 1  # one row of log-probs per sentence
    if maxima is None:
        maxima = chunk_maxima(lp, chunk)  # (lp rows, chunks)
    if shared:
        maxima = maxima.repeat_interleave(beam, dim=0)  # (n*beam, chunks): the same shapes below
    elif rows is not None:
        maxima = maxima.index_select(0, rows.view(-1))  # (n*beam, chunks)
    chunks = maxima.size(1)
    best = (maxima + scores.view(n * beam, 1)).view(n, beam * chunks)  # (n, beam*chunks)
    picked = best.topk(min(k, beam * chunks), dim=1).indices  # (n, k') best chunks
    origin = picked // chunks  # (n, k') beam of each chunk
    cols = (picked % chunks * chunk)[..., None] + torch.arange(chunk, device=lp.device)
    inside = cols < vocab  # (n, k', chunk) False past the last token
    cols = cols.clamp(max=vocab - 1)  # (n, k', chunk)
    flat = (origin[..., None] * vocab + cols).view(n, -1)  # (n, k' * chunk) into beam*vocab
    if shared:  # every beam reads the sentence's row
        values = lp.gather(1, cols.view(n, -1)).view(n, -1, chunk)  # (n, k', chunk)
    elif rows is not None:  # each chunk from its beam's row of lp
        at = rows.gather(1, origin)[..., None] * vocab + cols  # (n, k', chunk) into lp's elements
        values = lp.reshape(-1).gather(0, at.view(-1)).view(n, -1, chunk)
    else:
        values = lp.reshape(n, beam * vocab).gather(1, flat).view(n, -1, chunk)
    values = values + scores.gather(1, origin)[..., None]
    values = values.masked_fill_(~inside, -math.inf).view(n, -1)  # (n, k' * chunk)
    top, where = values.topk(k, dim=1)  # (n, k) each
    return top, flat.gather(1, where)  # (n, k) each


def _add_finished(kept: list[Hypothesis], hyp: Hypothesis, beam_size: int) -> list[Hypothesis]:
    """The `beam_size` best finished hypotheses, best first."""
    return sorted([*kept, hyp], key=lambda h: -h.score)[:beam_size]


def _collect_finished(
    kept: list[list[Hypothesis]],
    prefix: Tensor,
    ends: Tensor,
    top: Tensor,
    origin: Tensor,
    beam: int,
    starts: list[int],
    normalisers: list[float],
) -> None:
    """Add the candidates flagged in `ends` to their sentence's kept hypotheses.

    Sentence s's tokens start after its BOS at prefix column `starts[s]`; its finished
    hypotheses are divided by `normalisers[s]`.
    Shapes: prefix (n*beam, t) with BOS, ends/top/origin (n, k) over the ranked candidates.
    """
    sent, rank = ends.nonzero().unbind(dim=1)  # (n_ends,) each
    if sent.numel() == 0:
        return
    rows = sent * beam + origin[sent, rank]  # (n_ends,)
    tokens, raws = prefix[rows].tolist(), top[sent, rank].tolist()
    for s, tk, raw in zip(sent.tolist(), tokens, raws, strict=True):
        hyp = Hypothesis(tk[starts[s] + 1 :], raw / normalisers[s], raw)
        kept[s] = _add_finished(kept[s], hyp, beam)


def _sentence_done(
    kept: list[Hypothesis], best_live: float, step: int, max_len: int, dec: DecodingConfig
) -> bool:
    """True when no live hypothesis of this sentence can still enter its n-best list.

    A live prefix of `step + 1` tokens with raw log-prob `best_live` (<= 0) ends at a length
    (EOS counted) in [step + 2, max_len + 1] with raw log-prob <= best_live; the normaliser is
    monotone in length, so its best normalised score is at one of the two ends. A later
    hypothesis that only ties the `nbest`-th score sorts after it, so the list is final.
    With dec.early_stopping "heuristic" only the length it would have if it ended now counts.
    """
    if step >= max_len or best_live == -math.inf:
        return True
    if len(kept) < dec.nbest:
        return False
    ends = (step + 2, max_len + 1) if dec.early_stopping == "exact" else (step + 2,)
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
    """One batch through a `BeamSearch`, stepped until every sentence is done."""
    search = BeamSearch(model, dec, bos_id=bos_id, eos_id=eos_id, use_cache=use_cache)
    search.add(src, src_mask, list(range(src.size(0))))
    kept: list[list[Hypothesis]] = [[] for _ in range(src.size(0))]
    while search.sentences:
        for key, hyps in search.step():
            kept[key] = hyps
    return kept


class BeamSearch:
    """A batched beam search that new sentences can join between steps (continuous batching).

    `add` encodes sentences, which take part from the next `step` on; `step` extends every live
    sentence by one token and returns the (key, hypotheses) of those that finished. Rows are
    (sentence, beam) pairs flattened to sentences*beam, sentence-major. A sentence that joins
    late is decoded as it would be alone: its positions count from its own start and its
    self-attention sees only its own columns (mtkit.model.cache). Joining a running search
    needs the KV cache and no n-gram ban.
    """

    def __init__(
        self, model: Seq2Seq, dec: DecodingConfig, *, bos_id: int, eos_id: int, use_cache: bool
    ) -> None:
        self.model, self.dec, self.use_cache = model, dec, use_cache
        self.bos_id, self.eos_id = bos_id, eos_id
        self._reset()

    def _reset(self) -> None:
        """No live sentence: the next `add` starts a new batch at column 0."""
        dec = self.dec
        self.stepper: Stepper | None = None
        # until its first step a sentence has one stepper row: its `beam` beams are the same
        # prefix, and all but the first have score -inf (computing them would be 4 of ~80
        # decoder rows a sentence at beam 5); such sentences are the last `singles` ones
        self.singles = 0
        self.prefix = torch.empty(0, 1, dtype=torch.long)  # (n*beam, t + 1) BOS, tokens so far
        self.scores = torch.empty(0, dec.beam_size)  # (n, beam) raw log-probs of live beams
        self.max_lens = torch.empty(0, dtype=torch.long)  # (n,)
        self.keys: list[Any] = []  # the caller's key of each live sentence
        self.max_list: list[int] = []  # max output length of each live sentence
        self.starts: list[int] = []  # prefix column of each live sentence's BOS
        self.kept: list[list[Hypothesis]] = []  # finished hypotheses, best first

    @property
    def sentences(self) -> int:
        """Live sentences."""
        return len(self.keys)

    def add(self, src: Tensor, src_mask: Tensor, keys: list[Any]) -> None:
        """Encode `src`; its sentences join at the next step. Shapes: src/src_mask (n_new, len)."""
        beam, n_new = self.dec.beam_size, src.size(0)
        fresh = Stepper.start(self.model, src, src_mask, self.use_cache)  # one row a sentence
        column = self.prefix.size(1) - 1 if self.stepper is not None else 0
        prefix = src.new_full((n_new * beam, column + 1), self.model.pad_id)  # (n_new*beam, t+1)
        prefix[:, column] = self.bos_id
        scores = torch.full((n_new, beam), -math.inf, device=src.device)  # (n_new, beam)
        scores[:, 0] = 0.0  # all beams start identical: only the first one is live
        max_new = max_lengths(src_mask, self.dec.max_len_a, self.dec.max_len_b,
                              self.model.max_positions)  # fmt: skip
        if self.stepper is None:
            # a lone sentence keeps `beam` rows: a one-row product can round differently
            single = n_new > 1 and beam > 1
            self.stepper = fresh.as_single(beam) if single else fresh.repeat(beam)
            self.singles = n_new if single else 0
            self.prefix, self.scores = prefix, scores
            self.max_lens = torch.tensor(max_new, device=src.device)  # (n_new,)
        else:
            if self.dec.no_repeat_ngram:
                raise ValueError("sentences cannot join a running search with an n-gram ban")
            if self.stepper.mixes and beam > 1:  # joiners start with one row each
                self.stepper = self.stepper.join(fresh.as_single(beam))
                self.singles += n_new
            else:
                self._spread()
                self.stepper = self.stepper.join(fresh.repeat(beam))
            self.prefix = torch.cat([self.prefix, prefix])  # (n*beam, t + 1)
            self.scores = torch.cat([self.scores, scores])  # (n, beam)
            self.max_lens = torch.cat([self.max_lens, self.max_lens.new_tensor(max_new)])
        self.keys += keys
        self.max_list += max_new
        self.starts += [column] * n_new
        self.kept += [[] for _ in range(n_new)]

    def step(self) -> list[tuple[Any, list[Hypothesis]]]:
        """One token for every live sentence; the (key, n-best list) of those now done."""
        if self.stepper is None:
            return []
        dec, beam, column = self.dec, self.dec.beam_size, self.prefix.size(1) - 1
        steps = [column - start for start in self.starts]  # tokens generated per sentence
        row_map = self._row_map()  # None, or (n, beam) stepper row of each beam
        mixed = 0 < self.singles < len(self.keys)  # some sentences single, some not
        firsts = self._prefix_rows() if mixed else None  # (rows,) prefix row of each row
        prefix = self.prefix  # (rows, t + 1): n*beam rows, n (all single), or mixed
        if firsts is not None:
            prefix = self.prefix.index_select(0, firsts)
        elif self.singles:
            prefix = self.prefix[::beam]
        lp, maxima = self.stepper.log_probs(prefix)  # (rows, V), None or (rows, chunks)
        sentence = None if firsts is None else firsts // beam  # (rows,)
        lp = self._constrained(lp, maxima, column, steps, prefix, sentence)
        vocab = lp.size(1)
        k = min(2 * beam, beam * vocab)  # 2 x beam in case half are EOS
        mapped = row_map if mixed else None  # all single: lp's rows are the sentences'
        top, idx = top_candidates(lp, self.scores, k, maxima, rows=mapped)  # (n, k) each
        origin, token = idx // vocab, idx % vocab  # (n, k) each
        is_eos = token == self.eos_id  # (n, k)
        # 1) EOS candidates ranked within the beam finish a hypothesis
        ends = is_eos & (torch.arange(k, device=lp.device) < beam) & (top > -math.inf)  # (n, k)
        lengths = {
            s + 1: length_normaliser(s + 1, dec.length_penalty, dec.length_norm) for s in set(steps)
        }
        normalisers = [lengths[s + 1] for s in steps]  # one per sentence, computed once per step
        _collect_finished(self.kept, self.prefix, ends, top, origin, beam, self.starts, normalisers)
        # 2) the best `beam` non-EOS candidates stay live (stable sort keeps rank order)
        live = is_eos.int().argsort(dim=1, stable=True)[:, :beam]  # (n, beam)
        scores, origin, token = top.gather(1, live), origin.gather(1, live), token.gather(1, live)
        # 3) finished sentences leave the batch
        best_live: list[float] = scores.max(dim=1).values.tolist()
        n = len(self.keys)
        done = [
            _sentence_done(self.kept[s], best_live[s], steps[s], self.max_list[s], dec)
            for s in range(n)
        ]  # fmt: skip
        finished = [(self.keys[s], self.kept[s][: dec.nbest]) for s in range(n) if done[s]]
        self._advance([s for s in range(n) if not done[s]], origin, scores, token, row_map)
        return finished

    def _constrained(
        self,
        lp: Tensor,
        maxima: Tensor | None,
        column: int,
        steps: list[int],
        prefix: Tensor,
        sentence: Tensor | None,
    ) -> Tensor:
        """The step's bans (mtkit.search.common.constrain_), `maxima` kept up to date.

        Shapes: lp (rows, vocab), maxima (rows, chunks), prefix (rows, t + 1); rows are the
        n*beam beams, the n sentences (all single), or `sentence` (rows,) says whose they are.
        """
        ngram = self.dec.no_repeat_ngram
        per = lp.size(0) // len(steps)  # rows per sentence, when they have the same number

        def per_row(x: Tensor) -> Tensor:  # (n,) -> (rows,)
            return x.repeat_interleave(per) if sentence is None else x.index_select(0, sentence)

        banned = ngram_ban(prefix[:, 1:], ngram, lp.size(1)) if ngram else None
        step: int | Tensor = column  # the same for all while every sentence started at 0
        if any(self.starts):
            step = per_row(torch.tensor(steps, device=lp.device))  # (rows,)
        return constrain_(
            lp, step, per_row(self.max_lens), bos_id=self.bos_id, eos_id=self.eos_id,
            pad_id=self.model.pad_id, min_len=self.dec.min_len, banned=banned, maxima=maxima,
        )  # fmt: skip

    def _row_map(self) -> Tensor | None:
        """The stepper row of each live sentence's beams: None while every sentence has `beam`
        rows (row s*beam + b); a single sentence's beams all read its one row.
        Shapes: -> (n, beam) long."""
        if not self.singles:
            return None
        n, beam = len(self.keys), self.dec.beam_size
        settled = n - self.singles
        device = self.scores.device
        rows = torch.arange(n, device=device)[:, None] * beam + torch.arange(beam, device=device)
        rows[settled:] = (settled * beam + torch.arange(self.singles, device=device))[:, None]
        return rows  # (n, beam)

    def _prefix_rows(self) -> Tensor:
        """The `prefix` row that each stepper row extends (a single sentence's first).
        Shapes: -> (rows,) long."""
        n, beam = len(self.keys), self.dec.beam_size
        settled = n - self.singles
        device = self.scores.device
        return torch.cat([torch.arange(settled * beam, device=device),
                          torch.arange(settled, n, device=device) * beam])  # fmt: skip

    def _spread(self) -> None:
        """Single sentences get one stepper row per beam (before a join that cannot mix them)."""
        row_map = self._row_map()
        if row_map is not None and self.stepper is not None:
            self.stepper = self.stepper.select(row_map.view(-1))
        self.singles = 0

    def _advance(
        self, keep: list[int], origin: Tensor, scores: Tensor, token: Tensor, row_map: Tensor | None
    ) -> None:
        """Keep sentences `keep`, their beams extended by the chosen tokens.

        Shapes: origin/scores/token (n, beam), row_map None or (n, beam) (`_row_map`).
        """
        assert self.stepper is not None
        n, beam = origin.size(0), self.dec.beam_size
        rows_2d = torch.arange(n, device=origin.device)[:, None] * beam + origin  # (n, beam)
        from_rows = rows_2d if row_map is None else row_map.gather(1, origin)  # stepper rows
        self.singles = 0
        if not keep:
            self._reset()
            return
        if len(keep) < n:
            keep_t = torch.tensor(keep, dtype=torch.long, device=origin.device)  # (n_keep,)
            rows_2d, scores, token = rows_2d[keep_t], scores[keep_t], token[keep_t]
            from_rows = from_rows[keep_t]
            self.max_lens = self.max_lens[keep_t]
            for name in ("keys", "max_list", "starts", "kept"):
                values = getattr(self, name)
                setattr(self, name, [values[s] for s in keep])
        rows = rows_2d.view(-1)  # (n_keep*beam,)
        self.prefix = torch.cat([self.prefix[rows], token.view(-1, 1)], dim=1)  # (.., t + 2)
        self.scores = scores
        self.stepper = self.stepper.select(from_rows.reshape(-1))  # drops columns before `first`
        first = min(self.starts)
        if first:  # columns before every live sentence's start: dropped
            self.prefix = self.prefix[:, first:]
            self.starts = [start - first for start in self.starts]
