"""The encoder without its padding, for inference: the position-wise work of every layer (norms,
projections, feed-forward, residuals) runs on a batch's real tokens only, packed into one
(tokens, d_model) matrix; only the attention core sees the padded (batch, src_len) layout.

Why: sentences that join a running search come in arrival order, not sorted by length, and a
group padded to its longest source is mostly padding (a server with 64 sentences in flight
over the Multi30k test set: 25,000 encoded positions for 15,000 tokens). `translate`'s batches
are sorted and pad ~12%. Every operation here is the padded pass's, row by row, so a token's
encoding is the same either way; padded positions of the memory come back as zeros (masked
everywhere they are read).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from mtkit.model.layers import EncoderLayer, MultiHeadAttention


def encode_packed(
    x: Tensor, src_mask: Tensor, key_mask: Tensor, layers: Sequence[EncoderLayer], norm: nn.Module
) -> Tensor:
    """`layers` then `norm` over the real tokens of embedded sources `x`.

    Shapes: x (batch, src_len, d_model), src_mask (batch, src_len) bool, key_mask
    (batch, 1, 1, src_len) -> memory (batch, src_len, d_model), zeros at padding.
    """
    batch, length, d_model = x.shape
    where = src_mask.reshape(-1).nonzero()[:, 0]  # (tokens,) flat index of each real token
    h = x.reshape(-1, d_model).index_select(0, where)  # (tokens, d_model)
    for layer in layers:
        attn = layer.self_attn

        def attend(t: Tensor, attn: MultiHeadAttention = attn) -> Tensor:
            return _self_attention(attn, t, where, key_mask, batch, length)

        h = layer.res_attn(h, attend)  # (tokens, d_model)
        h = layer.res_ff(h, layer.ff)
    h = norm(h)  # (tokens, d_model)
    out: Tensor = h.new_zeros(batch * length, d_model).index_copy_(0, where, h)
    return out.view(batch, length, d_model)  # (batch, src_len, d_model)


def _self_attention(
    attn: MultiHeadAttention, h: Tensor, where: Tensor, mask: Tensor, batch: int, length: int
) -> Tensor:
    """`attn` over packed tokens: projections packed, the attention core padded.

    Shapes: h (tokens, d_model), where (tokens,), mask (batch, 1, 1, src_len)
    -> (tokens, d_model).
    """
    d_model = h.size(1)
    qkv = attn.stacked(h, (attn.q_proj, attn.k_proj, attn.v_proj))  # (tokens, 3 * d_model)
    full = qkv.new_zeros(batch * length, 3 * d_model).index_copy_(0, where, qkv)
    split = full.view(batch, length, 3, attn.n_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = split.unbind(0)  # (batch, n_heads, src_len, head_dim) each
    out = attn.core(q, k, v, mask)  # (batch, n_heads, src_len, head_dim)
    merged = out.transpose(1, 2).reshape(batch * length, d_model)  # (batch * src_len, d_model)
    result: Tensor = attn.out_proj(merged.index_select(0, where))  # (tokens, d_model)
    return result
