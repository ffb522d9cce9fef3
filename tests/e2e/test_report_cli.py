"""`mtkit report RUN` through the CLI (issue #22 item 7): one self-contained Markdown or HTML file
with the config, data statistics, curves, scores with signatures, timings and parent run."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mtkit.cli.main import app


def run(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def records() -> list[dict[str, object]]:
    """metrics.jsonl of a 20-update run: train lines every 5, validation every 10."""
    out: list[dict[str, object]] = []
    for step in (5, 10, 15, 20):
        out.append({"kind": "train", "step": step, "epoch": 0, "loss": 9.0 - step / 10,
                    "tokens_per_s": 1000.0 + step, "elapsed_s": step * 2.0})  # fmt: skip
        if step % 10 == 0:
            out.append({"kind": "valid", "step": step, "loss": 8.0 - step / 10, "ppl": 9.9,
                        "bleu": step / 4, "chrf": step * 1.5, "elapsed_s": step * 2.0})  # fmt: skip
    return out


@pytest.fixture
def run_dir(tmp_path: Path, tiny_corpus: Path, make_config: Callable[..., Path]) -> Path:
    """A run directory as training leaves it (no checkpoints needed), its data prepared, a
    parent, a saved evaluation report and a hypothesis file of the test split."""
    config = make_config()
    code, _, err = run("prepare", config)
    assert code == 0, err
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(config, out / "config.yaml")
    lines = [json.dumps(r) for r in records()] + ['{"kind": "train", "st']  # a torn last line
    (out / "metrics.jsonl").write_text("\n".join(lines), encoding="utf-8")
    parent = {"path": "runs/base", "checkpoint": "/x/runs/base/best.pt", "sha256": "ab" * 32,
              "step": 4000}  # fmt: skip
    (out / "parent.json").write_text(json.dumps(parent), encoding="utf-8")
    (out / "train.log").write_text(
        "12:00:00 | INFO | training stopped: reached training.max_steps=20 after 20 steps "
        "in 40s; best bleu 5.000 at step 20\n",
        encoding="utf-8",
    )
    shutil.copy(tiny_corpus / "test.de", out / "test.hyp.de")  # the references: BLEU 100
    saved = {"scores": [{"name": "bleu", "score": 12.5, "signature": "nrefs:1|tok:13a|x",
                         "text": "BLEU = 12.50 40/20/10/5"}],
             "n_sentences": 30, "source_file": "data/test.en", "checkpoint": "run/best.pt",
             "decoding": {"beam_size": 5}}  # fmt: skip
    (out / "test_beam5.json").write_text(json.dumps(saved), encoding="utf-8")
    return out


def test_markdown_report_has_every_section(run_dir: Path) -> None:
    code, out, err = run("report", run_dir)
    assert code == 0, err
    report = run_dir / "report.md"
    assert out.strip() == f"wrote {report}"
    text = report.read_text(encoding="utf-8")
    for heading in ("Summary", "Scores", "Learning curves", "Timings", "Data", "Parent run",
                    "Configuration"):  # fmt: skip
        assert f"\n## {heading}\n" in text, heading
    assert "reached training.max\\_steps=20" in text  # why it stopped, from train.log
    assert "| validation (best, step 20) |" in text and "| 5.00 |" in text
    assert "tok:13a" in text  # every score has its signature
    assert (
        "| test\\_beam5.json | data/test.en, 30 sentences, best.pt, beam 5 | BLEU | 12.50" in text
    )
    assert "| test.hyp.de | test split, 30 sentences | BLEU | 100.00 |" in text
    assert "| tokens per second | 1,012 mean of 4 logged intervals (last 1,020) |" in text
    assert "| train | 300 |" in text  # the prepared data's stats.json
    assert "runs/base" in text and "ab" * 32 in text  # the parent run
    assert "```yaml\n" in text and "valid_bleu_sentences: 10" in text  # the config, verbatim


def test_html_report_is_one_self_contained_page(run_dir: Path) -> None:
    pytest.importorskip("matplotlib")
    code, _, err = run("report", run_dir, "--format", "html")
    assert code == 0, err
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert '<img alt="learning curves' in page and 'src="data:image/png;base64,' in page
    assert "http" not in page.replace("https://", "").split("<body>")[0]  # no linked assets
    assert "<td>test.hyp.de</td>" in page and "<h2>Configuration</h2>" in page


def test_without_matplotlib_the_curves_are_a_table(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mtkit.training.curves import PlotError

    def no_matplotlib(*args: object, **kwargs: object) -> Path:
        raise PlotError("plotting needs matplotlib")

    monkeypatch.setattr("mtkit.training.curves.plot_curves", no_matplotlib)
    code, _, err = run("report", run_dir)
    assert code == 0, err
    text = (run_dir / "report.md").read_text(encoding="utf-8")
    assert "data:image/png" not in text
    assert "| step | time | train loss | valid loss | valid BLEU | valid chrF |" in text
    assert "| 20 | 40s | 7.000 | 6.000 | 5.000 | 30.000 |" in text


def test_replaces_only_an_earlier_report(run_dir: Path, tmp_path: Path) -> None:
    assert run("report", run_dir)[0] == 0
    assert run("report", run_dir)[0] == 0  # an earlier report is replaced
    notes = tmp_path / "notes.md"
    notes.write_text("my notes\n", encoding="utf-8")
    code, _, err = run("report", run_dir, "-o", notes)
    assert code == 1 and "not an mtkit report" in err
    assert notes.read_text(encoding="utf-8") == "my notes\n"


def test_not_a_run_directory_and_a_bad_format(tmp_path: Path, run_dir: Path) -> None:
    code, _, err = run("report", tmp_path / "nothing")
    assert code == 1 and "not a run directory" in err
    code, _, err = run("report", run_dir, "--format", "pdf")
    assert code == 2 and "--format" in err


@pytest.mark.slow
def test_report_on_a_trained_run(tmp_path: Path, make_config: Callable[..., Path]) -> None:
    """A real tiny run: training's own metrics, and an evaluation saved as JSON in the run."""
    config = make_config()
    code, _, err = run("train", config, "--set", "training.max_steps=10")
    assert code == 0, err
    run_dir = tmp_path / "run"
    code, out, err = run("evaluate", run_dir, "--split", "test", "--json")
    assert code == 0, err
    (run_dir / "test.json").write_text(out, encoding="utf-8")
    code, _, err = run("report", run_dir)
    assert code == 0, err
    text = (run_dir / "report.md").read_text(encoding="utf-8")
    assert "| validation (best, step 10) |" in text
    (hyp,) = run_dir.glob("test.*hyp.de")  # evaluate names it by checkpoint and search options
    assert "| test.json |" in text and f"| {hyp.name} |" in text
    assert "best.pt" in text and "| training time |" in text
