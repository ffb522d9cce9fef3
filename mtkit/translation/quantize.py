"""int8 decoding: PyTorch's dynamic quantization of a loaded model's Linear layers.

`quantize_model(model, "int8")` stores int8 copies of every Linear's weight (one scale per
output channel) and replaces the layer by one that quantizes its input on the fly, multiplies
in int8 with int32 accumulation and returns float32. Embeddings, layer norms, attention and the
softmax stay float32. The fused q/k/v and k/v products are made Linears of their own first, so
they are quantized too. CPU only: PyTorch's quantized kernels do not run on CUDA.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from mtkit.model.layers import fuse_attention_projections
from mtkit.translation.engine import QuantizationError, check_quantization

# PyTorch 2.x marks torch.ao's eager quantization as deprecated (in favour of torchao, which is
# not a dependency); the path still works and is the built-in one, so these notices are muted.
_NOTICES = (".*torch.ao.quantization.*", ".*quantized tensor creation functions.*")


def is_quantized(model: nn.Module) -> bool:
    """Whether `quantize_model` converted `model` (or a model inside it, e.g. an ensemble)."""
    dynamic = torch.ao.nn.quantized.dynamic.Linear
    return any(isinstance(m, dynamic) for m in model.modules())


def quantize_model(model: nn.Module, mode: str) -> nn.Module:
    """`model` (in eval mode, on the CPU) with its Linear layers quantized as `mode` says.

    "none" returns it unchanged; "int8" converts it in place (and returns it).
    """
    if check_quantization(mode) == "none":
        return model
    device = next(model.parameters()).device
    if device.type != "cpu":
        raise QuantizationError(
            f"--quantize {mode} runs on the CPU only (PyTorch's int8 kernels); "
            f"the model is on {device.type}: add --device cpu"
        )
    fuse_attention_projections(model)  # the stacked products are quantized as Linears too
    qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
    with warnings.catch_warnings():
        for notice in _NOTICES:
            warnings.filterwarnings("ignore", message=notice)
        torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
            model, {nn.Linear: qconfig}, dtype=torch.qint8, inplace=True
        )
    return model
