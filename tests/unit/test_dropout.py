"""mtkit's CPU dropout: 16-bit uniform numbers from 64-bit draws, a bool mask, exact scaling."""

from __future__ import annotations

import pytest
import torch

from mtkit.model.dropout import LEVELS, Dropout, dropout, word_dropout


def quantized(p: float) -> float:
    """The drop probability the 16-bit comparison gives for p."""
    return round(p * LEVELS) / LEVELS


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_drops_the_quantized_share_and_scales_the_rest_exactly(p: float) -> None:
    torch.manual_seed(0)
    n = 1_000_000
    out = dropout(torch.ones(n), p)
    dropped = float((out == 0).float().mean())
    sigma = (quantized(p) * (1 - quantized(p)) / n) ** 0.5
    assert abs(dropped - quantized(p)) < 5 * sigma
    kept = out[out != 0]
    assert torch.equal(kept, torch.full_like(kept, 1 / (1 - quantized(p))))


def test_mask_is_the_generators_16_bit_numbers() -> None:
    torch.manual_seed(7)
    x = torch.randn(3, 5, 7)  # an odd number of elements: the last 64-bit draw is partly unused
    state = torch.get_rng_state()
    out = dropout(x, 0.25)
    torch.set_rng_state(state)
    words = torch.empty((x.numel() + 3) // 4, dtype=torch.int64).random_(-(2**63), None)
    levels = words.view(torch.int16)[: x.numel()].view(x.shape).long() + LEVELS // 2
    keep = levels >= round(0.25 * LEVELS)
    assert torch.equal(out != 0, keep)
    assert torch.allclose(out[keep], x[keep] / 0.75)


def test_all_four_lanes_of_a_draw_are_uniform() -> None:
    torch.manual_seed(1)
    out = dropout(torch.ones(400_000, 4), 0.5)  # column j: lane j of each 64-bit draw
    share = (out == 0).float().mean(dim=0)
    assert torch.all((share - 0.5).abs() < 0.005), share


def test_gradient_passes_the_kept_elements_scaled() -> None:
    torch.manual_seed(3)
    x = torch.ones(1000, 64, requires_grad=True)
    out = dropout(x, 0.3)
    out.sum().backward()  # type: ignore[no-untyped-call]
    assert x.grad is not None
    assert torch.equal(x.grad, out.detach())  # d out / d x = mask * scale, here = out


def test_same_seed_same_mask_next_call_another() -> None:
    x = torch.ones(10_000)
    torch.manual_seed(5)
    first, second = dropout(x, 0.1), dropout(x, 0.1)
    torch.manual_seed(5)
    assert torch.equal(dropout(x, 0.1), first)
    assert not torch.equal(first, second)


def test_edges_and_dtype() -> None:
    x = torch.randn(4, 6)
    assert dropout(x, 0.0) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))
    half = dropout(x.bfloat16(), 0.2)
    assert half.dtype == torch.bfloat16 and half.shape == x.shape


def test_module_is_the_identity_in_eval_mode() -> None:
    layer = Dropout(0.5)
    x = torch.ones(1000)
    assert (layer(x) == 0).any()
    layer.eval()
    assert layer(x) is x
    assert repr(layer) == "Dropout(p=0.5)"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_attention_dropout_on_cpu_draws_mtkits_mask(dtype: torch.dtype) -> None:
    # SDPA would fall back to its math path with one Bernoulli sample per weight
    from mtkit.model.layers import attention, fused_attention

    torch.manual_seed(2)
    q, k, v = (torch.randn(3, 2, 5, 8).to(dtype) for _ in range(3))
    mask = torch.tensor([True, True, True, False, False]).expand(3, 1, 1, 5)
    state = torch.get_rng_state()
    out = fused_attention(q, k, v, mask, dropout_p=0.3)
    torch.set_rng_state(state)
    expected = attention(q.float(), k.float(), v.float(), mask, 0.3).to(dtype)
    assert out.dtype == dtype and torch.equal(out, expected)


def test_word_dropout_keeps_or_zeroes_whole_token_vectors() -> None:
    torch.manual_seed(4)
    x = torch.randn(200, 50, 16)  # (batch, len, d_model)
    out = word_dropout(x, 0.25)
    zero = (out == 0).all(dim=-1)  # (batch, len): the whole vector dropped
    scaled = torch.isclose(out, x / (1 - quantized(0.25))).all(dim=-1)
    assert torch.equal(zero | scaled, torch.ones_like(zero))  # never a partly dropped token
    share = float(zero.float().mean())
    assert abs(share - quantized(0.25)) < 0.02, share
    assert word_dropout(x, 0.0) is x


def test_word_dropout_in_the_model_only_while_training() -> None:
    from mtkit.config.schema import ModelConfig
    from mtkit.model.transformer import Transformer

    cfg = ModelConfig(d_model=16, n_heads=2, encoder_layers=1, decoder_layers=1, d_ff=32,
                      dropout=0.0, word_dropout=0.5, max_positions=32)  # fmt: skip
    model = Transformer(cfg, 20, 20, pad_id=0)
    torch.manual_seed(0)
    ids = torch.randint(3, 20, (8, 10))  # (batch, len)
    pe = model.pe[:10]  # (len, d_model)
    trained = model.embed_src(ids) - pe  # (batch, len, d_model): the token part alone
    dropped = (trained == 0).all(dim=-1)
    assert 0 < int(dropped.sum()) < dropped.numel()
    assert (model.embed_tgt(ids) - pe == 0).all(dim=-1).any()  # the target side too
    model.eval()
    expected = model.src_embed(ids) * model.scale + pe
    assert torch.equal(model.embed_src(ids), expected)  # no dropout when not training
