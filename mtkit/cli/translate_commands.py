"""`mtkit translate` (file, stdin or a prompt) and `mtkit plot-attention`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from mtkit.cli.app import app, handle_errors, setup_logging
from mtkit.cli.engine_choice import open_engine
from mtkit.cli.options import (
    AttentionKernelOpt,
    BatchTokensOpt,
    BeamOpt,
    DecodePrecisionOpt,
    DeviceOpt,
    EarlyStoppingOpt,
    EngineOpt,
    GreedyOpt,
    LengthNormOpt,
    LengthPenaltyOpt,
    MaxLenAOpt,
    MaxLenBOpt,
    MinLenOpt,
    NbestOpt,
    NoRepeatOpt,
    OverwriteOpt,
    ProgressOpt,
    QuantizeOpt,
    RunsArg,
    SampleOpt,
    SearchFlags,
    SeedOpt,
    TemperatureOpt,
    TopKOpt,
    TopPOpt,
    check_positive,
    output_guard,
)
from mtkit.config.schema import ConfigError, DecodingConfig
from mtkit.errors import plural

InputOpt = Annotated[
    Path | None, typer.Option("--input", "-i", help="Source file (default: stdin)")
]
OutputOpt = Annotated[
    Path | None, typer.Option("--output", "-o", help="Output file (default: stdout)")
]
FormatOpt = Annotated[
    str,
    typer.Option(
        "--format",
        "-f",
        help="text (one line per input; Moses 'i ||| hyp ||| score' lines with --nbest), "
        "tsv (source, hypothesis, score) or jsonl (n-best list with scores and time)",
    ),
]
AttentionOpt = Annotated[
    Path | None,
    typer.Option(help="Also write cross-attention per sentence to this .jsonl or .npz file"),
]
ChunkSizeOpt = Annotated[
    int,
    typer.Option(help="Lines read, translated and written at a time (outputs appear per chunk)"),
]


@app.command()
@handle_errors
def translate(
    run: RunsArg,
    input: InputOpt = None,
    output: OutputOpt = None,
    format: FormatOpt = "text",
    attention: AttentionOpt = None,
    chunk_size: ChunkSizeOpt = 500,
    beam: BeamOpt = None,
    greedy: GreedyOpt = False,
    nbest: NbestOpt = None,
    length_penalty: LengthPenaltyOpt = None,
    length_norm: LengthNormOpt = None,
    early_stopping: EarlyStoppingOpt = None,
    max_len_a: MaxLenAOpt = None,
    max_len_b: MaxLenBOpt = None,
    min_len: MinLenOpt = None,
    no_repeat_ngram: NoRepeatOpt = None,
    batch_tokens: BatchTokensOpt = None,
    sample: SampleOpt = False,
    temperature: TemperatureOpt = None,
    top_k: TopKOpt = None,
    top_p: TopPOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = "auto",
    overwrite: OverwriteOpt = False,
    engine: EngineOpt = "auto",
    quantize: QuantizeOpt = "none",
    precision: DecodePrecisionOpt = None,
    attention_kernel: AttentionKernelOpt = None,
    progress: ProgressOpt = None,
) -> None:
    """Translate one sentence per line, from a file or stdin, to a file or stdout.

    Outputs are written chunk by chunk as they are translated; empty lines stay empty.
    Without --input, a terminal on stdin gets a prompt: one translation per line typed.
    Progress goes to stderr when it is a terminal (and translations do not go to the same
    terminal), or with --progress.

    Examples:
      mtkit translate runs/demo -i data/test.en -o hyp.de --beam 5
      echo "How are you?" | mtkit translate runs/demo --greedy
      mtkit translate runs/demo -i data/test.en --nbest 3 --format jsonl
      mtkit translate runs/demo -i mono.en --sample --top-p 0.9 -o back.de
    """
    setup_logging()
    _check_arguments(run, input, output, attention, format, chunk_size, overwrite)
    translator = open_engine(run, device, engine, quantize, attention=attention is not None)
    dec = SearchFlags(
        beam_size=beam, greedy=greedy, nbest=nbest, length_penalty=length_penalty,
        length_norm=length_norm, early_stopping=early_stopping, max_len_a=max_len_a,
        max_len_b=max_len_b, min_len=min_len, no_repeat_ngram=no_repeat_ngram,
        max_tokens=batch_tokens, sampling=sample or None, temperature=temperature, top_k=top_k,
        top_p=top_p, seed=seed, precision=precision,
        attention_kernel=attention_kernel,
    ).apply(translator.config.decoding)  # fmt: skip
    if progress is None and output is None and sys.stdout.isatty():
        progress = False  # a bar would be drawn over the translations
    _translate(translator, dec, input, output, format, chunk_size, attention, progress)


def _check_arguments(
    run: list[Path],
    input: Path | None,
    output: Path | None,
    attention: Path | None,
    format: str,
    chunk_size: int,
    overwrite: bool,
) -> None:
    """Everything translate can check before loading a model (exit 2 on a bad argument)."""
    from mtkit.translation.input_lines import check_stdin
    from mtkit.translation.output import FORMATS

    if format not in FORMATS:
        raise ConfigError(f"--format: expected one of {', '.join(FORMATS)}, got '{format}'")
    check_positive("--chunk-size", chunk_size)
    if input is None:
        check_stdin("--input")
    guard = output_guard(run, [input], overwrite)
    for path, option in ((output, "--output"), (attention, "--attention")):
        if path is not None:
            guard.check(path, option)


def _translate(
    translator: Any,
    dec: DecodingConfig,
    input: Path | None,
    output: Path | None,
    format: str,
    chunk_size: int,
    attention: Path | None,
    show_progress: bool | None,
) -> None:
    """A prompt on a terminal; otherwise the input file or stdin to the output file or stdout."""
    from mtkit.files import count_lines, read_lines
    from mtkit.progress import Progress
    from mtkit.translation.input_lines import stdin_is_terminal, stdin_lines
    from mtkit.translation.output import interactive, translate_to_output

    if input is None and output is None and attention is None and stdin_is_terminal():
        typer.echo("Type a sentence and press Enter (Ctrl-D to quit).", err=True)
        interactive(translator, dec, write=typer.echo, fmt=format)
        return
    lines = read_lines(input) if input is not None else stdin_lines()
    progress = Progress.on_stderr(show_progress)
    total = count_lines(input) if input is not None and progress.enabled else None
    n = translate_to_output(
        translator, lines, dec, output, format, chunk_size, attention, progress, total
    )
    if output is not None:
        typer.echo(f"wrote {plural(n, 'translation')} to {output}", err=True)
    if attention is not None:
        typer.echo(f"wrote cross-attention of {plural(n, 'sentence')} to {attention}", err=True)


@app.command("plot-attention")
@handle_errors
def plot_attention(
    attention: Annotated[
        Path, typer.Argument(help="A file written by `mtkit translate --attention`")
    ],
    line: Annotated[int, typer.Option(help="Which input line (1-based)")] = 1,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="PNG file (default: attention_<line>.png)"),
    ] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Draw one sentence's cross-attention as a PNG heatmap (needs matplotlib, the plot extra).

    Example:
      echo "Tom is here." | mtkit translate runs/demo --attention att.jsonl
      mtkit plot-attention att.jsonl --line 1 -o att.png
    """
    from mtkit.translation.attention_dump import plot_attention as plot_matrix
    from mtkit.translation.attention_dump import read_attention

    check_positive("--line", line)
    out = output or Path(f"attention_{line}.png")
    output_guard([], [attention], overwrite).check(out)
    att = read_attention(attention, line - 1)
    plot_matrix(att, out, title=f"{attention}: line {line}")
    typer.echo(f"wrote {out}")
