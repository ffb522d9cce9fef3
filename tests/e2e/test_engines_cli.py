"""`translate`/`evaluate` with --quantize int8 and --engine ctranslate2 on a tiny random-weight
checkpoint: the same output formats as the default path, and one-line errors (exit 2) for what
an engine cannot do."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tests.e2e.cli import run
from tests.tiny_translator import DATA, head

SOURCES = head(DATA / "test.en", 5)
INPUT = "\n".join([SOURCES[0], "", *SOURCES[1:]]) + "\n"
needs_ct2 = pytest.mark.skipif(
    importlib.util.find_spec("ctranslate2") is None, reason="ctranslate2 is not installed"
)


def jsonl(ckpt: Path, *flags: str) -> list[dict[str, object]]:
    code, out, err = run(
        "translate", ckpt, "--format", "jsonl", "--nbest", "2", *flags, input=INPUT
    )
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def shape(records: list[dict[str, object]]) -> list[tuple[object, ...]]:
    """What must not depend on the engine: keys, order, sources, list lengths."""
    return [
        (sorted(r), r["index"], r["source"], len(r["nbest"]), r["truncated"])  # type: ignore[arg-type]
        for r in records
    ]


@pytest.mark.parametrize(
    "flags", [("--quantize", "int8"), pytest.param(("--engine", "ctranslate2"), marks=needs_ct2)]
)
def test_engine_output_formats_match_the_default(ckpt: Path, flags: tuple[str, str]) -> None:
    default, other = jsonl(ckpt), jsonl(ckpt, *flags)
    assert shape(other) == shape(default)
    for record in other:
        scores = [h["score"] for h in record["nbest"]]  # type: ignore[attr-defined]
        assert scores == sorted(scores, reverse=True)
        assert record["translation"] == (record["nbest"][0]["text"] if scores else "")  # type: ignore[index]
    for fmt in ("text", "tsv"):
        code, out, err = run("translate", ckpt, "-f", fmt, *flags, input=INPUT)
        _, expected, _ = run("translate", ckpt, "-f", fmt, input=INPUT)
        assert code == 0, err
        assert len(out.splitlines()) == len(expected.splitlines())
        assert out.splitlines()[1].strip() == ""  # the empty input line stays empty


@needs_ct2
def test_ctranslate2_engine_exports_the_run_once(ckpt: Path) -> None:
    folder = ckpt.parent / "ctranslate2-float32"
    assert run("translate", ckpt, "--engine", "ctranslate2", input=INPUT)[0] == 0
    made = (folder / "model.bin").stat().st_mtime_ns
    code, out, err = run(
        "translate", ckpt, "--engine", "ctranslate2", "--quantize", "int8", input=INPUT
    )
    assert code == 0, err
    assert len(out.splitlines()) == len(INPUT.splitlines())
    assert (folder / "model.bin").stat().st_mtime_ns == made  # reused, not exported again


@pytest.mark.parametrize(
    "flags", [("--quantize", "int8"), pytest.param(("--engine", "ctranslate2"), marks=needs_ct2)]
)
def test_evaluate_on_another_engine(ckpt: Path, tmp_path: Path, flags: tuple[str, str]) -> None:
    src, ref = tmp_path / "src.en", tmp_path / "ref.de"
    src.write_text("\n".join(SOURCES) + "\n", encoding="utf-8")
    ref.write_text("\n".join(head(DATA / "test.de", 5)) + "\n", encoding="utf-8")
    hyp = tmp_path / "hyp.de"
    code, out, err = run(
        "evaluate", ckpt, "--src", src, "--ref", ref, "-o", hyp, "--json", *flags
    )  # fmt: skip
    assert code == 0, err
    assert {s["name"] for s in json.loads(out)["scores"]} == {"bleu", "chrf"}
    assert len(hyp.read_text(encoding="utf-8").splitlines()) == len(SOURCES)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--quantize", "int4"), "--quantize: expected one of none, int8, got 'int4'"),
        (("--engine", "onnx"), "--engine: expected one of auto, pytorch, ctranslate2, got 'onnx'"),
        (("--engine", "ctranslate2", "--attention", "a.jsonl"), "--attention needs --engine"),
    ],
)
def test_engine_option_errors_are_one_line(
    ckpt: Path, flags: tuple[str, ...], message: str
) -> None:
    code, out, err = run("translate", ckpt, *flags, input=INPUT)
    assert code == 2, err
    assert out == ""
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1


def test_ctranslate2_engine_refuses_an_ensemble(ckpt: Path) -> None:
    code, _, err = run("translate", ckpt, ckpt, "--engine", "ctranslate2", input=INPUT)
    assert code == 2
    assert err == "error: --engine ctranslate2 translates with one model, not an ensemble\n"
