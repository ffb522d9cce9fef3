"""`mtkit plot`: a run's learning curves as a PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mtkit.cli.app import app, handle_errors
from mtkit.cli.options import OverwriteOpt, output_guard


@app.command()
@handle_errors
def plot(
    run: Annotated[Path, typer.Argument(help="A run directory (reads its metrics.jsonl)")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="PNG file (default: RUN/curves.png)")
    ] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Plot learning curves to a PNG: training and validation NLL, the training objective
    (label-smoothed cross-entropy, a panel of its own) and validation BLEU, against updates and
    time.

    Example: mtkit plot runs/demo -o demo_curves.png
    """
    from mtkit.training.curves import plot_curves, read_curves

    metrics = run / "metrics.jsonl"
    out = output_guard([run], [metrics], overwrite).check(output or run / "curves.png")
    curves = read_curves(metrics)
    out = plot_curves(curves, out, title=f"mtkit run: {run}")
    typer.echo(f"wrote {out}")
