"""prepare: every input format, every cleaning rule and its count, bad inputs, carving, reuse."""

from __future__ import annotations

import csv
import json
import logging
import os
import random
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before datasets is imported: never wait on the hub

import datasets
import pytest

from mtkit.config.load import config_from_dict
from mtkit.config.schema import ConfigError, ExperimentConfig
from mtkit.data.prepare import DataError, is_prepared, load_stats, prepare
from mtkit.data.tokenizer import BOS_ID, EOS_ID, TokenizerPair

EN = "the a cat dog sees runs house tree big small red green walks sleeps old new".split()
DE = "der die Katze Hund sieht läuft Haus Baum groß klein rot grün geht schläft alt neu".split()
LEXICON = dict(zip(EN, DE, strict=True))


def corpus(n: int = 200, seed: int = 0) -> tuple[list[str], list[str]]:
    """n distinct (en, de) pairs; de is a word-by-word 'translation' so lengths match."""
    rng = random.Random(seed)
    seen: dict[str, str] = {}
    while len(seen) < n:
        words = [rng.choice(EN) for _ in range(rng.randint(3, 8))]
        seen[" ".join(words)] = " ".join(LEXICON[w] for w in words)
    return list(seen), list(seen.values())


SRC, TGT = corpus()


def write_pair(prefix: Path, src: list[str], tgt: list[str]) -> Path:
    prefix.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{prefix}.en").write_text("".join(s + "\n" for s in src), encoding="utf-8")
    Path(f"{prefix}.de").write_text("".join(t + "\n" for t in tgt), encoding="utf-8")
    return prefix


def make_cfg(tmp_path: Path, **data: Any) -> ExperimentConfig:
    """Tiny config: no valid/test files unless given, 20 pairs carved for valid, vocab 80."""
    tokenizer, model = data.pop("tokenizer", {}), data.pop("model", {})
    raw = {
        "data": {
            "train": str(tmp_path / "train"),
            "valid": None,
            "valid_size": 20,
            "test": None,
            "prepared_dir": str(tmp_path / "prepared"),
            "max_ratio": 9.0,  # tiny vocabularies split some German words a lot
            **data,
        },
        "tokenizer": {"vocab_size": 80, **tokenizer},
        "model": model,
    }
    return config_from_dict(raw)


def run(
    tmp_path: Path, src: list[str] | None = None, tgt: list[str] | None = None, **data: Any
) -> dict[str, Any]:
    """Write train.{en,de}, prepare, return the train stats."""
    write_pair(tmp_path / "train", SRC if src is None else src, TGT if tgt is None else tgt)
    out = prepare(make_cfg(tmp_path, **data))
    stats: dict[str, Any] = load_stats(out)["splits"]["train"]
    return stats


def text_split(tmp_path: Path, split: str = "train") -> datasets.Dataset:
    return datasets.load_from_disk(str(tmp_path / "prepared" / "text"))[split]


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
    with caplog.at_level(logging.INFO, logger="mtkit.data.prepare"):
        run(tmp_path)
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("split") and "unk%" in line for line in lines)
    assert any(line.startswith("train") and "180" in line for line in lines)


# --------------------------------------------------------------------------- alignment


def test_mismatched_line_counts_name_both_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"train\.en has 200 lines but .*train\.de has 199"):
        run(tmp_path, SRC, TGT[:-1])
    assert not (tmp_path / "prepared").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp dir


def test_stray_carriage_return_does_not_shift_alignment(tmp_path: Path) -> None:
    src = list(SRC)
    src[5] = "the cat\rsees"  # a lone \r inside a line: universal newlines would split it
    write_pair(tmp_path / "train", src, TGT)
    de = tmp_path / "train.de"  # and Windows line endings on one side only
    de.write_bytes(de.read_bytes().replace(b"\n", b"\r\n"))
    stats = prepare(make_cfg(tmp_path, valid_size=1))
    assert load_stats(stats)["splits"]["train"]["read"] == 200
    pairs = dict(zip(*text_split(tmp_path)[:].values(), strict=True))
    assert pairs["the cat sees"] == TGT[5]
    assert pairs[SRC[-1]] == TGT[-1]  # the last pair is still aligned


# --------------------------------------------------------------------------- UTF-8


def _corrupt_line(path: Path, line: int) -> None:
    lines = path.read_bytes().split(b"\n")
    lines[line - 1] = b"caf\xe9 broken"  # latin-1, not UTF-8
    path.write_bytes(b"\n".join(lines))


