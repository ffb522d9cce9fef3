"""Learning-rate schedules are pure functions of the update number."""

from __future__ import annotations

import math

import pytest

from mtkit.training.schedule import SCHEDULES, learning_rate


def lr(step: int, schedule: str, floor: float = 0.0) -> float:
    return learning_rate(step, schedule=schedule, peak=1.0, warmup=10, total=110, floor=floor)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_linear_warmup_reaches_peak(schedule: str) -> None:
    assert lr(1, schedule) == pytest.approx(0.1)
    assert lr(5, schedule) == pytest.approx(0.5)
    assert lr(10, schedule) == pytest.approx(1.0)
    assert lr(0, schedule) == lr(1, schedule)  # step counts from 1


def test_inverse_sqrt_halves_at_four_times_warmup() -> None:
    assert lr(40, "inverse_sqrt") == pytest.approx(0.5)
    assert lr(10_000, "inverse_sqrt", floor=0.2) == pytest.approx(0.2)


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_decay_ends_at_floor_and_passes_midpoint(schedule: str) -> None:
    assert lr(110, schedule, floor=0.1) == pytest.approx(0.1)
    assert lr(500, schedule, floor=0.1) == pytest.approx(0.1)  # past max_steps: stays there
    assert lr(60, schedule, floor=0.1) == pytest.approx(0.55)  # halfway through the decay
    steps = [lr(s, schedule) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(steps, steps[1:], strict=False))


def test_cosine_shape_and_constant() -> None:
    assert lr(35, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lr(35, "linear") == pytest.approx(0.75)
    assert lr(1000, "constant") == 1.0


def test_no_warmup_starts_at_peak() -> None:
    for schedule in ("inverse_sqrt", "constant"):
        assert learning_rate(1, schedule=schedule, peak=2.0, warmup=0, total=10) == 2.0
    for schedule in ("cosine", "linear"):  # already one update into the decay
        assert 1.5 < learning_rate(1, schedule=schedule, peak=2.0, warmup=0, total=10) < 2.0


def test_unknown_schedule() -> None:
    with pytest.raises(ValueError, match="unknown schedule"):
        lr(20, "exponential")
