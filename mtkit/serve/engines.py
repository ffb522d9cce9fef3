"""The model behind the server: the PyTorch `Translator` (one run or an ensemble), or a
CTranslate2 export folder run by `CT2Translator`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mtkit.checkpoint import resolve_checkpoint
from mtkit.config.schema import DecodingConfig, ExperimentConfig
from mtkit.data.tokenizer import TokenizerPair
from mtkit.serve.settings import ServeSettings
from mtkit.translation.results import Translation

logger = logging.getLogger(__name__)


class Engine(Protocol):
    """What the server needs of a translator (PyTorch `Translator` and `CT2Translator` fit)."""

    tokenizers: TokenizerPair
    config: ExperimentConfig

    def translate_full(self, lines: Sequence[str], dec: DecodingConfig) -> list[Translation]: ...


@dataclass
class LoadedEngine:
    """A ready engine and where its weights came from."""

    name: str  # pytorch or ctranslate2
    translator: Engine
    source: Path  # the (first) checkpoint file, or the CTranslate2 export folder
    checkpoints: list[Path]  # the checkpoints the weights come from, when known

    @property
    def config(self) -> ExperimentConfig:
        return self.translator.config


def load_engine(settings: ServeSettings) -> LoadedEngine:
    """Load the model once, as `mtkit translate` would (translation.engine.load_engine: a run or
    an ensemble on PyTorch, an export folder on CTranslate2); an unusable run fails here with one
    MtkitError line. `--engine ctranslate2` on a run: the command line exports it first."""
    from mtkit.translation.ctranslate2_engine import CT2Translator
    from mtkit.translation.engine import load_engine as load_translator

    runs = [Path(run) for run in settings.runs]
    translator = load_translator(
        runs, device=settings.device, engine=settings.engine, quantize=settings.quantize
    )
    if isinstance(translator, CT2Translator):
        origin = translator.info.get("exported_from")
        return LoadedEngine(
            "ctranslate2", translator, runs[0], [Path(str(origin))] if origin else []
        )
    members = [resolve_checkpoint(run) for run in runs]
    return LoadedEngine("pytorch", translator, translator.checkpoint, members)
