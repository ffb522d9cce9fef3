"""Which engine translates a model path (a CTranslate2 export or a PyTorch checkpoint/run), and
the engine and quantization choices the commands check before loading anything (no torch here)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mtkit.config.schema import ConfigError

ENGINES = ("auto", "pytorch", "ctranslate2")
# --quantize -> CTranslate2's compute_type ("default": the weights as exported)
CT2_COMPUTE_TYPES = {"none": "default", "int8": "int8"}
QUANTIZATIONS = ("none", "int8")  # --quantize: float weights, or dynamic int8 Linears


class QuantizationError(ConfigError):
    """A quantization that cannot be applied (unknown mode, a model on the GPU); the CLI exits 2."""


def check_quantization(mode: str) -> str:
    """`mode` if it is one of QUANTIZATIONS, else a QuantizationError naming the choices."""
    if mode not in QUANTIZATIONS:
        raise QuantizationError(
            f"--quantize: expected one of {', '.join(QUANTIZATIONS)}, got {mode!r}"
        )
    return mode


def check_engine(engine: str) -> str:
    """`engine` if it is one of ENGINES, else a ConfigError (exit 2) naming them."""
    if engine not in ENGINES:
        raise ConfigError(f"--engine: expected one of {', '.join(ENGINES)}, got {engine!r}")
    return engine


def load_engine(
    paths: Sequence[Path], device: str = "auto", *, engine: str = "auto", quantize: str = "none"
) -> Any:
    """The engine that translates `paths`. "auto": a CTranslate2 export (`mtkit export`) runs
    on CTranslate2, anything else (a run directory or a checkpoint) on PyTorch, and several of
    them as an ensemble. "ctranslate2" needs one export folder (the CLI exports a run first).
    `quantize` "int8": PyTorch's dynamic int8 Linears, or CTranslate2's int8 compute type.
    Both engines offer `config`, `checkpoint`, `translate`, `translate_nbest` and
    `translate_stream`; `output.stream_translations` takes either."""
    from mtkit.translation.ctranslate2_engine import CT2Translator, is_export

    check_engine(engine)
    check_quantization(quantize)
    exports = [str(p) for p in paths if is_export(p)]
    if engine == "auto":
        engine = "ctranslate2" if len(paths) == 1 and exports else "pytorch"
    if engine == "ctranslate2":
        if len(paths) != 1:
            raise ConfigError("--engine ctranslate2 translates with one model, not an ensemble")
        if not exports:
            raise ConfigError(f"{paths[0]}: not a CTranslate2 export (make one: mtkit export)")
        compute_type = CT2_COMPUTE_TYPES[quantize]
        return CT2Translator.load(paths[0], device=device, compute_type=compute_type)
    if exports:
        what = "an ensemble needs" if len(paths) > 1 else "--engine pytorch needs"
        raise ConfigError(f"{exports[0]}: {what} PyTorch checkpoints, not an export")
    from mtkit.translation.ensemble import load_ensemble

    return load_ensemble(list(paths), device=device, quantize=quantize)