def test_invalid_utf8_is_skipped_counted_and_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_pair(tmp_path / "train", SRC, TGT)
    _corrupt_line(tmp_path / "train.de", 3)
    with caplog.at_level(logging.WARNING):
        out = prepare(make_cfg(tmp_path))
    assert load_stats(out)["splits"]["train"]["dropped"] == {"invalid_utf8": 1}
    assert SRC[2] not in text_split(tmp_path)["src"]
    assert any("train.de:3: invalid UTF-8" in r.getMessage() for r in caplog.records)


def test_invalid_utf8_is_fatal_when_strict(tmp_path: Path) -> None:
    write_pair(tmp_path / "train", SRC, TGT)
    _corrupt_line(tmp_path / "train.en", 7)
    with pytest.raises(DataError, match=r"train\.en:7: invalid UTF-8"):
        prepare(make_cfg(tmp_path, strict=True))


def test_invalid_utf8_in_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    rows = [
        json.dumps({"en": s, "de": t}, ensure_ascii=False) for s, t in zip(SRC, TGT, strict=True)
    ]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    _corrupt_line(path, 4)
    out = prepare(make_cfg(tmp_path, format="jsonl", train=str(path)))
    assert load_stats(out)["splits"]["train"]["dropped"] == {"invalid_utf8": 1}
    with pytest.raises(DataError, match=r"train\.jsonl:4: invalid UTF-8"):
        prepare(make_cfg(tmp_path, format="jsonl", train=str(path), strict=True), force=True)


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


def test_vocab_too_large_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"tokenizer\.vocab_size: 5000 .* at most \d+"):
        run(tmp_path, tokenizer={"vocab_size": 5000})


# --------------------------------------------------------------------------- formats


def test_tsv_numbered_columns(tmp_path: Path) -> None:
    path = tmp_path / "train.tsv"
    # a quote is just text in TSV
    rows = [f'{i}\t"{t}\t{s}' for i, (s, t) in enumerate(zip(SRC, TGT, strict=True))]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = prepare(make_cfg(tmp_path, format="tsv", train=str(path), src_column=2, tgt_column=1))
    assert load_stats(out)["splits"]["train"]["read"] == 200
    pairs = dict(zip(*text_split(tmp_path)[:].values(), strict=True))
    assert pairs[SRC[50]] == '"' + TGT[50]


