"""Runs that build on runs, trained in-process on tiny data: --init-from and the resume guard."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from typer.testing import CliRunner

from mtkit.checkpoint import load_checkpoint
from mtkit.cli.main import app
from mtkit.config.load import load_config
from mtkit.config.schema import ConfigError
from mtkit.data.batching import collate_columns, load_prepared
from mtkit.data.tokenizer import PAD_ID
from mtkit.training.loop import train
from mtkit.training.loss import label_smoothed_cross_entropy
from mtkit.training.parent import load_train_config
from mtkit.translation.translator import Translator
from tests.conftest import DATA, copy_head, write_tiny_config
from tests.tiny_checkpoint import train_tiny_tokenizers

pytestmark = pytest.mark.slow

TRAINING = {"max_tokens": 600, "valid_bleu_sentences": 5, "valid_every": 30, "log_every": 10}


@pytest.fixture(scope="module")
def parent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run trained for 30 steps on 200 pairs (best.pt and last.pt at step 30)."""
    root = tmp_path_factory.mktemp("parent")
    data = root / "data"
    data.mkdir()
    for lang in ("en", "de"):
        copy_head(DATA / f"train.{lang}", data / f"train.{lang}", 200)
        copy_head(DATA / f"valid.{lang}", data / f"valid.{lang}", 20)
    config = write_tiny_config(
        root, data, data={"test": None}, training={**TRAINING, "max_steps": 30}
    )
    return train(load_config(config))


def child_config(
    root: Path, parent: Path, training: dict[str, Any], **sections: dict[str, Any]
) -> Path:
    """A child YAML over the parent's data that leaves every model key out (unless given)."""
    parent_cfg = yaml.safe_load((parent / "config.yaml").read_text())
    raw: dict[str, Any] = {
        "name": "child",
        "run_dir": str(root / "child"),
        "data": {**parent_cfg["data"], "prepared_dir": str(root / "prepared")},
        "training": {**parent_cfg["training"], **TRAINING, "init_from": str(parent), **training},
        **sections,
    }
    path = root / "child.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def first_loss(run: Path) -> float:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return float(next(r["loss"] for r in rows if r["kind"] == "train" and r["step"] == 1))


def loss_of(checkpoint: Path, prepared: Path, smoothing: float) -> float:
    """The label-smoothed loss per target token of a checkpoint on a whole training split."""
    model = Translator.load(checkpoint, device="cpu").model
    rows = load_prepared(prepared)["train"][:]
    batch = collate_columns(rows["src_ids"], rows["tgt_ids"], PAD_ID)
    with torch.no_grad():
        logits = model(batch.src, batch.src_mask, batch.tgt_in)  # (batch, tgt_len, vocab)
        loss, _ = label_smoothed_cross_entropy(logits, batch.tgt_out, smoothing, PAD_ID)
    return float(loss) / batch.n_tgt_tokens


