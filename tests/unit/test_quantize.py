"""int8 dynamic quantization of a loaded model and the fused projections it relies on."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from mtkit.config.schema import ConfigError, DecodingConfig, ModelConfig
from mtkit.model.layers import MultiHeadAttention
from mtkit.model.masks import pad_mask
from mtkit.model.transformer import Transformer
from mtkit.search.beam import beam_search
from mtkit.translation.engine import QuantizationError
from mtkit.translation.quantize import quantize_model

IDS: dict[str, Any] = {"bos_id": 1, "eos_id": 2}


def tiny_model(seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    cfg = ModelConfig(
        d_model=32, n_heads=2, encoder_layers=2, decoder_layers=2, d_ff=64, max_positions=64
    )
    return Transformer(cfg, 40, 40, pad_id=0).eval()


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    src = torch.randint(3, 40, (3, 7), generator=torch.Generator().manual_seed(1))
    src[1, 5:] = 0
    return src, pad_mask(src, 0)


def test_fused_projections_give_the_same_outputs() -> None:
    model = tiny_model()
    src, mask = batch()
    dec = DecodingConfig(beam_size=3, nbest=2)
    tgt = torch.tensor([[1, 5, 6, 7]] * 3)
    with torch.inference_mode():
        before = model(src, mask, tgt)
        hyps = beam_search(model, src, mask, dec, **IDS)
        for module in model.modules():
            if isinstance(module, MultiHeadAttention):
                module.fuse_projections()
        assert torch.equal(model(src, mask, tgt), before)
        assert beam_search(model, src, mask, dec, **IDS) == hyps


def test_int8_replaces_every_linear_and_stays_close() -> None:
    model = tiny_model()
    src, mask = batch()
    tgt = torch.tensor([[1, 5, 6, 7]] * 3)
    with torch.inference_mode():
        before = model(src, mask, tgt).log_softmax(-1)  # (batch, tgt_len, vocab)
        quantize_model(model, "int8")
        after = model(src, mask, tgt).log_softmax(-1)
    assert not any(type(m) is nn.Linear for m in model.modules())
    assert (after - before).abs().max() < 0.1
    assert torch.equal(after.argmax(-1), before.argmax(-1))


def test_none_leaves_the_model_alone() -> None:
    model = tiny_model()
    assert quantize_model(model, "none") is model
    assert all(m.qkv_proj is None for m in model.modules() if isinstance(m, MultiHeadAttention))


def test_quantization_errors_name_the_fix() -> None:
    with pytest.raises(ConfigError, match="--quantize: expected one of none, int8, got 'int4'"):
        quantize_model(tiny_model(), "int4")
    with pytest.raises(QuantizationError, match="CPU only.*--device cpu"):
        quantize_model(tiny_model().to("meta"), "int8")
