"""`mtkit translate`, `mtkit evaluate` and `mtkit plot-attention` through the CLI, on a tiny
random-weight checkpoint (no training: these check plumbing, formats and reports)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.cli import run
from tests.tiny_translator import DATA, head

SOURCES = head(DATA / "test.en", 6)


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_nbest_jsonl_sorted_distinct(ckpt: Path) -> None:
    lines = [SOURCES[0], "", SOURCES[1]]
    code, out, err = run(
        "translate", ckpt, "--nbest", "3", "--beam", "4", "--format", "jsonl",
        input="\n".join(lines) + "\n",
    )  # fmt: skip
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["index"] for r in records] == [0, 1, 2]
    assert [r["source"] for r in records] == lines
    assert records[1]["nbest"] == [] and records[1]["translation"] == ""
    for r in (records[0], records[2]):
        scores = [h["score"] for h in r["nbest"]]
        assert len(scores) == 3 and scores == sorted(scores, reverse=True)
        assert len({h["text"] for h in r["nbest"]}) == 3
        assert r["translation"] == r["nbest"][0]["text"]
        assert r["time"] >= 0 and r["truncated"] is False


def test_tsv_and_text_formats(ckpt: Path, tmp_path: Path) -> None:
    src = write(tmp_path / "src.en", [SOURCES[2], "", SOURCES[3]])
    code, out, _ = run("translate", ckpt, "-i", src, "-f", "tsv")
    assert code == 0
    rows = [line.split("\t") for line in out.splitlines()]
    assert [len(r) for r in rows] == [3, 3, 3]
    assert rows[1] == ["", "", ""]
    assert [r[0] for r in rows] == [SOURCES[2], "", SOURCES[3]]
    assert all(float(r[2]) <= 0 for r in (rows[0], rows[2]))
    code, out, _ = run("translate", ckpt, "-i", src, "--nbest", "2")
    assert code == 0
    moses = [line.split(" ||| ") for line in out.splitlines()]
    assert [m[0] for m in moses] == ["0", "0", "1", "2", "2"]  # the empty line kept, as in tsv
    assert moses[2] == ["1", "", ""] and all(len(m) == 3 for m in moses)
    code, out, _ = run("translate", ckpt, "-i", src, "--nbest", "2", "-f", "tsv")
    assert [row.split("\t")[0] for row in out.splitlines()] == [SOURCES[2]] * 2 + [""] + [
        SOURCES[3]
    ] * 2
    code, out, _ = run("translate", ckpt, "-i", src, "--greedy")
    assert code == 0 and len(out.splitlines()) == 3 and out.splitlines()[1] == ""


def test_output_file_sampling_and_errors(ckpt: Path, tmp_path: Path) -> None:
    src = write(tmp_path / "src.en", SOURCES)
    out1, out2 = tmp_path / "s1.de", tmp_path / "s2.de"
    for out in (out1, out2):
        code, _, err = run("translate", ckpt, "-i", src, "-o", out, "--sample", "--top-p", "0.9")
        assert code == 0 and "wrote 6 translations" in err
    assert out1.read_text() == out2.read_text()  # seeded
    code, _, err = run("translate", ckpt, "-i", src, "--nbest", "5", "--beam", "2")
    assert code == 2 and "nbest (5) must be at most the beam size (2)" in err
    code, _, err = run("translate", ckpt, "-i", src, "--format", "xml")
    assert code == 2 and "--format" in err


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--top-k", "5"), ("--top-p", "0.9"), ("--temperature", "0.7"), ("--seed", "3")],
)
def test_sampling_flags_need_sampling(ckpt: Path, flag: str, value: str) -> None:
    """A flag that would do nothing in the chosen mode is an error, not silently ignored."""
    code, out, err = run("translate", ckpt, flag, value, input="Hi.\n")
    assert code == 2 and out == ""
    assert err == f"error: {flag} only applies when sampling: add --sample\n"
    code, out, err = run("translate", ckpt, flag, value, "--sample", input="Hi.\n")
    assert code == 0, err


def test_attention_dump_and_plot(ckpt: Path, tmp_path: Path) -> None:
    att = tmp_path / "att.jsonl"
    code, out, err = run("translate", ckpt, "--attention", att, input="Hi.\n\nTom is here.\n")
    assert code == 0, err
    records = [json.loads(line) for line in att.read_text().splitlines()]
    assert len(records) == 3 and records[1]["weights"] == []
    assert len(records[2]["weights"]) == len(records[2]["target"])
    pytest.importorskip("matplotlib", reason="matplotlib (the `plot` extra) is not installed")
    png = tmp_path / "att.png"
    code, out, err = run("plot-attention", att, "--line", "3", "-o", png)
    assert code == 0, err
    assert png.read_bytes()[:4] == b"\x89PNG"
    code, _, err = run("plot-attention", att, "--line", "2", "-o", png)
    assert code == 2 and "att.png: --output exists; pass --overwrite" in err
    code, _, err = run("plot-attention", att, "--line", "2", "-o", png, "--overwrite")
    assert code == 1 and "empty input line" in err


def test_evaluate_json_multi_ref_and_paired_bootstrap(ckpt: Path, tmp_path: Path) -> None:
    src = write(tmp_path / "src.en", SOURCES)
    refs = head(DATA / "test.de", 6)
    ref1 = write(tmp_path / "ref1.de", refs)
    ref2 = write(tmp_path / "ref2.de", [r.upper() for r in refs])
    hyp = tmp_path / "hyp.de"
    code, out, err = run(
        "evaluate", ckpt, "--src", src, "--ref", ref1, "--ref", ref2, "-o", hyp, "--greedy",
        "--metrics", "bleu,chrf,chrf++,ter", "--json",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    assert [s["name"] for s in report["scores"]] == ["bleu", "chrf", "chrf++", "ter"]
    assert all("nrefs:2" in s["signature"] for s in report["scores"])
    assert report["n_sentences"] == 6 and report["hypotheses_file"] == str(hyp)
    assert report["decoding"]["beam_size"] == 1 and report["references"] == [str(ref1), str(ref2)]
    assert len(hyp.read_text().splitlines()) == 6

    code, out, err = run("evaluate", "--hyp", hyp, "--hyp", ref1, "--ref", ref1, "--paired-bs")
    assert code == 0, err
    assert "paired bootstrap resampling: 1000 resamples of 6 sentences" in out
    assert "p = " in out and "signature" in out
    code, out, _ = run(
        "evaluate", "--hyp", hyp, "--hyp", hyp, "--ref", ref1, "--paired-bs", "--json"
    )
    systems = json.loads(out)["metrics"][0]["systems"]
    assert code == 0 and systems[1]["p_value"] == 1.0  # identical systems
    code, _, err = run("evaluate", "--hyp", hyp, "--hyp", ref1, "--ref", ref1)
    assert code == 1 and "--paired-bs" in err


def test_evaluate_bad_tokenizer_is_one_line(ckpt: Path, tmp_path: Path) -> None:
    ref = write(tmp_path / "ref.de", ["a b c"])
    code, out, err = run("evaluate", "--hyp", ref, "--ref", ref, "--tokenize", "nope")
    assert code == 1
    assert err.startswith("error: unknown sacreBLEU tokenizer 'nope'")
    assert "Traceback" not in out + err


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal (POSIX)")
def test_interactive_prompt_on_a_terminal(ckpt: Path) -> None:
    """With a terminal on stdin (a pty here) translate prompts and answers line by line."""
    main, terminal = os.openpty()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mtkit", "translate", str(ckpt), "--greedy"],
        stdin=terminal, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    os.close(terminal)
    try:
        os.write(main, b"Hi.\nTom is here.\n\x04")  # two lines, then Ctrl-D
        out, err = proc.communicate(timeout=300)
    finally:
        os.close(main)
    assert proc.returncode == 0, err.decode()
    assert b"Type a sentence" in err
    expected = run("translate", ckpt, "--greedy", input="Hi.\nTom is here.\n")[1].splitlines()
    answers = out.decode().split("> ")
    assert [a.rstrip("\n") for a in answers[1:3]] == expected


def test_precision_flag(ckpt: Path) -> None:
    """--precision float32 on any machine; bfloat16 (tiny input) runs everywhere; a bad value
    exits 2 naming the flag's key."""
    text = "\n".join(SOURCES[:2]) + "\n"
    for precision in ("float32", "bfloat16"):
        code, out, err = run("translate", ckpt, "--precision", precision, input=text)
        assert code == 0, err
        assert len(out.splitlines()) == 2
    code, _, err = run("translate", ckpt, "--precision", "int4", input=text)
    assert code == 2 and "precision: expected one of auto, float32" in err


