"""Training in-process on tiny data: resume equality, best/keep-last/patience, NaN, averaging."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from mtkit.checkpoint import load_checkpoint
from mtkit.config.load import load_config
from mtkit.data.prepare import prepare
from mtkit.training import update as update_mod
from mtkit.training import validation as validation_mod
from mtkit.training.average import average_run
from mtkit.training.loop import TrainingDiverged, train
from mtkit.translation.translator import Translator
from tests.conftest import DATA, copy_head, write_tiny_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny corpus prepared once for the whole module."""
    root = tmp_path_factory.mktemp("shared")
    data = root / "data"
    data.mkdir()
    for lang in ("en", "de"):
        copy_head(DATA / f"train.{lang}", data / f"train.{lang}", 200)
        copy_head(DATA / f"valid.{lang}", data / f"valid.{lang}", 20)
    config = write_tiny_config(root, data, data={"test": None})
    prepare(load_config(config))
    return root


@pytest.fixture
def config_for(shared: Path, tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """config_for(name, **training) → a config whose run dir is tmp_path/name."""

    def make(name: str, model: dict[str, object] | None = None, **training: object) -> Path:
        root = tmp_path / name
        root.mkdir()
        path = write_tiny_config(
            root, shared / "data",
            data={"test": None, "prepared_dir": str(shared / "prepared")},
            model={"dropout": 0.1, "attention_dropout": 0.1, **(model or {})},
            training={"max_tokens": 600, "valid_bleu_sentences": 5, **training},
        )  # fmt: skip
        return path

    yield make


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]  # type: ignore[no-any-return]


def test_stopped_and_resumed_run_equals_uninterrupted(config_for: Callable[..., Path]) -> None:
    """Dropout on, 2 accumulated batches per update, a run crossing an epoch boundary."""
    settings: dict[str, Any] = {"accumulate": 2, "valid_every": 4, "log_every": 3}
    full = train(load_config(config_for("full", max_steps=12, **settings)))
    # The same run stopped at step 7 (its final validation + checkpoint), then resumed to 12.
    part_cfg = config_for("part", max_steps=7, **settings)
    part = train(load_config(part_cfg))
    assert load_checkpoint(part / "last.pt")["train_state"]["step"] == 7
    resumed = train(load_config(part_cfg, ["training.max_steps=12"]), resume=True)
    assert resumed == part
    state = load_checkpoint(part / "last.pt")
    assert state["train_state"]["step"] == 12 and state["train_state"]["epoch"] >= 1
    a, b = weights(full / "last.pt"), weights(part / "last.pt")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)
    opt_a = load_checkpoint(full / "last.pt")["optimizer"]["state"]
    opt_b = state["optimizer"]["state"]
    torch.testing.assert_close(opt_a[0]["exp_avg"], opt_b[0]["exp_avg"], rtol=1e-5, atol=1e-7)


def test_run_dir_resume_through_cli(config_for: Callable[..., Path]) -> None:
    """`mtkit train RUN_DIR --resume` reads RUN_DIR/config.yaml and continues."""
    from typer.testing import CliRunner

    from mtkit.cli.main import app

    run = train(load_config(config_for("cli", max_steps=4, valid_every=4)))
    moved = run.parent / "moved"
    shutil.copytree(run, moved)  # a run directory works wherever it is
    result = CliRunner().invoke(
        app, ["train", str(moved), "--resume", "--set", "training.max_steps=6"]
    )
    assert result.exit_code == 0, result.output
    assert load_checkpoint(moved / "last.pt")["train_state"]["step"] == 6
    assert load_checkpoint(run / "last.pt")["train_state"]["step"] == 4  # original untouched


def scripted(monkeypatch: pytest.MonkeyPatch, metric: str, values: list[float]) -> None:
    """Make validation report `values` (one per validation) for `metric`."""
    it = iter(values)

    def fake_loss(*args: Any) -> tuple[float, float]:
        return (next(it), 1.0) if metric == "loss" else (1.0, 1.0)

    def fake_scores(run: Any) -> tuple[dict[str, float], list[Any]]:
        score = next(it) if metric != "loss" else 0.0
        return {"bleu": score, "chrf": score}, []

    monkeypatch.setattr(validation_mod, "validation_loss", fake_loss)
    monkeypatch.setattr(validation_mod, "validation_scores", fake_scores)


@pytest.mark.parametrize(
    ("metric", "values", "best_step"),
    [("loss", [5.0, 4.0, 4.5, 3.0, 3.5, 3.6, 1.0], 8), ("bleu", [1.0, 3.0, 2.0, 9.0, 8.0, 8.5], 8)],
)
def test_best_checkpoint_keep_last_and_early_stopping(
    config_for: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    metric: str,
    values: list[float],
    best_step: int,
) -> None:
    scripted(monkeypatch, metric, values)
    cfg = config_for(metric, max_steps=100, valid_every=2, patience=2, keep_last=2,
                     best_metric=metric, log_every=50)  # fmt: skip
    run = train(load_config(cfg))
    last = load_checkpoint(run / "last.pt")["train_state"]
    assert last["step"] == best_step + 4  # two validations without improvement, then stop
    best = load_checkpoint(run / "best.pt")["train_state"]
    assert best["step"] == best_step and best["best_step"] == best_step
    assert sorted(p.name for p in run.glob("*.pt")) == [
        "best.pt", "last.pt", f"step_{best_step + 2:06d}.pt", f"step_{best_step + 4:06d}.pt"
    ]  # fmt: skip
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "valid" and r["best"]][-1] == best_step


