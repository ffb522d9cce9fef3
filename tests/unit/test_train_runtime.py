"""Training plumbing: signals, RNG isolation, metrics sinks, precision, best-score rule, ETA."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch

from mtkit.config.load import config_from_dict
from mtkit.data.batching import collate_columns
from mtkit.runtime import RuntimeConfigError, preserved_rng
from mtkit.training.interrupt import Interrupt
from mtkit.training.loop import train
from mtkit.training.metrics_log import MetricsSink
from mtkit.training.progress import Clock
from mtkit.training.update import update
from mtkit.training.validation import is_improvement
from tests.unit.test_train_step import random_pairs, stepper, tiny_model


def test_sigterm_and_sigint_request_a_stop_then_handlers_are_restored() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with Interrupt().installed() as interrupt:
        assert not interrupt.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert interrupt.signal_name == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C gives up at once
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is before


def test_preserved_rng_leaves_the_training_stream_alone() -> None:
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    with preserved_rng():
        torch.rand(100)  # e.g. sampling during validation
        torch.nn.functional.dropout(torch.ones(50), 0.5)
    torch.testing.assert_close(torch.rand(3), expected)


def test_metrics_jsonl_and_tensorboard_when_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scalars: list[tuple[str, float, int]] = []

    class FakeWriter:
        def __init__(self, logdir: str) -> None:
            self.logdir = logdir

        def add_scalar(self, tag: str, value: float, step: int) -> None:
            scalars.append((tag, value, step))

        def close(self) -> None:
            pass

    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = FakeWriter  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    sink = MetricsSink(tmp_path)
    sink.write({"kind": "train", "step": 5, "loss": 2.5, "best": True})
    sink.close()
    assert scalars == [("train/loss", 2.5, 5)]
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {
        "kind": "train", "step": 5, "loss": 2.5, "best": True
    }  # fmt: skip


def test_metrics_without_tensorboard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with caplog.at_level(logging.INFO):
        sink = MetricsSink(tmp_path)
        sink.write({"kind": "valid", "step": 1, "bleu": 3.0})
        sink.close()
        MetricsSink(None).write({"kind": "train", "step": 1})  # ranks > 0: writes nothing
    assert sink.writer is None and (tmp_path / "metrics.jsonl").is_file()
    hints = [r.getMessage() for r in caplog.records if "tensorboard" in r.getMessage().lower()]
    assert hints == [
        "TensorBoard is not installed, so metrics go to metrics.jsonl only; for event files: "
        "pip install 'mtkit[tensorboard]'"
    ]


def test_bfloat16_update_on_cpu() -> None:
    model = tiny_model()
    before = [p.detach().clone() for p in model.parameters()]
    src, tgt = random_pairs(2, seed=5)
    result = update(stepper(model, precision="bfloat16"), [collate_columns(src, tgt)], lr=0.1,
                    stop_requested=lambda: False)  # fmt: skip
    assert result.bad.item() == 0.0 and math.isfinite(result.loss.item())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_float16_on_cpu_is_a_clear_error(tmp_path: Path) -> None:
    cfg = config_from_dict({
        "run_dir": str(tmp_path / "run"), "training": {"device": "cpu", "precision": "float16"},
    })  # fmt: skip
    with pytest.raises(RuntimeConfigError, match="float16 needs a CUDA device"):
        train(cfg)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("metric", "value", "best", "expected"),
    [
        ("loss", 2.0, 3.0, True), ("loss", 3.0, 2.0, False), ("bleu", 3.0, 2.0, True),
        ("chrf", 2.0, 2.0, False), ("bleu", math.nan, None, False), ("loss", math.inf, 1.0, False),
        ("bleu", 0.0, None, True),
    ],
)  # fmt: skip
def test_is_improvement(metric: str, value: float, best: float | None, expected: Any) -> None:
    assert is_improvement(metric, value, best) is expected


def test_eta_uses_the_rate_of_this_process_not_steps_it_did_not_time() -> None:
    # A `--keep-schedule` child starts at its parent's step 1,500 with no elapsed time: after 100
    # updates in 86 s, 6,400 remain at 0.86 s each (not 6,400 x 86 / 1,600).
    child = Clock(start=1000.0, began=1000.0, first_step=1500)
    assert child.remaining(now=1086.0, step=1600, max_steps=8000) == pytest.approx(6400 * 0.86)
    # A resumed run (an hour of training before, step 4,000) at 2 s an update since.
    resumed = Clock.begin(elapsed=3600.0, step=4000)
    assert resumed.began - resumed.start == pytest.approx(3600.0)
    now = resumed.began + 200.0
    assert resumed.remaining(now=now, step=4100, max_steps=5000) == pytest.approx(900 * 2.0)
    fresh = Clock(start=0.0, began=0.0, first_step=0)
    assert fresh.remaining(now=10.0, step=10, max_steps=110) == pytest.approx(100.0)
