"""benchmarks/bench_step.py on a tiny random-weight run: one figure per precision and size, and
the table's cost per row derived from the cost per step."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from benchmarks.bench_step import bench_step, format_table, main
from tests.tiny_translator import make_translator, save


@pytest.mark.parametrize("kernels", ["torch", "auto"])
def test_reports_every_size_and_precision(tmp_path: Path, kernels: str) -> None:
    checkpoint = save(make_translator(tmp_path))
    report = bench_step(
        checkpoint, rows=[1, 400], precisions=["float32", "bfloat16"], repeats=1, threads=1,
        src_len=6, position=3, kernels=kernels,
    )  # fmt: skip
    compiler = shutil.which((os.environ.get("CC") or "cc").split()[0]) is not None
    assert report["kernels"] == ("native" if kernels == "auto" and compiler else "torch")
    steps = report["ms_per_step"]
    assert set(steps) == {"float32", "bfloat16"}
    for by_rows in steps.values():
        assert set(by_rows) == {"1", "400"}
        assert all(ms > 0 for ms in by_rows.values())
    table = format_table(report)
    assert table.startswith("| rows | float32 ms/step | float32 us/row | bfloat16 ms/step |")
    ms = steps["float32"]["400"]
    assert f"| 400 | {ms:.2f} | {ms / 400 * 1000:.0f} | " in table  # us per row = ms / rows


def test_a_missing_checkpoint_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(tmp_path / "missing.pt"), "--json", str(tmp_path / "out.json")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "missing.pt" in err and "\n" not in err
    assert not (tmp_path / "out.json").exists()
