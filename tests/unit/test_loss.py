"""Label-smoothed cross-entropy against a hand-computed case."""

from __future__ import annotations

import math

import torch

from mtkit.training.loss import label_smoothed_cross_entropy


def test_hand_computed_case() -> None:
    # vocab 3, logits chosen so that probabilities are (0.5, 0.25, 0.25).
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.2, 0.3, 0.5]]]))
    target = torch.tensor([[0, 2]])
    eps = 0.3
    loss, nll = label_smoothed_cross_entropy(logits, target, eps, ignore_index=2)
    # Only the first token counts. Smoothed target: gold 1 - eps + eps/3, others eps/3.
    q = [1 - eps + eps / 3, eps / 3, eps / 3]
    p = [0.5, 0.25, 0.25]
    expected = -sum(qi * math.log(pi) for qi, pi in zip(q, p, strict=True))
    assert math.isclose(loss.item(), expected, rel_tol=1e-5)
    assert math.isclose(nll.item(), -math.log(0.5), rel_tol=1e-5)


def test_matches_torch_cross_entropy() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    target = torch.randint(0, 11, (2, 5))
    target[0, 3:] = 0
    loss, nll = label_smoothed_cross_entropy(logits, target, 0.1, ignore_index=0)
    ref = torch.nn.functional.cross_entropy(
        logits.reshape(-1, 11),
        target.reshape(-1),
        ignore_index=0,
        label_smoothing=0.1,
        reduction="sum",
    )
    assert torch.allclose(loss, ref, atol=1e-4)
    assert nll.item() > 0


def test_padding_contributes_nothing() -> None:
    torch.manual_seed(1)
    logits = torch.randn(1, 4, 7)
    target = torch.tensor([[3, 4, 0, 0]])
    loss, _ = label_smoothed_cross_entropy(logits, target, 0.1, ignore_index=0)
    logits2 = logits.clone()
    logits2[0, 2:] = torch.randn(2, 7) * 10  # changing padded positions changes nothing
    loss2, _ = label_smoothed_cross_entropy(logits2, target, 0.1, ignore_index=0)
    assert torch.allclose(loss, loss2)
