"""`mtkit export`: a trained model as a self-contained CTranslate2 or Hugging Face folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mtkit.cli.app import app, handle_errors, setup_logging
from mtkit.cli.options import ProgressOpt, RunArg
from mtkit.config.schema import ConfigError
from mtkit.files import OutputError, owner_of

FORMATS = ("ctranslate2", "huggingface")

FormatOpt = Annotated[
    str, typer.Option("--format", "-f", help="ctranslate2 or huggingface (Transformers)")
]
QuantizationOpt = Annotated[
    str | None,
    typer.Option(
        help="CTranslate2 weight type: float32 (default), int8, int8_float16, int16, float16, "
        "bfloat16, ..."
    ),
]
ForceOpt = Annotated[
    bool,
    typer.Option(
        "--force/--no-force",
        "--overwrite/--no-overwrite",
        help="Replace an earlier export in --output",
    ),
]


@app.command()
@handle_errors
def export(
    run: RunArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write")],
    format: FormatOpt = "ctranslate2",
    quantization: QuantizationOpt = None,
    force: ForceOpt = False,
    progress: ProgressOpt = None,
) -> None:
    """Export a trained model to a self-contained CTranslate2 or Hugging Face folder.

    `mtkit translate` and `mtkit evaluate` run a CTranslate2 folder (needs `ctranslate2`); a
    huggingface folder loads with Transformers' `from_pretrained` (needs `transformers`).

    Examples:
      mtkit export runs/demo --format ctranslate2 -o exported/
      mtkit export runs/demo --quantization int8 -o exported-int8/
      mtkit translate exported/ -i data/test.en -o hyp.de --beam 5
      mtkit export runs/demo --format huggingface -o exported-hf/
    """
    setup_logging()
    if format not in FORMATS:
        raise ConfigError(f"--format: expected one of {', '.join(FORMATS)}, got '{format}'")
    owner = owner_of(output, [run] if run.is_dir() else [])
    if owner is not None:
        raise OutputError(
            f"{output}: --output is a file of the {owner[0]} in {owner[1]}; expected a new or "
            "empty folder"
        )
    if format == "huggingface":
        _export_huggingface(run, output, quantization, force)
        return
    from mtkit.export.ctranslate2 import export_ctranslate2
    from mtkit.progress import Progress

    path = export_ctranslate2(
        run, output, quantization=quantization, force=force, progress=Progress.on_stderr(progress)
    )
    typer.echo(f"exported to {path}; translate with: mtkit translate {path} -i SOURCE")


def _export_huggingface(run: Path, output: Path, quantization: str | None, force: bool) -> None:
    """`mtkit export --format huggingface`: float32 weights; --overwrite replaces an export."""
    if quantization is not None:
        raise ConfigError("--quantization applies to --format ctranslate2 only")
    from mtkit.export.huggingface import export_huggingface

    path = export_huggingface(run, output, overwrite=force)
    typer.echo(f"exported to {path}; load with: AutoModelForSeq2SeqLM.from_pretrained('{path}')")
