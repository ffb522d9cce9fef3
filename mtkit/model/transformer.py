"""The encoder-decoder Transformer: embeddings, layer stacks, teacher-forced and incremental passes.

Masks follow mtkit/model/masks.py (bool, True = may attend). Target padding needs no mask: it
sits to the right of real tokens, and the causal mask already keeps real positions from
seeing it. The layers live in layers.py, the incremental decoding state in cache.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import cast

import torch
from torch import Tensor, nn

from mtkit.config.schema import ExperimentConfig, ModelConfig
from mtkit.model.cache import DecoderCache, pointer_buffer
from mtkit.model.dropout import Dropout, word_dropout
from mtkit.model.layers import (
    AttentionKernel,
    DecoderLayer,
    EncoderLayer,
    MultiHeadAttention,
    sinusoidal_positions,
)
from mtkit.model.masks import causal_mask, no_empty_rows
from mtkit.model.packed import encode_packed

# An in-place log-softmax for decoding steps (mtkit/translation/native_kernels.py): (rows, vocab)
# float32 logits become their log-probs, and it returns the maxima of each row's `chunk`-wide
# slices (rows, ceil(vocab / chunk)); or None, the logits untouched, for a tensor it does not take.
LogSoftmaxKernel = Callable[[Tensor, int], Tensor | None]


def _key_mask(mask: Tensor) -> Tensor:
    """(batch, k_len) key mask -> (batch, 1, 1, k_len), where a row with no key at all (an
    all-padding source) may attend everywhere instead, so its softmax is no NaN. Built once
    per forward or step, for every layer (causal and cache self-attention masks always hold
    the query's own position, so no other mask needs this)."""
    return no_empty_rows(mask[:, None, None, :])  # (batch, 1, 1, k_len)


class Transformer(nn.Module):
    """Encoder-decoder Transformer (Vaswani et al. 2017) with pre- or post-norm residuals."""

    def __init__(self, cfg: ModelConfig, src_vocab: int, tgt_vocab: int, pad_id: int = 0) -> None:
        super().__init__()
        if cfg.share_embeddings and src_vocab != tgt_vocab:
            raise ValueError(
                f"share_embeddings needs one vocabulary, got src_vocab={src_vocab} "
                f"and tgt_vocab={tgt_vocab}"
            )
        self.cfg = cfg
        self.pad_id = pad_id
        self.max_positions = cfg.max_positions
        self.scale = math.sqrt(cfg.d_model)
        self.src_embed = nn.Embedding(src_vocab, cfg.d_model, padding_idx=pad_id)
        self.tgt_embed = (
            self.src_embed
            if cfg.share_embeddings
            else nn.Embedding(tgt_vocab, cfg.d_model, padding_idx=pad_id)
        )
        self.register_buffer(
            "pe", sinusoidal_positions(cfg.max_positions, cfg.d_model), persistent=False
        )
        self.pe: Tensor  # (max_positions, d_model)
        self.embed_dropout = Dropout(cfg.dropout)
        self.word_dropout = cfg.word_dropout  # whole input tokens, while training
        self.encoder = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.encoder_layers))
        self.decoder = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.decoder_layers))
        pre = cfg.norm == "pre"  # pre-norm stacks end unnormalised: one final LayerNorm each
        self.encoder_norm = nn.LayerNorm(cfg.d_model) if pre else nn.Identity()
        self.decoder_norm = nn.LayerNorm(cfg.d_model) if pre else nn.Identity()
        self.out_proj = nn.Linear(cfg.d_model, tgt_vocab, bias=False)
        # the searches normalise decode_step's logits with it (`set_log_softmax_kernel`)
        self.log_softmax_kernel: LogSoftmaxKernel | None = None
        self._init_weights()
        if cfg.tie_output:
            self.out_proj.weight = self.tgt_embed.weight

    def _init_weights(self) -> None:
        """xavier_uniform for Linear weights, zero biases, N(0, d_model^-0.5) embeddings."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=self.cfg.d_model**-0.5)
                with torch.no_grad():
                    module.weight[self.pad_id].zero_()

    # ----------------------------------------------------------------------- embeddings

    def embed_src(self, src: Tensor) -> Tensor:
        """Scaled token embeddings (whole tokens dropped at `word_dropout` while training) +
        sinusoidal positions + dropout.

        Shapes: (batch, src_len) -> (batch, src_len, d_model).
        """
        return self._embed(self.src_embed, src, 0)

    def embed_tgt(self, tgt: Tensor, offset: int = 0) -> Tensor:
        """Like `embed_src`, positions starting at `offset`.

        Shapes: (batch, tgt_len) -> (batch, tgt_len, d_model).
        """
        return self._embed(self.tgt_embed, tgt, offset)

    def _embed(self, table: nn.Embedding, ids: Tensor, offset: int) -> Tensor:
        length = ids.size(1)
        if offset + length > self.max_positions:
            raise ValueError(
                f"sequence of {offset + length} positions exceeds max_positions "
                f"({self.max_positions})"
            )
        x = table(ids) * self.scale  # (batch, len, d_model)
        if self.training:
            x = word_dropout(x, self.word_dropout)  # (batch, len, d_model)
        x = x + self.pe[offset : offset + length]  # (batch, len, d_model)
        out: Tensor = self.embed_dropout(x)  # (batch, len, d_model)
        return out

    def _embed_at(self, tokens: Tensor, positions: Tensor) -> Tensor:
        """One target token per row at its own position. Shapes: tokens, positions (rows,)
        -> (rows, 1, d_model)."""
        if int(positions.max()) >= self.max_positions:
            raise ValueError(f"a position exceeds max_positions ({self.max_positions})")
        x = self.tgt_embed(tokens) * self.scale + self.pe[positions]  # (rows, d_model)
        out: Tensor = self.embed_dropout(x[:, None])  # (rows, 1, d_model)
        return out

    # ----------------------------------------------------------------------- passes

    def encode(self, src: Tensor, src_mask: Tensor) -> Tensor:
        """Shapes: src (batch, src_len) ids, src_mask (batch, src_len) bool
        -> memory (batch, src_len, d_model). Not training, a padded batch skips the work on its
        padding (mtkit.model.packed; the memory is then zero there)."""
        x = self.embed_src(src)  # (batch, src_len, d_model)
        mask = _key_mask(src_mask)  # (batch, 1, 1, src_len)
        if not self.training and not bool(src_mask.all()):
            layers = [cast(EncoderLayer, layer) for layer in self.encoder]
            return encode_packed(x, src_mask, mask, layers, self.encoder_norm)
        for layer in self.encoder:
            x = layer(x, mask)  # (batch, src_len, d_model)
        out: Tensor = self.encoder_norm(x)  # (batch, src_len, d_model)
        return out

    def decode(
        self, tgt_in: Tensor, memory: Tensor, src_mask: Tensor, project: bool = True
    ) -> Tensor:
        """Teacher-forced decoder pass; `project=False` stops before the output projection
        (training's loss applies `out_proj.weight` itself, mtkit.training.loss).

        Shapes: tgt_in (batch, tgt_len), memory (batch, src_len, d_model), src_mask
        (batch, src_len) -> logits (batch, tgt_len, tgt_vocab), or (batch, tgt_len, d_model).
        """
        x = self.embed_tgt(tgt_in)  # (batch, tgt_len, d_model)
        self_mask = causal_mask(tgt_in.size(1), tgt_in.device)[None, None]  # (1, 1, tgt, tgt)
        cross_mask = _key_mask(src_mask)  # (batch, 1, 1, src_len)
        for layer in self.decoder:
            x = layer(x, memory, self_mask, cross_mask)  # (batch, tgt_len, d_model)
        if not project:
            states: Tensor = self.decoder_norm(x)  # (batch, tgt_len, d_model)
            return states
        return self._logits(x)  # (batch, tgt_len, tgt_vocab)

    def forward(
        self, src: Tensor, src_mask: Tensor, tgt_in: Tensor, project: bool = True
    ) -> Tensor:
        """encode + decode. Shapes: src (batch, src_len), tgt_in (batch, tgt_len)
        -> logits (batch, tgt_len, tgt_vocab), or with `project=False` the decoder's output
        states (batch, tgt_len, d_model)."""
        memory = self.encode(src, src_mask)  # (batch, src_len, d_model)
        return self.decode(tgt_in, memory, src_mask, project)  # (batch, tgt_len, ...)

    def cross_attention(self, src: Tensor, src_mask: Tensor, tgt_in: Tensor) -> Tensor:
        """Cross-attention weights of every decoder layer for a teacher-forced target.

        Row t of a layer's matrix is where the decoder looked when predicting target token t
        from `tgt_in[:, : t + 1]` (pass BOS + the output to see how it was produced). Off the
        decoding path: search never computes these.
        Shapes: src (batch, src_len), src_mask (batch, src_len), tgt_in (batch, tgt_len)
        -> (decoder_layers, batch, n_heads, tgt_len, src_len).
        """
        memory = self.encode(src, src_mask)  # (batch, src_len, d_model)
        x = self.embed_tgt(tgt_in)  # (batch, tgt_len, d_model)
        self_mask = causal_mask(tgt_in.size(1), tgt_in.device)[None, None]  # (1, 1, tgt, tgt)
        cross_mask = _key_mask(src_mask)  # (batch, 1, 1, src_len)
        weights = []
        for layer in self._layers():
            x, w = layer.forward_with_cross_attention(x, memory, self_mask, cross_mask)
            weights.append(w)  # (batch, n_heads, tgt_len, src_len)
        return torch.stack(weights)  # (decoder_layers, batch, n_heads, tgt_len, src_len)

    def _logits(self, x: Tensor) -> Tensor:
        out: Tensor = self.out_proj(self.decoder_norm(x))  # (batch, len, tgt_vocab)
        return out

    # ----------------------------------------------------------------------- incremental

    def _layers(self) -> list[DecoderLayer]:
        return [cast(DecoderLayer, layer) for layer in self.decoder]

    def init_cache(
        self, memory: Tensor, src_mask: Tensor, back_pointers: bool = True
    ) -> DecoderCache:
        """Empty self-attention cache; cross-attention K/V projected once per layer. It keeps
        back-pointers (DecoderCache) where the attention kernel reads them (float32) unless
        `back_pointers` is False (an ensemble's members, whose caches it joins).

        Shapes: memory (batch, src_len, d_model), src_mask (batch, src_len).
        """
        batch, src_len = src_mask.shape
        heads, head_dim = self.cfg.n_heads, self.cfg.d_model // self.cfg.n_heads
        kernel = self._layers()[0].self_attn.kernel
        pointers = back_pointers and kernel is not None and memory.dtype == torch.float32
        # back-pointer buffers start with room for a likely output length, so that few searches
        # copy them to grow (the pages of columns no step writes are never touched)
        width = min(2 * src_len + 16, self.max_positions)

        def empty() -> Tensor:  # (batch, n_heads, width or 0, head_dim)
            if pointers:
                return pointer_buffer(memory, batch, heads, width, head_dim)
            return memory.new_empty(batch, heads, 0, head_dim)

        return DecoderCache(
            self_kv=[(empty(), empty()) for _ in self.decoder],
            cross_kv=[layer.cross_attn.project_kv(memory, memory) for layer in self._layers()],
            src_mask=src_mask,
            position=0,
            origin=src_mask.new_zeros(batch, 0, dtype=torch.long) if pointers else None,
            cross_rows=torch.arange(batch, device=src_mask.device) if pointers else None,
        )

    def decode_step(self, tokens: Tensor, cache: DecoderCache) -> Tensor:
        """Feed one token per row at `cache.position`; updates `cache` in place.

        Shapes: tokens (rows,) -> logits (rows, tgt_vocab); rows = cache.rows (sentences *
        cache.beam, fewer where sentences have one row: DecoderCache.single).
        """
        x = self._embed_at(tokens, cache.row_positions())  # (rows, 1, d_model)
        cache.reserve()  # a free column in each layer's self-attention K/V
        self_mask = cache.self_mask()  # None, or (rows, 1, 1, position + 1)
        src_mask, cross_rows, group = cache.cross_view()  # group: rows per cross-attention query
        cross_mask = _key_mask(src_mask)  # (rows / group, 1, 1, src_len)
        for i, layer in enumerate(self._layers()):
            x = layer.step(
                x,
                cache.self_kv[i],
                cache.cross_kv[i],
                cross_mask,
                group,
                self_mask,
                cache.origin,
                cross_rows,
            )  # (rows, 1, d_model); the layer's K/V filled in place
        cache.position += 1
        return self._logits(x)[:, 0]  # (rows, tgt_vocab)


def set_fast_attention(model: nn.Module, enabled: bool) -> None:
    """Switch every attention block between SDPA (True) and the reference `attention` (False)."""
    for module in model.modules():
        if isinstance(module, MultiHeadAttention):
            module.fast = enabled


def set_attention_kernel(model: nn.Module, kernel: AttentionKernel | None) -> None:
    """Let every attention block run `kernel` when not training (None: PyTorch's attention)."""
    for module in model.modules():
        if isinstance(module, MultiHeadAttention):
            module.kernel = kernel


def set_log_softmax_kernel(model: nn.Module, kernel: LogSoftmaxKernel | None) -> None:
    """Let searches normalise every Transformer's decoding steps with `kernel` (None: PyTorch's
    log_softmax)."""
    for module in model.modules():
        if isinstance(module, Transformer):
            module.log_softmax_kernel = kernel


def state_dict_size(cfg: ModelConfig, src_vocab: int, tgt_vocab: int) -> int:
    """Elements in the state_dict of `Transformer(cfg, src_vocab, tgt_vocab)` (a shared or tied
    table once per name, as a checkpoint holds it), from the config alone: a checkpoint whose
    weights add up to it can be loaded without building the model on the meta device first.
    """
    d, ff = cfg.d_model, cfg.d_ff
    attention = 4 * (d * d + d)  # q, k, v, out projections with biases
    feed_forward = 2 * d * ff + ff + d
    norm = 2 * d
    encoder = cfg.encoder_layers * (attention + feed_forward + 2 * norm)
    decoder = cfg.decoder_layers * (2 * attention + feed_forward + 3 * norm)
    final_norms = 2 * norm if cfg.norm == "pre" else 0
    embeddings = (src_vocab + 2 * tgt_vocab) * d  # source, target, output projection
    return embeddings + encoder + decoder + final_norms


def num_parameters(model: nn.Module) -> int:
    """Trainable parameters, shared tensors counted once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def build_model(
    cfg: ExperimentConfig, src_vocab: int, tgt_vocab: int, pad_id: int = 0
) -> Transformer:
    """The freshly initialised Transformer an experiment describes, for these vocabulary sizes.

    `pad_id` is the tokenizers' padding id (mtkit.data.tokenizer.PAD_ID, which is 0); its
    embedding rows start at zero and get no gradient.
    """
    return Transformer(cfg.model, src_vocab=src_vocab, tgt_vocab=tgt_vocab, pad_id=pad_id)
