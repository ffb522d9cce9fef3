"""benchmarks/bench_serve.py's mean batch per load level, from the server's counters."""

from __future__ import annotations

import pytest

from benchmarks.bench_serve import ENGINES, mean_batch


def test_mean_batch_of_rounds_of_searches_and_of_a_level_that_switched() -> None:
    start = (100, 10, 0, 0.0)  # sentences, batches, search steps, sentences in those steps
    assert mean_batch(start, (160, 14, 0, 0.0)) == 15.0  # rounds: 60 sentences in 4 batches
    # a level that ran a search (auto under load): sentences per step, whatever rounds ran too
    assert mean_batch(start, (300, 12, 50, 1600.0)) == pytest.approx(32.0)
    later = (300, 12, 50, 1600.0)
    assert mean_batch(later, (310, 15, 50, 1600.0)) == pytest.approx(10 / 3)


def test_every_batching_mode_has_an_engine_name() -> None:
    for mode in ("rounds", "continuous", "auto"):
        assert ENGINES[f"pytorch-{mode}"] == ["--batching", mode]
