"""The model behind the server: the PyTorch `Translator`, or the run's CTranslate2 export
(written into the run directory on first use when it is missing or older than the checkpoint).
"""

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
from mtkit.translation.translator import MAX_CHARS_PER_TOKEN, Translation

logger = logging.getLogger(__name__)

EXPORT_DIR = "ctranslate2-{quantization}"  # inside the run directory


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
    export folder always runs on CTranslate2, as in `mtkit translate`.
    """
    from mtkit.translation.ctranslate2_engine import CT2Translator, is_export

    runs = [Path(run) for run in settings.runs]
    if settings.engine == "pytorch" and not (len(runs) == 1 and is_export(runs[0])):
        from mtkit.translation.engine import load_engine as load_pytorch

        torch_model = load_pytorch(runs, device=settings.device)
        members = [resolve_checkpoint(run) for run in runs]
        return LoadedEngine("pytorch", torch_model, torch_model.checkpoint, members)
    if is_export(runs[0]):
        folder, compute_type = runs[0], settings.quantization or "default"
    else:
        folder, compute_type = ct2_export(runs[0], settings.quantization or "float32"), "default"
    ct2 = CT2Translator.load(folder, device=settings.device, compute_type=compute_type)
    origin = ct2.info.get("exported_from")
    return LoadedEngine("ctranslate2", ct2, folder, [Path(str(origin))] if origin else [])


def ct2_export(run: Path, quantization: str) -> Path:
    """The run's CTranslate2 export of its best checkpoint, written now if missing or stale."""
    from mtkit.export.ctranslate2 import export_ctranslate2
    from mtkit.translation.ctranslate2_engine import MODEL_FILE, is_export

    ckpt = resolve_checkpoint(run)
    folder = ckpt.parent / EXPORT_DIR.format(quantization=quantization)
    if is_export(folder) and (folder / MODEL_FILE).stat().st_mtime >= ckpt.stat().st_mtime:
        return folder
    why = "is older than the checkpoint" if is_export(folder) else "does not exist yet"
    logger.info("the CTranslate2 export %s %s; exporting %s", folder, why, ckpt)
    return export_ctranslate2(ckpt, folder, quantization=quantization, force=True)


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
