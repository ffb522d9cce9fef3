"""One path per sentence: greedy search (argmax) and ancestral sampling.

Conventions (lengths, bans, what a Hypothesis holds) are in mtkit.search.common.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from mtkit.config.schema import DecodingConfig
from mtkit.search.common import (
    Hypothesis,
    Seq2Seq,
    Stepper,
    constrain_,
    max_lengths,
    row_argmax,
)


def _one_path_search(
    model: Seq2Seq,
    src: Tensor,
    src_mask: Tensor,
    dec: DecodingConfig,
    choose: Callable[[Tensor, Tensor | None], Tensor],
    *,
    bos_id: int,
    eos_id: int,
    use_cache: bool,
) -> list[Hypothesis]:
    """Extend each sentence by `choose(log_probs, chunk maxima or None)` until EOS; finished
    rows leave the batch."""
    batch = src.size(0)
    max_list = max_lengths(src_mask, dec.max_len_a, dec.max_len_b, model.max_positions)
    max_lens = torch.tensor(max_list, device=src.device)  # (batch,)
    stepper = Stepper.start(model, src, src_mask, use_cache)
    prefix = src.new_full((batch, 1), bos_id)  # (batch, 1)
    total = torch.zeros(batch, device=src.device)  # (batch,)
    alive = torch.arange(batch, device=src.device)  # (batch,) original sentence index per row
    results: list[Hypothesis] = [Hypothesis([], 0.0, 0.0) for _ in range(batch)]
    step = 0
    while alive.numel() > 0:
        lp, maxima = stepper.log_probs(prefix)  # (rows, vocab), None or (rows, chunks)
        lp = constrain_(
            lp, step, max_lens, bos_id=bos_id, eos_id=eos_id, pad_id=model.pad_id,
            min_len=dec.min_len, maxima=maxima,
        )  # fmt: skip
        token = choose(lp, maxima)  # (rows,)
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
    dec: DecodingConfig,
    *,
    bos_id: int,
    eos_id: int,
    use_cache: bool = True,
) -> list[Hypothesis]:
    """Most probable next token at each step; one hypothesis per sentence (score = log_prob).

    Uses dec.max_len_a, dec.max_len_b and dec.min_len.
    Shapes: src (batch, src_len), src_mask (batch, src_len) bool.
    """
    with torch.inference_mode():
        return _one_path_search(
            model, src, src_mask, dec, row_argmax,
            bos_id=bos_id, eos_id=eos_id, use_cache=use_cache,
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
    dec: DecodingConfig,
    *,
    bos_id: int,
    eos_id: int,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
) -> list[Hypothesis]:
    """Ancestral sampling; `log_prob`/`score` are under the model (before temperature/filters).

    Uses dec.temperature, dec.top_k, dec.top_p and the length keys; one sample per row.
    Shapes: src (batch, src_len), src_mask (batch, src_len) bool.
    """

    def choose(lp: Tensor, maxima: Tensor | None) -> Tensor:
        probs = sampling_probs(lp, dec.temperature, dec.top_k, dec.top_p)  # (rows, vocab)
        return torch.multinomial(probs, 1, generator=generator)[:, 0]  # (rows,)

    with torch.inference_mode():
        return _one_path_search(
            model, src, src_mask, dec, choose, bos_id=bos_id, eos_id=eos_id, use_cache=use_cache
        )
