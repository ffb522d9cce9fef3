"""Runs that build on runs: the parent of `training.init_from`, and its config under the child's.

`load_train_config` reads a training YAML whose `training.init_from` names a parent: the
parent's model and tokenizer sections are the base, the keys the YAML gives explicitly must
agree with them where they fix the weights' shapes. `load_parent` loads the parent's checkpoint
(its weights, tokenizer(s), optimizer state and step); `check_agrees` re-checks a config built
elsewhere (the Python API), `check_options` the init_keep_* options; `start_from_parent` copies
the weights (and optimizer moments) into the new run.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mtkit.checkpoint import CheckpointError, load_checkpoint, load_weights
from mtkit.config.convert import short_repr
from mtkit.config.load import (
    apply_overrides,
    check_required,
    config_from_dict,
    read_config_file,
)
from mtkit.config.schema import ConfigError, ExperimentConfig, TrainingConfig
from mtkit.data.tokenizer import TokenizerError, TokenizerPair
from mtkit.errors import MtkitError

logger = logging.getLogger(__name__)

KEY = "training.init_from"
# model keys that fix the weights' shapes or meaning: a child must keep the parent's values
# (dropout and max_positions, whose positional table is not saved, may change)
ARCHITECTURE = (
    "d_model", "n_heads", "encoder_layers", "decoder_layers", "d_ff", "activation", "norm",
    "share_embeddings", "tie_output",
)  # fmt: skip


# tokenizer keys that change only how training batches are segmented: a child may set its own
BATCHES_ONLY = ("sampling_alpha",)


@dataclass
class Parent:
    """The run a new run starts from: its checkpoint, loaded, and where it came from."""

    path: Path  # as given in training.init_from
    checkpoint: Path  # the checkpoint file it resolved to
    sha256: str  # of the checkpoint file
    state: dict[str, Any]  # the loaded checkpoint
    tokenizers: TokenizerPair

    @property
    def step(self) -> int:
        return int(self.state.get("train_state", {}).get("step", 0))

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.state["config"])

    def record(self) -> dict[str, Any]:
        """What the child's checkpoints and parent.json say about it."""
        return {
            "path": str(self.path),
            "checkpoint": str(self.checkpoint.resolve()),
            "sha256": self.sha256,
            "step": self.step,
        }


def resolve_parent(path: Path) -> Path:
    """The checkpoint file `training.init_from` names: a file, or a run's best.pt / last.pt."""
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
        raise ConfigError(f"{KEY}: {path} holds no checkpoint (no best.pt or last.pt)")
    if not path.exists():
        raise ConfigError(f"{KEY}: {path}: no such run directory or checkpoint file")
    return path


