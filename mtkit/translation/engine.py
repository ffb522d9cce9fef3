"""Which engine translates a model path: a CTranslate2 export or a PyTorch checkpoint/run."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_engine(path: Path, device: str = "auto") -> Any:
    """A CTranslate2 export (`mtkit export`) runs on CTranslate2; anything else (a run
    directory or a checkpoint) on PyTorch. Both offer `config`, `checkpoint`, `translate`,
    `translate_nbest` and `translate_stream`; `output.stream_translations` takes either."""
    from mtkit.translation.ctranslate2_engine import CT2Translator, is_export

    if is_export(path):
        return CT2Translator.load(path, device=device)
    from mtkit.translation.translator import Translator

    return Translator.load(path, device=device)
