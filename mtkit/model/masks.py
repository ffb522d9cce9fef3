"""Attention masks: the only place they are made.

Polarity everywhere: `torch.bool`, True = real token / may attend (the convention of
`F.scaled_dot_product_attention`). They are broadcast to (batch, 1, q_len|1, k_len) only at
the attention boundary, in mtkit/model/transformer.py.
"""

from __future__ import annotations

import torch
from torch import Tensor


def pad_mask(ids: Tensor, pad_id: int) -> Tensor:
    """True where `ids` holds a real token.

    Shapes: ids (batch, len) -> (batch, len) bool.
    """
    return ids != pad_id  # (batch, len)


def causal_mask(length: int, device: torch.device | str | None = None) -> Tensor:
    """Lower triangle True: query position i may attend to key positions j <= i.

    Shapes: -> (len, len) bool.
    """
    ones = torch.ones(length, length, dtype=torch.bool, device=device)  # (len, len)
    return torch.tril(ones)  # (len, len)


def no_empty_rows(mask: Tensor) -> Tensor:
    """`mask`, where a query row with no key at all (an all-padding sentence) may attend
    everywhere instead: its softmax is then no NaN. Shapes: (..., k_len) bool, unchanged."""
    return mask | ~mask.any(dim=-1, keepdim=True)
