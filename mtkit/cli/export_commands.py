"""`mtkit export`: a trained model as a self-contained CTranslate2 folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mtkit.cli.app import app, handle_errors, setup_logging
from mtkit.cli.options import RunArg
from mtkit.config.schema import ConfigError
from mtkit.files import OutputError, owner_of


@app.command()
@handle_errors
def export(
    run: RunArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write")],
    format: Annotated[
        str, typer.Option("--format", "-f", help="Inference engine: ctranslate2")
    ] = "ctranslate2",
    quantization: Annotated[
        str | None,
        typer.Option(
            help="Weight type: float32 (default), int8, int8_float16, int16, float16, bfloat16, ..."
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", "--overwrite", help="Replace an earlier export in --output")
    ] = False,
) -> None:
    """Export a trained model to a self-contained CTranslate2 folder (needs `ctranslate2`).

    `mtkit translate` and `mtkit evaluate` run such a folder through CTranslate2.

    Examples:
      mtkit export runs/demo --format ctranslate2 -o exported/
      mtkit export runs/demo --quantization int8 -o exported-int8/
      mtkit translate exported/ -i data/test.en -o hyp.de --beam 5
    """
    setup_logging()
    if format != "ctranslate2":
        raise ConfigError(f"--format: expected ctranslate2, got '{format}'")
    owner = owner_of(output, [run] if run.is_dir() else [])
    if owner is not None or output.is_file():
        what = f"a file of the {owner[0]} in {owner[1]}" if owner else "a file"
        raise OutputError(f"{output}: --output is {what}; expected a new or empty folder")
    from mtkit.export.ctranslate2 import export_ctranslate2

    path = export_ctranslate2(run, output, quantization=quantization, force=force)
    typer.echo(f"exported to {path}; translate with: mtkit translate {path} -i SOURCE")
