"""`mtkit prepare` and `mtkit tokenizer train/encode/decode`: data and tokenizers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mtkit.cli.app import Group, Typer, app, handle_errors, setup_logging
from mtkit.cli.options import ConfigArg, OverwriteOpt, ProgressOpt, SetOpt, output_guard
from mtkit.config.load import load_config
from mtkit.errors import plural

ModelArg = Annotated[Path, typer.Argument(help="A sentencepiece .model file")]
StreamOutputOpt = Annotated[
    Path | None, typer.Option("--output", "-o", help="Output file (default: stdout)")
]


@app.command()
@handle_errors
def prepare(
    config: ConfigArg,
    overrides: SetOpt = None,
    force: Annotated[
        bool, typer.Option(help="Rebuild even if the prepared data is current")
    ] = False,
    progress: ProgressOpt = None,
) -> None:
    """Train the sentencepiece model(s), clean and encode the corpus, save it to disk.

    Example: mtkit prepare configs/demo.yaml --set tokenizer.vocab_size=4000
    """
    cfg = load_config(config, overrides or [])
    setup_logging()
    from mtkit.data.prepare import prepare as run_prepare
    from mtkit.progress import Progress

    path = run_prepare(cfg, force=force, progress=Progress.on_stderr(progress))
    typer.echo(f"prepared data in {path}")


tokenizer_app = Typer(
    help="Train sentencepiece models and inspect how they segment text.",
    no_args_is_help=True,
    cls=Group,
)
app.add_typer(tokenizer_app, name="tokenizer")


@tokenizer_app.command("train")
@handle_errors
def tokenizer_train(
    config: ConfigArg,
    overrides: SetOpt = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Directory for the .model file(s)")
    ] = None,
    progress: ProgressOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Train the sentencepiece model(s) of a config on its (cleaned) training split.

    Example: mtkit tokenizer train configs/demo.yaml --set tokenizer.type=unigram -o spm/
    """
    cfg = load_config(config, overrides or [])
    setup_logging()
    from mtkit.data.prepare import build_tokenizers
    from mtkit.data.tokenizer import JOINT_FILE, SRC_FILE, TGT_FILE
    from mtkit.progress import Progress

    out = output or Path(cfg.data.prepared_dir) / "tokenizer"
    guard = output_guard([], [config], overwrite)
    for name in [JOINT_FILE] if cfg.tokenizer.joint else [SRC_FILE, TGT_FILE]:
        guard.check(out / name)
    pair = build_tokenizers(cfg, out, Progress.on_stderr(progress))
    names = ", ".join(sorted(pair.model_files()))
    typer.echo(f"wrote {names} to {out} (vocabulary {pair.src.vocab_size})")


@tokenizer_app.command("encode")
@handle_errors
def tokenizer_encode(
    model: ModelArg,
    input: Annotated[
        Path | None,
        typer.Option("--input", "-i", help="Text file, one sentence a line (default: stdin)"),
    ] = None,
    output: StreamOutputOpt = None,
    ids: Annotated[bool, typer.Option(help="Write token ids instead of pieces")] = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Segment text into sentencepiece pieces (or ids), one line per line.

    Examples:
      mtkit tokenizer encode prepared/demo/spm.model -i data/test.en -o test.pieces.en
      echo "How are you?" | mtkit tokenizer encode prepared/demo/spm.model
    """
    from mtkit.data.tokenizer import Tokenizer
    from mtkit.data.tokenizer_files import encode_lines
    from mtkit.translation.input_lines import stdin_lines
    from mtkit.translation.output import open_output

    _check_streams(model, input, output, overwrite)
    tokenizer = Tokenizer.load(model)
    with open_output(output) as out:
        n = encode_lines(
            tokenizer, input or stdin_lines(), out, as_ids=ids, batch_lines=_batch(input)
        )
    if output is not None:
        typer.echo(f"encoded {plural(n, 'line')} to {output}", err=True)


@tokenizer_app.command("decode")
@handle_errors
def tokenizer_decode(
    model: ModelArg,
    input: Annotated[
        Path | None,
        typer.Option("--input", "-i", help="Pieces or ids, one line each (default: stdin)"),
    ] = None,
    output: StreamOutputOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Turn pieces (or ids) back into text, one line per line.

    Examples:
      mtkit tokenizer decode prepared/demo/spm.model -i test.pieces.en -o test.txt
      mtkit tokenizer encode spm.model -i test.en | mtkit tokenizer decode spm.model
    """
    from mtkit.data.tokenizer import Tokenizer
    from mtkit.data.tokenizer_files import decode_lines
    from mtkit.translation.input_lines import stdin_lines
    from mtkit.translation.output import open_output

    _check_streams(model, input, output, overwrite)
    tokenizer = Tokenizer.load(model)
    with open_output(output) as out:
        n = decode_lines(tokenizer, input or stdin_lines(), out, batch_lines=_batch(input))
    if output is not None:
        typer.echo(f"decoded {plural(n, 'line')} to {output}", err=True)


def _check_streams(model: Path, input: Path | None, output: Path | None, overwrite: bool) -> None:
    """Before any work: stdin is there when it is read; -o replaces neither input nor model."""
    from mtkit.translation.input_lines import check_stdin

    if input is None:
        check_stdin("--input")
    if output is not None:
        output_guard([], [model, input], overwrite).check(output)


def _batch(input: Path | None) -> int:
    """Lines per batch: one at a time from a terminal (each answer as it is typed)."""
    from mtkit.translation.input_lines import stdin_is_terminal

    return 1 if input is None and stdin_is_terminal() else 10_000
