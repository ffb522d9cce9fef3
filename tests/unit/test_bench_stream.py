"""benchmarks/bench_stream.py on a tiny random-weight run: the in-process continuous-batching
benchmark decodes every line as `translate` does and counts its steps."""

from __future__ import annotations

from pathlib import Path

from benchmarks.bench_stream import bench_stream, format_table
from tests.tiny_translator import DATA, head, make_translator, save


def test_every_cadence_gives_translates_outputs(tmp_path: Path) -> None:
    checkpoint = save(make_translator(tmp_path))
    source = tmp_path / "src.en"
    lines = [line for line in head(DATA / "test.en", 40) if line][:24]
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = bench_stream(
        checkpoint, source, lines=24, in_flight=5, every=[1, 3], repeats=1, threads=1
    )
    results = report["results"]
    assert set(results) == {"join every 1", "join every 3", "translate"}
    for name in ("join every 1", "join every 3"):
        assert results[name]["same_as_translate"] == 24
        assert 0 < results[name]["per_step"] <= 5  # never more than in flight
    assert results["join every 3"]["steps"] >= results["join every 1"]["steps"]
    table = format_table(report)
    assert "| join every 3 |" in table and "| translate |" in table
