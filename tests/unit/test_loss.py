"""Label-smoothed cross-entropy against a hand-computed case."""

from __future__ import annotations

import math

import pytest
import torch

import mtkit.training.loss as loss_mod
from mtkit.training.loss import label_smoothed_cross_entropy, projected_cross_entropy


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


def projected_case(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Decoder states, an output projection and targets with padding (id 0)."""
    torch.manual_seed(seed)
    states = torch.randn(3, 6, 16, requires_grad=True)
    weight = (torch.randn(50, 16) * 0.3).requires_grad_()
    target = torch.randint(1, 50, (3, 6))
    target[0, 4:] = 0
    target[2, 1:] = 0
    return states, weight, target


@pytest.mark.parametrize("chunk", [1, 64, 2**20])  # elements per block: 1 row, 1-2 rows, all
def test_projected_loss_and_gradients_equal_the_unfused_ones(
    monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(loss_mod, "CHUNK_ELEMENTS", chunk)
    states, weight, target = projected_case(0)
    ref, ref_nll = label_smoothed_cross_entropy(states @ weight.t(), target, 0.1, ignore_index=0)
    ref.backward()  # type: ignore[no-untyped-call]
    ref_grads = states.grad.clone(), weight.grad.clone()  # type: ignore[union-attr]
    states.grad = weight.grad = None
    loss, nll = projected_cross_entropy(states, weight, target, 0.1, ignore_index=0)
    assert torch.allclose(loss, ref, rtol=1e-5) and torch.allclose(nll, ref_nll, rtol=1e-5)
    (2.0 * loss).backward()  # type: ignore[no-untyped-call]
    assert torch.allclose(states.grad, 2.0 * ref_grads[0], atol=1e-6)  # type: ignore[arg-type]
    assert torch.allclose(weight.grad, 2.0 * ref_grads[1], atol=1e-6)  # type: ignore[arg-type]
    assert not nll.requires_grad


def test_projected_loss_without_gradients_and_in_bfloat16() -> None:
    states, weight, target = projected_case(1)
    ref, ref_nll = label_smoothed_cross_entropy(states @ weight.t(), target, 0.2, ignore_index=0)
    with torch.no_grad():
        loss, nll = projected_cross_entropy(states, weight, target, 0.2, ignore_index=0)
    assert torch.allclose(loss, ref, rtol=1e-5) and torch.allclose(nll, ref_nll, rtol=1e-5)
    half, _ = projected_cross_entropy(states, weight, target, 0.2, 0, torch.bfloat16)
    assert half.dtype == torch.float32 and torch.allclose(half, ref, rtol=1e-2)
    half.backward()  # type: ignore[no-untyped-call]
    assert states.grad is not None and states.grad.dtype == torch.float32
