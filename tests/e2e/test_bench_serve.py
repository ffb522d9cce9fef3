"""benchmarks/bench_serve.py against a real `mtkit serve` process on a tiny random-weight run:
every answer equals sequential translation's, and the table carries the CPU columns."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from benchmarks.bench_serve import cpu_seconds, main
from tests.tiny_translator import DATA, head, make_translator, save

pytest.importorskip("fastapi", reason="needs the serve extra: pip install 'mtkit[serve]'")
pytest.importorskip("uvicorn", reason="needs the serve extra: pip install 'mtkit[serve]'")
pytest.importorskip("httpx", reason="needs httpx (the dev extra)")


def test_cpu_seconds_reads_this_process() -> None:
    total = sum(i * i for i in range(200_000))  # some work, so the count is not zero
    assert total > 0
    assert 0 < cpu_seconds(os.getpid())
    assert cpu_seconds(2**22 + 12345) == 0.0  # no such process: no figure, no error


@pytest.mark.slow  # a server process: a few seconds to import torch
def test_bench_serve_reports_server_and_client_cpu(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = save(make_translator(tmp_path))
    source = tmp_path / "src.en"
    source.write_text("\n".join(line for line in head(DATA / "test.en", 12) if line) + "\n")
    report_path = tmp_path / "serve.json"
    argv = [str(checkpoint), str(source), "--lines", "6", "--clients", "1,3"]
    assert main([*argv, "--engines", "pytorch", "--json", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    engine = report["engines"]["pytorch"]
    assert engine["translate_cpu_ms"] > 0
    assert [level["clients"] for level in engine["levels"]] == [1, 3]
    for level in engine["levels"]:
        assert level["same_as_translate"] == report["sentences"] == 6
        assert level["server_cpu_ms"] > 0 and level["client_cpu_ms"] > 0
    assert "CPU ms/sentence: server, clients" in capsys.readouterr().out
