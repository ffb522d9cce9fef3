"""What a run directory says about itself: its config, metrics.jsonl, parent.json, why training
stopped (train.log), its checkpoints, and the statistics of the data it was prepared from."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtkit.config.load import load_config
from mtkit.config.schema import ConfigError, ExperimentConfig
from mtkit.errors import MtkitError


class ReportError(MtkitError):
    """A folder that is not a run directory, or an output a report must not replace."""


@dataclass
class RunInfo:
    """The parts of a run directory a report shows; each may be missing (None or empty)."""

    run_dir: Path
    config_text: str
    config: ExperimentConfig | None
    train: list[dict[str, Any]] = field(default_factory=list)  # metrics.jsonl kind=train
    valid: list[dict[str, Any]] = field(default_factory=list)  # metrics.jsonl kind=valid
    parent: dict[str, Any] | None = None
    stopped: str | None = None  # train.log's last "training stopped: ..." line
    checkpoints: list[str] = field(default_factory=list)
    stats: dict[str, Any] | None = None  # the prepared data's stats.json
    stats_path: Path | None = None  # where stats.json was looked for


def read_run(run_dir: Path) -> RunInfo:
    """Read everything a report needs from `run_dir`; only config.yaml is required."""
    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        raise ReportError(f"{run_dir}: not a run directory (no config.yaml)")
    text = config_file.read_text(encoding="utf-8")
    try:
        config: ExperimentConfig | None = load_config(config_file)
    except ConfigError:
        config = None  # a config this version cannot read: still shown as text
    info = RunInfo(run_dir, text, config)
    for record in read_metrics(run_dir / "metrics.jsonl"):
        if record.get("kind") == "train":
            info.train.append(record)
        elif record.get("kind") == "valid":
            info.valid.append(record)
    info.parent = _read_json(run_dir / "parent.json")
    info.stopped = _last_stop_line(run_dir / "train.log")
    info.checkpoints = sorted(p.name for p in run_dir.glob("*.pt"))
    if config is not None:
        info.stats_path = prepared_dir(config, run_dir) / "stats.json"
        info.stats = _read_json(info.stats_path)
    return info


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of metrics.jsonl (none if it is missing); a torn last line is skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a crash can leave a half-written last line
        if isinstance(record, dict):
            records.append(record)
    return records


def prepared_dir(config: ExperimentConfig, run_dir: Path) -> Path:
    """`data.prepared_dir` as given if it exists from here; else relative to the run's parent
    folder (where `train` usually ran), else as given."""
    path = Path(config.data.prepared_dir)
    if path.is_absolute() or path.exists():
        return path
    beside = run_dir.resolve().parent.parent / path
    return beside if beside.exists() else path


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


STOP_LINE = re.compile(r"training stopped: (.*)$")


def _last_stop_line(log: Path) -> str | None:
    """What the last 'training stopped: ...' line of train.log says (None: no such line)."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        match = STOP_LINE.search(line)
        if match:
            return match.group(1)
    return None
