"""Which engine translates a model path: a CTranslate2 export or a PyTorch checkpoint/run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mtkit.config.schema import ConfigError


def load_engine(paths: Sequence[Path], device: str = "auto") -> Any:
    """A CTranslate2 export (`mtkit export`) runs on CTranslate2; anything else (a run
    directory or a checkpoint) on PyTorch, and several of them as an ensemble. Both engines offer
    `config`, `checkpoint`, `translate`, `translate_nbest` and `translate_stream`;
    `output.stream_translations` takes either."""
    from mtkit.translation.ctranslate2_engine import CT2Translator, is_export

    if len(paths) == 1 and is_export(paths[0]):
        return CT2Translator.load(paths[0], device=device)
    exports = [str(p) for p in paths if is_export(p)]
    if exports:
        raise ConfigError(f"{exports[0]}: an ensemble needs PyTorch checkpoints, not an export")
    from mtkit.translation.ensemble import load_ensemble

    return load_ensemble(list(paths), device=device)
