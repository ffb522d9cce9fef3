"""A run's tokenizer never changes: `--resume` with settings that would give another is refused.

Resuming re-runs prepare. Were the data or tokenizer keys changed (a copied run pointed at
other data, say), prepare would train a different sentencepiece model with the same vocabulary
size, and the old weights would go on training on ids that now mean other pieces, silently.
`check_resume_settings` compares the keys the tokenizer depends on with those the run's
checkpoint was trained with, before anything is written; `check_same_tokenizer` compares the
prepared tokenizer's bytes with the checkpoint's afterwards (same keys, other file contents).
Both refuse with a ConfigError that says what changed and points to `--init-from`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mtkit.config.convert import short_repr
from mtkit.config.load import config_from_dict, config_to_dict
from mtkit.config.paths import absolute_paths
from mtkit.config.schema import ConfigError, ExperimentConfig
from mtkit.data.prepare import reused_tokenizers
from mtkit.data.tokenizer import TokenizerPair
from mtkit.training.parent import BATCHES_ONLY

# data keys applied after the tokenizer is trained (or not at all): they may change on resume
AFTER_TOKENIZER = ("max_len", "max_ratio", "clean_eval", "num_proc", "prepared_dir")
SHOWN = 3  # changes named in the message


def tokenizer_settings(cfg: ExperimentConfig) -> dict[str, Any]:
    """The dotted config keys a trained tokenizer depends on, with their values (paths
    absolute: an older run's relative ones against the current folder)."""
    plain = config_to_dict(absolute_paths(cfg))
    out = {f"data.{k}": v for k, v in plain["data"].items() if k not in AFTER_TOKENIZER}
    out.update(
        {f"tokenizer.{k}": v for k, v in plain["tokenizer"].items() if k not in BATCHES_ONLY}
    )
    out["training.init_from"] = plain["training"]["init_from"]
    return out


def check_resume_settings(cfg: ExperimentConfig, state: dict[str, Any]) -> None:
    """Refuse to resume from the checkpoint `state` when `cfg` would give the run another
    tokenizer.

    A run that reuses a tokenizer (init_from, tokenizer.model) keeps its own on resume, so only
    a `tokenizer.model` naming other files is refused; data keys may change then.
    """
    if cfg.training.init_from is not None:
        return
    if cfg.tokenizer.model is not None:
        if not Path(cfg.tokenizer.model).exists():
            return  # gone: the run goes on with its own copy
        given = reused_tokenizers(cfg)
        if given is not None and given.model_files() != state["tokenizer"]:
            raise ConfigError(
                _refusal(cfg, f"tokenizer.model: {cfg.tokenizer.model} is not its tokenizer")
            )
        return
    try:
        saved = tokenizer_settings(config_from_dict(state["config"]))
    except ConfigError:  # a config this version cannot read: check_same_tokenizer still guards
        return
    mine = tokenizer_settings(cfg)
    changes = [
        f"{key}: {short_repr(saved.get(key))} -> {short_repr(value)}"
        for key, value in mine.items()
        if saved.get(key) != value
    ]
    if changes:
        more = f" and {len(changes) - SHOWN} more" if len(changes) > SHOWN else ""
        raise ConfigError(_refusal(cfg, "; ".join(changes[:SHOWN]) + more))


def check_same_tokenizer(cfg: ExperimentConfig, prepared: Path, state: dict[str, Any]) -> None:
    """After prepare: refuse when the prepared tokenizer is not the checkpoint's, byte for byte."""
    if TokenizerPair.load(prepared).model_files() != state["tokenizer"]:
        raise ConfigError(
            _refusal(
                cfg,
                f"the tokenizer prepared in {prepared} differs from the run's: the training data "
                "changed since the run began",
            )
        )


def _refusal(cfg: ExperimentConfig, what: str) -> str:
    run = cfg.run_path
    return (
        f"{run}: --resume would change the run's tokenizer ({what}); a run's tokenizer never "
        f"changes (its spm.model is left as it is). To train on other data or settings, start "
        f"a new run from this one: mtkit train NEW_CONFIG --init-from {run}"
    )
