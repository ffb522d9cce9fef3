"""data.train corpora with a source tag and a sampling weight (tagged back-translation)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import datasets
import pytest

from mtkit.config.schema import ConfigError
from mtkit.data.prepare import build_tokenizers, load_stats, prepare
from mtkit.data.tokenizer import TokenizerPair
from tests.tiny_corpus import SRC, TGT, make_cfg, write_pair


def corpora(tmp_path: Path, **bt: Any) -> list[Any]:
    """Real pairs (100) plain, synthetic 'back-translated' pairs (60) as a mapping."""
    write_pair(tmp_path / "real", SRC[:100], TGT[:100])
    write_pair(tmp_path / "bt", SRC[100:160], TGT[100:160])
    return [str(tmp_path / "real"), {"path": str(tmp_path / "bt"), **bt}]


def train_text(prepared: Path) -> list[str]:
    return list(datasets.load_from_disk(str(prepared / "text"))["train"]["src"])


def test_a_tag_is_prepended_and_is_one_piece(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, train=corpora(tmp_path, tag="<BT>"), valid_size=10)
    out = prepare(cfg)
    src = train_text(out)
    tagged = [s for s in src if s.startswith("<BT> ")]
    assert len(tagged) == 60 - sum(s in SRC[100:160] for s in load_valid(out))
    assert {s[len("<BT> ") :] for s in tagged} <= set(SRC[100:160])
    assert not any(s.startswith("<BT>") for s in load_valid(out))  # carved pairs: no tag
    tok = TokenizerPair.load(out)
    assert "<BT>" in tok.src.encode_pieces(["<BT> the cat"])[0]
    ids = datasets.load_from_disk(str(out / "encoded"))["train"]["src_ids"]
    row = src.index(tagged[0])
    assert tok.src.decode([ids[row]]) == [tagged[0]]


def load_valid(out: Path) -> list[str]:
    return list(datasets.load_from_disk(str(out / "text"))["valid"]["src"])


@pytest.mark.parametrize(("weight", "expected"), [(2.0, 120), (0.5, 30), (1.5, 90)])
def test_weights_up_and_down_sample(tmp_path: Path, weight: float, expected: int) -> None:
    valid = write_pair(tmp_path / "valid", SRC[180:], TGT[180:])
    cfg = make_cfg(tmp_path, train=corpora(tmp_path, weight=weight), valid=str(valid))
    out = prepare(cfg)
    src = train_text(out)
    assert sum(s in SRC[100:160] for s in src) == expected
    assert sum(s in SRC[:100] for s in src) == 100
    assert len(set(src) & set(SRC[100:160])) == min(60, expected)  # a half: 30 distinct pairs
    corpus = load_stats(out)["splits"]["train"]["corpora"][1]
    assert (corpus["weight"], corpus["pairs"], corpus["sampled"]) == (weight, 60, expected)
    again = prepare(cfg, force=True)  # seeded: the same sample
    assert train_text(again) == src


def test_the_tokenizer_command_learns_the_tag_too(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, train=corpora(tmp_path, tag="<BT>"))
    pair = build_tokenizers(cfg, tmp_path / "spm")
    assert "<BT>" in pair.src.encode_pieces(["<BT> a dog"])[0]


def test_a_reused_tokenizer_without_the_tag_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_pair(tmp_path / "train", SRC, TGT)
    plain = prepare(make_cfg(tmp_path, prepared_dir=str(tmp_path / "plain")))
    cfg = make_cfg(tmp_path, train=corpora(tmp_path, tag="<BT>"), tokenizer={"model": str(plain)})
    with caplog.at_level(logging.WARNING):
        prepare(cfg)
    assert "tag <BT> is not one piece of the given tokenizer" in caplog.text


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"path": "x", "weight": 0}, "data.train[1].weight: expected a positive number, got 0"),
        ({"path": "x", "tag": "<B T>"}, "data.train[1].tag: expected null or a word"),
        ({"tag": "<BT>"}, "data.train[1].path: expected a path"),
        ({"path": "x", "tags": "<BT>"}, "unknown key 'data.train[1].tags'"),
    ],
)
def test_bad_corpus_entries_are_config_errors(
    tmp_path: Path, entry: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        make_cfg(tmp_path, train=["a", entry])
