"""Issue 18's bad input through the CLI: one `error:` line and a non-zero exit (2 for usage)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner, Result

from mtkit.checkpoint import load_checkpoint, save_checkpoint
from mtkit.cli.main import app
from tests.tiny_checkpoint import train_tiny_tokenizers, write_tiny_run


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def one_error(result: Result, code: int, *needles: str) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def parent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run dir with best.pt (random weights; d_model 16, vocab 60, no optimizer state)."""
    return write_tiny_run(tmp_path_factory.mktemp("parent"))


def child_yaml(tmp_path: Path, **sections: Any) -> Path:
    path = tmp_path / "child.yaml"
    raw = {"run_dir": str(tmp_path / "child"), "data": {"train": "data/train", "max_len": 30},
           **sections}  # fmt: skip
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def test_missing_parent_and_parent_without_checkpoints(tmp_path: Path) -> None:
    config = child_yaml(tmp_path)
    missing = invoke("train", str(config), "--init-from", str(tmp_path / "nowhere"))
    one_error(missing, 2, "training.init_from:", "no such run directory or checkpoint file")
    (tmp_path / "empty").mkdir()
    empty = invoke("train", str(config), "--init-from", str(tmp_path / "empty"))
    one_error(empty, 2, "holds no checkpoint (no best.pt or last.pt)")
    assert not (tmp_path / "child").exists()  # refused before anything was written


def test_conflicting_key_names_both_values_and_the_parent(parent: Path, tmp_path: Path) -> None:
    config = child_yaml(tmp_path, model={"d_model": 64, "n_heads": 2})
    result = invoke("train", str(config), "--init-from", str(parent))
    one_error(result, 2, "model.d_model: 64 in this config but 16 in the parent", str(parent))


def test_keep_optimizer_needs_init_from_and_optimizer_state(parent: Path, tmp_path: Path) -> None:
    config = child_yaml(tmp_path)
    one_error(invoke("train", str(config), "--keep-optimizer"), 2, "needs training.init_from")
    result = invoke("train", str(config), "--init-from", str(parent), "--keep-optimizer")
    one_error(result, 2, "holds no optimizer state")


def mismatched(parent: Path, tmp_path: Path) -> Path:
    """A checkpoint whose weights are for 60 pieces but whose tokenizer has 80."""
    state = load_checkpoint(parent / "best.pt")
    state["tokenizer"] = train_tiny_tokenizers(tmp_path / "spm80", vocab_size=80).model_files()
    state["vocab"] = {"src": 80, "tgt": 80}
    save_checkpoint(tmp_path / "mixed.pt", state)
    return tmp_path / "mixed.pt"


def test_vocabulary_mismatch_is_refused_by_translate_evaluate_export(
    parent: Path, tmp_path: Path
) -> None:
    ckpt = mismatched(parent, tmp_path)
    (tmp_path / "src.en").write_text("the cat\n")
    (tmp_path / "ref.de").write_text("die Katze\n")
    needles = ("mixed.pt", "do not fit its tokenizer", "60/60", "80/80")
    one_error(CliRunner().invoke(app, ["translate", str(ckpt)], input="the cat\n"), 1, *needles)
    evaluate = invoke(
        "evaluate", str(ckpt), "--src", str(tmp_path / "src.en"), "--ref", str(tmp_path / "ref.de")
    )
    one_error(evaluate, 1, *needles)
    export = invoke("export", str(ckpt), "-o", str(tmp_path / "out"))
    one_error(export, 1, *needles)
    assert not (tmp_path / "out").exists()


def test_average_refuses_checkpoints_of_different_tokenizers(parent: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    state = load_checkpoint(parent / "best.pt")
    save_checkpoint(run / "step_000001.pt", state)
    other = train_tiny_tokenizers(tmp_path / "spm", vocab_size=61).model_files()
    save_checkpoint(run / "step_000002.pt", {**state, "tokenizer": other})
    one_error(invoke("average", str(run), "--last", "2"), 1, "different tokenizers")
