"""prepare as a whole: the layout it writes, the stats table, reuse, its prepared_dir."""

from __future__ import annotations

import logging
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before datasets is imported: never wait on the hub

import datasets
import pytest

from mtkit.config.schema import ConfigError
from mtkit.data.prepare import is_prepared, load_stats, prepare
from mtkit.data.rows import DataError
from mtkit.data.tokenizer import BOS_ID, EOS_ID, TokenizerPair
from tests.tiny_corpus import SRC, TGT, make_cfg, run, write_pair

# --------------------------------------------------------------------------- layout


def test_layout_and_encoding(tmp_path: Path) -> None:
    write_pair(tmp_path / "valid", SRC[:10], TGT[:10])
    write_pair(tmp_path / "test", SRC[10:15], TGT[10:15])
    stats = run(
        tmp_path, SRC[15:], TGT[15:], valid=str(tmp_path / "valid"), test=str(tmp_path / "test")
    )
    out = tmp_path / "prepared"
    names = sorted(p.name for p in out.iterdir())
    assert names == ["encoded", "fingerprint.json", "spm.model", "stats.json", "text"]
    encoded = datasets.load_from_disk(str(out / "encoded"))
    text = datasets.load_from_disk(str(out / "text"))
    assert set(encoded) == set(text) == {"train", "valid", "test"}
    assert encoded["train"].column_names == ["src_ids", "tgt_ids"]
    assert text["train"].column_names == ["src", "tgt"]
    assert [len(encoded[s]) for s in ("train", "valid", "test")] == [185, 10, 5]
    tok = TokenizerPair.load(out)
    for split in ("train", "valid", "test"):  # text/ and encoded/ are row-aligned
        row, ids = text[split][3], encoded[split][3]
        assert ids["src_ids"][-1] == EOS_ID and EOS_ID not in ids["src_ids"][:-1]
        assert ids["tgt_ids"][0] == BOS_ID and ids["tgt_ids"][-1] == EOS_ID
        assert ids["src_ids"][:-1] == tok.src.encode([row["src"]])[0]
        assert tok.tgt.decode([ids["tgt_ids"]]) == [row["tgt"]]
    assert text["valid"]["src"] == SRC[:10]  # explicit eval splits keep their order
    assert stats["read"] == stats["kept"] == 185 and stats["dropped"] == {}
    assert stats["src"]["tokens"] == sum(len(x) - 1 for x in encoded["train"]["src_ids"])
    assert stats["tgt"]["max_len"] == max(len(x) - 2 for x in encoded["train"]["tgt_ids"])
    assert 0 < stats["src"]["mean_len"] <= stats["src"]["max_len"]
    assert stats["src"]["unk_share"] == 0.0


def test_separate_tokenizers(tmp_path: Path) -> None:
    write_pair(tmp_path / "train", SRC, TGT)
    cfg = make_cfg(
        tmp_path, tokenizer={"joint": False, "vocab_size": 50}, model={"share_embeddings": False}
    )
    out = prepare(cfg)
    assert (out / "spm.src.model").is_file() and (out / "spm.tgt.model").is_file()
    assert not (out / "spm.model").exists()
    assert load_stats(out)["vocab_size"] == {"src": 50, "tgt": 50}


def test_unk_share_is_reported(tmp_path: Path) -> None:
    write_pair(tmp_path / "valid", ["the cat ж"], ["die Katze ж"])
    run(tmp_path, valid=str(tmp_path / "valid"))
    valid = load_stats(tmp_path / "prepared")["splits"]["valid"]
    assert valid["src"]["unk_share"] > 0 and valid["tgt"]["unk_share"] > 0


def test_prepare_logs_a_table(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="mtkit.data.stats_table"):
        run(tmp_path)
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("split") and "unk%" in line for line in lines)
    assert any(line.startswith("train") and "180" in line for line in lines)


def test_vocab_too_large_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"tokenizer\.vocab_size: 5000 .* at most \d+"):
        run(tmp_path, tokenizer={"vocab_size": 5000})


# --------------------------------------------------------------------------- prepared_dir


def test_a_foreign_prepared_dir_is_never_replaced(tmp_path: Path) -> None:
    mine = tmp_path / "prepared"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    with pytest.raises(DataError, match=r"prepared_dir: .* already holds other files"):
        run(tmp_path)
    assert (mine / "thesis.tex").read_text() == "precious"


def test_errors_are_single_lines(tmp_path: Path) -> None:
    write_pair(tmp_path / "train", SRC, TGT[:-1])
    with pytest.raises(DataError) as err:
        prepare(make_cfg(tmp_path))
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- reuse


def test_unchanged_inputs_are_reused_and_changes_rebuild(tmp_path: Path) -> None:
    write_pair(tmp_path / "train", SRC, TGT)
    cfg = make_cfg(tmp_path)
    out = prepare(cfg)
    assert is_prepared(cfg)
    stamp = (out / "stats.json").stat().st_mtime_ns
    assert prepare(cfg) == out
    assert (out / "stats.json").stat().st_mtime_ns == stamp  # reused, not rebuilt
    changed = make_cfg(tmp_path, max_len=50)
    assert not is_prepared(changed)
    before = (out / "stats.json").stat().st_mtime_ns
    prepare(changed)
    assert (out / "stats.json").stat().st_mtime_ns != before and is_prepared(changed)
    assert not is_prepared(cfg)
    with open(tmp_path / "train.en", "a", encoding="utf-8") as f:  # an input file changes
        f.write("x\n")
    with open(tmp_path / "train.de", "a", encoding="utf-8") as f:
        f.write("y\n")
    assert not is_prepared(changed)


def test_force_rebuilds(tmp_path: Path) -> None:
    write_pair(tmp_path / "train", SRC, TGT)
    cfg = make_cfg(tmp_path)
    out = prepare(cfg)
    (out / "marker").write_text("old")
    prepare(cfg)
    assert (out / "marker").exists()
    prepare(cfg, force=True)
    assert not (out / "marker").exists()


def test_leftovers_of_a_killed_run_are_removed(tmp_path: Path) -> None:
    dead = tmp_path / ".prepared.tmp-999999999"  # no such process
    dead.mkdir()
    alive = tmp_path / f".prepared.tmp-{os.getppid()}"  # a running process: leave it alone
    alive.mkdir()
    run(tmp_path)
    assert not dead.exists() and alive.exists()


def test_incomplete_prepared_dir_is_not_reused(tmp_path: Path) -> None:
    write_pair(tmp_path / "train", SRC, TGT)
    cfg = make_cfg(tmp_path)
    out = prepare(cfg)
    (out / "stats.json").unlink()
    assert not is_prepared(cfg)
    prepare(cfg)
    assert is_prepared(cfg)


def test_num_proc_does_not_change_the_result(tmp_path: Path) -> None:
    write_pair(tmp_path / "train", SRC, TGT)
    a = prepare(make_cfg(tmp_path, prepared_dir=str(tmp_path / "a")))
    b = prepare(make_cfg(tmp_path, prepared_dir=str(tmp_path / "b"), num_proc=2))
    assert is_prepared(make_cfg(tmp_path, prepared_dir=str(tmp_path / "b")))  # not in the key
    ea = datasets.load_from_disk(str(a / "encoded"))["train"]
    eb = datasets.load_from_disk(str(b / "encoded"))["train"]
    assert ea["src_ids"] == eb["src_ids"]
