"""`mtkit tokenizer train/encode/decode` through the CLI."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from typer.testing import CliRunner

from mtkit.cli.main import app


def test_train_encode_decode_round_trip(
    tmp_path: Path, tiny_corpus: Path, make_config: Callable[..., Path]
) -> None:
    runner = CliRunner()
    out = tmp_path / "spm"
    result = runner.invoke(
        app, ["tokenizer", "train", str(make_config()), "--set", "tokenizer.type=unigram",
              "-o", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    model = out / "spm.model"
    assert model.is_file()
    assert not (tmp_path / "prepared" / "encoded").exists()  # only the tokenizer was built

    pieces = tmp_path / "test.pieces"
    result = runner.invoke(
        app, ["tokenizer", "encode", str(model), "-i", str(tiny_corpus / "test.en"),
              "-o", str(pieces)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = pieces.read_text(encoding="utf-8").splitlines()
    original = (tiny_corpus / "test.en").read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(original)
    assert "▁" in lines[0]

    back = tmp_path / "test.txt"
    result = runner.invoke(app, ["tokenizer", "decode", str(model), "-i", str(pieces),
                                 "-o", str(back)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert back.read_text(encoding="utf-8").splitlines() == original


def test_separate_vocabularies(tmp_path: Path, make_config: Callable[..., Path]) -> None:
    config = make_config(tokenizer={"joint": False, "vocab_size": 150},
                         model={"share_embeddings": False})  # fmt: skip
    result = CliRunner().invoke(app, ["tokenizer", "train", str(config), "-o", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s" / "spm.src.model").is_file()
    assert (tmp_path / "s" / "spm.tgt.model").is_file()


def test_missing_model_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["tokenizer", "encode", str(tmp_path / "none.model"), "-i", "x", "-o", "y"]
    )
    assert result.exit_code == 1
    assert result.output.startswith("error:")
