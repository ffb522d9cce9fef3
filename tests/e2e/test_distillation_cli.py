"""The sequence-level distillation recipe through the CLI (docs/training.md): an ensemble of
teacher runs translates the training sources, and a student trains on the real pairs plus the
teachers' translations, with the teachers' tokenizer."""

from __future__ import annotations

import shutil
from pathlib import Path

import datasets
import pytest

from mtkit.data.prepare import load_stats
from tests.conftest import write_tiny_config
from tests.e2e.cli import SHORT
from tests.e2e.cli import succeed as invoke

pytestmark = pytest.mark.slow


def spaced(lines: list[str]) -> set[str]:
    """Lines as prepare keeps them: whitespace runs (NBSP too) collapsed to one space."""
    return {" ".join(line.split()) for line in lines}


def train_teacher(root: Path, corpus: Path, seed: int, tokenizer: Path | None) -> Path:
    """Train a tiny en->de teacher under root/NAME; the second reuses the first's tokenizer."""
    root.mkdir()
    tok: dict[str, object] = {"model": str(tokenizer)} if tokenizer else {}
    config = write_tiny_config(root, corpus, training={**SHORT, "seed": seed}, tokenizer=tok)
    invoke("train", str(config))
    return root / "run"


def test_student_trains_on_real_and_distilled_pairs(tmp_path: Path, tiny_corpus: Path) -> None:
    # 1. two teachers (seeds) sharing one tokenizer, as an ensemble needs
    first = train_teacher(tmp_path / "t1", tiny_corpus, 1, None)
    second = train_teacher(tmp_path / "t2", tiny_corpus, 2, first / "spm.model")
    # 2. the ensemble translates the training sources: the distilled targets
    kd = tmp_path / "kd"
    kd.mkdir()
    shutil.copyfile(tiny_corpus / "train.en", kd / "train.en")
    invoke("translate", str(first), str(second), "-i", str(kd / "train.en"),
           "-o", str(kd / "train.de"), "--beam", "2")  # fmt: skip
    sources = (kd / "train.en").read_text(encoding="utf-8").splitlines()
    distilled = (kd / "train.de").read_text(encoding="utf-8").splitlines()
    assert len(distilled) == len(sources)
    # 3. the student: real pairs plus distilled ones, the teachers' tokenizer byte for byte
    (tmp_path / "student").mkdir()
    train = [str(tiny_corpus / "train"), str(kd / "train")]
    student = write_tiny_config(tmp_path / "student", tiny_corpus, data={"train": train},
                                tokenizer={"model": str(first / "spm.model")},
                                training=SHORT)  # fmt: skip
    invoke("train", str(student))
    run = tmp_path / "student" / "run"
    assert (run / "spm.model").read_bytes() == (first / "spm.model").read_bytes()
    prepared = tmp_path / "student" / "prepared"
    assert load_stats(prepared)["splits"]["train"]["read"] == 2 * len(sources)
    targets = set(datasets.load_from_disk(str(prepared / "text"))["train"]["tgt"])
    references = spaced((tiny_corpus / "train.de").read_text(encoding="utf-8").splitlines())
    assert targets - references  # teacher outputs the references lack reached the student
    assert targets - references <= spaced(distilled)
    result = invoke("evaluate", str(run), "--split", "test")
    assert "BLEU" in result.output
