"""Transformer building blocks written out: attention, feed-forward, residual/norm, layers.

Masks follow mtkit/model/masks.py (bool, True = may attend). `attention` is the plain
softmax(QK^T / sqrt(d_k)) V that tests hold the fused SDPA path to.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtkit.config.schema import ModelConfig
from mtkit.model.cache import KV
from mtkit.model.dropout import Dropout, dropout
from mtkit.model.masks import no_empty_rows

# An attention kernel for decoding (mtkit/translation/native_kernels.py): (q, k, v, mask) as
# `attention` takes them, and the key rows of a back-pointer cache (`gather_rows`) or None ->
# the same result, or None for a call it does not take (then SDPA).
AttentionKernel = Callable[[Tensor, Tensor, Tensor, Tensor | None, Tensor | None], Tensor | None]


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
        probs = dropout(probs, dropout_p)
    return probs @ v  # (batch, n_heads, q_len, head_dim)


def fused_attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout_p: float = 0.0
) -> Tensor:
    """F.scaled_dot_product_attention; on CPU, bfloat16 and dropout run in float32 outside
    autocast: PyTorch's CPU flash-attention backward took 6x the float32 time in bfloat16 (31 vs
    5 ms for 128 x 4 heads x 16 x 64, Zen 4), 23% of a bf16 training step; with dropout SDPA
    falls back to a math path drawing a Bernoulli sample per weight, and `attention` with
    mtkit's dropout made a recipe update 1.05x faster. Shapes: as `attention`."""
    if q.device.type != "cpu" or (q.dtype != torch.bfloat16 and dropout_p == 0.0):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    dtype = q.dtype
    with torch.autocast("cpu", enabled=False):
        q, k, v = q.float(), k.float(), v.float()
        if dropout_p > 0.0:
            out = attention(q, k, v, mask, dropout_p)  # (batch, n_heads, q_len, head_dim)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.to(dtype)


