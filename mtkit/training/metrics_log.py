"""A run's metrics log: metrics.jsonl lines, mirrored to TensorBoard when it is installed."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

TENSORBOARD_HINT = "pip install 'mtkit[tensorboard]'"


class MetricsSink:
    """metrics.jsonl, plus TensorBoard event files when `tensorboard` is installed.

    Built with None on ranks other than 0: then it drops everything.
    """

    def __init__(self, run_dir: Path | None) -> None:
        self.run_dir = run_dir
        self.writer: Any = None
        if run_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:
                logger.info("TensorBoard is not installed, so metrics go to metrics.jsonl only; "
                            "for event files: %s", TENSORBOARD_HINT)  # fmt: skip

    def write(self, record: dict[str, Any]) -> None:
        if self.run_dir is None:
            return
        with (self.run_dir / "metrics.jsonl").open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if key not in ("kind", "step", "best") and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"{record['kind']}/{key}", value, record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
