"""Rewrites of a loaded model for inference on CPU that leave its parameters (and so its
checkpoints and exports) as they are."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class TransposedLinear(nn.Linear):
    """A Linear for inference that multiplies by a stored (in, out) copy of its weight.

    At the row counts of decoding steps, one thread's x @ W^T runs faster with W^T stored
    contiguous (measured 1.0-1.7x at 5-1,400 rows for mtkit's d_model 128 layers and its 8,000-word
    output projection; the most at few rows, where the product is a read of the weights). The
    parameters stay (checkpoints and export read them, tied embeddings stay tied); the copy is
    a buffer that is not saved, made once: the weights must not change afterwards.
    """

    def __init__(self, linear: nn.Linear) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        self.weight_t: Tensor
        self.register_buffer("weight_t", linear.weight.detach().t().contiguous(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """Shapes: (..., in_features) -> (..., out_features)."""
        flat = x.reshape(-1, self.in_features)  # (n, in_features)
        if self.bias is None:
            out = torch.mm(flat, self.weight_t)  # (n, out_features)
        else:
            out = torch.addmm(self.bias, flat, self.weight_t)
        return out.view(*x.shape[:-1], self.out_features)


def transpose_linears(model: nn.Module) -> None:
    """Replace every plain float nn.Linear of `model` by a `TransposedLinear` (inference on CPU;
    quantized Linears are left as they are). Outputs agree to float rounding."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear and child.weight.is_floating_point():
                setattr(parent, name, TransposedLinear(child))
