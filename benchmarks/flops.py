"""Model FLOPs of mtkit's Transformer, counted from the architecture (not from a profiler).

Only matrix products are counted (one multiply-add = 2 FLOPs); embeddings, positions, layer
norms, softmax, dropout, the loss and the optimizer are left out (they are memory-bound and
small in FLOPs, but not in time: that gap is what MFU exposes). With d = d_model,
f = d_ff, V = target vocabulary, a sentence of S source and T target tokens (real tokens only,
padding is waste and is not counted) costs, in multiply-adds:

    encoder, per layer      S * (4 d^2 + 2 d f)            q, k, v, out projections; FFN
                            + 2 S^2 d                      scores Q K^T and weights @ V
    decoder, per layer      T * (4 d^2 + 2 d^2 + 2 d f)    self q/k/v/out; cross q/out; FFN
                            + 2 S d^2                      cross-attention k, v of the memory
                            + 2 T^2 d + 2 T S d            self and cross scores and values
    output projection       T d V

Attention products are counted in full (T^2, not the causal half): that is what the dense
kernels compute. Forward FLOPs = 2 x multiply-adds; training = 3 x forward (the backward pass
computes two products per forward product: gradients of the inputs and of the weights).

Incremental decoding (KV cache) runs the encoder once, projects the cross-attention k/v once
per sentence, then per row and step at position t (1-based, keys fed so far) costs
    decoder_layers * (4 d^2 + 2 d^2 + 2 d f + 2 t d + 2 S d) + d V
multiply-adds. Beam search counts every row it computes (beam rows per live sentence).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Arch:
    """The sizes the count depends on."""

    d_model: int
    d_ff: int
    vocab: int  # target vocabulary (rows of the output projection)
    encoder_layers: int
    decoder_layers: int

    def encoder_macs(self, src_len: int) -> int:
        """Multiply-adds of the encoder over one sentence of `src_len` tokens."""
        d, f, s = self.d_model, self.d_ff, src_len
        return self.encoder_layers * (s * (4 * d * d + 2 * d * f) + 2 * s * s * d)

    def cross_kv_macs(self, src_len: int) -> int:
        """Multiply-adds of projecting the memory to cross-attention k, v in every layer."""
        return self.decoder_layers * 2 * src_len * self.d_model**2

    def decoder_macs(self, tgt_len: int, src_len: int) -> int:
        """Multiply-adds of a teacher-forced decoder pass over `tgt_len` positions."""
        d, f, t, s = self.d_model, self.d_ff, tgt_len, src_len
        per_layer = t * (6 * d * d + 2 * d * f) + 2 * t * t * d + 2 * t * s * d
        return self.decoder_layers * per_layer + self.cross_kv_macs(s) + t * d * self.vocab

    def forward_flops(self, src_len: int, tgt_len: int) -> int:
        """FLOPs of one teacher-forced forward pass over a sentence pair."""
        return 2 * (self.encoder_macs(src_len) + self.decoder_macs(tgt_len, src_len))

    def train_flops(self, src_len: int, tgt_len: int) -> int:
        """FLOPs of forward + backward (3 x forward) over a sentence pair."""
        return 3 * self.forward_flops(src_len, tgt_len)

    def step_flops(self, position: int, src_len: int) -> int:
        """FLOPs of one cached decoder step for one row; `position` counts keys incl. this one."""
        d, f = self.d_model, self.d_ff
        per_layer = 6 * d * d + 2 * d * f + 2 * position * d + 2 * src_len * d
        return 2 * (self.decoder_layers * per_layer + d * self.vocab)

    def start_flops(self, src_len: int) -> int:
        """FLOPs of the work done once per sentence before decoding (encoder, cross k/v)."""
        return 2 * (self.encoder_macs(src_len) + self.cross_kv_macs(src_len))
