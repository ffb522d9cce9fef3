"""mtkit's Transformer as a Hugging Face Transformers model: which class, its config, its weights.

Each `model.norm` maps onto the Transformers class that computes exactly what mtkit computes:
- post-norm -> `MarianMTModel`: LayerNorm after each residual sum, sinusoidal positions from 0,
  embeddings scaled by sqrt(d_model), no final stack norms; separate source and target
  vocabularies (`decoder_vocab_size`) and shared or separate embeddings;
- pre-norm -> `PegasusForConditionalGeneration`: LayerNorm before each sublayer, one final
  LayerNorm per stack, the same positions and scaling; one embedding table for both stacks.
  (The M2M100/NLLB family is pre-norm too, but its sinusoids have other frequencies,
  10000^(-i/(d/2 - 1)), and start at position padding_idx + 1: no weights reproduce them.)
Both classes compute positions as [sin | cos] halves, where mtkit interleaves them
(PE[:, 0::2] = sin, PE[:, 1::2] = cos). Permuting the d_model axis of every weight the same
way, interleaved -> halves, gives a model whose hidden vectors are mtkit's with their
coordinates reordered; LayerNorm, residual sums and attention do not see the order, so the
logits are mtkit's exactly.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor, nn

from mtkit.config.convert import changed_fields
from mtkit.config.schema import ConfigError, ModelConfig
from mtkit.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from mtkit.model.layers import DecoderLayer, EncoderLayer, MultiHeadAttention
from mtkit.model.transformer import Transformer
from mtkit.translation.ctranslate2_engine import ExportError

LAYER_NORM_EPS = 1e-5  # nn.LayerNorm's default: every mtkit norm, and every norm of both classes
ARCHITECTURES = {"post": "MarianMTModel", "pre": "PegasusForConditionalGeneration"}
ACTIVATIONS = ("relu", "gelu")  # mtkit's F.gelu is the exact (erf) GELU, Transformers' "gelu"
# ModelConfig fields the exporter understands; any other field must keep its default.
KNOWN_FIELDS = frozenset({
    "d_model", "n_heads", "encoder_layers", "decoder_layers", "d_ff", "dropout",
    "attention_dropout", "activation_dropout", "activation", "norm", "share_embeddings",
    "tie_output", "max_positions", "word_dropout",
})  # fmt: skip


class UnsupportedExport(ConfigError):
    """A run or output folder the Hugging Face export refuses; the message names the setting."""


def check_supported(cfg: ModelConfig) -> None:
    """Raise UnsupportedExport naming the first model setting no Transformers class expresses."""
    if cfg.norm not in ARCHITECTURES:
        raise UnsupportedExport(
            f"model.norm={cfg.norm!r} cannot be exported to Hugging Face Transformers "
            f"(supported: {', '.join(ARCHITECTURES)})"
        )
    if cfg.activation not in ACTIVATIONS:
        raise UnsupportedExport(
            f"model.activation={cfg.activation!r} cannot be exported to Hugging Face "
            f"Transformers (supported: {', '.join(ACTIVATIONS)})"
        )
    if cfg.norm == "pre" and not cfg.share_embeddings:
        raise UnsupportedExport(
            "model.share_embeddings=False cannot be exported to Hugging Face Transformers with "
            "model.norm='pre': its pre-norm class (Pegasus) has one embedding table for encoder "
            "and decoder (post-norm models map onto Marian, which has two)"
        )
    if cfg.d_model % 2:
        raise UnsupportedExport(f"model.d_model={cfg.d_model} is odd; the export needs it even")
    if changed := changed_fields(cfg, KNOWN_FIELDS):
        name, value, default = changed[0]
        raise UnsupportedExport(
            f"model.{name}={value!r} cannot be exported to Hugging Face Transformers "
            f"(the exporter supports only its default, {default!r})"
        )


def hf_config_kwargs(cfg: ModelConfig, src_vocab: int, tgt_vocab: int) -> dict[str, Any]:
    """Keyword arguments of the MarianConfig (post-norm) or PegasusConfig (pre-norm)."""
    kwargs: dict[str, Any] = {
        "vocab_size": src_vocab, "d_model": cfg.d_model,
        "max_position_embeddings": cfg.max_positions,
        "encoder_layers": cfg.encoder_layers, "decoder_layers": cfg.decoder_layers,
        "encoder_attention_heads": cfg.n_heads, "decoder_attention_heads": cfg.n_heads,
        "encoder_ffn_dim": cfg.d_ff, "decoder_ffn_dim": cfg.d_ff,
        "activation_function": cfg.activation, "dropout": cfg.dropout,
        "attention_dropout": cfg.attention_dropout, "activation_dropout": cfg.activation_dropout,
        "encoder_layerdrop": 0.0, "decoder_layerdrop": 0.0, "scale_embedding": True,
        "pad_token_id": PAD_ID, "bos_token_id": BOS_ID, "eos_token_id": EOS_ID,
        "decoder_start_token_id": BOS_ID, "forced_eos_token_id": None,  # generation_config's
        "tie_word_embeddings": cfg.tie_output, "is_encoder_decoder": True,
    }  # fmt: skip
    if cfg.norm == "post":
        kwargs["decoder_vocab_size"] = tgt_vocab
        kwargs["share_encoder_decoder_embeddings"] = cfg.share_embeddings
    return kwargs


def hidden_permutation(d_model: int) -> Tensor:
    """Index h of the Transformers hidden vector holds mtkit's coordinate perm[h].

    mtkit: 2i -> sin_i, 2i + 1 -> cos_i; Transformers: i -> sin_i, d/2 + i -> cos_i.
    Shapes: -> (d_model,) long.
    """
    return torch.cat([torch.arange(0, d_model, 2), torch.arange(1, d_model, 2)])  # (d_model,)


def build_hf_model(model: Transformer, transformers: Any) -> Any:
    """A Transformers model (eval mode, float32) computing what `model` computes."""
    cfg = model.cfg
    check_supported(cfg)
    src_vocab, tgt_vocab = model.src_embed.num_embeddings, model.tgt_embed.num_embeddings
    kwargs = hf_config_kwargs(cfg, src_vocab, tgt_vocab)
    if cfg.norm == "post":
        hf = transformers.MarianMTModel(transformers.MarianConfig(**kwargs))
    else:
        hf = transformers.PegasusForConditionalGeneration(transformers.PegasusConfig(**kwargs))
    hf = hf.float().eval()
    _Copier(hidden_permutation(cfg.d_model)).fill(model, hf)
    return hf


# --------------------------------------------------------------------------- weights


class _Copier:
    """Copies mtkit parameters into Transformers ones (d_model axes permuted), checking that
    every mtkit parameter is used and every Transformers parameter is written."""

    def __init__(self, perm: Tensor) -> None:
        self.perm = perm
        self.used: set[int] = set()  # ids of mtkit parameters read
        self.written: set[int] = set()  # ids of Transformers parameters written

    def put(self, dst: Tensor, src: Tensor, *, rows: bool = False, cols: bool = False) -> None:
        """dst <- src, permuting dim 0 (`rows`, a d_model output) and/or dim 1 (`cols`)."""
        self.used.add(id(src))
        value = src.detach().float()
        if rows:
            value = value.index_select(0, self.perm)
        if cols:
            value = value.index_select(1, self.perm)
        if dst.shape != value.shape:
            raise ExportError(f"shape mismatch: {tuple(dst.shape)} <- {tuple(value.shape)}")
        with torch.no_grad():
            dst.copy_(value)
        self.written.add(id(dst))

    def linear(self, dst: nn.Linear, src: nn.Linear, *, d_in: bool, d_out: bool) -> None:
        """A Linear reading (`d_in`) and/or writing (`d_out`) the residual stream."""
        self.put(dst.weight, src.weight, rows=d_out, cols=d_in)
        if src.bias is not None:
            self.put(dst.bias, src.bias, rows=d_out)
        elif dst.bias is not None:  # a bias Transformers has where mtkit has none: zero
            with torch.no_grad():
                dst.bias.zero_()
            self.written.add(id(dst.bias))

    def norm(self, dst: nn.Module, src: nn.Module) -> None:
        for module in (dst, src):
            if not isinstance(module, nn.LayerNorm) or module.eps != LAYER_NORM_EPS:
                raise ExportError(
                    f"unsupported normalisation layer {module!r} (need LayerNorm, eps 1e-5)"
                )
        dst, src = cast(nn.LayerNorm, dst), cast(nn.LayerNorm, src)
        self.put(dst.weight, src.weight, rows=True)
        self.put(dst.bias, src.bias, rows=True)

    def attention(self, dst: Any, src: MultiHeadAttention) -> None:
        for name in ("q_proj", "k_proj", "v_proj"):  # heads are not permuted: only inputs
            self.linear(getattr(dst, name), getattr(src, name), d_in=True, d_out=False)
        self.linear(dst.out_proj, src.out_proj, d_in=False, d_out=True)

    def feed_forward(self, dst: Any, src: EncoderLayer | DecoderLayer) -> None:
        self.linear(dst.fc1, src.ff.fc1, d_in=True, d_out=False)
        self.linear(dst.fc2, src.ff.fc2, d_in=False, d_out=True)
        self.norm(dst.final_layer_norm, src.res_ff.norm)

    def fill(self, model: Transformer, hf: Any) -> None:
        """Write all of `model` into `hf` (a MarianMTModel or PegasusForConditionalGeneration)."""
        base = hf.model
        encoder_tables = [base.encoder.embed_tokens, getattr(base, "shared", None)]
        for table in (t for t in encoder_tables if t is not None):  # tied or not: all get it
            self.put(table.weight, model.src_embed.weight, cols=True)
        self.put(base.decoder.embed_tokens.weight, model.tgt_embed.weight, cols=True)
        for dst, module in zip(base.encoder.layers, model.encoder, strict=True):
            layer = cast(EncoderLayer, module)
            self.attention(dst.self_attn, layer.self_attn)
            self.norm(dst.self_attn_layer_norm, layer.res_attn.norm)
            self.feed_forward(dst, layer)
        for dst, module in zip(base.decoder.layers, model.decoder, strict=True):
            d = cast(DecoderLayer, module)
            self.attention(dst.self_attn, d.self_attn)
            self.norm(dst.self_attn_layer_norm, d.res_self.norm)
            self.attention(dst.encoder_attn, d.cross_attn)
            self.norm(dst.encoder_attn_layer_norm, d.res_cross.norm)
            self.feed_forward(dst, d)
        if model.cfg.norm == "pre":
            self.norm(base.encoder.layer_norm, model.encoder_norm)
            self.norm(base.decoder.layer_norm, model.decoder_norm)
        self.put(hf.lm_head.weight, model.out_proj.weight, cols=True)
        with torch.no_grad():
            hf.final_logits_bias.zero_()  # a buffer; mtkit's output projection has no bias
        self.check(model, hf)

    def check(self, model: Transformer, hf: Any) -> None:
        """Every mtkit parameter read; every Transformers parameter but positions written."""
        unused = [name for name, p in model.named_parameters() if id(p) not in self.used]
        unwritten = [
            name
            for name, p in hf.named_parameters()
            if id(p) not in self.written and "embed_positions" not in name
        ]
        if unused or unwritten:
            raise ExportError(
                f"the Hugging Face exporter does not map these weights: "
                f"{', '.join(unused + unwritten)}"
            )
