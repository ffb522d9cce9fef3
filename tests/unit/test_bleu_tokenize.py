"""`evaluation.tokenize`: the run's BLEU tokenizer is `mtkit evaluate`'s default; a flag wins."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mtkit.cli.main import app
from mtkit.config.load import config_from_dict
from mtkit.config.schema import ConfigError
from mtkit.training.loop import train
from tests.tiny_translator import DATA, head, make_translator, save


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A random-weight checkpoint whose config says evaluation.tokenize: none."""
    translator = make_translator(tmp_path_factory.mktemp("tok"))
    translator.config.evaluation.tokenize = "none"
    yield save(translator)


def files(tmp_path: Path) -> tuple[Path, Path]:
    src, ref = tmp_path / "src.en", tmp_path / "ref.de"
    src.write_text("".join(s + "\n" for s in head(DATA / "test.en", 4)), encoding="utf-8")
    ref.write_text("".join(s + "\n" for s in head(DATA / "test.de", 4)), encoding="utf-8")
    return src, ref


def signature(*args: str) -> str:
    result = CliRunner().invoke(app, ["evaluate", *args, "--metrics", "bleu", "--json"])
    assert result.exit_code == 0, result.output
    return str(json.loads(result.stdout)["scores"][0]["signature"])


def test_evaluate_uses_the_runs_tokenizer(checkpoint: Path, tmp_path: Path) -> None:
    src, ref = files(tmp_path)
    out = str(tmp_path / "hyp.de")
    assert "tok:none" in signature(str(checkpoint), "--src", str(src), "--ref", str(ref), "-o", out)
    flag = signature(str(checkpoint), "--src", str(src), "--ref", str(ref), "-o", out,
                     "--tokenize", "13a", "--overwrite")  # fmt: skip
    assert "tok:13a" in flag


def test_scoring_files_still_defaults_to_13a(tmp_path: Path) -> None:
    _, ref = files(tmp_path)
    assert "tok:13a" in signature("--hyp", str(ref), "--ref", str(ref))
    assert "tok:none" in signature("--hyp", str(ref), "--ref", str(ref), "--tokenize", "none")


def test_config_default_is_13a() -> None:
    assert config_from_dict({}).evaluation.tokenize == "13a"
    assert config_from_dict({"evaluation": {"tokenize": "none"}}).evaluation.tokenize == "none"


def test_training_refuses_an_unknown_tokenizer_before_it_starts(tmp_path: Path) -> None:
    cfg = config_from_dict({"run_dir": str(tmp_path / "run"), "evaluation": {"tokenize": "13b"}})
    with pytest.raises(ConfigError, match="evaluation.tokenize: unknown sacreBLEU tokenizer '13b'"):
        train(cfg)
    assert not (tmp_path / "run").exists()
