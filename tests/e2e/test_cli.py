"""The whole user journey through the CLI on tiny data: prepare → train → translate → evaluate."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mtkit.cli.main import app

pytestmark = pytest.mark.slow


def invoke(*args: str, input: str | None = None) -> object:
    result = CliRunner().invoke(app, list(args), input=input)
    return result


def test_prepare_train_translate_evaluate(
    tmp_path: Path, tiny_corpus: Path, make_config: Callable[..., Path]
) -> None:
    config = make_config()
    runner = CliRunner()

    result = runner.invoke(app, ["prepare", str(config)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "prepared" / "encoded").is_dir()

    result = runner.invoke(app, ["train", str(config), "--set", "training.max_steps=12"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    for name in ("best.pt", "last.pt", "config.yaml", "metrics.jsonl", "train.log"):
        assert (run / name).is_file(), name
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any(r["kind"] == "train" for r in records)
    assert all(r["grad_norm"] > 0 for r in records if r["kind"] == "train")  # before clipping
    log = (run / "train.log").read_text(encoding="utf-8")
    assert "| gnorm " in log
    if importlib.util.find_spec("tensorboard") is None:  # one hint, then metrics.jsonl only
        assert log.count("pip install 'mtkit[tensorboard]'") == 1
    assert any(r["kind"] == "valid" and "bleu" in r for r in records)
    assert "max_steps: 12" in (run / "config.yaml").read_text()

    # Training again into the same run directory is refused unless resuming/overwriting.
    result = runner.invoke(app, ["train", str(config)])
    assert result.exit_code != 0
    assert "--resume" in result.output

    src = tiny_corpus / "test.en"
    hyp = tmp_path / "hyp.de"
    result = runner.invoke(app, ["translate", str(run), "-i", str(src), "-o", str(hyp)])
    assert result.exit_code == 0, result.output
    n_src = len(src.read_text(encoding="utf-8").splitlines())
    assert len(hyp.read_text(encoding="utf-8").splitlines()) == n_src

    # stdin → stdout, greedy; an empty line gives an empty line.
    result = runner.invoke(app, ["translate", str(run / "best.pt"), "--greedy"],
                           input="A dog runs.\n\nI like tea.\n")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(result.stdout.split("\n")) - 1 == 3
    assert result.stdout.split("\n")[1] == ""

    result = runner.invoke(app, ["evaluate", str(run), "--split", "test", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    names = [s["name"] for s in report["scores"]]
    assert names == ["bleu", "chrf"]
    assert isinstance(report["scores"][0]["score"], float)
    assert "nrefs:1" in report["scores"][0]["signature"]
    assert report["n_sentences"] == n_src

    ref = str(tiny_corpus / "test.de")
    result = runner.invoke(app, ["evaluate", "--hyp", str(hyp), "--ref", ref])
    assert result.exit_code == 0, result.output
    assert "BLEU" in result.stdout and "signature" in result.stdout


def test_config_error_is_one_line_exit_2(make_config: Callable[..., Path]) -> None:
    config = make_config()
    result = CliRunner().invoke(app, ["train", str(config), "--set", "model.d_modl=3"])
    assert result.exit_code == 2
    assert result.output.strip().startswith("error:")
    assert "did you mean 'model.d_model'" in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_missing_checkpoint_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["translate", str(tmp_path / "nope")], input="hi\n")
    assert result.exit_code == 1
    assert "no such run directory" in result.output
    assert "Traceback" not in result.output


def test_help_shows_examples() -> None:
    for command in ("prepare", "train", "translate", "evaluate"):
        result = CliRunner().invoke(app, [command, "--help"])
        assert result.exit_code == 0
        assert "Example" in result.output, command
