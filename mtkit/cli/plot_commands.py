"""`mtkit plot`: a run's learning curves as a PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mtkit.cli.app import app, handle_errors


@app.command()
@handle_errors
def plot(
    run: Annotated[Path, typer.Argument(help="A run directory (reads its metrics.jsonl)")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="PNG file (default: RUN/curves.png)")
    ] = None,
) -> None:
    """Plot learning curves to a PNG: training and validation NLL, the training objective
    (label-smoothed cross-entropy, a panel of its own) and validation BLEU, against updates and
    time.

    Example: mtkit plot runs/demo -o demo_curves.png
    """
    from mtkit.training.curves import plot_curves, read_curves

    curves = read_curves(run / "metrics.jsonl")
    out = plot_curves(curves, output or run / "curves.png", title=f"mtkit run: {run}")
    typer.echo(f"wrote {out}")
