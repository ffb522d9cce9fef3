"""Label-smoothed cross-entropy over target tokens, ignoring padding."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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


CHUNK_ELEMENTS = 2**20  # logits per block: 4 MB in float32, so a block stays in cache


def projected_cross_entropy(
    states: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    smoothing: float,
    ignore_index: int,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`label_smoothed_cross_entropy(states @ weight.T, ...)` without the (tokens, vocab) tensors.

    The output projection and the loss run together over blocks of target tokens, and with
    gradients enabled each block's gradients (softmax - smoothed target, through the
    projection) are formed while its logits are still in cache. Padding positions count zero
    (masked, not removed: selecting them out would make a GPU wait for the count). The matmuls
    run in `dtype` (what autocast would run the projection in), softmax and loss in float32.
    Shapes: states (batch, tgt_len, d_model), weight (vocab, d_model), target
    (batch, tgt_len) -> two scalars: the summed smoothed loss, the summed NLL (no gradient).
    """
    flat = states.reshape(-1, states.size(-1))  # (batch * tgt_len, d_model)
    keep = target.reshape(-1) != ignore_index  # (batch * tgt_len,)
    gold = target.reshape(-1).masked_fill(~keep, 0)  # (batch * tgt_len,)
    targets = _Targets(gold, keep.float(), smoothing, dtype)
    if torch.is_grad_enabled() and (flat.requires_grad or weight.requires_grad):
        loss, nll = _ProjectedLoss.apply(flat, weight, targets)  # type: ignore[no-untyped-call]
        return loss, nll
    with torch.no_grad():
        loss, nll, _, _ = _blocks(flat, weight, targets, grads=False)
    return loss, nll


@dataclass(frozen=True)
class _Targets:
    """What the blocks score against, besides the states and the projection."""

    gold: torch.Tensor  # (tokens,) target ids, 0 at padding
    keep: torch.Tensor  # (tokens,) 1.0 for a real token, 0.0 for padding
    smoothing: float
    dtype: torch.dtype  # the matmuls' dtype


class _ProjectedLoss(torch.autograd.Function):
    """Forward computes the loss and both gradients block by block; backward scales them."""

    @staticmethod
    def forward(
        ctx: Any, flat: torch.Tensor, weight: torch.Tensor, targets: _Targets
    ) -> tuple[torch.Tensor, torch.Tensor]:
        loss, nll, grad_flat, grad_weight = _blocks(flat, weight, targets, grads=True)
        ctx.save_for_backward(grad_flat, grad_weight)
        ctx.mark_non_differentiable(nll)
        return loss, nll

    @staticmethod
    def backward(
        ctx: Any, grad_loss: torch.Tensor, _grad_nll: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        grad_flat, grad_weight = ctx.saved_tensors
        return grad_flat * grad_loss, grad_weight * grad_loss, None


def _blocks(
    flat: torch.Tensor, weight: torch.Tensor, t: _Targets, grads: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Summed loss and NLL, and (with `grads`) d loss / d flat and d loss / d weight (float32).

    Per token: loss = (1 - s) * (lse - z_gold) + s / V * (V * lse - sum z), and
    d loss / d z = softmax(z) - (1 - s) * onehot(gold) - s / V; both times `keep` (0 or 1).
    Shapes: flat (tokens, d_model), weight (vocab, d_model).
    """
    vocab, device, smoothing = weight.size(0), flat.device, t.smoothing
    step = max(1, CHUNK_ELEMENTS // vocab)
    w = weight.detach().to(t.dtype)  # (vocab, d_model), cast once
    x = flat.detach().to(t.dtype)  # (tokens, d_model)
    loss, nll = torch.zeros((), device=device), torch.zeros((), device=device)
    grad_flat = torch.zeros(flat.shape, device=device) if grads else flat
    grad_weight = torch.zeros(weight.shape, device=device) if grads else weight
    with torch.autocast(device.type, enabled=False):
        for start in range(0, x.size(0), step):
            h, g = x[start : start + step], t.gold[start : start + step]  # (block, d), (block,)
            k = t.keep[start : start + step]  # (block,)
            z = (h @ w.t()).float()  # (block, vocab)
            lse = torch.logsumexp(z, dim=-1)  # (block,)
            token_nll = (lse - z.gather(1, g[:, None]).squeeze(1)) * k  # (block,)
            smooth = (vocab * lse - z.sum(dim=-1)) * k  # (block,)
            nll += token_nll.sum()
            loss += (1.0 - smoothing) * token_nll.sum() + (smoothing / vocab) * smooth.sum()
            if grads:
                dz = z.sub_(lse[:, None]).exp_().sub_(smoothing / vocab)  # (block, vocab)
                dz[torch.arange(len(g), device=device), g] -= 1.0 - smoothing
                dz_m = dz.mul_(k[:, None]).to(t.dtype)  # (block, vocab)
                grad_flat[start : start + step] = dz_m @ w  # (block, d_model)
                grad_weight += dz_m.t() @ h  # (vocab, d_model)
    return loss, nll, grad_flat, grad_weight
