"""benchmarks/bench_decode.py on a tiny random-weight run: every engine decodes every line, and
the heuristic-stopping engine is timed and compared with CTranslate2 float32."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks.bench_decode import bench_decode, bf16_choice, format_report
from mtkit import runtime
from tests.tiny_translator import DATA, head, make_translator, save

pytest.importorskip("ctranslate2", reason="needs the ctranslate2 extra")


def tiny_report(tmp_path: Path, lines: int, bf16: str) -> dict[str, Any]:
    """bench_decode over the first `lines` lines of the tiny test set, one repetition."""
    checkpoint = save(make_translator(tmp_path))
    source = tmp_path / "src.en"
    source.write_text("\n".join(line for line in head(DATA / "test.en", 8) if line) + "\n")
    return bench_decode(
        checkpoint, source, None, lines=lines, repeats=1, scaling_lines=lines - 2, bf16=bf16
    )


def test_report_has_every_engine_and_the_heuristic_ratio(tmp_path: Path) -> None:
    report = tiny_report(tmp_path, 5, "never")
    greedy, beam = report["engines"]["greedy"], report["engines"]["beam 5"]
    assert set(beam) == {
        "mtkit-fp32", "mtkit-fp32-heuristic", "mtkit-fp32-torch-kernels", "mtkit-int8",
        "ct2-fp32", "ct2-int8",
    }  # fmt: skip
    assert report["mtkit_kernels"] in ("native", "torch")
    assert greedy["mtkit-fp32-heuristic"]["same_as_mtkit_fp32"] == 5  # greedy has no beam to stop
    assert all(row["cpu_sentences_per_s"] > 0 for row in beam.values())
    table = format_report(report)
    assert "| beam 5 | mtkit-fp32-heuristic / ct2-fp32 |" in table
    assert "| greedy | mtkit-fp32 / mtkit-fp32-torch-kernels |" in table


def test_bf16_is_timed_where_precision_auto_picks_it(monkeypatch: pytest.MonkeyPatch) -> None:
    for speedup, picked in ((3.0, True), (0.5, False)):
        probe = runtime.Bf16Probe("AVX512_BF16", speedup)
        monkeypatch.setattr(runtime, "probe_bf16", lambda device, probe=probe: probe)
        choice = bf16_choice("auto")
        assert choice["timed"] is picked
        assert choice["auto"] == ("bfloat16" if picked else "float32")
        assert "AVX512_BF16" in choice["reason"]
        assert bf16_choice("always")["timed"] and not bf16_choice("never")["timed"]


def test_bf16_row_and_its_ratio_to_float32(tmp_path: Path) -> None:
    report = tiny_report(tmp_path, 4, "always")
    assert report["bf16"]["timed"]
    assert report["engines"]["beam 5"]["mtkit-bf16"]["cpu_sentences_per_s"] > 0
    table = format_report(report)
    assert "| beam 5 | mtkit-bf16 / mtkit-fp32 |" in table
    assert f"precision auto -> {report['bf16']['auto']}" in table
