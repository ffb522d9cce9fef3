"""Learning curves from a run's metrics.jsonl: losses and BLEU against updates and wall time.

Only like is drawn with like: training and validation NLL per token share a panel (the train
NLL is log(ppl) of the progress records, measured with dropout on); the label-smoothed
cross-entropy that training minimises has a panel of its own, as it is not comparable with NLL.
"""

from __future__ import annotations

import json
import math
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
    train_loss: list[float] = field(default_factory=list)  # label-smoothed CE (the objective)
    train_nll: list[float] = field(default_factory=list)  # log(ppl); NaN where a record has none
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
            ppl = record.get("ppl")
            curves.train_nll.append(math.log(ppl) if isinstance(ppl, int | float) else math.nan)
        elif record.get("kind") == "valid":
            curves.valid_step.append(int(record["step"]))
            curves.valid_time.append(float(record.get("elapsed_s", 0.0)))
            curves.valid_loss.append(float(record["loss"]))
            curves.valid_bleu.append(float(record.get("bleu", 0.0)))
    if not curves.train_step and not curves.valid_step:
        raise PlotError(f"{metrics_file}: no training or validation records yet")
    return curves


@dataclass
class Series:
    """One line of a panel: its legend label, x against updates and minutes, y, style."""

    label: str
    steps: list[int]
    minutes: list[float]
    y: list[float]
    style: str = "-"


def panels(c: Curves) -> list[tuple[str, list[Series]]]:
    """(y-axis label, series) per row: NLL (train and valid), the training objective, BLEU."""
    train_min, valid_min = [t / 60 for t in c.train_time], [t / 60 for t in c.valid_time]
    nll = [Series("valid NLL", c.valid_step, valid_min, c.valid_loss, "o-")]
    if any(not math.isnan(v) for v in c.train_nll):
        train = Series("train NLL (log ppl, dropout on)", c.train_step, train_min, c.train_nll)
        nll.insert(0, train)
    objective = Series("train label-smoothed CE", c.train_step, train_min, c.train_loss)
    bleu = Series("valid BLEU (greedy)", c.valid_step, valid_min, c.valid_bleu, "o-")
    return [
        ("NLL per token", nll),
        ("training objective\n(label-smoothed CE)", [objective]),
        ("valid BLEU (greedy)", [bleu]),
    ]


def plot_curves(curves: Curves, out: Path, title: str) -> Path:
    """Render `panels` (rows) against updates and against minutes (columns) to a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotError(
            "plotting needs matplotlib: pip install 'mtkit[plot]' (or pip install matplotlib)"
        ) from None
    rows = panels(curves)
    fig, axes = plt.subplots(len(rows), 2, figsize=(11, 3.2 * len(rows)), constrained_layout=True)
    for row, (ylabel, series) in zip(axes, rows, strict=True):
        for ax, xlabel in zip(row, ("updates", "minutes"), strict=True):
            for i, line in enumerate(series):
                x = line.steps if xlabel == "updates" else line.minutes
                ax.plot(x, line.y, line.style, label=line.label, color=f"C{i}", lw=1, ms=3)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.legend()
            ax.grid(alpha=0.3)
    fig.suptitle(title)
    with atomic_writer(out, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return out