def gather_rows(x: Tensor, rows: Tensor) -> Tensor:
    """Keys (or values) of a back-pointer cache, one row per query row: column j of row b is
    column j of row rows[b, j] of `x`. Shapes: x (buffer_rows, n_heads, len, head_dim), rows
    (batch, len) long -> (batch, n_heads, len, head_dim)."""
    columns = torch.arange(x.size(2), device=x.device)  # (len,)
    return x.transpose(1, 2)[rows, columns].transpose(1, 2)  # (batch, n_heads, len, head_dim)


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
        # set by `fuse_projections` (inference): the stacked products as modules of their own
        self.qkv_proj: nn.Module | None = None
        self.kv_proj: nn.Module | None = None
        self.kernel: AttentionKernel | None = None  # set for decoding (`set_attention_kernel`)

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

    def attend(
        self, query: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, rows: Tensor | None = None
    ) -> Tensor:
        """Attend from `query` to already projected keys/values (read through `rows` as in
        `attend_projected` when given).

        Shapes: query (batch, q_len, d_model), k/v (batch, n_heads, k_len, head_dim)
        -> (batch, q_len, d_model).
        """
        q = self._split(self.q_proj(query))  # (batch, n_heads, q_len, head_dim)
        return self.attend_projected(q, k, v, mask, rows)  # (batch, q_len, d_model)

    def attend_projected(
        self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, rows: Tensor | None = None
    ) -> Tensor:
        """softmax(q k^T / sqrt(head_dim)) v, heads merged, then the output projection.

        Shapes: q (batch, n_heads, q_len, head_dim), k/v (batch, n_heads, k_len, head_dim), or
        with `rows` (batch, k_len) long, k/v of a back-pointer cache (`gather_rows`)
        -> (batch, q_len, d_model). `mask` must leave every query a key (`masks.no_empty_rows`).
        """
        out = self.core(q, k, v, mask, rows)  # (batch, n_heads, q_len, head_dim)
        batch, _, q_len, _ = out.shape
        out = out.transpose(1, 2).reshape(batch, q_len, -1)  # (batch, q_len, d_model)
        result: Tensor = self.out_proj(out)  # (batch, q_len, d_model)
        return result

    def core(
        self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, rows: Tensor | None = None
    ) -> Tensor:
        """softmax(q k^T / sqrt(head_dim)) v per head: the kernel, else SDPA or `attention`.
        Shapes: as `attend_projected` -> (batch, n_heads, q_len, head_dim)."""
        kernel = None if self.training else self.kernel
        out = None if kernel is None else kernel(q, k, v, mask, rows)
        if out is None:
            if rows is not None:
                k, v = gather_rows(k, rows), gather_rows(v, rows)
            attend = fused_attention if self.fast else attention
            out = attend(q, k, v, mask, dropout_p=self.dropout if self.training else 0.0)
        return out

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
            scores = scores.masked_fill(~no_empty_rows(mask), fill)
        return scores.float().softmax(dim=-1)  # (batch, n_heads, q_len, k_len), float32 rows

    def _split(self, x: Tensor) -> Tensor:
        batch, length, _ = x.shape
        x = x.view(batch, length, self.n_heads, self.head_dim)  # (batch, len, n_heads, head_dim)
        return x.transpose(1, 2)  # (batch, n_heads, len, head_dim)

    def fuse_projections(self) -> None:
        """Store [W_q; W_k; W_v] and [W_k; W_v] as Linears of their own (for inference).

        The fused products then skip stacking the weights on every call, and a module-level
        transform such as dynamic quantization converts them like any Linear. The separate
        projections stay (checkpoints and export read them); the results are the same.
        """
        self.qkv_proj = _stacked((self.q_proj, self.k_proj, self.v_proj))
        self.kv_proj = _stacked((self.k_proj, self.v_proj))

    def stacked(self, x: Tensor, projections: tuple[nn.Linear, ...]) -> Tensor:
        """x times the stacked weights of `projections` (q, k, v or k, v).
        Shapes: (..., d_model) -> (..., n * d_model)."""
        stored = self.qkv_proj if len(projections) == 3 else self.kv_proj
        if stored is not None:
            y: Tensor = stored(x)
            return y
        weight = torch.cat([p.weight for p in projections])  # (n * d_model, d_model)
        bias = torch.cat([p.bias for p in projections])  # (n * d_model,)
        return F.linear(x, weight, bias)

    def _fused(self, x: Tensor, projections: tuple[nn.Linear, ...]) -> tuple[Tensor, ...]:
        """x times the stacked weights of `projections`, split per projection and head.

        Shapes: x (batch, len, d_model) -> n x (batch, n_heads, len, head_dim), strided views.
        """
        y = self.stacked(x, projections)  # (batch, len, n * d_model)
        batch, length, _ = x.shape
        y = y.view(batch, length, len(projections), self.n_heads, self.head_dim)
        return y.permute(2, 0, 3, 1, 4).unbind(0)  # n x (batch, n_heads, len, head_dim)


def fuse_attention_projections(model: nn.Module) -> None:
    """Store every attention's stacked projections once (`MultiHeadAttention.fuse_projections`):
    for inference, where re-stacking the weights at each decoding step costs ~2% of a beam
    search. Outputs are the same."""
    for module in model.modules():
        if isinstance(module, MultiHeadAttention):
            module.fuse_projections()


