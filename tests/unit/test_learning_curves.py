"""`mtkit plot`: learning curves from metrics.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mtkit.cli.main import app
from mtkit.training.curves import PlotError, read_curves


def write_metrics(run: Path) -> None:
    run.mkdir()
    records = [
        {"kind": "train", "step": 50, "loss": 6.0, "ppl": 148.4, "elapsed_s": 10.0},
        {"kind": "train", "step": 100, "loss": 5.0, "ppl": 54.6, "elapsed_s": 20.0},
        {"kind": "valid", "step": 100, "loss": 4.5, "bleu": 3.2, "elapsed_s": 21.0},
    ]
    text = "".join(json.dumps(r) + "\n" for r in records) + '{"kind": "tra'  # torn last line
    (run / "metrics.jsonl").write_text(text, encoding="utf-8")


def test_read_curves_skips_torn_line(tmp_path: Path) -> None:
    write_metrics(tmp_path / "run")
    curves = read_curves(tmp_path / "run" / "metrics.jsonl")
    assert curves.train_step == [50, 100]
    assert curves.valid_bleu == [3.2]


def test_plot_writes_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib (extra 'plot') is not installed")
    write_metrics(tmp_path / "run")
    out = tmp_path / "curves.png"
    result = CliRunner().invoke(app, ["plot", str(tmp_path / "run"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_never_puts_the_smoothed_objective_on_the_nll_axis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the CLI: every drawn axis's legend, read from the figure being saved."""
    pytest.importorskip("matplotlib", reason="matplotlib (extra 'plot') is not installed")
    from matplotlib.figure import Figure

    drawn: list[tuple[str, list[str]]] = []

    def record(fig: Figure, *args: object, **kwargs: object) -> None:
        for ax in fig.axes:
            legend = ax.get_legend()
            assert legend is not None, ax.get_ylabel()  # every panel says what it shows
            drawn.append((ax.get_ylabel(), [t.get_text() for t in legend.get_texts()]))

    monkeypatch.setattr(Figure, "savefig", record)
    write_metrics(tmp_path / "run")
    result = CliRunner().invoke(app, ["plot", str(tmp_path / "run"), "-o", str(tmp_path / "c.png")])
    assert result.exit_code == 0, result.output
    nll = [labels for ylabel, labels in drawn if ylabel == "NLL per token"]
    assert nll == [["train NLL (log ppl, dropout on)", "valid NLL"]] * 2  # vs updates, minutes
    for ylabel, labels in drawn:
        smoothed = any("smoothed" in label for label in labels)
        assert not smoothed or (labels == ["train label-smoothed CE"] and "objective" in ylabel)
    curves = read_curves(tmp_path / "run" / "metrics.jsonl")
    assert [round(v, 2) for v in curves.train_nll] == [5.0, 4.0]  # log(ppl)


def test_missing_metrics_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["plot", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.startswith("error:") and "no metrics file" in result.output
    with pytest.raises(PlotError):
        read_curves(tmp_path / "metrics.jsonl")
