"""Transformer properties: shapes, positions, attention paths, causality, padding, cache."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor

from mtkit.config.schema import ModelConfig
from mtkit.model.inference import TransposedLinear, transpose_linears
from mtkit.model.layers import (
    MultiHeadAttention,
    attention,
    fuse_attention_projections,
    sinusoidal_positions,
)
from mtkit.model.masks import causal_mask, no_empty_rows, pad_mask
from mtkit.model.transformer import (
    Transformer,
    num_parameters,
    set_fast_attention,
    state_dict_size,
)

PAD, BOS = 0, 1
VOCAB = 20


def make_model(norm: str = "pre", seed: int = 0, **overrides: Any) -> Transformer:
    torch.manual_seed(seed)
    kw: dict[str, Any] = {
        "d_model": 32, "n_heads": 2, "encoder_layers": 2, "decoder_layers": 2, "d_ff": 64,
        "max_positions": 64, "norm": norm,
    }  # fmt: skip
    kw.update(overrides)
    return Transformer(ModelConfig(**kw), VOCAB, VOCAB, pad_id=PAD).eval()


def random_ids(batch: int, length: int, seed: int) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (batch, length), generator=gen)  # (batch, len)


def test_output_shapes() -> None:
    model = make_model()
    src, tgt = random_ids(3, 7, 0), random_ids(3, 5, 1)
    mask = pad_mask(src, PAD)
    assert model.encode(src, mask).shape == (3, 7, 32)
    assert model(src, mask, tgt).shape == (3, 5, VOCAB)


def test_positional_encoding_matches_formula() -> None:
    length, d = 12, 8
    pe = sinusoidal_positions(length, d)
    for pos in range(length):
        for i in range(d // 2):
            angle = pos / 10000 ** (2 * i / d)
            assert pe[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert pe[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_positional_table_is_a_non_persistent_buffer() -> None:
    model = make_model()
    assert model.pe.shape == (64, 32)
    assert "pe" not in model.state_dict()


def test_embeddings_scaled_by_sqrt_d_model() -> None:
    model = make_model()
    ids = random_ids(2, 5, 0)
    expected = model.src_embed.weight[ids] * math.sqrt(32) + sinusoidal_positions(5, 32)
    torch.testing.assert_close(model.embed_src(ids), expected)
    shifted = model.tgt_embed.weight[ids] * math.sqrt(32) + sinusoidal_positions(8, 32)[3:]
    torch.testing.assert_close(model.embed_tgt(ids, offset=3), shifted)


def test_fast_attention_equals_reference() -> None:
    torch.manual_seed(0)
    attn = MultiHeadAttention(d_model=32, n_heads=4, dropout=0.0).eval()
    x = torch.randn(3, 6, 32)  # (batch, len, d_model)
    keys = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [0] * 6]).bool()  # incl. an all-pad row
    masks = {
        "padding": keys[:, None, None, :],  # (batch, 1, 1, k_len)
        "causal": causal_mask(6)[None, None],  # (1, 1, q_len, k_len)
        "both": keys[:, None, None, :] & causal_mask(6)[None, None],
    }
    for name, mask in masks.items():
        mask = no_empty_rows(mask)  # the callers' part (Transformer's masks): no empty row
        attn.fast = True
        fast = attn(x, key=x, value=x, mask=mask)
        attn.fast = False
        slow = attn(x, key=x, value=x, mask=mask)
        assert not torch.isnan(fast).any(), name
        torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5, msg=name)


def test_reference_attention_formula() -> None:
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 1, 2, 4), torch.randn(1, 1, 3, 4), torch.randn(1, 1, 3, 4)
    mask = torch.tensor([True, True, False])[None, None, None, :]
    weights = (q @ k.transpose(-2, -1) / 2.0)[..., :2].softmax(-1)  # only the two real keys
    torch.testing.assert_close(attention(q, k, v, mask), weights @ v[..., :2, :])


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_decoder_is_causal(norm: str) -> None:
    model = make_model(norm)
    src, tgt = random_ids(2, 6, 0), random_ids(2, 7, 1)
    mask = pad_mask(src, PAD)
    changed = tgt.clone()
    changed[:, 4:] = random_ids(2, 3, 2)
    a, b = model(src, mask, tgt), model(src, mask, changed)
    torch.testing.assert_close(a[:, :4], b[:, :4])
    assert not torch.allclose(a[:, 4:], b[:, 4:])


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_extra_padding_changes_nothing(norm: str) -> None:
    model = make_model(norm)
    src, tgt = random_ids(2, 5, 0), random_ids(2, 4, 1)
    src[1, 3:] = PAD
    padded_src = torch.cat([src, torch.full((2, 3), PAD)], dim=1)  # (batch, src_len + 3)
    padded_tgt = torch.cat([tgt, torch.full((2, 2), PAD)], dim=1)  # (batch, tgt_len + 2)
    a = model(src, pad_mask(src, PAD), tgt)
    b = model(padded_src, pad_mask(padded_src, PAD), padded_tgt)
    torch.testing.assert_close(a, b[:, :4], atol=1e-5, rtol=1e-5)
    mem_a = model.encode(src, pad_mask(src, PAD))
    mem_b = model.encode(padded_src, pad_mask(padded_src, PAD))
    torch.testing.assert_close(mem_a[0], mem_b[0, :5], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mem_a[1, :3], mem_b[1, :3], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_inference_encodes_only_the_real_tokens(norm: str) -> None:
    """Not training, a padded batch is encoded without its padding (mtkit.model.packed): real
    positions get what the padded pass and each sentence alone give, padding gets zeros."""
    model = make_model(norm, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
    src = random_ids(3, 7, 0)
    src[0, 4:], src[2, 2:] = PAD, PAD
    mask = pad_mask(src, PAD)
    with torch.no_grad():
        packed = model.encode(src, mask)  # (3, 7, d_model)
        padded = model.train().encode(src, mask)  # the training pass computes the padding too
        model.eval()
        alone = [model.encode(src[i : i + 1, :n], mask[i : i + 1, :n])[0] for i, n in
                 enumerate(mask.sum(dim=1).tolist())]  # fmt: skip
    torch.testing.assert_close(packed[mask], padded[mask], atol=1e-5, rtol=1e-5)
    for i, memory in enumerate(alone):
        torch.testing.assert_close(packed[i, : memory.size(0)], memory, atol=1e-5, rtol=1e-5)
    assert padded[~mask].abs().sum() > 0
    assert packed[~mask].abs().sum() == 0


def test_all_padding_sentence_gives_no_nan() -> None:
    model = make_model()
    src = random_ids(2, 4, 0)
    src[1] = PAD
    for fast in (True, False):
        set_fast_attention(model, fast)
        logits = model(src, pad_mask(src, PAD), random_ids(2, 3, 1))
        assert torch.isfinite(logits).all()


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_cached_steps_equal_full_decode(norm: str) -> None:
    model = make_model(norm)
    src, tgt = random_ids(3, 6, 0), random_ids(3, 5, 1)
    src[2, 2:] = PAD
    mask = pad_mask(src, PAD)
    with torch.inference_mode():
        memory = model.encode(src, mask)
        full = model.decode(tgt, memory, mask)  # (batch, tgt_len, vocab)
        cache = model.init_cache(memory, mask)
        steps = [model.decode_step(tgt[:, t], cache) for t in range(tgt.size(1))]
    assert cache.position == tgt.size(1)
    assert cache.self_kv[0][0].shape == (3, 2, 5, 16)
    torch.testing.assert_close(torch.stack(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_cache_select_reorders_rows_and_the_next_step_writes_in_place() -> None:
    model = make_model()
    src, tgt = random_ids(3, 6, 0), random_ids(3, 4, 1)
    mask = pad_mask(src, PAD)
    order = torch.tensor([2, 0, 0])
    with torch.inference_mode():
        memory = model.encode(src, mask)
        cache = model.init_cache(memory, mask)
        for t in range(3):
            model.decode_step(tgt[:, t], cache)
        picked = cache.select(order)
        assert picked.self_kv[0][0].shape == (3, 2, 4, 16)  # 3 columns filled, 1 free
        for k, v in picked.self_kv:
            k[:, :, -1].fill_(math.nan)  # never read before the step writes it
            v[:, :, -1].fill_(math.nan)
        buffers = [t.data_ptr() for kv in picked.self_kv for t in kv]
        step = model.decode_step(tgt[order, 3], picked)
        full = model.decode(tgt[order], memory[order], mask[order])[:, 3]
    assert [t.data_ptr() for kv in picked.self_kv for t in kv] == buffers  # no copy
    torch.testing.assert_close(step, full, atol=1e-5, rtol=1e-5)


def test_shared_and_tied_embeddings() -> None:
    model = make_model(share_embeddings=True, tie_output=True)
    assert model.src_embed.weight is model.tgt_embed.weight
    assert model.out_proj.weight is model.tgt_embed.weight
    separate = make_model(share_embeddings=False, tie_output=False)
    assert separate.src_embed.weight is not separate.tgt_embed.weight
    assert separate.out_proj.weight is not separate.tgt_embed.weight
    assert num_parameters(model) == num_parameters(separate) - 2 * VOCAB * 32


def test_share_embeddings_needs_one_vocabulary() -> None:
    cfg = ModelConfig(d_model=32, n_heads=2, share_embeddings=True)
    with pytest.raises(ValueError, match="share_embeddings"):
        Transformer(cfg, src_vocab=20, tgt_vocab=21)
    Transformer(ModelConfig(d_model=32, n_heads=2, share_embeddings=False), 20, 21)


def test_padding_embedding_is_zero() -> None:
    model = make_model()
    assert torch.count_nonzero(model.src_embed.weight[PAD]) == 0


def test_beam_grouped_cache_equals_full_decode() -> None:
    model = make_model()
    src, tgt = random_ids(3, 6, 0), random_ids(6, 4, 1)  # 3 sentences, 2 beam rows each
    src[2, 3:] = PAD
    mask = pad_mask(src, PAD)
    with torch.inference_mode():
        memory = model.encode(src, mask)
        cache = model.init_cache(memory, mask).repeat(2)  # row r decodes sentence r // 2
        for t in range(2):
            model.decode_step(tgt[:, t], cache)
        reordered = cache.select(torch.tensor([1, 1, 3, 2, 4, 5]))  # beams move within groups
        assert reordered.cross_kv[0][0] is cache.cross_kv[0][0]  # memory K/V not copied
        order = torch.tensor([1, 0, 5, 5])  # sentence 1 finished: its memory is dropped
        cache = cache.select(order)
        step = model.decode_step(tgt[order, 2], cache)
        sentence = order // 2
        full = model.decode(tgt[order, :3], memory[sentence], mask[sentence])[:, 2]
    assert cache.cross_kv[0][0].shape[0] == 2 and cache.src_mask.shape == (2, 6)
    torch.testing.assert_close(step, full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fast", [True, False])
def test_fused_projections_equal_separate_ones(fast: bool) -> None:
    torch.manual_seed(0)
    attn = MultiHeadAttention(d_model=32, n_heads=4, dropout=0.0, fast=fast).eval()
    x, memory = torch.randn(2, 5, 32), torch.randn(2, 7, 32)

    def separate(query: Tensor, kv: Tensor) -> Tensor:
        q, k, v = (attn._split(p(t)) for p, t in zip(
            (attn.q_proj, attn.k_proj, attn.v_proj), (query, kv, kv), strict=True))  # fmt: skip
        out = attention(q, k, v, None).transpose(1, 2).reshape(2, query.size(1), 32)
        projected: Tensor = attn.out_proj(out)
        return projected

    self_out = attn(x, key=x, value=x, mask=None)  # fused q/k/v
    cross_out = attn(x, key=memory, value=memory, mask=None)  # fused k/v
    torch.testing.assert_close(self_out, separate(x, x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cross_out, separate(x, memory), atol=1e-5, rtol=1e-5)


def test_transposed_linears_compute_what_the_linears_did() -> None:
    """Inference swaps every float Linear for one that multiplies by a stored transposed copy
    of its weight: same outputs, same saved parameters, tied weights still tied."""
    model = make_model(tie_output=True)
    model.eval()
    fuse_attention_projections(model)
    src, tgt = random_ids(3, 7, seed=1), random_ids(3, 5, seed=2)
    mask = pad_mask(src, PAD)
    with torch.inference_mode():
        want = model(src, mask, tgt)
    keys = set(model.state_dict())
    transpose_linears(model)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(isinstance(m, TransposedLinear) for m in linears)
    assert model.out_proj.weight is model.tgt_embed.weight
    assert set(model.state_dict()) == keys  # the transposed copies are not saved
    with torch.inference_mode():
        torch.testing.assert_close(model(src, mask, tgt), want, rtol=0, atol=1e-5)
    layer = torch.nn.Linear(6, 4, bias=False)
    x = torch.randn(2, 3, 6)
    torch.testing.assert_close(TransposedLinear(layer)(x), layer(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("norm", ["pre", "post"])
@pytest.mark.parametrize("share", [False, True])
@pytest.mark.parametrize("tie", [False, True])
def test_state_dict_size_counts_what_a_checkpoint_holds(norm: Any, share: bool, tie: bool) -> None:
    """restore loads a checkpoint without a meta-device build when its weights add up to this."""
    cfg = ModelConfig(
        d_model=24, n_heads=2, encoder_layers=2, decoder_layers=3, d_ff=40, max_positions=32,
        norm=norm, share_embeddings=share, tie_output=tie,
    )  # fmt: skip
    src_vocab, tgt_vocab = (30, 30) if share else (30, 45)
    model = Transformer(cfg, src_vocab, tgt_vocab, pad_id=PAD)
    held = sum(t.numel() for t in model.state_dict().values())
    assert state_dict_size(cfg, src_vocab, tgt_vocab) == held


@pytest.mark.parametrize("kernel", ["reference", "sdpa", "native"])
def test_an_all_padding_source_gives_no_nan(kernel: str) -> None:
    """A sentence with no real source token (all padding) must not turn its rows into NaN, in
    a forward pass and in cached decoding steps, with each attention implementation. (torch
    >= 2.5's SDPA returns zeros for a row with no key, older versions NaN; the key mask lets
    such a row attend everywhere: masks.no_empty_rows.)"""
    from mtkit.model.transformer import set_attention_kernel, set_fast_attention
    from mtkit.translation.native_kernels import resolve_native_kernels
    from tests.unit.test_search import PAD, tiny_model

    model = tiny_model()
    set_fast_attention(model, kernel != "reference")
    if kernel == "native":
        kernels = resolve_native_kernels("auto", torch.device("cpu"))
        if kernels is None:
            pytest.skip("no C compiler for the native kernels")
        set_attention_kernel(model, kernels.attention)
    src = torch.tensor([[5, 6, 7], [PAD, PAD, PAD]])
    src_mask = pad_mask(src, PAD)
    with torch.inference_mode():
        assert torch.isfinite(model(src, src_mask, torch.tensor([[2, 5], [2, 6]]))).all()
        cache = model.init_cache(model.encode(src, src_mask), src_mask)
        for token in (2, 5, 6):
            assert torch.isfinite(model.decode_step(torch.tensor([token, token]), cache)).all()


def test_no_empty_rows_opens_only_rows_without_a_key() -> None:
    mask = torch.tensor([[True, False, False], [False, False, False], [False, True, True]])
    want = torch.tensor([[True, False, False], [True, True, True], [False, True, True]])
    assert torch.equal(no_empty_rows(mask), want)
    assert torch.equal(no_empty_rows(mask[:, None, None, :]), want[:, None, None, :])
