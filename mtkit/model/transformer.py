"""Encoder-decoder Transformer written out: attention, feed-forward, residual/norm, KV cache.

Masks follow mtkit/masks.py (bool, True = may attend). Target padding needs no mask: it sits
to the right of real tokens, and the causal mask already keeps real positions from seeing it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtkit.config.schema import ModelConfig
from mtkit.model.masks import causal_mask

KV = tuple[Tensor, Tensor]  # keys, values: each (batch, n_heads, len, head_dim)


# --------------------------------------------------------------------------- functions


def sinusoidal_positions(length: int, d_model: int) -> Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d)).

    Shapes: -> (length, d_model).
    """
    pos = torch.arange(length, dtype=torch.float64)[:, None]  # (length, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)  # (d_model / 2,)
    angle = pos / torch.pow(10000.0, two_i / d_model)  # (length, d_model / 2)
    pe = torch.zeros(length, d_model, dtype=torch.float64)  # (length, d_model)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle)
    return pe.float()  # (length, d_model)


def attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout_p: float = 0.0
) -> Tensor:
    """Reference softmax(QK^T / sqrt(d_k)) V; masked scores get the dtype's most negative value.

    Shapes: q (batch, n_heads, q_len, head_dim), k/v (batch, n_heads, k_len, head_dim),
    mask bool broadcastable to (batch, n_heads, q_len, k_len) -> (batch, n_heads, q_len, head_dim).
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (batch, n_heads, q_len, k_len)
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    probs = scores.softmax(dim=-1)  # (batch, n_heads, q_len, k_len)
    if dropout_p > 0.0:
        probs = F.dropout(probs, p=dropout_p)
    return probs @ v  # (batch, n_heads, q_len, head_dim)


def _key_mask(mask: Tensor) -> Tensor:
    """(batch, k_len) key mask -> (batch, 1, 1, k_len)."""
    return mask[:, None, None, :]  # (batch, 1, 1, k_len)


def _no_empty_rows(mask: Tensor) -> Tensor:
    """Let fully masked query rows (e.g. an all-padding sentence) attend everywhere: no NaN."""
    return mask | ~mask.any(dim=-1, keepdim=True)


# --------------------------------------------------------------------------- layers


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention over `n_heads` heads with separate q/k/v/out projections.

    The projections are separate Linears (what a checkpoint stores and export reads), but run
    fused: self-attention multiplies by [W_q; W_k; W_v] once, cross-attention by [W_k; W_v].
    One (len, d_model) x (d_model, 3 d_model) product runs faster than three of a third of the
    size, and saves two kernel launches forward and four backward.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float, fast: bool = True) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.dropout = dropout
        self.fast = fast  # True: F.scaled_dot_product_attention; False: the reference `attention`
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, query: Tensor, *, key: Tensor, value: Tensor, mask: Tensor | None) -> Tensor:
        """Shapes: query (batch, q_len, d_model), key/value (batch, k_len, d_model),
        mask bool (batch|1, 1, q_len|1, k_len) -> (batch, q_len, d_model)."""
        if key is query and value is query:  # self-attention: one fused projection
            q, k, v = self.project_qkv(query)  # (batch, n_heads, len, head_dim) each
            return self.attend_projected(q, k, v, mask)  # (batch, q_len, d_model)
        k, v = self.project_kv(key, value)  # (batch, n_heads, k_len, head_dim) each
        return self.attend(query, k, v, mask)  # (batch, q_len, d_model)

    def project_qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Queries, keys and values of `x` from one fused product, split into heads.

        Shapes: (batch, len, d_model) -> 3 x (batch, n_heads, len, head_dim).
        """
        q, k, v = self._fused(x, (self.q_proj, self.k_proj, self.v_proj))
        return q, k, v

    def project_kv(self, key: Tensor, value: Tensor) -> KV:
        """Keys and values split into heads, ready for `attend` (and for caching)."""
        if key is value:
            k, v = self._fused(key, (self.k_proj, self.v_proj))
            return k, v
        return self._split(self.k_proj(key)), self._split(self.v_proj(value))

    def attend(self, query: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        """Attend from `query` to already projected keys/values.

        Shapes: query (batch, q_len, d_model), k/v (batch, n_heads, k_len, head_dim)
        -> (batch, q_len, d_model).
        """
        q = self._split(self.q_proj(query))  # (batch, n_heads, q_len, head_dim)
        return self.attend_projected(q, k, v, mask)  # (batch, q_len, d_model)

    def attend_projected(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        """softmax(q k^T / sqrt(head_dim)) v, heads merged, then the output projection.

        Shapes: q (batch, n_heads, q_len, head_dim), k/v (batch, n_heads, k_len, head_dim)
        -> (batch, q_len, d_model).
        """
        p = self.dropout if self.training else 0.0
        if mask is not None:
            mask = _no_empty_rows(mask)  # (batch|1, 1, q_len|1, k_len)
        if self.fast:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        else:
            out = attention(q, k, v, mask, dropout_p=p)  # (batch, n_heads, q_len, head_dim)
        batch, _, q_len, _ = out.shape
        out = out.transpose(1, 2).reshape(batch, q_len, -1)  # (batch, q_len, d_model)
        result: Tensor = self.out_proj(out)  # (batch, q_len, d_model)
        return result

    def probs(self, query: Tensor, *, key: Tensor, mask: Tensor | None) -> Tensor:
        """The attention weights `forward` averages the values with (no dropout); for inspection.

        Shapes: query (batch, q_len, d_model), key (batch, k_len, d_model),
        mask bool (batch|1, 1, q_len|1, k_len) -> (batch, n_heads, q_len, k_len), rows sum to 1.
        """
        q = self._split(self.q_proj(query))  # (batch, n_heads, q_len, head_dim)
        k = self._split(self.k_proj(key))  # (batch, n_heads, k_len, head_dim)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # (batch, n_heads, q, k)
        if mask is not None:
            fill = torch.finfo(scores.dtype).min
            scores = scores.masked_fill(~_no_empty_rows(mask), fill)
        return scores.softmax(dim=-1)  # (batch, n_heads, q_len, k_len)

    def _split(self, x: Tensor) -> Tensor:
        batch, length, _ = x.shape
        x = x.view(batch, length, self.n_heads, self.head_dim)  # (batch, len, n_heads, head_dim)
        return x.transpose(1, 2)  # (batch, n_heads, len, head_dim)

    def _fused(self, x: Tensor, projections: tuple[nn.Linear, ...]) -> tuple[Tensor, ...]:
        """x times the stacked weights of `projections`, split per projection and head.

        Shapes: x (batch, len, d_model) -> n x (batch, n_heads, len, head_dim), strided views.
        """
        weight = torch.cat([p.weight for p in projections])  # (n * d_model, d_model)
        bias = torch.cat([p.bias for p in projections])  # (n * d_model,)
        y = F.linear(x, weight, bias)  # (batch, len, n * d_model)
        batch, length, _ = x.shape
        y = y.view(batch, length, len(projections), self.n_heads, self.head_dim)
        return y.permute(2, 0, 3, 1, 4).unbind(0)  # n x (batch, n_heads, len, head_dim)


class FeedForward(nn.Module):
    """Position-wise Linear -> activation -> dropout -> Linear."""

    def __init__(self, d_model: int, d_ff: int, activation: str, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_ff)
        self.fc2 = nn.Linear(d_ff, d_model)
        self.act: Callable[[Tensor], Tensor] = F.gelu if activation == "gelu" else F.relu
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """Shapes: (batch, len, d_model) -> (batch, len, d_model)."""
        h = self.dropout(self.act(self.fc1(x)))  # (batch, len, d_ff)
        out: Tensor = self.fc2(h)  # (batch, len, d_model)
        return out


class Residual(nn.Module):
    """x + dropout(sublayer(norm(x))) for pre-norm; norm(x + dropout(sublayer(x))) for post-norm."""

    def __init__(self, d_model: int, dropout: float, norm: str) -> None:
        super().__init__()
        self.pre = norm == "pre"
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, sublayer: Callable[[Tensor], Tensor]) -> Tensor:
        """Shapes: (batch, len, d_model) -> (batch, len, d_model)."""
        if self.pre:
            out: Tensor = x + self.dropout(sublayer(self.norm(x)))  # (batch, len, d_model)
            return out
        out = self.norm(x + self.dropout(sublayer(x)))  # (batch, len, d_model)
        return out


class EncoderLayer(nn.Module):
    """Self-attention then feed-forward, each inside a Residual."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.attention_dropout)
        self.ff = FeedForward(cfg.d_model, cfg.d_ff, cfg.activation, cfg.activation_dropout)
        self.res_attn = Residual(cfg.d_model, cfg.dropout, cfg.norm)
        self.res_ff = Residual(cfg.d_model, cfg.dropout, cfg.norm)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """Shapes: x (batch, src_len, d_model), mask (batch, 1, 1, src_len) -> like x."""
        x = self.res_attn(x, lambda h: self.self_attn(h, key=h, value=h, mask=mask))
        out: Tensor = self.res_ff(x, self.ff)  # (batch, len, d_model)
        return out


class DecoderLayer(nn.Module):
    """Causal self-attention, cross-attention to the encoder memory, feed-forward."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.attention_dropout)
        self.cross_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.attention_dropout)
        self.ff = FeedForward(cfg.d_model, cfg.d_ff, cfg.activation, cfg.activation_dropout)
        self.res_self = Residual(cfg.d_model, cfg.dropout, cfg.norm)
        self.res_cross = Residual(cfg.d_model, cfg.dropout, cfg.norm)
        self.res_ff = Residual(cfg.d_model, cfg.dropout, cfg.norm)

    def forward(self, x: Tensor, memory: Tensor, self_mask: Tensor, src_mask: Tensor) -> Tensor:
        """Teacher-forced pass.

        Shapes: x (batch, tgt_len, d_model), memory (batch, src_len, d_model),
        self_mask (1, 1, tgt_len, tgt_len), src_mask (batch, 1, 1, src_len) -> like x.
        """
        x = self.res_self(x, lambda h: self.self_attn(h, key=h, value=h, mask=self_mask))
        x = self.res_cross(x, lambda h: self.cross_attn(h, key=memory, value=memory, mask=src_mask))
        out: Tensor = self.res_ff(x, self.ff)  # (batch, len, d_model)
        return out

    def forward_with_cross_attention(
        self, x: Tensor, memory: Tensor, self_mask: Tensor, src_mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """`forward` that also returns the cross-attention weights (slower; for inspection).

        Shapes: as `forward`; weights (batch, n_heads, tgt_len, src_len).
        """
        weights: list[Tensor] = []

        def cross_block(h: Tensor) -> Tensor:
            weights.append(self.cross_attn.probs(h, key=memory, mask=src_mask))
            out: Tensor = self.cross_attn(h, key=memory, value=memory, mask=src_mask)
            return out

        x = self.res_self(x, lambda h: self.self_attn(h, key=h, value=h, mask=self_mask))
        x = self.res_cross(x, cross_block)
        x = self.res_ff(x, self.ff)  # (batch, tgt_len, d_model)
        return x, weights[0]

    def step(
        self, x: Tensor, past: KV, cross: KV, src_mask: Tensor, beam: int = 1
    ) -> tuple[Tensor, KV]:
        """One new position; returns the output and the self-attention K/V with it appended.

        Rows come in groups of `beam` consecutive rows per sentence; `cross` and `src_mask`
        hold one entry per sentence, and a sentence's `beam` rows attend to it as `beam`
        queries of one attention (its memory is read once, not once per row).
        Shapes: x (rows, 1, d_model), past K/V (rows, n_heads, t, head_dim),
        cross K/V (rows / beam, n_heads, src_len, head_dim), src_mask (rows / beam, 1, 1,
        src_len) -> (rows, 1, d_model), K/V (rows, n_heads, t + 1, head_dim).
        """
        kv: list[Tensor] = []

        def self_block(h: Tensor) -> Tensor:
            q, k_new, v_new = self.self_attn.project_qkv(h)  # (rows, n_heads, 1, head_dim) each
            kv.append(torch.cat([past[0], k_new], dim=2))  # (rows, n_heads, t + 1, head_dim)
            kv.append(torch.cat([past[1], v_new], dim=2))  # (rows, n_heads, t + 1, head_dim)
            return self.self_attn.attend_projected(q, kv[0], kv[1], None)  # (rows, 1, d_model)

        def cross_block(h: Tensor) -> Tensor:
            rows, _, d_model = h.shape
            grouped = h.view(rows // beam, beam, d_model)  # (sentences, beam, d_model)
            out = self.cross_attn.attend(grouped, cross[0], cross[1], src_mask)
            return out.view(rows, 1, d_model)  # (rows, 1, d_model)

        x = self.res_self(x, self_block)
        x = self.res_cross(x, cross_block)
        x = self.res_ff(x, self.ff)  # (rows, 1, d_model)
        return x, (kv[0], kv[1])


# --------------------------------------------------------------------------- cache


@dataclass
class DecoderCache:
    """Incremental decoding state for `Transformer.decode_step`.

    Rows are sentences (greedy) or sentence-major beams: with `beam` > 1, rows
    g*beam .. g*beam + beam - 1 all decode sentence g. `self_kv[i]` holds layer i's
    keys/values of the positions fed so far, one per row, each (rows, n_heads, position,
    head_dim); `cross_kv[i]` the encoder memory projected once, one per *sentence*, each
    (rows / beam, n_heads, src_len, head_dim). Beam bookkeeping therefore never copies the
    cross-attention K/V: only dropping finished sentences does.
    """

    self_kv: list[KV]
    cross_kv: list[KV]
    src_mask: Tensor  # (rows / beam, src_len) bool
    position: int  # index of the next target position to be fed
    beam: int = 1  # rows per sentence

    def repeat(self, beam: int) -> DecoderCache:
        """Each row repeated `beam` times (sentence-major); sentence-level tensors are shared.

        Shapes: rows -> rows * beam.
        """
        index = torch.arange(self.rows, device=self.src_mask.device).repeat_interleave(beam)
        return DecoderCache(
            self_kv=[(k.index_select(0, index), v.index_select(0, index)) for k, v in self.self_kv],
            cross_kv=self.cross_kv,
            src_mask=self.src_mask,
            position=self.position,
            beam=self.beam * beam,
        )

    @property
    def rows(self) -> int:
        return int(self.src_mask.size(0)) * self.beam

    def select(self, index: Tensor) -> DecoderCache:
        """Rows `index` of the cache: reorders beams, drops finished sentences, repeats rows.

        With `beam` > 1 the new rows must again come in whole groups, each from one sentence
        (beam search's sentence-major order); then a sentence's memory is kept or dropped as
        one, and not copied at all while no sentence leaves.
        Shapes: index (new_rows,) long -> cache with new_rows rows.
        """
        sentences = index if self.beam == 1 else index[:: self.beam] // self.beam  # (new_sent,)
        same = sentences.numel() == self.src_mask.size(0) and bool(
            (sentences == torch.arange(sentences.numel(), device=sentences.device)).all()
        )

        def pick(kv: KV, rows: Tensor) -> KV:
            return kv[0].index_select(0, rows), kv[1].index_select(0, rows)

        return DecoderCache(
            self_kv=[pick(kv, index) for kv in self.self_kv],
            cross_kv=self.cross_kv if same else [pick(kv, sentences) for kv in self.cross_kv],
            src_mask=self.src_mask if same else self.src_mask.index_select(0, sentences),
            position=self.position,
            beam=self.beam,
        )


# --------------------------------------------------------------------------- model


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
        self.embed_dropout = nn.Dropout(cfg.dropout)
        self.encoder = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.encoder_layers))
        self.decoder = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.decoder_layers))
        pre = cfg.norm == "pre"  # pre-norm stacks end unnormalised: one final LayerNorm each
        self.encoder_norm = nn.LayerNorm(cfg.d_model) if pre else nn.Identity()
        self.decoder_norm = nn.LayerNorm(cfg.d_model) if pre else nn.Identity()
        self.out_proj = nn.Linear(cfg.d_model, tgt_vocab, bias=False)
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
        """Scaled token embeddings + sinusoidal positions + dropout.

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
        x = x + self.pe[offset : offset + length]  # (batch, len, d_model)
        out: Tensor = self.embed_dropout(x)  # (batch, len, d_model)
        return out

    # ----------------------------------------------------------------------- passes

    def encode(self, src: Tensor, src_mask: Tensor) -> Tensor:
        """Shapes: src (batch, src_len) ids, src_mask (batch, src_len) bool
        -> memory (batch, src_len, d_model)."""
        x = self.embed_src(src)  # (batch, src_len, d_model)
        mask = _key_mask(src_mask)  # (batch, 1, 1, src_len)
        for layer in self.encoder:
            x = layer(x, mask)  # (batch, src_len, d_model)
        out: Tensor = self.encoder_norm(x)  # (batch, src_len, d_model)
        return out

    def decode(self, tgt_in: Tensor, memory: Tensor, src_mask: Tensor) -> Tensor:
        """Teacher-forced decoder pass.

        Shapes: tgt_in (batch, tgt_len), memory (batch, src_len, d_model), src_mask
        (batch, src_len) -> logits (batch, tgt_len, tgt_vocab).
        """
        x = self.embed_tgt(tgt_in)  # (batch, tgt_len, d_model)
        self_mask = causal_mask(tgt_in.size(1), tgt_in.device)[None, None]  # (1, 1, tgt, tgt)
        cross_mask = _key_mask(src_mask)  # (batch, 1, 1, src_len)
        for layer in self.decoder:
            x = layer(x, memory, self_mask, cross_mask)  # (batch, tgt_len, d_model)
        return self._logits(x)  # (batch, tgt_len, tgt_vocab)

    def forward(self, src: Tensor, src_mask: Tensor, tgt_in: Tensor) -> Tensor:
        """encode + decode. Shapes: src (batch, src_len), tgt_in (batch, tgt_len)
        -> logits (batch, tgt_len, tgt_vocab)."""
        memory = self.encode(src, src_mask)  # (batch, src_len, d_model)
        return self.decode(tgt_in, memory, src_mask)  # (batch, tgt_len, tgt_vocab)

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

    def init_cache(self, memory: Tensor, src_mask: Tensor) -> DecoderCache:
        """Empty self-attention cache; cross-attention K/V projected once per layer.

        Shapes: memory (batch, src_len, d_model), src_mask (batch, src_len).
        """
        batch = memory.size(0)
        heads, head_dim = self.cfg.n_heads, self.cfg.d_model // self.cfg.n_heads
        empty = memory.new_zeros(batch, heads, 0, head_dim)  # (batch, n_heads, 0, head_dim)
        return DecoderCache(
            self_kv=[(empty, empty) for _ in self.decoder],
            cross_kv=[layer.cross_attn.project_kv(memory, memory) for layer in self._layers()],
            src_mask=src_mask,
            position=0,
        )

    def decode_step(self, tokens: Tensor, cache: DecoderCache) -> Tensor:
        """Feed one token per row at `cache.position`; updates `cache` in place.

        Shapes: tokens (rows,) -> logits (rows, tgt_vocab); rows = sentences * cache.beam.
        """
        x = self.embed_tgt(tokens[:, None], cache.position)  # (rows, 1, d_model)
        cross_mask = _key_mask(cache.src_mask)  # (sentences, 1, 1, src_len)
        for i, layer in enumerate(self._layers()):
            x, cache.self_kv[i] = layer.step(
                x, cache.self_kv[i], cache.cross_kv[i], cross_mask, cache.beam
            )  # (rows, 1, d_model)
        cache.position += 1
        return self._logits(x)[:, 0]  # (rows, tgt_vocab)


def set_fast_attention(model: nn.Module, enabled: bool) -> None:
    """Switch every attention block between SDPA (True) and the reference `attention` (False)."""
    for module in model.modules():
        if isinstance(module, MultiHeadAttention):
            module.fast = enabled


def num_parameters(model: nn.Module) -> int:
    """Trainable parameters, shared tensors counted once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
