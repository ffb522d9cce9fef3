"""Learning-rate schedules: pure functions of the update number, so a resumed run needs no state.

Every schedule has two phases:
1) linear warm-up from 0 to `peak` over `warmup` updates;
2) the decay the schedule is named after, never below `floor`.
`step` counts updates from 1 (the first update uses lr(1)).
"""

from __future__ import annotations

import math

SCHEDULES = ("inverse_sqrt", "cosine", "linear", "constant")


def learning_rate(
    step: int,
    *,
    schedule: str,
    peak: float,
    warmup: int,
    total: int,
    floor: float = 0.0,
) -> float:
    """The learning rate of update `step` (1-based) of a run of `total` updates."""
    step = max(step, 1)
    # 1) linear warm-up
    if step <= warmup:
        return peak * step / warmup
    # 2) decay
    if schedule == "constant":
        return peak
    if schedule == "inverse_sqrt":
        return max(floor, peak * math.sqrt(max(warmup, 1) / step))
    progress = min(1.0, (step - warmup) / max(total - warmup, 1))  # 0 → 1 over the decay
    if schedule == "cosine":
        return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "linear":
        return floor + (peak - floor) * (1.0 - progress)
    raise ValueError(f"unknown schedule '{schedule}' (expected one of {', '.join(SCHEDULES)})")
