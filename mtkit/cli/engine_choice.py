"""--engine and --quantize of `translate` and `evaluate`: the model paths the chosen engine
loads, with a run exported to CTranslate2 on the fly (export/ sits above translation/, so this
step lives here, not in translation.engine)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mtkit.config.schema import ConfigError

logger = logging.getLogger(__name__)

# RUN/ctranslate2-float32/: the run's export for --engine ctranslate2 (the folder `mtkit serve
# --engine ctranslate2` writes too); --quantize int8 runs it with CTranslate2's int8 compute type
EXPORT_DIR = "ctranslate2-float32"


def open_engine(
    runs: Sequence[Path], device: str, engine: str, quantize: str, *, attention: bool = False
) -> Any:
    """The translator for `runs` on `engine`; options CTranslate2 cannot honour exit 2."""
    from mtkit.translation.engine import check_engine, check_quantization, load_engine

    check_engine(engine)
    check_quantization(quantize)
    if engine == "ctranslate2":
        if attention:
            raise ConfigError("--attention needs --engine pytorch (CTranslate2 returns none)")
        if len(runs) != 1:
            raise ConfigError("--engine ctranslate2 translates with one model, not an ensemble")
        runs = [ctranslate2_export(runs[0])]
    return load_engine(runs, device, engine=engine, quantize=quantize)


def ctranslate2_export(run: Path) -> Path:
    """`run` itself if it is an export folder, else RUN/ctranslate2-float32/ (RUN: the run
    directory, or the checkpoint's folder), exported unless it already holds an export of this
    checkpoint at least as new as it."""
    from mtkit.checkpoint import resolve_checkpoint
    from mtkit.translation.ctranslate2_engine import MODEL_FILE, is_export, read_export_config

    if is_export(run):
        return run
    checkpoint = resolve_checkpoint(run)
    folder = checkpoint.parent / EXPORT_DIR
    if is_export(folder):
        source = Path(str(read_export_config(folder).get("exported_from", "")))
        fresh = (folder / MODEL_FILE).stat().st_mtime >= checkpoint.stat().st_mtime
        if fresh and source.resolve() == checkpoint.resolve():
            return folder
    from mtkit.export.ctranslate2 import export_ctranslate2

    logger.info("exporting %s to %s for --engine ctranslate2", checkpoint, folder)
    return export_ctranslate2(run, folder, force=True)
