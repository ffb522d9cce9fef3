"""R-Drop (Liang et al. 2021): agreement between two dropout passes over the same batch.

As in the paper's fairseq code, the batch is concatenated with itself and run through the
model once: dropout draws independent masks for the two copies. The objective per update is

    (CE(copy 1) + CE(copy 2)) / 2 + alpha / 4 * (KL(p1 || p2) + KL(p2 || p1)),

summed over the non-pad target tokens (the caller divides by their count). This is the paper's
loss, CE1 + CE2 + alpha * (KL12 + KL21) / 2, halved, so the paper's alpha values carry over.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mtkit.data.batching import Batch


def doubled(batch: Batch) -> Batch:
    """The batch concatenated with itself along the batch axis (token counts unchanged).

    Shapes: every tensor (batch, len) -> (2 * batch, len).
    """
    return Batch(
        src=torch.cat([batch.src, batch.src]),
        src_mask=torch.cat([batch.src_mask, batch.src_mask]),
        tgt_in=torch.cat([batch.tgt_in, batch.tgt_in]),
        tgt_out=torch.cat([batch.tgt_out, batch.tgt_out]),
        n_src_tokens=batch.n_src_tokens,
        n_tgt_tokens=batch.n_tgt_tokens,
    )


def symmetric_kl(logits: Tensor, keep: Tensor) -> Tensor:
    """KL(p1 || p2) + KL(p2 || p1), summed over the positions where `keep` is True.

    p1 and p2 are the output distributions of the first and second half of the batch.
    Shapes: logits (2 * batch, tgt_len, vocab), keep (batch, tgt_len) -> a scalar.
    """
    lprobs = torch.log_softmax(logits.float(), dim=-1)  # (2 * batch, tgt_len, vocab)
    lp1, lp2 = lprobs.chunk(2, dim=0)  # (batch, tgt_len, vocab) each
    # KL(p1||p2) + KL(p2||p1) = sum_v (p1 - p2) * (log p1 - log p2)
    per_token = ((lp1.exp() - lp2.exp()) * (lp1 - lp2)).sum(dim=-1)  # (batch, tgt_len)
    return per_token.masked_fill(~keep, 0.0).sum()


def rdrop_objective(ce_sum: Tensor, kl_sum: Tensor, alpha: float) -> Tensor:
    """Mean of the two copies' summed CE losses plus alpha / 4 of their symmetric KL."""
    return ce_sum / 2 + (alpha / 4) * kl_sum
