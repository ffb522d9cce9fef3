"""benchmarks/bench_serve.py's figures per load level: the mean batch from the server's
counters, and levels pooled over alternating passes."""

from __future__ import annotations

import os

import pytest

from benchmarks.bench_serve import ENGINES, Level, level_report, main, mean_batch


def test_mean_batch_of_rounds_of_searches_and_of_a_level_that_switched() -> None:
    # deltas over a level: sentences, batches, search steps, sentences in those steps
    assert mean_batch((60, 4, 0, 0.0)) == 15.0  # rounds: 60 sentences in 4 batches
    # a level that ran a search (auto under load): sentences per step, whatever rounds ran too
    assert mean_batch((200, 2, 50, 1600.0)) == pytest.approx(32.0)
    assert mean_batch((10, 3, 0, 0.0)) == pytest.approx(10 / 3)


def test_every_batching_mode_has_an_engine_name() -> None:
    for mode in ("rounds", "continuous", "auto"):
        assert ENGINES[f"pytorch-{mode}"] == ["--batching", mode]


def test_a_level_pools_its_passes() -> None:
    """Two passes of 3 lines each: rates over the summed time, percentiles over all requests."""
    level = Level(8, wall=1.5, server_cpu=0.6, same=5, counts=[6.0, 2.0, 0.0, 0.0])
    level.latencies = [0.1, 0.2, 0.3] + [0.4, 0.5, 0.6]  # pass 1, pass 2
    report = level_report(level, 6, os.getpid())
    assert report["sentences_per_s"] == pytest.approx(4.0)
    assert report["p99_ms"] == pytest.approx(600.0) and report["p50_ms"] in (300.0, 400.0)
    assert report["server_cpu_ms"] == pytest.approx(100.0)
    assert report["mean_batch"] == 3.0 and report["same_as_translate"] == 5


def test_passes_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["runs/none", "none.txt", "--passes", "0"])
    assert exit_.value.code == 2
    assert "--passes: expected 1 or more, got 0" in capsys.readouterr().err


def test_vs_one_client_is_against_the_one_client_level_in_any_order() -> None:
    from benchmarks.bench_serve import format_table

    def level(clients: int, speed: float) -> dict[str, float]:
        return {
            "clients": clients, "sentences_per_s": speed, "p50_ms": 1.0, "p95_ms": 1.0,
            "p99_ms": 1.0, "mean_batch": 1.0, "peak_rss_mib": 1.0, "same_as_translate": 4,
            "server_cpu_ms": 1.0, "client_cpu_ms": 1.0,
        }  # fmt: skip

    levels = [level(64, 150.0), level(1, 25.0), level(8, 75.0)]
    report = {
        "sentences": 4,
        "engines": {
            "pytorch": {
                "translate_sentences_per_s": 200.0,
                "translate_cpu_ms": 5.0,
                "levels": levels,
            }
        },
    }
    table = [row for row in format_table(report).splitlines()[2:] if row.startswith("|")]
    rows = {row.split(" | ")[1]: row.split(" | ")[3] for row in table}
    assert rows["64"] == "6.00x" and rows["1"] == "1.00x" and rows["8"] == "3.00x"


def test_goals_are_checked_per_engine() -> None:
    from benchmarks.bench_serve import goals

    def level(clients: int, speed: float, p99: float) -> dict[str, float]:
        return {"clients": clients, "sentences_per_s": speed, "p99_ms": p99}

    met = {
        "translate_sentences_per_s": 200.0,
        "levels": [level(1, 25.0, 90.0), level(8, 80.0, 170.0), level(64, 170.0, 700.0)],
    }
    assert goals("pytorch", met) == (
        "goals, pytorch: 64 vs 1 client 6.80x (>= 3x: yes); 64 clients vs translate 0.85x "
        "(>= 0.8x: yes); 8-client p99 / 1-client p99 1.89x (< 2x: yes)"
    )
    missed = {
        "translate_sentences_per_s": 240.0,
        "levels": [level(1, 60.0, 90.0), level(8, 80.0, 180.0), level(64, 170.0, 700.0)],
    }
    line = goals("pytorch", missed)
    assert "(>= 3x: no)" in line and "(>= 0.8x: no)" in line and "(< 2x: no)" in line
    assert (
        goals("pytorch", {"translate_sentences_per_s": 1.0, "levels": [level(1, 1.0, 1.0)]}) == ""
    )
