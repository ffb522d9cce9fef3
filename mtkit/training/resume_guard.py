"""`--resume` is checked against the run's checkpoint before anything is written to the run.

A resumed run keeps its tokenizer (tokenizer_guard.py) and its model's shape: a config (or a
`--set`) that changes an architecture key, or that would build tensors of other shapes than
the checkpoint holds, is refused with one line naming the first differing key or tensor and
both values, so the run directory (its config.yaml included) stays as it was.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mtkit.checkpoint import weight_problems
from mtkit.config.convert import short_repr
from mtkit.config.schema import ConfigError, ExperimentConfig
from mtkit.model.transformer import build_model
from mtkit.training.parent import ARCHITECTURE
from mtkit.training.tokenizer_guard import check_resume_settings


def check_resume(cfg: ExperimentConfig, path: Path, state: dict[str, Any]) -> None:
    """Refuse to resume from checkpoint `path` (contents `state`) with a config whose
    tokenizer or model shape differs from the one the run was trained with."""
    check_resume_settings(cfg, state)
    saved = state["config"].get("model", {}) if isinstance(state["config"], dict) else {}
    for key in ARCHITECTURE:
        mine = getattr(cfg.model, key)
        if key in saved and _differs(mine, saved[key]):
            raise ConfigError(
                _refusal(
                    cfg,
                    path,
                    f"model.{key} is {short_repr(mine)} in this config but "
                    f"{short_repr(saved[key])} in the checkpoint",
                )  # fmt: skip
            )
    try:
        sizes = int(state["vocab"]["src"]), int(state["vocab"]["tgt"])
    except (KeyError, TypeError, ValueError):
        return  # restore_state names what is wrong with such a checkpoint
    if not isinstance(state.get("model"), dict):
        return
    with torch.device("meta"):  # shapes only: nothing is allocated
        expected = build_model(cfg, *sizes).state_dict()
    problems = weight_problems(expected, state["model"])
    if problems:
        raise ConfigError(_refusal(cfg, path, problems[0].replace("the model", "this config")))


def _differs(mine: Any, theirs: Any) -> bool:
    if isinstance(mine, list | tuple) and isinstance(theirs, list | tuple):
        return list(mine) != list(theirs)
    return bool(mine != theirs)


def _refusal(cfg: ExperimentConfig, path: Path, what: str) -> str:
    return (
        f"{cfg.run_path}: cannot resume from {path.name}: {what}; a run keeps the model it "
        "started with: resume with its own settings (drop the --set), or start a new run"
    )