def test_fine_tuned_run_keeps_the_parents_tokenizer_and_weights(
    parent: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # one batch holds the whole split, so the first update's loss is the loss on all of it
    one_batch = {"max_steps": 1, "max_tokens": 100_000, "log_every": 1, "valid_every": 1}
    config = child_config(tmp_path, parent, one_batch, model={"dropout": 0.0})
    cfg = load_train_config(config, [])
    assert cfg.model.d_model == 32 and cfg.model.d_ff == 64  # taken from the parent
    with caplog.at_level(logging.INFO):
        child = train(cfg)
    assert f"initialised from {parent / 'best.pt'} (step 30" in caplog.text
    parent_cfg = load_config(parent / "config.yaml")
    spm = (parent / "spm.model").read_bytes()  # the tokenizer, byte for byte
    assert (child / "spm.model").read_bytes() == (tmp_path / "prepared" / "spm.model").read_bytes()
    assert (child / "spm.model").read_bytes() == spm
    mine, theirs = (
        load_prepared(tmp_path / "prepared"),
        load_prepared(Path(parent_cfg.data.prepared_dir)),
    )
    assert mine["train"]["src_ids"] == theirs["train"]["src_ids"]
    assert mine["train"]["tgt_ids"] == theirs["train"]["tgt_ids"]

    smoothing = cfg.training.label_smoothing
    expected = loss_of(parent / "best.pt", tmp_path / "prepared", smoothing)
    assert first_loss(child) == pytest.approx(expected, rel=1e-4)
    scratch = [
        f"run_dir={tmp_path / 'fresh'}",
        *(f"training.{k}={v}" for k, v in one_batch.items()),
    ]
    fresh = train(load_config(parent / "config.yaml", scratch))
    assert first_loss(fresh) > expected + 0.5  # a fresh model is much worse

    record = load_checkpoint(child / "last.pt")["parent"]
    sha = hashlib.sha256((parent / "best.pt").read_bytes()).hexdigest()
    assert record == {
        "path": str(parent), "checkpoint": str((parent / "best.pt").resolve()), "sha256": sha,
        "step": 30,
    }  # fmt: skip
    assert json.loads((child / "parent.json").read_text()) == record
    assert yaml.safe_load((child / "config.yaml").read_text())["training"]["init_from"] == str(
        parent
    )


def test_keep_optimizer_and_schedule_then_resume(parent: Path, tmp_path: Path) -> None:
    keep = {"init_keep_optimizer": True, "init_keep_schedule": True, "max_steps": 32}
    config = child_config(tmp_path, parent, keep)
    child = train(load_train_config(config, []))
    state = load_checkpoint(child / "last.pt")
    assert state["train_state"]["step"] == 32  # the parent's 30 + 2
    assert int(state["optimizer"]["state"][0]["step"]) == 32  # Adam moments carried on
    (tmp_path / "reset").mkdir()
    reset_config = child_config(tmp_path / "reset", parent, {"max_steps": 2})
    reset = load_checkpoint(train(load_train_config(reset_config, [])) / "last.pt")
    assert reset["train_state"]["step"] == 2 and int(reset["optimizer"]["state"][0]["step"]) == 2

    # a child resumes like any run; its tokenizer stays the parent's
    resumed = train(load_train_config(config, ["training.max_steps=34"], resume=True), resume=True)
    assert load_checkpoint(resumed / "last.pt")["train_state"]["step"] == 34
    assert (resumed / "spm.model").read_bytes() == (parent / "spm.model").read_bytes()
    assert load_checkpoint(resumed / "last.pt")["parent"]["step"] == 30


def test_resume_with_other_data_is_refused_and_the_run_untouched(
    parent: Path, tmp_path: Path
) -> None:
    """The trap of issue 18: a copied run pointed at other data and resumed."""
    copy = tmp_path / "copy"
    shutil.copytree(parent, copy)
    other = tmp_path / "other"
    other.mkdir()
    for lang in ("en", "de"):
        copy_head(DATA / f"train.{lang}", other / f"train.{lang}", 200, skip=500)
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config["data"]["train"] = str(other / "train")
    config["data"]["prepared_dir"] = str(tmp_path / "prepared")
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    before = {p.name: p.read_bytes() for p in copy.iterdir() if p.suffix in (".model", ".pt")}
    result = CliRunner().invoke(
        app, ["train", str(copy), "--resume", "--set", "training.max_steps=40"]
    )
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert "\n" not in line and "data.train" in line and "--init-from" in line
    assert {p.name: p.read_bytes() for p in copy.iterdir() if p.suffix in (".model", ".pt")} == (
        before
    )


def test_resume_after_the_data_changed_in_place_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for lang in ("en", "de"):
        copy_head(DATA / f"train.{lang}", data / f"train.{lang}", 120)
        copy_head(DATA / f"valid.{lang}", data / f"valid.{lang}", 10)
    config = write_tiny_config(
        tmp_path, data, data={"test": None},
        training={**TRAINING, "max_steps": 2, "valid_every": 2},
    )  # fmt: skip
    run = train(load_config(config))
    spm = (run / "spm.model").read_bytes()
    for lang in ("en", "de"):  # same path and keys, other sentences
        copy_head(DATA / f"train.{lang}", data / f"train.{lang}", 120, skip=3000)
    with pytest.raises(Exception, match="training data changed") as err:
        train(load_config(config, ["training.max_steps=4"]), resume=True)
    assert "--init-from" in str(err.value)
    assert (run / "spm.model").read_bytes() == spm
    assert load_checkpoint(run / "last.pt")["train_state"]["step"] == 2


def test_unchanged_resume_still_works_after_prepared_data_is_rebuilt(
    parent: Path, tmp_path: Path
) -> None:
    """sentencepiece training is deterministic, so a rebuilt prepared dir passes the guard."""
    copy = tmp_path / "copy"
    shutil.copytree(parent, copy)
    overrides = [f"run_dir={copy}", f"data.prepared_dir={tmp_path / 'p'}", "training.max_steps=31"]
    resumed = train(load_config(copy / "config.yaml", overrides), resume=True)
    assert load_checkpoint(resumed / "last.pt")["train_state"]["step"] == 31
    # the prepared dir was rebuilt from scratch, with the same tokenizer
    assert (tmp_path / "p" / "spm.model").read_bytes() == (parent / "spm.model").read_bytes()


def test_a_run_with_a_reused_tokenizer_resumes_after_the_original_is_gone(
    parent: Path, tmp_path: Path
) -> None:
    spm = tmp_path / "spm.model"
    spm.write_bytes((parent / "spm.model").read_bytes())
    config = load_config(
        parent / "config.yaml",
        [f"run_dir={tmp_path / 'run'}", f"data.prepared_dir={tmp_path / 'p'}",
         f"tokenizer.model={spm}", "training.max_steps=2", "training.valid_every=2"],
    )  # fmt: skip
    run = train(config)
    spm.unlink()  # moved away: the run keeps its own copy
    resumed = train(replace(config, training=replace(config.training, max_steps=3)), resume=True)
    assert load_checkpoint(resumed / "last.pt")["train_state"]["step"] == 3
    assert (run / "spm.model").read_bytes() == (parent / "spm.model").read_bytes()
    other = train_tiny_tokenizers(tmp_path / "other")  # another tokenizer named: refused
    moved = replace(config.tokenizer, model=str(tmp_path / "other" / "spm.model"))
    with pytest.raises(ConfigError, match="is not its tokenizer"):
        train(replace(config, tokenizer=moved), resume=True)
    assert other.src.vocab_size == 60
