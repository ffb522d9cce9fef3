"""One update: accumulation equals one big batch; NaN/inf updates are skipped, not applied."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest
import torch

from mtkit.config.schema import ModelConfig, TrainingConfig
from mtkit.data.batching import collate_columns
from mtkit.model.transformer import Transformer
from mtkit.training import update as update_mod
from mtkit.training.update import Stepper, update

VOCAB = 40


def tiny_model(seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    cfg = ModelConfig(d_model=16, n_heads=2, encoder_layers=1, decoder_layers=1, d_ff=32,
                      dropout=0.0)  # fmt: skip
    return Transformer(cfg, src_vocab=VOCAB, tgt_vocab=VOCAB)


def random_pairs(n: int, seed: int) -> tuple[list[list[int]], list[list[int]]]:
    """n (src_ids, tgt_ids) pairs of varied lengths; tgt starts with BOS(2), both end in EOS(3)."""
    g = torch.Generator().manual_seed(seed)
    src, tgt = [], []
    for _ in range(n):
        ls, lt = (int(x) for x in torch.randint(2, 9, (2,), generator=g))
        src.append([*torch.randint(4, VOCAB, (ls,), generator=g).tolist(), 3])
        tgt.append([2, *torch.randint(4, VOCAB, (lt,), generator=g).tolist(), 3])
    return src, tgt


def stepper(model: Transformer, **training: object) -> Stepper:
    options = {"clip_norm": 0.0, "label_smoothing": 0.1, "precision": "float32", **training}
    t = TrainingConfig(**options)  # type: ignore[arg-type]
    sgd = torch.optim.SGD(model.parameters(), lr=1.0)  # new weights - old = -gradient
    return Stepper(model, model, sgd, t, torch.device("cpu"))


def test_accumulated_batches_equal_one_union_batch() -> None:
    """K micro-batches with different token counts give the update of their union batch.

    Normalising each micro-batch by its own token count (or averaging K means) would not.
    """
    src, tgt = random_pairs(10, seed=1)
    parts = [collate_columns(src[a:b], tgt[a:b]) for a, b in ((0, 2), (2, 7), (7, 10))]
    assert len({p.n_tgt_tokens for p in parts}) == 3
    union = collate_columns(src, tgt)
    accumulated, single = tiny_model(), tiny_model()
    update(stepper(accumulated), parts, lr=0.5, stop_requested=lambda: False)
    update(stepper(single), [union], lr=0.5, stop_requested=lambda: False)
    for (name, a), b in zip(accumulated.named_parameters(), single.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    fresh = tiny_model().parameters()
    assert any(not torch.equal(a, b) for a, b in zip(accumulated.parameters(), fresh, strict=True))


def test_update_sums_losses_on_device_and_counts_tokens() -> None:
    src, tgt = random_pairs(4, seed=2)
    parts = [collate_columns(src[:2], tgt[:2]), collate_columns(src[2:], tgt[2:])]
    result = update(stepper(tiny_model()), parts, lr=0.1, stop_requested=lambda: True)
    assert isinstance(result.loss, torch.Tensor) and result.loss.ndim == 0
    assert result.tokens == sum(p.n_tgt_tokens for p in parts)
    assert result.padded >= result.tokens + result.src_tokens
    assert result.stop and result.bad.item() == 0.0


@pytest.mark.parametrize(("bad", "fused"), [(float("nan"), False), (float("inf"), True)])
def test_nonfinite_loss_skips_the_update(
    monkeypatch: pytest.MonkeyPatch, bad: float, fused: bool
) -> None:
    """Skipped on the host (plain Adam) or on the device (fused Adam's found_inf)."""
    real = update_mod.compute_loss

    def poisoned(*args: Any) -> tuple[torch.Tensor, torch.Tensor]:
        loss, nll = real(*args)
        return loss * bad, nll

    monkeypatch.setattr(update_mod, "compute_loss", poisoned)
    model = tiny_model()
    before = copy.deepcopy(model.state_dict())
    src, tgt = random_pairs(3, seed=3)
    s = stepper(model)
    s.optimizer = torch.optim.Adam(model.parameters(), lr=0.1, fused=fused)
    result = update(s, [collate_columns(src, tgt)], lr=0.1, stop_requested=lambda: False)
    assert result.bad.item() == 1.0
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    for state in s.optimizer.state.values():  # no moments, no step count
        assert state["step"].item() == 0 and not state["exp_avg"].any()
    assert all(p.grad is None for p in model.parameters())


def test_the_update_reports_the_gradient_norm_before_clipping() -> None:
    """The norm is clipping's own result: the unclipped gradient's, even when clipping bites."""
    batch = collate_columns(*random_pairs(6, seed=3))
    free, clipped = tiny_model(), tiny_model()
    before = [p.detach().clone() for p in free.parameters()]
    r = update(stepper(free), [batch], lr=1.0, stop_requested=lambda: False)
    applied = [b - p.detach() for b, p in zip(before, free.parameters(), strict=True)]
    norm = torch.cat([g.flatten() for g in applied]).norm()  # SGD, lr 1: the gradient
    torch.testing.assert_close(r.grad_norm, norm, rtol=1e-4, atol=1e-6)
    s = stepper(clipped)
    s.cfg = dataclasses.replace(s.cfg, clip_norm=norm.item() / 10)
    small = update(s, [batch], lr=1.0, stop_requested=lambda: False)
    torch.testing.assert_close(small.grad_norm, norm, rtol=1e-4, atol=1e-6)
    moved = [b - p.detach() for b, p in zip(before, clipped.parameters(), strict=True)]
    assert torch.cat([g.flatten() for g in moved]).norm() < norm / 5  # clipping did bite