def test_early_stopping_flag(ckpt: Path) -> None:
    """--early-stopping heuristic decodes every line with its sorted n-best list; a bad value
    exits 2 naming the flag's key."""
    text = "\n".join(SOURCES[:3]) + "\n"
    flags = ("--beam", "4", "--nbest", "2", "--format", "jsonl", "--early-stopping")
    code, out, err = run("translate", ckpt, *flags, "heuristic", input=text)
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["source"] for r in records] == SOURCES[:3]
    for r in records:
        scores = [h["score"] for h in r["nbest"]]
        assert len(scores) == 2 and scores == sorted(scores, reverse=True)
    code, _, err = run("translate", ckpt, *flags, "never", input=text)
    assert code == 2 and "early_stopping: expected one of exact, heuristic" in err
    assert "Traceback" not in err


@pytest.mark.skipif(
    shutil.which((os.environ.get("CC") or "cc").split()[0]) is None,
    reason="needs a C compiler for the native kernel",
)
def test_attention_kernels_translate_alike(
    ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = write(tmp_path / "src.en", SOURCES)
    outputs = {}
    for kernel in ("native", "torch"):
        path = tmp_path / f"{kernel}.de"
        code, _, err = run(
            "translate", ckpt, "-i", src, "-o", path, "--beam", "4", "--attention-kernel", kernel
        )
        assert code == 0, err
        outputs[kernel] = path.read_text(encoding="utf-8")
    assert outputs["native"] == outputs["torch"] and outputs["native"].count("\n") == len(SOURCES)
    code, _, err = run("translate", ckpt, "-i", src, "--attention-kernel", "fast")
    assert code == 2 and "attention_kernel: expected one of" in err and "Traceback" not in err
    # no compiler: auto falls back to PyTorch's attention, native is refused in one line
    monkeypatch.setenv("CC", "no-such-compiler-here")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    code, out, err = run("translate", ckpt, "-i", src, "--beam", "4")
    assert code == 0 and out == outputs["torch"]
    code, _, err = run("translate", ckpt, "-i", src, "--attention-kernel", "native")
    assert code == 1 and "no C compiler (no-such-compiler-here) found" in err
    assert "Traceback" not in err
