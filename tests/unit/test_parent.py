"""training.init_from without training: the parent's sections under the child's, bad parents."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from mtkit.checkpoint import CheckpointError
from mtkit.config.load import config_from_dict
from mtkit.config.schema import ConfigError
from mtkit.training.parent import check_agrees, check_options, load_parent, load_train_config
from mtkit.training.state import find_origin
from tests.tiny_checkpoint import write_tiny_run


@pytest.fixture(scope="module")
def parent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run dir with best.pt (random weights; d_model 16, vocab 60, no optimizer state)."""
    return write_tiny_run(tmp_path_factory.mktemp("parent"))


def child(tmp_path: Path, parent: Path | str, **sections: dict[str, Any]) -> Path:
    raw: dict[str, Any] = {"data": {"train": "data/train", "max_len": 30}, **sections}
    raw.setdefault("training", {})["init_from"] = str(parent)
    path = tmp_path / "child.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def test_left_out_model_keys_come_from_the_parent(tmp_path: Path, parent: Path) -> None:
    cfg = load_train_config(child(tmp_path, parent, model={"dropout": 0.3}), [])
    assert (cfg.model.d_model, cfg.model.d_ff, cfg.model.max_positions) == (16, 32, 64)
    assert cfg.model.dropout == 0.3  # regularisation may change
    assert cfg.tokenizer.vocab_size == 60 and cfg.tokenizer.model is None
    assert cfg.training.init_from == str(parent)


def test_explicit_keys_that_agree_are_fine(tmp_path: Path, parent: Path) -> None:
    config = child(tmp_path, parent, model={"d_model": 16}, tokenizer={"vocab_size": 60})
    assert load_train_config(config, []).model.d_model == 16


@pytest.mark.parametrize(
    ("sections", "key", "mine", "theirs"),
    [
        ({"model": {"d_model": 32}}, "model.d_model", "32", "16"),
        ({"model": {"encoder_layers": 2}}, "model.encoder_layers", "2", "1"),
        ({"tokenizer": {"vocab_size": 8000}}, "tokenizer.vocab_size", "8000", "60"),
    ],
)
def test_a_conflicting_key_is_one_line_naming_both_values_and_the_parent(
    tmp_path: Path, parent: Path, sections: dict[str, Any], key: str, mine: str, theirs: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_train_config(child(tmp_path, parent, **sections), [])
    message = str(err.value)
    assert f"{key}: {mine} in this config but {theirs} in the parent {parent / 'best.pt'}" in (
        message
    )
    assert "\n" not in message


def test_an_override_conflicts_too(tmp_path: Path, parent: Path) -> None:
    with pytest.raises(ConfigError, match="model.d_ff: 64 in this config but 32"):
        load_train_config(child(tmp_path, parent), ["model.d_ff=64"])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda t: t / "missing", "no such run directory or checkpoint file"),
        (lambda t: t / "empty", "holds no checkpoint (no best.pt or last.pt)"),
    ],
)
def test_missing_parent_or_checkpoint_is_a_config_error(
    tmp_path: Path, make: Any, message: str
) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        load_train_config(child(tmp_path, make(tmp_path)), [])
    assert "training.init_from: " in str(err.value)


def test_an_unreadable_parent_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt: not a readable checkpoint"):
        load_parent(str(tmp_path / "junk.pt"))


def test_tokenizer_model_and_init_from_together_are_refused(tmp_path: Path, parent: Path) -> None:
    config = child(tmp_path, parent, tokenizer={"model": str(parent / "spm")})
    with pytest.raises(ConfigError, match="tokenizer.model: not used with training.init_from"):
        load_train_config(config, [])


def test_resume_without_the_parent_skips_the_merge(tmp_path: Path) -> None:
    config = child(tmp_path, tmp_path / "gone", model={"d_model": 64, "n_heads": 2})
    assert load_train_config(config, [], resume=True).model.d_model == 64


def test_python_api_config_is_checked_against_the_parent(tmp_path: Path, parent: Path) -> None:
    raw = {"data": {"max_len": 30}, "training": {"init_from": str(parent)}}
    cfg = config_from_dict(raw)  # the default model: d_model 256, not the parent's 16
    with pytest.raises(ConfigError, match="model.d_model: 256 in this config but 16"):
        find_origin(cfg, resume=False)
    merged = load_train_config(child(tmp_path, parent), [])
    check_agrees(merged, load_parent(str(parent)))  # no error


def test_keep_options_need_what_the_parent_has(tmp_path: Path, parent: Path) -> None:
    loaded = load_parent(str(parent))
    cfg = load_train_config(child(tmp_path, parent), ["training.init_keep_optimizer=true"])
    with pytest.raises(ConfigError, match="holds no optimizer state"):
        check_options(cfg.training, loaded)
    loaded.state["train_state"] = {"step": 500}
    cfg = load_train_config(
        child(tmp_path, parent), ["training.init_keep_schedule=true", "training.max_steps=500"]
    )
    with pytest.raises(ConfigError, match="not above the parent's step 500"):
        check_options(cfg.training, loaded)