def test_nan_validation_is_never_best(
    config_for: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    scripted(monkeypatch, "loss", [math.nan, 2.0, math.inf, math.nan])
    run = train(load_config(config_for("nanval", max_steps=8, valid_every=2,
                                       best_metric="loss")))  # fmt: skip
    assert load_checkpoint(run / "best.pt")["train_state"]["step"] == 4


def poison_training_loss(monkeypatch: pytest.MonkeyPatch, bad_updates: set[int]) -> None:
    """NaN loss on the given (1-based) training updates; validation (smoothing 0) untouched."""
    real = update_mod.compute_loss
    calls = {"n": 0}

    def compute_loss(states: torch.Tensor, weight: torch.Tensor, target: torch.Tensor,
                     smoothing: float, precision: str) -> Any:  # fmt: skip
        loss, nll = real(states, weight, target, smoothing, precision)
        if smoothing > 0:
            calls["n"] += 1
            if calls["n"] in bad_updates:
                return loss * math.nan, nll
        return loss, nll

    monkeypatch.setattr(update_mod, "compute_loss", compute_loss)


def test_nan_steps_are_skipped_and_counted(
    config_for: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    poison_training_loss(monkeypatch, {3, 4})
    run = train(load_config(config_for("nan", max_steps=8, valid_every=8, max_bad_steps=3)))
    state = load_checkpoint(run / "last.pt")
    assert state["train_state"]["step"] == 8 and state["train_state"]["bad_steps"] == 2
    assert all(torch.isfinite(t).all() for t in state["model"].values())


def test_too_many_nan_steps_stop_training(
    config_for: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    poison_training_loss(monkeypatch, set(range(3, 100)))
    cfg = config_for("diverge", max_steps=50, valid_every=2, max_bad_steps=3)
    with pytest.raises(TrainingDiverged, match=r"steps 3-5"):
        train(load_config(cfg))
    run = cfg.parent / "run"
    assert load_checkpoint(run / "last.pt")["train_state"]["step"] == 5
    best = load_checkpoint(run / "best.pt")
    assert best["train_state"]["step"] == 2  # validated before the NaNs began
    assert all(torch.isfinite(t).all() for t in best["model"].values())
    assert not (run / "train.lock").exists()


def test_average_last_checkpoints_translates(config_for: Callable[..., Path]) -> None:
    run = train(load_config(config_for("avg", max_steps=6, save_every=2, valid_every=6,
                                       keep_last=3)))  # fmt: skip
    out = average_run(run, 2)
    averaged = weights(out)
    a, b = weights(run / "step_000004.pt"), weights(run / "step_000006.pt")
    for name in averaged:
        torch.testing.assert_close(averaged[name], (a[name] + b[name]) / 2)
    translator = Translator.load(out)
    hyp = translator.translate(["How are you?"], replace(translator.config.decoding, beam_size=1))
    assert isinstance(hyp[0], str)


def test_average_command(config_for: Callable[..., Path]) -> None:
    from typer.testing import CliRunner

    from mtkit.cli.main import app

    run = train(load_config(config_for("avgcli", max_steps=4, save_every=2, valid_every=4)))
    result = CliRunner().invoke(app, ["average", str(run), "--last", "2", "-o", str(run / "a.pt")])
    assert result.exit_code == 0, result.output
    assert load_checkpoint(run / "a.pt")["averaged_from"] == ["step_000002.pt", "step_000004.pt"]
    result = CliRunner().invoke(app, ["average", str(run), "--last", "9"])
    assert result.exit_code == 1 and "only 2 step_*.pt" in result.output


def test_disk_full_during_training_is_one_error_line(
    config_for: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second checkpoint hits ENOSPC: exit 1, one line, step 2 intact, no temp files."""
    import errno
    import os

    from typer.testing import CliRunner

    from mtkit import files
    from mtkit.cli.main import app

    real = files.write_payload
    writes = []

    def write(f: Any, data: bytes, path: Path) -> None:
        writes.append(path.suffix == ".pt")
        if writes[-1] and writes.count(True) == 2:
            f.write(data[:1000])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(f, data, path)

    monkeypatch.setattr(files, "write_payload", write)
    cfg = config_for("full_disk", max_steps=6, save_every=2, valid_every=6)
    result = CliRunner().invoke(app, ["train", str(cfg)])
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0], result.output
    assert "Traceback" not in result.output
    run = cfg.parent / "run"
    assert load_checkpoint(run / "last.pt")["train_state"]["step"] == 2
    assert not list(run.glob(".*tmp")) and not (run / "train.lock").exists()


def test_max_epochs_and_max_time_stop_training(
    config_for: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    from mtkit.data.batching import TokenBatchSampler, lengths, load_prepared

    caplog.set_level("INFO", logger="mtkit.training.loop")
    cfg = load_config(config_for("epochs", max_steps=10_000, max_epochs=1, valid_every=10_000))
    train_split = load_prepared(Path(cfg.data.prepared_dir))["train"]
    per_epoch = len(TokenBatchSampler(*lengths(train_split), cfg.training.max_tokens))
    run = train(cfg)
    assert load_checkpoint(run / "last.pt")["train_state"]["step"] == per_epoch
    assert "reached training.max_epochs=1" in caplog.text

    caplog.clear()
    run = train(load_config(config_for("time", max_steps=10_000, max_time=1e-6)))
    assert load_checkpoint(run / "last.pt")["train_state"]["step"] < 10_000
    assert "reached training.max_time=" in caplog.text
