"""Paths taken from a run's config, checked, with errors that say where the path came from.

A run trained by this version holds absolute paths (config/paths.py); an older run's relative
ones only work from the folder its training was started in, and the message says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mtkit.config.paths import trained_in
from mtkit.translation.ctranslate2_engine import EXPORT_CONFIG, CT2Translator


def config_origin(engine: Any) -> Path:
    """The file the engine's config was read from: its checkpoint, or an export's YAML."""
    if isinstance(engine, CT2Translator):
        return engine.checkpoint.parent / EXPORT_CONFIG
    return Path(engine.checkpoint)


def path_hint(engine: Any, key: str, path: Path) -> str:
    """' (from runs/x/best.pt: data.test)', and for a relative path where to run from."""
    origin = config_origin(engine)
    where = f" (from {origin}: {key})"
    if path.is_absolute():
        return where
    folder = trained_in(engine.config, origin)
    there = f" ({folder})" if folder is not None and folder != Path.cwd() else ""
    return (
        f"{where}; this older run's config holds paths relative to the folder its training "
        f"was started in{there}: run the command from there"
    )


def file_problem(engine: Any, key: str, path: Path) -> str | None:
    """None if `path` is a file; else an error naming the config key and file it came from."""
    if path.is_file():
        return None
    what = "a directory, expected a text file" if path.is_dir() else "file not found"
    return f"{path}: {what}{path_hint(engine, key, path)}, or pass --src and --ref"
