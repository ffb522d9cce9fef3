"""`mtkit report`: one self-contained Markdown or HTML file about a run."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from mtkit.cli.app import app, handle_errors, setup_logging
from mtkit.config.schema import ConfigError

logger = logging.getLogger(__name__)

ReportRunArg = Annotated[Path, typer.Argument(help="A run directory")]
ReportOutputOpt = Annotated[
    Path | None,
    typer.Option("--output", "-o", help="File to write (default: RUN/report.md or .html)"),
]
ReportFormatOpt = Annotated[
    str,
    typer.Option("--format", "-f", help="markdown, or html (one page with its images inside)"),
]


@app.command()
@handle_errors
def report(
    run: ReportRunArg, output: ReportOutputOpt = None, format: ReportFormatOpt = "markdown"
) -> None:
    """Write one file about a run: config, data statistics, learning curves, BLEU with
    sacreBLEU signatures, timings and parent run, to paste into a paper or a ticket.

    Scores: validation BLEU from metrics.jsonl, `mtkit evaluate --json` reports saved in the
    run directory, and the hypothesis files there, scored again. An earlier report is
    replaced; any other existing file is not.

    Examples:
      mtkit report runs/demo
      mtkit evaluate runs/demo --split test --json > runs/demo/test.json; mtkit report runs/demo
      mtkit report runs/demo --format html -o demo.html
    """
    setup_logging()
    from mtkit.reporting.report import FORMATS, write_report

    if format not in FORMATS:
        raise ConfigError(f"--format: expected markdown or html, got '{format}'")
    out = write_report(run, output, format, _curves_png(run))
    typer.echo(f"wrote {out}")


def _curves_png(run: Path) -> bytes | None:
    """`mtkit plot`'s figure as PNG bytes; None without metrics or matplotlib (the report
    then has the table only)."""
    from mtkit.training.curves import PlotError, plot_curves, read_curves

    try:
        curves = read_curves(run / "metrics.jsonl")
        with tempfile.TemporaryDirectory() as tmp:
            png = plot_curves(curves, Path(tmp) / "curves.png", title=f"mtkit run: {run.name}")
            return png.read_bytes()
    except PlotError as e:
        logger.info("learning curves as a table only: %s", e)
        return None
