"""Cleaning and carving: each rule and its count, length/ratio limits, valid/test from train."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before datasets is imported: never wait on the hub

import datasets
import pytest

from mtkit.data.prepare import load_stats
from mtkit.data.rows import DataError
from tests.tiny_corpus import SRC, TGT, run, text_split, write_pair

# --------------------------------------------------------------------------- cleaning


def test_empty_pairs_are_dropped_and_counted(tmp_path: Path) -> None:
    src, tgt = list(SRC), list(TGT)
    src[0], tgt[1], src[2], tgt[2] = "", "   ", "\t", ""
    stats = run(tmp_path, src, tgt)
    assert stats["dropped"] == {"empty": 3}
    assert stats["kept"] == 200 - 3 - 20


def test_duplicates_are_dropped_unless_disabled(tmp_path: Path) -> None:
    src, tgt = SRC + SRC[:7], TGT + TGT[:7]
    assert run(tmp_path, src, tgt)["dropped"] == {"duplicate": 7}
    assert run(tmp_path, src, tgt, dedup=False)["dropped"] == {}


def test_whitespace_variants_are_duplicates_after_normalisation(tmp_path: Path) -> None:
    src, tgt = [*SRC, "  " + SRC[0].replace(" ", " \t ")], [*TGT, TGT[0] + "\u00a0"]
    stats = run(tmp_path, src, tgt)
    assert stats["dropped"] == {"duplicate": 1}
    assert all("  " not in s and s == s.strip() for s in text_split(tmp_path)["src"])


def test_whitespace_normalisation_can_be_disabled(tmp_path: Path) -> None:
    src = [*SRC[:-1], "the  cat"]
    run(tmp_path, src, TGT, normalize_whitespace=False, valid_size=1)
    texts = set(text_split(tmp_path)["src"]) | set(text_split(tmp_path, "valid")["src"])
    assert "the  cat" in texts


def test_same_source_and_target_is_optional(tmp_path: Path) -> None:
    src, tgt = list(SRC), list(TGT)
    tgt[0], tgt[1] = src[0], src[1]
    assert run(tmp_path, src, tgt)["dropped"] == {}
    assert run(tmp_path, src, tgt, drop_same=True)["dropped"] == {"same": 2}


@pytest.mark.parametrize(
    ("form", "expected"), [("NFC", "caf\u00e9 \ufb01t"), ("NFKC", "caf\u00e9 fit")]
)
def test_unicode_normalisation(tmp_path: Path, form: str, expected: str) -> None:
    src = [*SRC[:-1], "cafe\u0301 \ufb01t"]  # combining accent; the "fi" ligature
    run(tmp_path, src, TGT, unicode_form=form, valid_size=1)
    texts = set(text_split(tmp_path)["src"]) | set(text_split(tmp_path, "valid")["src"])
    assert expected in texts


# --------------------------------------------------------------------------- lengths


def test_too_long_and_ratio_are_counted_in_tokens(tmp_path: Path) -> None:
    long = " ".join(["the big red house"] * 30)
    src = [*SRC, long, "the", "the cat"]
    tgt = [*TGT, " ".join(["das große rote Haus"] * 30), "der die Katze Hund sieht", "die Katze"]
    stats = run(tmp_path, src, tgt, max_len=40, max_ratio=4.0)
    assert stats["dropped"] == {"too_long": 1, "ratio": 1}
    assert "the" not in text_split(tmp_path)["src"]


def test_eval_splits_are_kept_whole_and_truncated(tmp_path: Path) -> None:
    long = " ".join(["the big red house"] * 30)
    write_pair(tmp_path / "valid", [long, SRC[0], SRC[0]], ["das Haus", TGT[0], TGT[0]])
    run(tmp_path, valid=str(tmp_path / "valid"), max_len=40)
    valid = load_stats(tmp_path / "prepared")["splits"]["valid"]
    assert valid["kept"] == 3 and valid["dropped"] == {} and valid["truncated"] == 1
    assert valid["src"]["max_len"] == 40
    assert text_split(tmp_path, "valid")["src"][0] == long  # BLEU still sees the full sentence
    run(tmp_path, valid=str(tmp_path / "valid"), max_len=40, clean_eval=True)
    valid = load_stats(tmp_path / "prepared")["splits"]["valid"]
    assert valid["kept"] == 1 and valid["dropped"] == {"duplicate": 1, "too_long": 1}


def test_empty_corpus_after_filtering_says_which_filter(tmp_path: Path) -> None:
    with pytest.raises(
        DataError, match=r"data\.train: no pairs left .*too_long \d+ \(data\.max_len=2\)"
    ):
        run(tmp_path, max_len=2, valid_size=1)
    with pytest.raises(DataError, match=r"data\.train: no pairs left .*read 3; dropped: empty 3"):
        run(tmp_path, ["", "", ""], ["a", "b", "c"])


# --------------------------------------------------------------------------- carving


def _sentences(ds: datasets.Dataset) -> set[str]:
    return set(ds["src"]) | set(ds["tgt"])


def test_carved_splits_are_disjoint_from_train_and_seeded(tmp_path: Path) -> None:
    src, tgt = list(SRC), list(TGT)
    src[100], tgt[101] = src[0], tgt[1]  # sentences shared between otherwise different pairs
    run(tmp_path, src, tgt, valid_size=30, test_size=15)
    text = datasets.load_from_disk(str(tmp_path / "prepared" / "text"))
    assert (len(text["valid"]), len(text["test"])) == (30, 15)
    train = _sentences(text["train"])
    assert not train & _sentences(text["valid"]) and not train & _sentences(text["test"])
    assert not _sentences(text["valid"]) & _sentences(text["test"])
    first = text["valid"]["src"]
    run(tmp_path, src, tgt, valid_size=30, test_size=15)
    assert datasets.load_from_disk(str(tmp_path / "prepared" / "text"))["valid"]["src"] == first
    run(tmp_path, src, tgt, valid_size=30, test_size=15, seed=99)
    assert datasets.load_from_disk(str(tmp_path / "prepared" / "text"))["valid"]["src"] != first


def test_carving_by_fraction_and_the_overlap_count(tmp_path: Path) -> None:
    src, tgt = [*SRC, SRC[0] + " old"], [*TGT, TGT[0]]  # shares its target with pair 0
    stats = run(tmp_path, src, tgt, valid_fraction=0.1, test_fraction=0.05)
    valid_test = stats["carved"]
    assert valid_test == {"valid": 20, "test": 10}
    assert stats["kept"] + sum(valid_test.values()) + stats["dropped"].get("overlap", 0) == 201


def test_carving_more_than_there_is(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"cannot carve 500 valid pairs out of 200"):
        run(tmp_path, valid_size=500)