def _stacked(projections: tuple[nn.Linear, ...]) -> nn.Linear:
    """One Linear computing every projection in `projections` at once (outputs stacked)."""
    weight = torch.cat([p.weight.detach() for p in projections])  # (n * d_out, d_in)
    bias = torch.cat([p.bias.detach() for p in projections])  # (n * d_out,)
    fused = nn.Linear(weight.size(1), weight.size(0), device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        fused.weight.copy_(weight)
        fused.bias.copy_(bias)
    return fused.requires_grad_(False)


class FeedForward(nn.Module):
    """Position-wise Linear -> activation -> dropout -> Linear."""

    def __init__(self, d_model: int, d_ff: int, activation: str, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_ff)
        self.fc2 = nn.Linear(d_ff, d_model)
        self.act: Callable[[Tensor], Tensor] = F.gelu if activation == "gelu" else F.relu
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """Shapes: (batch, len, d_model) -> (batch, len, d_model)."""
        h = self.fc1(x)  # (batch, len, d_ff), a fresh tensor: ReLU overwrites it
        h = F.relu(h, inplace=True) if self.act is F.relu else self.act(h)
        if self.training:
            h = self.dropout(h)
        out: Tensor = self.fc2(h)  # (batch, len, d_model)
        return out


class Residual(nn.Module):
    """x + dropout(sublayer(norm(x))) for pre-norm; norm(x + dropout(sublayer(x))) for post-norm.

    `sublayer` returns a new tensor (each ends in a Linear), which inference adds x into.
    """

    def __init__(self, d_model: int, dropout: float, norm: str) -> None:
        super().__init__()
        self.pre = norm == "pre"
        self.norm = nn.LayerNorm(d_model)
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor, sublayer: Callable[[Tensor], Tensor]) -> Tensor:
        """Shapes: (batch, len, d_model) -> (batch, len, d_model)."""
        if self.pre:
            h = self._dropped(sublayer(self.norm(x)))  # (batch, len, d_model)
            if not self.training and h.dtype == x.dtype and h.shape == x.shape:
                return h.add_(x)  # inference: into the sublayer's new output (x + h, bit for bit)
            out: Tensor = x + h  # (batch, len, d_model)
            return out
        out = self.norm(x + self._dropped(sublayer(x)))  # (batch, len, d_model)
        return out

    def _dropped(self, h: Tensor) -> Tensor:
        """Dropout while training; nothing to call otherwise (decoding calls this 12 times a
        step for a 4-layer decoder)."""
        return self.dropout(h) if self.training else h


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
        self,
        x: Tensor,
        past: KV,
        cross: KV,
        src_mask: Tensor,
        beam: int = 1,
        self_mask: Tensor | None = None,
        origin: Tensor | None = None,
        cross_rows: Tensor | None = None,
    ) -> Tensor:
        """One new position, whose keys/values are written into the last (free) column of
        `past` (DecoderCache.reserve), in place; returns the output. With `origin` (a
        back-pointer cache, mtkit/model/cache.py) they go to column origin.size(1) - 1 of the
        first `rows` buffer rows, and the attention reads each row's keys through `origin`.

        Rows come in groups of `beam` consecutive rows per sentence; `cross` and `src_mask`
        hold one entry per sentence, and a sentence's `beam` rows attend to it as `beam`
        queries of one attention (its memory is read once, not once per row). A step where
        some sentences have one row (DecoderCache.cross_view) passes `beam` 1 and one
        `src_mask` and `cross_rows` entry per row.
        Shapes: x (rows, 1, d_model), past K/V (rows, n_heads, t + 1, head_dim),
        cross K/V (rows / beam, n_heads, src_len, head_dim), src_mask (rows / beam, 1, 1,
        src_len), self_mask None (all t + 1 columns) or bool (rows, 1, 1, t + 1), origin
        None or (rows, t + 1) long (past K/V then (buffer_rows, n_heads, >= t + 1, head_dim)),
        cross_rows None or (rows / beam, src_len) long: sentence s reads row cross_rows[s] of
        `cross` (which then has any number of rows) -> (rows, 1, d_model).
        """

        def self_block(h: Tensor) -> Tensor:
            q, k_new, v_new = self.self_attn.project_qkv(h)  # (rows, n_heads, 1, head_dim) each
            rows, column = h.size(0), past[0].size(2) - 1 if origin is None else origin.size(1) - 1
            past[0][:rows, :, column : column + 1] = k_new  # in place
            past[1][:rows, :, column : column + 1] = v_new
            keys, values = past[0][:, :, : column + 1], past[1][:, :, : column + 1]
            return self.self_attn.attend_projected(q, keys, values, self_mask, origin)

        def cross_block(h: Tensor) -> Tensor:
            rows, _, d_model = h.shape
            grouped = h.view(rows // beam, beam, d_model)  # (sentences, beam, d_model)
            out = self.cross_attn.attend(grouped, cross[0], cross[1], src_mask, cross_rows)
            return out.view(rows, 1, d_model)  # (rows, 1, d_model)

        x = self.res_self(x, self_block)
        x = self.res_cross(x, cross_block)
        out: Tensor = self.res_ff(x, self.ff)  # (rows, 1, d_model)
        return out
