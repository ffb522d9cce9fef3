"""`mtkit prepare` and `mtkit tokenizer train/encode/decode`: data and tokenizers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mtkit.cli.app import app, handle_errors, setup_logging
from mtkit.cli.options import ConfigArg, SetOpt
from mtkit.config.load import load_config

ModelArg = Annotated[Path, typer.Argument(help="A sentencepiece .model file")]


@app.command()
@handle_errors
def prepare(
    config: ConfigArg,
    overrides: SetOpt = None,
    force: Annotated[
        bool, typer.Option(help="Rebuild even if the prepared data is current")
    ] = False,
) -> None:
    """Train the sentencepiece model(s), clean and encode the corpus, save it to disk.

    Example: mtkit prepare configs/demo.yaml --set tokenizer.vocab_size=4000
    """
    cfg = load_config(config, overrides or [])
    setup_logging()
    from mtkit.data.prepare import prepare as run_prepare

    path = run_prepare(cfg, force=force)
    typer.echo(f"prepared data in {path}")


tokenizer_app = typer.Typer(
    help="Train sentencepiece models and inspect how they segment text.", no_args_is_help=True
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
) -> None:
    """Train the sentencepiece model(s) of a config on its (cleaned) training split.

    Example: mtkit tokenizer train configs/demo.yaml --set tokenizer.type=unigram -o spm/
    """
    cfg = load_config(config, overrides or [])
    setup_logging()
    from mtkit.data.prepare import build_tokenizers

    out = output or Path(cfg.data.prepared_dir) / "tokenizer"
    pair = build_tokenizers(cfg, out)
    names = ", ".join(sorted(pair.model_files()))
    typer.echo(f"wrote {names} to {out} (vocabulary {pair.src.vocab_size})")


@tokenizer_app.command("encode")
@handle_errors
def tokenizer_encode(
    model: ModelArg,
    input: Annotated[Path, typer.Option("--input", "-i", help="Text file, one sentence a line")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output file")],
    ids: Annotated[bool, typer.Option(help="Write token ids instead of pieces")] = False,
) -> None:
    """Segment a text file into sentencepiece pieces (or ids), one line per line.

    Example: mtkit tokenizer encode prepared/demo/spm.model -i data/test.en -o test.pieces.en
    """
    from mtkit.data.tokenizer import Tokenizer, encode_file

    n = encode_file(Tokenizer.load(model), input, output, as_ids=ids)
    typer.echo(f"encoded {n} lines to {output}", err=True)


@tokenizer_app.command("decode")
@handle_errors
def tokenizer_decode(
    model: ModelArg,
    input: Annotated[Path, typer.Option("--input", "-i", help="Pieces or ids, one line each")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output file")],
) -> None:
    """Turn pieces (or ids) back into text, one line per line.

    Example: mtkit tokenizer decode prepared/demo/spm.model -i test.pieces.en -o test.txt
    """
    from mtkit.data.tokenizer import Tokenizer, decode_file

    n = decode_file(Tokenizer.load(model), input, output)
    typer.echo(f"decoded {n} lines to {output}", err=True)
