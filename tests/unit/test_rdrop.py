"""R-Drop: off gives exactly the plain loss; no dropout, no KL; the KL term trains the model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mtkit.config.load import config_from_dict
from mtkit.config.schema import ConfigError, ModelConfig, TrainingConfig
from mtkit.data.batching import collate_columns
from mtkit.data.tokenizer import PAD_ID
from mtkit.model.transformer import Transformer
from mtkit.training.loss import label_smoothed_cross_entropy
from mtkit.training.rdrop import doubled, symmetric_kl
from mtkit.training.update import Stepper, forward_loss, update
from tests.unit.test_train_step import VOCAB, random_pairs


def model(dropout: float, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    cfg = ModelConfig(d_model=16, n_heads=2, encoder_layers=1, decoder_layers=1, d_ff=32,
                      dropout=dropout)  # fmt: skip
    return Transformer(cfg, src_vocab=VOCAB, tgt_vocab=VOCAB).train()


def stepper(m: Transformer, rdrop_alpha: float) -> Stepper:
    t = TrainingConfig(
        label_smoothing=0.1, rdrop_alpha=rdrop_alpha, clip_norm=0.0, precision="float32"
    )
    sgd = torch.optim.SGD(m.parameters(), lr=1.0)
    return Stepper(m, m, sgd, t, torch.device("cpu"))


def test_alpha_zero_is_exactly_the_plain_loss() -> None:
    batch = collate_columns(*random_pairs(6, seed=1))
    m = model(dropout=0.3)
    torch.manual_seed(5)
    objective, loss, nll = forward_loss(stepper(m, 0.0), batch)
    torch.manual_seed(5)  # the same dropout masks
    logits = m(batch.src, batch.src_mask, batch.tgt_in)
    ref_loss, ref_nll = label_smoothed_cross_entropy(logits, batch.tgt_out, 0.1, PAD_ID)
    assert torch.equal(objective, ref_loss) and torch.equal(loss, ref_loss)
    assert torch.equal(nll, ref_nll)


def test_without_dropout_the_two_passes_agree() -> None:
    """Both copies see the same weights and no dropout: KL 0, loss = the single-pass loss."""
    batch = collate_columns(*random_pairs(6, seed=2))
    m = model(dropout=0.0)
    plain, _, plain_nll = forward_loss(stepper(m, 0.0), batch)
    objective, loss, nll = forward_loss(stepper(m, 5.0), batch)
    torch.testing.assert_close(objective, plain, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss, plain, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(nll, plain_nll, rtol=1e-5, atol=1e-5)
    two = doubled(batch)
    kl = symmetric_kl(m(two.src, two.src_mask, two.tgt_in), batch.tgt_out != PAD_ID)
    assert abs(kl.item()) < 1e-4


def test_symmetric_kl_matches_kl_div_over_real_tokens() -> None:
    torch.manual_seed(0)
    logits = torch.randn(4, 5, 7)  # (2 * batch, tgt_len, vocab)
    keep = torch.tensor([[True] * 5, [True, True, True, False, False]])  # (batch, tgt_len)
    lp1, lp2 = torch.log_softmax(logits, -1).chunk(2)
    kl12 = F.kl_div(lp2, lp1, log_target=True, reduction="none").sum(-1)  # KL(p1 || p2)
    kl21 = F.kl_div(lp1, lp2, log_target=True, reduction="none").sum(-1)
    expected = (kl12 + kl21)[keep].sum()
    torch.testing.assert_close(symmetric_kl(logits, keep), expected)
    assert float(symmetric_kl(logits, torch.zeros_like(keep))) == 0.0


def test_the_kl_term_has_gradients_with_dropout() -> None:
    batch = collate_columns(*random_pairs(6, seed=3))
    m = model(dropout=0.3)
    torch.manual_seed(7)
    objective, loss, _ = forward_loss(stepper(m, 5.0), batch)
    kl_part = objective - loss  # alpha / 4 * symmetric KL, > 0 with two dropout masks
    assert kl_part.item() > 0
    kl_part.backward()  # type: ignore[no-untyped-call]
    grads = [p.grad for p in m.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_an_update_with_rdrop_changes_the_weights() -> None:
    src, tgt = random_pairs(8, seed=4)
    m = model(dropout=0.3)
    before = [p.detach().clone() for p in m.parameters()]
    result = update(stepper(m, 1.0), [collate_columns(src, tgt)], 0.1, lambda: False)
    assert torch.isfinite(result.loss) and float(result.bad) == 0.0
    assert result.tokens == sum(len(t) - 1 for t in tgt)  # counted once, not twice
    assert any(not torch.equal(a, b) for a, b in zip(before, m.parameters(), strict=True))


def test_negative_alpha_is_rejected() -> None:
    with pytest.raises(ConfigError, match="training.rdrop_alpha: expected zero or more"):
        config_from_dict({"training": {"rdrop_alpha": -1}})
