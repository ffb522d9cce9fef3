"""Reading inputs: every format, line alignment, invalid UTF-8, missing and wrong files."""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before datasets is imported: never wait on the hub

import datasets
import pytest

from mtkit.data.prepare import load_stats, prepare
from mtkit.data.rows import DataError
from tests.tiny_corpus import SRC, TGT, make_cfg, run, text_split, write_pair

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


def test_tsv_malformed_rows_fail_or_skip(tmp_path: Path) -> None:
    path = tmp_path / "train.tsv"
    lines = [f"{s}\t{t}" for s, t in zip(SRC, TGT, strict=True)]
    lines[9] = "no tab here"
    lines[19] = f"{SRC[19]}\t{TGT[19]}\tand a tab in the target"  # not a shorter target
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"2 malformed rows: .*train\.tsv:10: 1 column, expected 2"):
        prepare(make_cfg(tmp_path, format="tsv", train=str(path)))
    out = prepare(make_cfg(tmp_path, format="tsv", train=str(path), on_bad_row="skip"))
    assert load_stats(out)["splits"]["train"]["dropped"] == {"bad_row": 2}
    assert not any(t.startswith(TGT[19]) for t in text_split(tmp_path)["tgt"])
    with pytest.raises(DataError, match=r"train\.tsv:20: 3 columns, expected 2"):
        prepare(make_cfg(tmp_path, format="tsv", train=str(path), strict=True))


def test_jsonl_rows_without_a_key_or_not_objects_fail_or_skip(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    rows = [json.dumps({"en": s, "de": t}) for s, t in zip(SRC, TGT, strict=True)]
    rows[6] = json.dumps({"en": SRC[6]})  # line 7 lacks the target
    rows[8] = json.dumps([SRC[8], TGT[8]])  # line 9 is not an object
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"train\.jsonl:9: not a JSON object \(found list\)"):
        prepare(make_cfg(tmp_path, format="jsonl", train=str(path)))
    rows[8] = json.dumps({"en": SRC[8], "de": TGT[8]})
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"1 malformed row: .*train\.jsonl:7: no 'de' \(or null\)"):
        prepare(make_cfg(tmp_path, format="jsonl", train=str(path)))
    rows[8] = json.dumps([SRC[8], TGT[8]])
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = prepare(make_cfg(tmp_path, format="jsonl", train=str(path), on_bad_row="skip"))
    assert load_stats(out)["splits"]["train"]["dropped"] == {"bad_row": 2}


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
    with pytest.raises(
        DataError, match=r"data\.train: 1 malformed row: .*train\.jsonl:2: invalid JSON"
    ):
        prepare(make_cfg(tmp_path, format="jsonl", train=str(path)))
    path.write_text('{"en": "a", "de": "b"}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"train\.jsonl:2: not a JSON object \(found list\)"):
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
