"""benchmarks/bench_decode.py on a tiny random-weight run: every engine decodes every line, and
the heuristic-stopping engine is timed and compared with CTranslate2 float32."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.bench_decode import bench_decode, format_report
from tests.tiny_translator import DATA, head, make_translator, save

pytest.importorskip("ctranslate2", reason="needs the ctranslate2 extra")


def test_report_has_every_engine_and_the_heuristic_ratio(tmp_path: Path) -> None:
    checkpoint = save(make_translator(tmp_path))
    source = tmp_path / "src.en"
    source.write_text("\n".join(line for line in head(DATA / "test.en", 8) if line) + "\n")
    report = bench_decode(checkpoint, source, None, lines=5, repeats=1, scaling_lines=3)
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
