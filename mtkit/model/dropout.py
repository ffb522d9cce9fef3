"""Dropout whose random numbers are cheap on CPU.

PyTorch's CPU dropout draws one Bernoulli sample per element (`bernoulli_`, about 10 ns
each at one thread): 20% of a training update of the Multi30k recipe's model. Here one
64-bit draw of the same generator (`random_` over the full int64 range) gives four 16-bit
uniform numbers, and an element is kept when its number is at least round(p * 65536): the
drop probability is p rounded to a multiple of 1/65536 (0.1 -> 0.100006), and the kept
elements are scaled by the exact inverse of the keep probability, so the expected output
still equals the input. The mask is a bool tensor, as PyTorch's own dropout keeps for the
backward pass. Other devices keep PyTorch's fused dropout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LEVELS = 65536  # the values of a 16-bit uniform number


def dropout(x: Tensor, p: float) -> Tensor:
    """Training-time dropout of `x` with drop probability `p` (0 <= p <= 1); any shape."""
    if p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    dropped = round(p * LEVELS)  # how many of the 65,536 levels drop an element
    if dropped >= LEVELS:
        return torch.zeros_like(x)
    n = x.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), None)  # 64 bits each
    levels = words.view(torch.int16)[:n].view(x.shape)  # uniform over -32768 .. 32767
    keep = levels >= dropped - LEVELS // 2  # (x.shape) bool: P(keep) = (LEVELS - dropped) / LEVELS
    return torch.where(keep, x, 0.0).mul_(LEVELS / (LEVELS - dropped))


def word_dropout(x: Tensor, p: float) -> Tensor:
    """Training-time dropout of whole token vectors (Gal and Ghahramani 2016; Sennrich and Zhang
    2019): each (batch, position) keeps or zeroes its whole d_model vector, kept ones scaled as
    in `dropout`. Shapes: (batch, len, d_model) -> the same."""
    if p == 0.0:
        return x
    keep = dropout(x.new_ones(x.shape[:-1] + (1,)), p)  # (batch, len, 1): 0 or 1 / keep rate
    return x * keep


class Dropout(nn.Module):
    """`dropout` while training, the identity otherwise (as nn.Dropout)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        """Shapes: any -> the same."""
        return dropout(x, self.p) if self.training else x

    def extra_repr(self) -> str:
        return f"p={self.p}"
