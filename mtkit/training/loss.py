"""Label-smoothed cross-entropy over target tokens, ignoring padding."""

from __future__ import annotations

import torch


def label_smoothed_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, smoothing: float, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed smoothed loss and summed NLL over the non-ignored tokens.

    The smoothed target puts 1 - smoothing + smoothing/vocab on the gold token and
    smoothing/vocab on every other token (PyTorch's `label_smoothing` convention), so
    loss = (1 - smoothing) * nll + smoothing/vocab * sum over vocab of -log p.
    One log-softmax serves both numbers.

    Shapes: logits (batch, tgt_len, vocab), target (batch, tgt_len) -> two scalars.
    """
    vocab = logits.size(-1)
    lprobs = torch.log_softmax(logits.float(), dim=-1).reshape(-1, vocab)  # (batch*tgt_len, vocab)
    flat_target = target.reshape(-1)  # (batch*tgt_len,)
    keep = flat_target != ignore_index  # (batch*tgt_len,)
    safe_target = flat_target.masked_fill(~keep, 0)
    nll = -lprobs.gather(1, safe_target.unsqueeze(1)).squeeze(1)  # (batch*tgt_len,)
    smooth = -lprobs.sum(dim=-1)  # (batch*tgt_len,)
    nll_sum = nll.masked_fill(~keep, 0.0).sum()
    smooth_sum = smooth.masked_fill(~keep, 0.0).sum()
    loss = (1.0 - smoothing) * nll_sum + (smoothing / vocab) * smooth_sum
    return loss, nll_sum.detach()
