"""Evaluation inputs, reports and comparisons (without the CLI)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from mtkit.evaluation.evaluate import (
    EvaluationError,
    compare_files,
    evaluate_model,
    file_set,
    score_files,
    split_set,
)
from mtkit.files import InputFileError, read_lines
from mtkit.translation.translator import Translator
from tests.tiny_translator import DATA, head, make_translator


@pytest.fixture(scope="module")
def translator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Translator]:
    yield make_translator(tmp_path_factory.mktemp("tiny"))


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_score_files_with_two_references(tmp_path: Path) -> None:
    refs = head(DATA / "test.de", 50)
    hyp = write(tmp_path / "hyp.de", [" ".join(r.split()[:-1]) for r in refs])
    ref1 = write(tmp_path / "ref1.de", refs)
    ref2 = write(tmp_path / "ref2.de", [r.lower() for r in refs])
    report = score_files(hyp, [ref1, ref2], ["bleu", "ter"], tokenize="intl")
    assert report.references == [str(ref1), str(ref2)]
    assert "nrefs:2" in report.scores[0].signature and "tok:intl" in report.scores[0].signature
    data = json.loads(report.to_json())
    assert data["n_sentences"] == 50 and data["tokenize"] == "intl"
    assert [s["name"] for s in data["scores"]] == ["bleu", "ter"]


def test_misaligned_reference_is_named(tmp_path: Path) -> None:
    hyp = write(tmp_path / "hyp", ["a", "b", "c"])
    short = write(tmp_path / "short", ["a", "b"])
    with pytest.raises(EvaluationError, match="short has 2 lines but .*hyp has 3"):
        score_files(hyp, [short], ["bleu"])
    with pytest.raises(InputFileError, match="missing: input file not found"):
        score_files(tmp_path / "missing", [short], ["bleu"])


def test_split_set_reads_text_files_as_they_are(translator: Translator) -> None:
    cfg = translator.config
    data = replace(cfg.data, test=str(DATA / "test"), format="text")
    t = replace(translator, config=replace(cfg, data=data))
    inputs = split_set(t, "test")
    assert inputs.sources == list(read_lines(DATA / "test.en"))
    assert inputs.reference_names == [str(DATA / "test.de")]
    with pytest.raises(EvaluationError, match="expected test or valid"):
        split_set(t, "dev")


def test_split_set_other_formats_use_the_prepared_text(
    translator: Translator, tmp_path: Path
) -> None:
    import datasets

    rows = {"src": ["Hello.", "Go!"], "tgt": ["Hallo.", "Geh!"]}
    datasets.DatasetDict({"test": datasets.Dataset.from_dict(rows)}).save_to_disk(
        str(tmp_path / "prep" / "text")
    )
    cfg = translator.config
    data = replace(cfg.data, format="tsv", test="corpus.tsv", prepared_dir=str(tmp_path / "prep"))
    t = replace(translator, config=replace(cfg, data=data))
    inputs = split_set(t, "test")
    assert inputs.sources == rows["src"] and inputs.references == [rows["tgt"]]
    with pytest.raises(EvaluationError, match="no valid split"):
        split_set(t, "valid")
    empty = replace(data, prepared_dir=str(tmp_path / "nothing"))
    with pytest.raises(EvaluationError, match="run `mtkit prepare`"):
        split_set(replace(translator, config=replace(cfg, data=empty)), "test")


def test_evaluate_model_writes_hypotheses_and_report(
    translator: Translator, tmp_path: Path
) -> None:
    src = write(tmp_path / "src.en", ["Hi.", "", "Tom is here."])
    ref = write(tmp_path / "ref.de", ["Hallo.", "", "Tom ist hier."])
    out = tmp_path / "out" / "hyp.de"
    options = replace(translator.config.decoding, beam_size=2)
    report = evaluate_model(translator, file_set(src, [ref]), options, ["bleu", "chrf"], out)
    hyps = list(read_lines(out))
    assert len(hyps) == 3 and hyps[1] == ""
    data = json.loads(report.to_json())
    assert data["hypotheses_file"] == str(out) and data["source_file"] == str(src)
    assert data["decoding"]["beam_size"] == 2 and data["seconds"] >= 0
    assert data["checkpoint"] == str(translator.checkpoint)


def test_compare_files_report(tmp_path: Path) -> None:
    refs = head(DATA / "test.de", 100)
    ref = write(tmp_path / "ref", refs)
    a = write(tmp_path / "a", [" ".join(r.split()[:2]) for r in refs])
    b = write(tmp_path / "b", refs)
    comparison = compare_files([a, b], [ref], ["bleu", "chrf"], n_samples=200, seed=1)
    data = json.loads(comparison.to_json())
    assert set(data) == {"metrics", "n_sentences", "n_samples", "seed", "references"}
    assert data["n_samples"] == 200 and data["references"] == [str(ref)]
    for metric in data["metrics"]:
        assert set(metric) == {"metric", "signature", "higher_is_better", "systems"}
        base, other = metric["systems"]
        assert base["name"] == str(a) and base["p_value"] is None
        assert other["p_value"] < 0.05 and other["delta"] > 0
        assert set(other) == {"name", "score", "mean", "ci", "p_value", "delta", "delta_ci"}
    with pytest.raises(EvaluationError, match="two or more"):
        compare_files([a], [ref], ["bleu"])