def load_parent(spec: str) -> Parent:
    """Load the parent checkpoint; a missing one is a ConfigError, an unusable one names it."""
    checkpoint = resolve_parent(Path(spec))
    state = load_checkpoint(checkpoint)
    try:
        tokenizers = TokenizerPair.from_model_files(state["tokenizer"])
    except (TokenizerError, AttributeError, TypeError) as e:
        raise CheckpointError(f"{checkpoint}: its tokenizer is unusable ({e})") from None
    if not isinstance(state["config"], dict):
        raise CheckpointError(f"{checkpoint}: the embedded config is not a mapping")
    return Parent(Path(spec), checkpoint, _sha256(checkpoint), state, tokenizers)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_train_config(path: Path, overrides: list[str], resume: bool = False) -> ExperimentConfig:
    """`load_config` for `mtkit train`: with `training.init_from`, under the parent's sections.

    Model keys the YAML leaves out come from the parent; the tokenizer section is the parent's
    (its tokenizer is reused). An explicit key that differs where it must agree is one
    ConfigError naming the key, both values and the parent. Resuming a run whose parent is gone
    skips the merge (its saved config is complete).
    """
    raw = apply_overrides(read_config_file(path), overrides)
    training = raw.get("training")
    spec = training.get("init_from") if isinstance(training, dict) else None
    if isinstance(spec, str) and spec and not (resume and not Path(spec).exists()):
        parent = load_parent(spec)
        try:
            raw = with_parent_sections(raw, parent)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
    try:
        cfg = config_from_dict(raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    check_required(raw, path)
    return cfg


def with_parent_sections(raw: dict[str, Any], parent: Parent) -> dict[str, Any]:
    """`raw` with the parent's model and tokenizer sections as the base of its own."""
    theirs = parent.config
    model, tokenizer = raw.get("model") or {}, raw.get("tokenizer") or {}
    if not isinstance(model, dict) or not isinstance(tokenizer, dict):
        return raw  # config_from_dict names the problem
    if tokenizer.get("model") is not None:
        raise ConfigError(
            f"tokenizer.model: not used with {KEY} (the parent's tokenizer is); drop one of them"
        )
    parent_tok = {**theirs.get("tokenizer", {}), "model": None}
    parent_tok["vocab_size"] = parent.tokenizers.tgt.vocab_size  # what it really has
    for key, value in tokenizer.items():
        if key in BATCHES_ONLY:
            parent_tok[key] = value
        else:
            _must_agree(f"tokenizer.{key}", value, parent_tok.get(key, value), parent)
    parent_model = theirs.get("model", {})
    for key in ARCHITECTURE:
        if key in model:
            _must_agree(f"model.{key}", model[key], parent_model.get(key, model[key]), parent)
    return {**raw, "model": {**parent_model, **model}, "tokenizer": parent_tok}


def check_agrees(cfg: ExperimentConfig, parent: Parent) -> None:
    """ConfigError unless `cfg` has the parent's architecture and tokenizer layout."""
    theirs = parent.config.get("model", {})
    for key in ARCHITECTURE:
        if key in theirs:
            _must_agree(f"model.{key}", getattr(cfg.model, key), theirs[key], parent)
    _must_agree("tokenizer.joint", cfg.tokenizer.joint, parent.tokenizers.joint, parent)
    if cfg.tokenizer.model is not None:
        raise ConfigError(
            f"tokenizer.model: not used with {KEY} (the parent's tokenizer is); drop one of them"
        )


def check_options(t: TrainingConfig, parent: Parent) -> None:
    """init_keep_optimizer needs optimizer state; init_keep_schedule needs steps left to run."""
    if t.init_keep_optimizer and not isinstance(parent.state.get("optimizer"), dict):
        raise ConfigError(
            f"training.init_keep_optimizer: {parent.checkpoint} holds no optimizer state (an "
            "averaged checkpoint?); use the parent's last.pt or drop the option"
        )
    if t.init_keep_schedule and parent.step >= t.max_steps:
        raise ConfigError(
            f"training.max_steps: {t.max_steps} is not above the parent's step {parent.step} "
            "(training.init_keep_schedule continues its step count); raise it"
        )


def _must_agree(key: str, mine: Any, theirs: Any, parent: Parent) -> None:
    if mine != theirs and not (isinstance(mine, list | tuple) and list(mine) == list(theirs)):
        raise ConfigError(
            f"{key}: {short_repr(mine)} in this config but {short_repr(theirs)} in the parent "
            f"{parent.checkpoint} ({KEY}); leave the key out to take the parent's"
        )


def start_from_parent(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, parent: Parent, keep_optimizer: bool
) -> None:
    """Copy the parent's weights (and, if asked, its Adam moments) into a fresh run."""
    try:
        load_weights(model, parent.state["model"])
    except CheckpointError as e:
        raise CheckpointError(f"{parent.checkpoint}: {e}") from None
    if not keep_optimizer:
        return
    # the moments from the parent, the hyperparameters (betas, eps, decay) from this config
    groups = optimizer.state_dict()["param_groups"]
    try:
        optimizer.load_state_dict(
            {"state": parent.state["optimizer"]["state"], "param_groups": groups}
        )
    except (KeyError, ValueError, RuntimeError) as e:
        raise MtkitError(f"{parent.checkpoint}: cannot take its optimizer state ({e})") from None
