"""Progress through the CLI (issue #22 item 1): on stderr with --progress even when stderr is not
a terminal (CliRunner's is not), never on stdout, and absent without the flag."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mtkit.cli.main import app
from tests.e2e.cli import run
from tests.tiny_translator import DATA, head

SOURCES = head(DATA / "test.en", 12)


def source_file(tmp_path: Path) -> Path:
    path = tmp_path / "src.en"
    path.write_text("".join(line + "\n" for line in SOURCES), encoding="utf-8")
    return path


def test_translate_progress_on_stderr_only_when_asked(ckpt: Path, tmp_path: Path) -> None:
    src = source_file(tmp_path)
    code, out, err = run("translate", ckpt, "-i", src, "--progress")
    assert code == 0, err
    assert len(out.splitlines()) == len(SOURCES)  # the translations, nothing else
    assert "translating" not in out
    assert f"translating: {len(SOURCES)} lines in " in err and "lines/s" in err
    for flags in ([], ["--no-progress"]):
        code, quiet_out, err = run("translate", ckpt, "-i", src, *flags)
        assert code == 0 and quiet_out == out
        assert "translating" not in err


def test_translate_progress_from_stdin_counts_without_a_total(ckpt: Path) -> None:
    result = CliRunner().invoke(
        app, ["translate", str(ckpt), "--progress"], input="".join(s + "\n" for s in SOURCES)
    )
    assert result.exit_code == 0, result.stderr
    assert f"translating: {len(SOURCES)} lines in " in result.stderr
    assert len(result.stdout.splitlines()) == len(SOURCES)


def test_evaluate_progress(ckpt: Path, tmp_path: Path) -> None:
    src = source_file(tmp_path)
    args: list[str | Path] = ["evaluate", ckpt, "--src", src, "--ref", src, "-o", tmp_path / "hyp"]
    code, out, err = run(*args, "--progress")
    assert code == 0, err
    assert f"translating: {len(SOURCES)} lines in " in err
    assert "translating" not in out and out.startswith("BLEU")
    code, _, err = run(*args, "--overwrite")  # the same -o again: replacing it is asked for
    assert code == 0 and "translating" not in err


def test_prepare_progress_names_each_stage(make_config: Callable[..., Path]) -> None:
    config = make_config()
    code, out, err = run("prepare", config, "--progress")
    assert code == 0, err
    stages = ["reading ", "cleaning train: 300 pairs", "training the bpe tokenizer",
              "encoding train: ", "encoding test: 30 pairs", "saving the prepared"]  # fmt: skip
    for stage in stages:
        assert stage in err, stage
    assert "pairs/s" in err and "done in " in err
    assert out.strip().startswith("prepared data in")
    code, _, err = run("prepare", config, "--force")
    assert code == 0 and "pairs/s" not in err and "%|" not in err  # no datasets (tqdm) bars


def test_average_progress(ckpt: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "steps"
    run_dir.mkdir()
    for step in (10, 20):
        shutil.copy(ckpt, run_dir / f"step_{step:06d}.pt")
    code, out, err = run("average", run_dir, "--last", "2", "--progress")
    assert code == 0, err
    assert "reading 2 checkpoints: 2 checkpoints in " in err
    assert out.strip() == f"wrote {run_dir / 'average_last2.pt'}"


def test_export_progress(ckpt: Path, tmp_path: Path) -> None:
    pytest.importorskip("ctranslate2")
    code, out, err = run("export", ckpt, "-o", tmp_path / "ct2", "--progress")
    assert code == 0, err
    assert "exporting to CTranslate2: 4 steps in " in err
    assert "exporting" not in out
