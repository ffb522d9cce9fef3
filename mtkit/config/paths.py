"""The config keys that name files or folders, and making them absolute.

A path in a YAML config is relative to the folder the command runs in. `mtkit train` resolves
every such key once, against the folder it was started in, before it saves RUN/config.yaml and
the config inside every checkpoint: a run's own config holds absolute paths, so `mtkit evaluate
RUN --split test` works from any folder. Configs of older runs may still hold relative paths;
they work from the folder their training was started in (`trained_in` guesses it).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

from mtkit.config.schema import CorpusConfig, DataConfig, ExperimentConfig

Train = str | CorpusConfig | list[str | CorpusConfig]  # the type of data.train

# the keys absolute_paths resolves; data.train/valid/test only when data.format is not hub
PATH_KEYS = (
    "run_dir", "data.train", "data.valid", "data.test", "data.prepared_dir", "tokenizer.model",
    "training.init_from",
)  # fmt: skip


def absolute_paths(cfg: ExperimentConfig, base: Path | None = None) -> ExperimentConfig:
    """A copy of `cfg` whose path keys (PATH_KEYS) are absolute: relative ones are joined to
    `base` (default: the current folder). `run_dir` unset becomes the absolute runs/<name>."""
    root = Path.cwd() if base is None else base

    def resolve(value: str) -> str:
        return os.path.normpath(os.path.join(root, value))  # an absolute value stays as it is

    def maybe(value: str | None) -> str | None:
        return None if value is None else resolve(value)

    data = cfg.data
    if data.format != "hub":  # hub splits name datasets, not files
        data = dataclasses.replace(
            data, train=_train_paths(data, resolve), valid=maybe(data.valid), test=maybe(data.test)
        )
    return dataclasses.replace(
        cfg,
        run_dir=resolve(str(cfg.run_path)),
        data=dataclasses.replace(data, prepared_dir=resolve(data.prepared_dir)),
        tokenizer=dataclasses.replace(cfg.tokenizer, model=maybe(cfg.tokenizer.model)),
        training=dataclasses.replace(cfg.training, init_from=maybe(cfg.training.init_from)),
    )


def _train_paths(data: DataConfig, resolve: Callable[[str], str]) -> Train:
    """data.train with every corpus path resolved (mappings keep their tag and weight)."""

    def one(entry: str | CorpusConfig) -> str | CorpusConfig:
        if isinstance(entry, CorpusConfig):
            return dataclasses.replace(entry, path=resolve(entry.path))
        return resolve(entry)

    return [one(e) for e in data.train] if isinstance(data.train, list) else one(data.train)


def trained_in(cfg: ExperimentConfig, checkpoint: Path) -> Path | None:
    """The folder an older run (relative `run_dir`, or none) was trained from, judging by where
    its checkpoint lies: /work/runs/x/best.pt of run_dir runs/x was trained in /work."""
    run = cfg.run_path
    if run.is_absolute():
        return None
    folder = checkpoint.absolute().parent
    parts = Path(os.path.normpath(run)).parts
    if parts and folder.parts[-len(parts) :] == parts:
        return Path(*folder.parts[: -len(parts)])
    return None
