"""Counts in user-facing messages agree with their number: "1 sentence", "2 sentences"
(issue 22, item 9), through the CLI on a tiny random-weight checkpoint."""

from __future__ import annotations

from pathlib import Path

from mtkit.errors import plural
from tests.e2e.cli import run


def test_plural() -> None:
    assert [plural(n, "line") for n in (0, 1, 2)] == ["0 lines", "1 line", "2 lines"]
    assert plural(1, "hypothesis", "hypotheses") == "1 hypothesis"
    assert plural(3, "hypothesis", "hypotheses") == "3 hypotheses"


def test_one_of_everything_is_singular(ckpt: Path, tmp_path: Path) -> None:
    src, ref = tmp_path / "one.en", tmp_path / "one.de"
    src.write_text("A dog runs.\n", encoding="utf-8")
    ref.write_text("Ein Hund läuft.\n", encoding="utf-8")
    hyp = tmp_path / "hyp.de"

    code, _, err = run("translate", ckpt, "-i", src, "-o", hyp, "--greedy")
    assert code == 0 and f"wrote 1 translation to {hyp}" in err
    code, out, _ = run("evaluate", ckpt, "--src", src, "--ref", ref, "-o", tmp_path / "e.de")
    assert code == 0 and "1 sentence in " in out
    code, out, _ = run("evaluate", "--hyp", hyp, "--hyp", hyp, "--ref", ref, "--paired-bs",
                       "--bs-samples", "1")  # fmt: skip
    assert code == 0 and "1 resample of 1 sentence," in out
    code, _, err = run("tokenizer", "encode", ckpt.parent / "spm.model", "-i", src,
                       "-o", tmp_path / "pieces")  # fmt: skip
    assert code == 0 and "encoded 1 line to" in err

    two = tmp_path / "two.de"
    two.write_text("a\nb\n", encoding="utf-8")
    code, _, err = run("evaluate", "--hyp", hyp, "--ref", two)
    assert code == 1 and "has 2 lines but" in err
    code, _, err = run("evaluate", "--hyp", two, "--ref", ref)
    assert code == 1 and "has 1 line but" in err
