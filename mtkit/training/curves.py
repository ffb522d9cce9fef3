"""Learning curves from a run's metrics.jsonl: loss and BLEU against updates and wall time."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtkit.errors import MtkitError
from mtkit.files import atomic_writer


class PlotError(MtkitError):
    """The metrics file is missing or unusable, or matplotlib is not installed."""


@dataclass
class Curves:
    """Series read from metrics.jsonl, one list per quantity."""

    train_step: list[int] = field(default_factory=list)
    train_time: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    valid_step: list[int] = field(default_factory=list)
    valid_time: list[float] = field(default_factory=list)
    valid_loss: list[float] = field(default_factory=list)
    valid_bleu: list[float] = field(default_factory=list)


def read_curves(metrics_file: Path) -> Curves:
    """Parse the JSON lines a training run appends; a torn last line is skipped."""
    if not metrics_file.is_file():
        raise PlotError(f"{metrics_file}: no metrics file (is this a run directory?)")
    curves = Curves()
    for line in metrics_file.read_text(encoding="utf-8").splitlines():
        try:
            record: dict[str, Any] = json.loads(line)
        except json.JSONDecodeError:
            continue  # a crash can leave a half-written last line
        if record.get("kind") == "train":
            curves.train_step.append(int(record["step"]))
            curves.train_time.append(float(record.get("elapsed_s", 0.0)))
            curves.train_loss.append(float(record["loss"]))
        elif record.get("kind") == "valid":
            curves.valid_step.append(int(record["step"]))
            curves.valid_time.append(float(record.get("elapsed_s", 0.0)))
            curves.valid_loss.append(float(record["loss"]))
            curves.valid_bleu.append(float(record.get("bleu", 0.0)))
    if not curves.train_step and not curves.valid_step:
        raise PlotError(f"{metrics_file}: no training or validation records yet")
    return curves


def plot_curves(curves: Curves, out: Path, title: str) -> Path:
    """Render a 2×2 grid (loss and BLEU, against updates and against minutes) to a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotError(
            "plotting needs matplotlib: pip install 'mtkit[plot]' (or pip install matplotlib)"
        ) from None
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), constrained_layout=True)
    for col, (train_x, valid_x, label) in enumerate(
        [
            (curves.train_step, curves.valid_step, "updates"),
            ([t / 60 for t in curves.train_time], [t / 60 for t in curves.valid_time], "minutes"),
        ]
    ):
        loss_ax, bleu_ax = axes[0][col], axes[1][col]
        loss_ax.plot(train_x, curves.train_loss, label="train loss (smoothed CE)", lw=1)
        loss_ax.plot(valid_x, curves.valid_loss, "o-", label="valid loss (NLL)", ms=3)
        loss_ax.set_xlabel(label)
        loss_ax.set_ylabel("loss per token")
        loss_ax.legend()
        loss_ax.grid(alpha=0.3)
        bleu_ax.plot(valid_x, curves.valid_bleu, "o-", color="C2", ms=3)
        bleu_ax.set_xlabel(label)
        bleu_ax.set_ylabel("valid BLEU (greedy)")
        bleu_ax.grid(alpha=0.3)
    fig.suptitle(title)
    with atomic_writer(out, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return out