def test_tsv_named_columns_and_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "train.tsv"
    lines = [
        "id\tsource\ttarget",
        *(f"{i}\t{s}\t{t}" for i, (s, t) in enumerate(zip(SRC, TGT, strict=True))),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = make_cfg(
        tmp_path, format="tsv", train=str(path), src_column="source", tgt_column="target"
    )
    assert load_stats(prepare(cfg))["splits"]["train"]["read"] == 200
    with pytest.raises(DataError, match=r"no column 'en' \(found: 'id', 'source', 'target'\)"):
        prepare(
            make_cfg(tmp_path, format="tsv", train=str(path), src_column="en", tgt_column="target")
        )


def test_tsv_malformed_rows_skip_or_fail(tmp_path: Path) -> None:
    path = tmp_path / "train.tsv"
    lines = [f"{s}\t{t}" for s, t in zip(SRC, TGT, strict=True)]
    lines[9] = "no tab here"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = prepare(make_cfg(tmp_path, format="tsv", train=str(path)))
    assert load_stats(out)["splits"]["train"]["dropped"] == {"malformed": 1}
    with pytest.raises(DataError, match=r"train\.tsv:10: expected at least 2 tsv columns, found 1"):
        prepare(make_cfg(tmp_path, format="tsv", train=str(path), strict=True))


def test_csv_with_header_and_quoting(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["de", "en"])
        for s, t in zip(SRC, TGT, strict=True):
            writer.writerow([t, s + ', "quoted"'])
    out = prepare(
        make_cfg(tmp_path, format="csv", train=str(path), src_column="en", tgt_column="de")
    )
    assert load_stats(out)["splits"]["train"]["read"] == 200
    pairs = dict(zip(*text_split(tmp_path)[:].values(), strict=True))
    assert pairs[SRC[60] + ', "quoted"'] == TGT[60]


@pytest.mark.parametrize("nested", [False, True])
def test_jsonl_flat_and_hub_style(tmp_path: Path, nested: bool) -> None:
    path = tmp_path / "train.jsonl"
    rows = [{"en": s, "de": t} for s, t in zip(SRC, TGT, strict=True)]
    objs = [{"id": i, "translation": r} for i, r in enumerate(rows)] if nested else rows
    path.write_text(
        "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objs), encoding="utf-8"
    )
    out = prepare(make_cfg(tmp_path, format="jsonl", train=str(path)))
    assert load_stats(out)["splits"]["train"]["read"] == 200
    pairs = dict(zip(*text_split(tmp_path)[:].values(), strict=True))
    assert pairs[SRC[70]] == TGT[70]


def test_jsonl_missing_keys_list_what_was_found(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text('{"source": "a", "target": "b"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"no 'en'/'de' columns .*found: 'source', 'target'"):
        prepare(make_cfg(tmp_path, format="jsonl", train=str(path)))


def test_parquet_with_named_columns(tmp_path: Path) -> None:
    path = tmp_path / "train.parquet"
    datasets.Dataset.from_dict({"x": SRC, "y": TGT}).to_parquet(str(path))
    out = prepare(
        make_cfg(tmp_path, format="parquet", train=str(path), src_column="x", tgt_column="y")
    )
    assert load_stats(out)["splits"]["train"]["read"] == 200
    with pytest.raises(DataError, match=r"has 2 columns \(x, y\)"):
        prepare(make_cfg(tmp_path, format="parquet", train=str(path), src_column=0, tgt_column=5))


def test_hub_offline_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    cfg = make_cfg(tmp_path, format="hub", train="nobody/no-such-corpus", hub_config="de-en")
    with pytest.raises(DataError) as err:
        prepare(cfg)
    msg = str(err.value)
    assert "\n" not in msg and "'nobody/no-such-corpus'" in msg and "split 'train'" in msg
    assert "HF_HUB_OFFLINE" in msg and "data.format: text" in msg


def test_hub_dataset_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The online path, with a local dataset directory standing in for a hub name."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    repo = tmp_path / "my-corpus"
    repo.mkdir()
    rows = [{"translation": {"en": s, "de": t}} for s, t in zip(SRC, TGT, strict=True)]
    for split, part in (("train", rows[:180]), ("validation", rows[180:])):
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part)
        (repo / f"{split}.jsonl").write_text(lines, encoding="utf-8")
    cfg = make_cfg(tmp_path, format="hub", train=str(repo), valid=str(repo))
    stats = load_stats(prepare(cfg))["splits"]
    assert (stats["train"]["read"], stats["valid"]["read"]) == (180, 20)
    assert text_split(tmp_path, "valid")["src"] == SRC[180:]
    with pytest.raises(DataError, match=r"split 'test'"):
        prepare(make_cfg(tmp_path, format="hub", train=f"{repo}:train", test=f"{repo}:test"))


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text('{"en": "a", "de": "b"}\n{"en": "a", "de": \n', encoding="utf-8")
    with pytest.raises(DataError, match=r"train\.jsonl: line 2: invalid JSON"):
        prepare(make_cfg(tmp_path, format="jsonl", train=str(path)))
    path.write_text('{"en": "a", "de": "b"}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"line 2: expected one JSON object per line, found list"):
        prepare(make_cfg(tmp_path, format="jsonl", train=str(path)))


def test_several_training_corpora_are_concatenated(tmp_path: Path) -> None:
    write_pair(tmp_path / "a", SRC[:120], TGT[:120])
    write_pair(tmp_path / "b", SRC[120:], TGT[120:])
    out = prepare(make_cfg(tmp_path, train=[str(tmp_path / "a"), str(tmp_path / "b")]))
    stats = load_stats(out)["splits"]["train"]
    assert stats["read"] == 200 and stats["kept"] == 180


# --------------------------------------------------------------------------- bad inputs


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data\.train: file not found: .*nope\.en .*PREFIX"):
        prepare(make_cfg(tmp_path, train=str(tmp_path / "nope")))
    with pytest.raises(DataError, match=r"data\.valid: file not found: .*missing\.tsv"):
        prepare(
            make_cfg(
                tmp_path,
                format="tsv",
                train=str(write_tsv(tmp_path)),
                valid=str(tmp_path / "missing.tsv"),
            )
        )


def write_tsv(tmp_path: Path) -> Path:
    path = tmp_path / "train.tsv"
    path.write_text("".join(f"{s}\t{t}\n" for s, t in zip(SRC, TGT, strict=True)), encoding="utf-8")
    return path


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data\.train: .* is a directory, expected a jsonl file"):
        prepare(make_cfg(tmp_path, format="jsonl", train=str(tmp_path)))


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
