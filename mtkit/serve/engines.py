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
from mtkit.serve.settings import ServeError, ServeSettings
from mtkit.translation.translator import MAX_CHARS_PER_TOKEN, Translation

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
    """Load the model once; an unusable run fails here with one MtkitError line.

    PyTorch: one run, or several as an ensemble (as `mtkit translate RUN1 RUN2` does); an
    export folder always runs on CTranslate2, as in `mtkit translate`. `--engine ctranslate2`
    needs an export folder (`mtkit serve` on the command line writes the run's on first use).
    """
    from mtkit.translation.ctranslate2_engine import CT2Translator, is_export

    runs = [Path(run) for run in settings.runs]
    if settings.engine == "pytorch" and not (len(runs) == 1 and is_export(runs[0])):
        from mtkit.translation.engine import load_engine as load_pytorch

        torch_model = load_pytorch(runs, device=settings.device)
        members = [resolve_checkpoint(run) for run in runs]
        return LoadedEngine("pytorch", torch_model, torch_model.checkpoint, members)
    folder = runs[0]
    if not is_export(folder):
        raise ServeError(f"{folder}: not a CTranslate2 export (write one with `mtkit export`)")
    compute_type = settings.quantization or "default"  # default: the weights as exported
    ct2 = CT2Translator.load(folder, device=settings.device, compute_type=compute_type)
    origin = ct2.info.get("exported_from")
    return LoadedEngine("ctranslate2", ct2, folder, [Path(str(origin))] if origin else [])


def source_lengths(engine: Engine, lines: Sequence[str]) -> list[int]:
    """Source tokens (EOS included) each line will take in a batch, as `translate_full` cuts
    them; an empty line takes none."""
    limit = engine.config.model.max_positions - 1
    cap = limit * MAX_CHARS_PER_TOKEN
    keep = [i for i, line in enumerate(lines) if line.strip()]
    ids = engine.tokenizers.src.encode([lines[i].strip()[:cap] for i in keep])
    lengths = [0] * len(lines)
    for i, tokens in zip(keep, ids, strict=True):
        lengths[i] = min(len(tokens), limit) + 1
    return lengths
