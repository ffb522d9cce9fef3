"""`mtkit tokenizer train/encode/decode` through the CLI."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from typer.testing import CliRunner

from mtkit.cli.main import app
from mtkit.data.tokenizer import train_tokenizers
from tests.tiny_translator import DATA, head, tiny_config


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


def test_encode_decode_pipe_stdin_to_stdout(tmp_path: Path) -> None:
    """Without -i/-o the tokenizer reads stdin and writes stdout, like `mtkit translate`."""
    lines = head(DATA / "test.en", 5)
    cfg = tiny_config().tokenizer
    train_tokenizers(head(DATA / "train.en", 300), head(DATA / "train.de", 300), tmp_path, cfg,
                     "en", "de", seed=1)  # fmt: skip
    model = str(tmp_path / "spm.model")
    runner = CliRunner()
    for ids in ([], ["--ids"]):
        enc = runner.invoke(
            app, ["tokenizer", "encode", model, *ids], input="\n".join(lines) + "\n"
        )
        assert enc.exit_code == 0, enc.output
        assert len(enc.stdout.splitlines()) == 5 and enc.stderr == ""
        dec = runner.invoke(app, ["tokenizer", "decode", model], input=enc.stdout)
        assert dec.exit_code == 0, dec.output
        assert dec.stdout.splitlines() == lines
    out = tmp_path / "pieces.txt"
    enc = runner.invoke(app, ["tokenizer", "encode", model, "-o", str(out)], input="Hi.\n")
    assert enc.exit_code == 0 and enc.stdout == "" and "encoded 1 line to" in enc.stderr
    bad = runner.invoke(app, ["tokenizer", "decode", model], input="3 99999\n")
    assert bad.exit_code == 1 and bad.stderr.startswith("error: stdin:1: id out of range")
