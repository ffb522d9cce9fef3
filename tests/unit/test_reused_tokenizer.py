"""`tokenizer.model`: prepare copies a given tokenizer byte for byte instead of training one."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
from typer.testing import CliRunner

from mtkit.cli.main import app
from mtkit.config.schema import ConfigError
from mtkit.data.prepare import is_prepared, prepare
from mtkit.data.tokenizer import TokenizerPair
from tests.tiny_corpus import SRC, TGT, make_cfg, write_pair


@pytest.fixture
def parent(tmp_path: Path) -> Path:
    """A prepared dir whose joint tokenizer (vocab 80) the tests reuse."""
    write_pair(tmp_path / "train", SRC, TGT)
    return prepare(make_cfg(tmp_path, prepared_dir=str(tmp_path / "parent")))


def test_a_model_file_is_copied_byte_for_byte_and_used(tmp_path: Path, parent: Path) -> None:
    write_pair(tmp_path / "other", SRC[:120], TGT[:120])
    cfg = make_cfg(
        tmp_path, train=str(tmp_path / "other"), prepared_dir=str(tmp_path / "child"),
        tokenizer={"model": str(parent / "spm.model"), "vocab_size": 50},  # vocab_size unused
    )  # fmt: skip
    out = prepare(cfg)
    assert (out / "spm.model").read_bytes() == (parent / "spm.model").read_bytes()
    tok = TokenizerPair.load(parent)
    encoded = datasets.load_from_disk(str(out / "encoded"))["train"]
    text = datasets.load_from_disk(str(out / "text"))["train"]
    assert encoded[0]["src_ids"][:-1] == tok.src.encode([text[0]["src"]])[0]
    fingerprint = json.loads((out / "fingerprint.json").read_text())
    assert set(fingerprint["tokenizer"]) == {"files"}  # its hash, not the unused keys
    assert is_prepared(cfg)


def test_folders_are_accepted_and_the_hash_is_in_the_fingerprint(
    tmp_path: Path, parent: Path
) -> None:
    run_dir = tmp_path / "run"  # a run dir holds spm.model next to its checkpoints
    run_dir.mkdir()
    (run_dir / "spm.model").write_bytes((parent / "spm.model").read_bytes())
    cfg = make_cfg(tmp_path, prepared_dir=str(tmp_path / "c"), tokenizer={"model": str(run_dir)})
    out = prepare(cfg)
    assert (out / "spm.model").read_bytes() == (parent / "spm.model").read_bytes()
    other = tmp_path / "other_tok"  # a different tokenizer: the prepared data is stale
    prepare(make_cfg(tmp_path, prepared_dir=str(other), tokenizer={"vocab_size": 60}))
    moved = make_cfg(tmp_path, prepared_dir=str(tmp_path / "c"), tokenizer={"model": str(other)})
    assert not is_prepared(moved)


def test_tokenizer_train_output_folder_is_accepted(tmp_path: Path, parent: Path) -> None:
    folder = tmp_path / "spm" / "tokenizer"  # `mtkit tokenizer train`'s default layout
    folder.mkdir(parents=True)
    (folder / "spm.model").write_bytes((parent / "spm.model").read_bytes())
    cfg = make_cfg(
        tmp_path, prepared_dir=str(tmp_path / "c"), tokenizer={"model": str(folder.parent)}
    )
    assert (prepare(cfg) / "spm.model").read_bytes() == (parent / "spm.model").read_bytes()


@pytest.mark.parametrize(
    ("make_path", "joint", "message"),
    [
        (lambda t: t / "missing.model", True, "no such sentencepiece model file or folder"),
        (lambda t: t / "train.en", True, "not a valid sentencepiece model"),
        (lambda t: t, True, "holds no sentencepiece model"),
        (lambda t: t / "parent", False, "set tokenizer.joint: true"),
    ],
)
def test_bad_tokenizer_model_is_one_config_error(
    tmp_path: Path, parent: Path, make_path: object, joint: bool, message: str
) -> None:
    path = make_path(tmp_path)  # type: ignore[operator]
    share = {"model": {"share_embeddings": joint}}
    cfg = make_cfg(
        tmp_path, prepared_dir=str(tmp_path / "c"),
        tokenizer={"model": str(path), "joint": joint}, **share,
    )  # fmt: skip
    with pytest.raises(ConfigError, match=message) as err:
        prepare(cfg)
    assert str(err.value).startswith("tokenizer.model: ") and "\n" not in str(err.value)
    assert not (tmp_path / "c").exists()


def test_cli_prepare_with_a_bad_tokenizer_model_exits_2(tmp_path: Path) -> None:
    write_pair(tmp_path / "train", SRC, TGT)
    (tmp_path / "not.model").write_text("hello\n")
    config = tmp_path / "c.yaml"
    config.write_text(
        f"data: {{train: {tmp_path / 'train'}, valid: null, valid_size: 20, test: null}}\n"
        f"tokenizer: {{model: {tmp_path / 'not.model'}}}\n"
    )
    result = CliRunner().invoke(app, ["prepare", str(config)])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "not a valid sentencepiece model" in result.output
