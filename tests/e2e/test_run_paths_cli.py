"""A run's config holds absolute paths, so `mtkit evaluate RUN --split test` works from any folder;
errors about such paths say where they came from; older runs (relative paths) still work from the
folder they were trained in and say so elsewhere (issue 22, item 3)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from mtkit.cli.main import app
from mtkit.config.load import config_to_dict
from tests.conftest import DATA, copy_head
from tests.tiny_translator import make_translator, save


def invoke(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def write_data(folder: Path) -> None:
    folder.mkdir(parents=True)
    for lang in ("en", "de"):
        copy_head(DATA / f"train.{lang}", folder / f"train.{lang}", 200)
        copy_head(DATA / f"valid.{lang}", folder / f"valid.{lang}", 12)
        copy_head(DATA / f"test.{lang}", folder / f"test.{lang}", 8)


@pytest.mark.slow
def test_a_run_trained_with_relative_paths_evaluates_from_anywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    write_data(project / "data")
    elsewhere.mkdir()
    config = {
        "name": "rel",
        "data": {"train": "data/train", "valid": "data/valid", "test": "data/test",
                 "prepared_dir": "prepared/rel", "max_len": 60},
        "tokenizer": {"vocab_size": 120},
        "model": {"d_model": 16, "n_heads": 2, "encoder_layers": 1, "decoder_layers": 1,
                  "d_ff": 32, "dropout": 0.0},
        "training": {"max_steps": 2, "max_tokens": 512, "warmup_steps": 1, "log_every": 1,
                     "valid_every": 2, "valid_bleu_sentences": 2, "device": "cpu"},
        "decoding": {"beam_size": 1, "max_len_a": 0.0, "max_len_b": 3},
    }  # fmt: skip
    (project / "configs").mkdir()
    (project / "configs" / "rel.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    monkeypatch.chdir(project)
    assert invoke("prepare", "configs/rel.yaml")[0] == 0
    code, out = invoke("train", "configs/rel.yaml")
    assert code == 0, out
    assert "run directory: runs/rel" in out  # printed as given

    run = project / "runs" / "rel"
    saved = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    assert saved["run_dir"] == str(run)
    assert saved["data"]["train"] == str(project / "data" / "train")
    assert saved["data"]["test"] == str(project / "data" / "test")
    assert saved["data"]["prepared_dir"] == str(project / "prepared" / "rel")
    embedded = torch.load(run / "best.pt", map_location="cpu", weights_only=True)["config"]
    assert embedded["data"]["valid"] == str(project / "data" / "valid")

    monkeypatch.chdir(elsewhere)
    code, out = invoke("evaluate", run, "--split", "test", "--metrics", "chrf", "-o", "hyp.de")
    assert code == 0, out
    (project / "data" / "test.de").unlink()
    code, out = invoke("evaluate", run, "--split", "test", "--metrics", "chrf", "-o", "hyp.de")
    assert code == 1
    missing = project / "data" / "test.de"
    assert f"{missing}: file not found (from {run / 'best.pt'}: data.test)" in out
    copy_head(DATA / "test.de", project / "data" / "test.de", 8)
    # resuming from elsewhere through the run directory finds the same data and prepared dir
    code, out = invoke("train", run, "--resume", "--set", "training.max_steps=3")
    assert code == 0, out
    assert not (elsewhere / "runs").exists() and not (elsewhere / "prepared").exists()


def old_run(project: Path) -> Path:
    """A run as older versions saved it: relative data paths, run_dir unset (runs/tiny)."""
    write_data(project / "data")
    translator = make_translator(project / "runs" / "tiny")
    data = dataclasses.replace(
        translator.config.data, test="data/test", valid=None, prepared_dir="prep/x"
    )
    translator.config = dataclasses.replace(translator.config, data=data)
    save(translator)
    assert config_to_dict(translator.config)["run_dir"] is None
    return project / "runs" / "tiny"


def test_an_older_run_with_relative_paths_works_from_its_folder_and_says_so_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    run = old_run(project)
    elsewhere.mkdir()
    monkeypatch.chdir(project)
    code, out = invoke("evaluate", "runs/tiny", "--split", "test", "--metrics", "chrf")
    assert code == 0, out

    monkeypatch.chdir(elsewhere)
    code, out = invoke("evaluate", run, "--split", "test", "--metrics", "chrf")
    assert code == 1
    assert out.count("\n") == 1, out
    assert f"data/test.en: file not found (from {run / 'best.pt'}: data.test)" in out
    assert f"relative to the folder its training was started in ({project})" in out
    assert "--src and --ref" in out
    code, out = invoke("evaluate", run, "--split", "valid", "--metrics", "chrf")
    assert code == 1  # valid is null: the prepared data, which is not there either
    assert f"prep/x holds none (from {run / 'best.pt'}: data.prepared_dir)" in out


def test_the_prepared_data_is_reused_however_its_paths_are_spelled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """prepare with a relative config, then the same config with absolute paths (as a run's
    saved config.yaml holds them): the fingerprint is the same, nothing is rebuilt."""
    write_data(tmp_path / "data")
    data = {"train": "data/train", "valid": "data/valid", "test": None, "prepared_dir": "prep"}
    for name, folder in (("rel", Path()), ("abs", tmp_path)):
        spelled = {k: str(folder / v) if v else v for k, v in data.items()}
        config = {"data": spelled, "tokenizer": {"vocab_size": 100}}
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert invoke("prepare", "rel.yaml")[0] == 0
    stamp = (tmp_path / "prep" / "fingerprint.json").stat().st_mtime_ns
    code, out = invoke("prepare", "abs.yaml")
    assert code == 0, out
    assert (tmp_path / "prep" / "fingerprint.json").stat().st_mtime_ns == stamp
