"""Word dropout, R-Drop, subword sampling and tokenized BLEU in real (tiny) runs; average on val."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from mtkit.checkpoint import load_checkpoint
from mtkit.cli.main import app
from mtkit.config.load import load_config
from mtkit.evaluation.metrics import corpus_scores
from mtkit.training import validation as validation_mod
from mtkit.training.loop import train

pytestmark = pytest.mark.slow


def regularized(**training: object) -> dict[str, dict[str, object]]:
    """Config sections with dropout, word dropout, R-Drop, subword sampling, tokenized BLEU."""
    return {
        "model": {"dropout": 0.1, "word_dropout": 0.1},
        "tokenizer": {"vocab_size": 200, "sampling_alpha": 0.1},
        "training": {"rdrop_alpha": 1.0, "max_tokens": 600, "valid_bleu_sentences": 5, **training},
        "evaluation": {"tokenize": "none"},
    }


def test_regularized_training_through_the_cli_and_average_chosen_on_valid(
    tmp_path: Path, make_config: Callable[..., Path]
) -> None:
    config = make_config(**regularized())
    runner = CliRunner()
    steps = ["training.max_steps=6", "training.save_every=2", "training.valid_every=6"]
    result = runner.invoke(app, ["train", str(config), *(a for s in steps for a in ("--set", s))])
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    log = (run / "train.log").read_text(encoding="utf-8")
    assert "sacreBLEU tok:none" in log and "R-Drop alpha 1" in log
    assert "regularisation: dropout 0.1, word dropout 0.1, R-Drop" in log
    assert "subword sampling alpha 0.1" in log
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records)

    chosen = tmp_path / "chosen.pt"
    result = runner.invoke(app, ["average", str(run), "--last", "1", "--last", "3",
                                 "--select-on", "valid", "-o", str(chosen)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "signature: nrefs:1|case:mixed|eff:no|tok:none" in result.output
    for n in (1, 3):
        assert (run / f"average_last{n}.pt").is_file()
        assert (run / f"average_last{n}.valid.hyp").is_file()
    best = result.output.strip().splitlines()[-1]
    assert best.startswith("best on valid: ") and str(chosen) in best
    assert load_checkpoint(chosen)["averaged_from"][-1] == "step_000006.pt"
    result = runner.invoke(app, ["average", str(run), "--last", "1", "--select-on", "test"])
    assert result.exit_code == 1 and "--select-on: expected valid" in result.output


def test_validation_bleu_uses_the_configured_tokenizer(
    tmp_path: Path, make_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs["tokenize"])
        return corpus_scores(*args, **kwargs)

    monkeypatch.setattr(validation_mod, "corpus_scores", spy)
    config = make_config(**regularized(max_steps=2, valid_every=2))
    train(load_config(config))
    assert seen == ["none"]


def test_resumed_run_with_sampling_and_rdrop_equals_uninterrupted(
    tmp_path: Path, make_config: Callable[..., Path]
) -> None:
    """Batches re-segmented from their position, and R-Drop's doubled batch, resume exactly."""
    settings = {"valid_every": 3, "log_every": 3, "accumulate": 2, "max_steps": 6}
    full_cfg = make_config(**regularized(**settings))
    full = train(load_config(full_cfg, [f"run_dir={tmp_path / 'full'}"]))
    part_cfg = load_config(full_cfg, [f"run_dir={tmp_path / 'part'}", "training.max_steps=3"])
    part = train(part_cfg)
    train(load_config(full_cfg, [f"run_dir={part}"]), resume=True)
    a, b = load_checkpoint(full / "last.pt")["model"], load_checkpoint(part / "last.pt")["model"]
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)
