"""The `mtkit` command line: parse arguments, load config, set up logging, call a command.

Heavy imports (torch, datasets) happen inside the command bodies so `mtkit --help` is fast.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from mtkit.config import ConfigError, ExperimentConfig, load_config
from mtkit.errors import MtkitError

app = typer.Typer(
    name="mtkit",
    help="Train machine-translation Transformers: raw parallel text → tokenizer → model → BLEU.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

F = TypeVar("F", bound=Callable[..., Any])

ConfigArg = Annotated[
    Path, typer.Argument(help="Experiment YAML file, e.g. configs/demo.yaml", show_default=False)
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a config key: --set model.d_model=512 (repeatable)"),
]
RunArg = Annotated[
    Path, typer.Argument(help="A run directory (uses its best.pt) or a checkpoint file")
]


def handle_errors(func: F) -> F:
    """Turn user-facing errors into one `error: ...` line on stderr and a non-zero exit."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ConfigError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None
        except BrokenPipeError:
            raise typer.Exit(0) from None
        except OSError as e:  # unwritable output, a directory given as a file, disk full
            name = e.filename2 or e.filename  # a rename names its target second
            where = f"{name}: " if name else ""
            typer.echo(f"error: {where}{e.strerror or e}", err=True)
            raise typer.Exit(1) from None
        except Exception as e:
            if isinstance(e, MtkitError):
                typer.echo(f"error: {e}", err=True)
                raise typer.Exit(1) from None
            raise

    return wrapper  # type: ignore[return-value]


def setup_logging(verbose: bool = False, log_file: Path | None = None) -> None:
    """Log lines to stderr (and a file); stdout stays clean for translations and scores."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    fmt = logging.Formatter("%(asctime)s | %(levelname)s | %(message)s", "%H:%M:%S")
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(fmt)
    root.addHandler(stream)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_file, encoding="utf-8")
        file_handler.setFormatter(fmt)
        root.addHandler(file_handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("datasets", "filelock", "urllib3", "fsspec", "httpx", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _load(config: Path, overrides: list[str] | None) -> ExperimentConfig:
    return load_config(config, overrides or [])


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
    cfg = _load(config, overrides)
    setup_logging()
    from mtkit.prepare import prepare as run_prepare

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
    cfg = _load(config, overrides)
    setup_logging()
    from mtkit.prepare import build_tokenizers

    out = output or Path(cfg.data.prepared_dir) / "tokenizer"
    pair = build_tokenizers(cfg, out)
    names = ", ".join(sorted(pair.model_files()))
    typer.echo(f"wrote {names} to {out} (vocabulary {pair.src.vocab_size})")


@tokenizer_app.command("encode")
@handle_errors
def tokenizer_encode(
    model: Annotated[Path, typer.Argument(help="A sentencepiece .model file")],
    input: Annotated[Path, typer.Option("--input", "-i", help="Text file, one sentence a line")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output file")],
    ids: Annotated[bool, typer.Option(help="Write token ids instead of pieces")] = False,
) -> None:
    """Segment a text file into sentencepiece pieces (or ids), one line per line.

    Example: mtkit tokenizer encode prepared/demo/spm.model -i data/test.en -o test.pieces.en
    """
    from mtkit.tokenizer import Tokenizer, encode_file

    n = encode_file(Tokenizer.load(model), input, output, as_ids=ids)
    typer.echo(f"encoded {n} lines to {output}", err=True)


@tokenizer_app.command("decode")
@handle_errors
def tokenizer_decode(
    model: Annotated[Path, typer.Argument(help="A sentencepiece .model file")],
    input: Annotated[Path, typer.Option("--input", "-i", help="Pieces or ids, one line each")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output file")],
) -> None:
    """Turn pieces (or ids) back into text, one line per line.

    Example: mtkit tokenizer decode prepared/demo/spm.model -i test.pieces.en -o test.txt
    """
    from mtkit.tokenizer import Tokenizer, decode_file

    n = decode_file(Tokenizer.load(model), input, output)
    typer.echo(f"decoded {n} lines to {output}", err=True)


@app.command()
@handle_errors
def train(
    config: Annotated[
        Path,
        typer.Argument(
            help="Experiment YAML file, or a run directory (reads its config.yaml)",
            show_default=False,
        ),
    ],
    overrides: SetOpt = None,
    resume: Annotated[
        bool, typer.Option(help="Continue the run from its newest checkpoint")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option(help="Start again even if the run directory holds a run")
    ] = False,
    nproc: Annotated[
        int, typer.Option(help="Processes (GPUs) on this machine: hands over to torchrun")
    ] = 1,
) -> None:
    """Train a model (preparing the data first if needed); writes runs/<name>/.

    Ctrl-C (or SIGTERM) finishes the current update, saves a checkpoint and exits 0.

    Examples:
      mtkit train configs/demo.yaml --set model.encoder_layers=4 --set training.lr=7e-4
      mtkit train runs/demo --resume
      torchrun --nproc_per_node=4 -m mtkit train configs/demo.yaml
    """
    from mtkit.distributed import env_rank

    rank = env_rank()
    overrides = list(overrides or [])
    if config.is_dir():  # a run directory: its resolved config, and it stays the run directory
        overrides.insert(0, f"run_dir={config}")
        config = config / "config.yaml"
    try:
        cfg = _load(config, overrides)
        if nproc > 1 and "WORLD_SIZE" not in os.environ:
            _exec_torchrun(nproc, config, overrides, resume, overwrite)
        # Only rank 0 logs (and writes train.log); other ranks report warnings only.
        setup_logging(log_file=cfg.run_path / "train.log" if rank == 0 else None)
        if rank != 0:
            logging.getLogger().setLevel(logging.ERROR)
        from mtkit.train import train as run_train

        run_dir = run_train(cfg, resume=resume, overwrite=overwrite)
    except (MtkitError, KeyboardInterrupt):
        if rank != 0:  # rank 0 shows the error once; the other ranks just exit
            raise typer.Exit(1) from None
        raise
    if rank == 0:
        typer.echo(f"run directory: {run_dir} (best checkpoint: {run_dir / 'best.pt'})")


def _exec_torchrun(
    nproc: int, config: Path, overrides: list[str], resume: bool, overwrite: bool
) -> None:
    """Replace this process with `torchrun --standalone --nproc_per_node=N -m mtkit train ...`."""
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={nproc}", "-m", "mtkit", "train", str(config)]  # fmt: skip
    args += [f"--set={o}" for o in overrides]
    args += ["--resume"] * resume + ["--overwrite"] * overwrite
    typer.echo("starting: " + " ".join(args[1:]), err=True)
    os.execv(sys.executable, args)


@app.command()
@handle_errors
def average(
    run: Annotated[Path, typer.Argument(help="A run directory with step_NNNNNN.pt checkpoints")],
    last: Annotated[int, typer.Option(help="Average the newest N step checkpoints")] = 5,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Default: RUN/average_last<N>.pt")
    ] = None,
) -> None:
    """Average the model weights of a run's last N checkpoints into one checkpoint.

    The result translates like any checkpoint (often a little better than each one).

    Example: mtkit average runs/demo --last 5 -o runs/demo/avg5.pt
    """
    setup_logging()
    from mtkit.average import average_run

    out = average_run(run, last, output)
    typer.echo(f"wrote {out}")


SEARCH = "Search"
SAMPLING = "Sampling"
BeamOpt = Annotated[
    int | None, typer.Option(help="Beam size (default: the run's)", rich_help_panel=SEARCH)
]
GreedyOpt = Annotated[
    bool, typer.Option(help="Greedy search (same as --beam 1)", rich_help_panel=SEARCH)
]
LengthPenaltyOpt = Annotated[
    float | None, typer.Option(help="GNMT length penalty alpha", rich_help_panel=SEARCH)
]
LengthNormOpt = Annotated[
    str | None,
    typer.Option(
        help="Rank beam hypotheses by gnmt (log-prob / GNMT penalty), average (per token) "
        "or none (raw log-prob)",
        rich_help_panel=SEARCH,
    ),
]
MaxLenAOpt = Annotated[
    float | None, typer.Option(help="Max length = a * src_len + b", rich_help_panel=SEARCH)
]
MaxLenBOpt = Annotated[
    int | None, typer.Option(help="Max length = a * src_len + b", rich_help_panel=SEARCH)
]
MinLenOpt = Annotated[
    int | None, typer.Option(help="No EOS before this many tokens", rich_help_panel=SEARCH)
]
NoRepeatOpt = Annotated[
    int | None,
    typer.Option(help="Never repeat an n-gram of this size (beam)", rich_help_panel=SEARCH),
]
BatchTokensOpt = Annotated[
    int | None, typer.Option(help="Source tokens per batch", rich_help_panel=SEARCH)
]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu or cuda")]


def _decode_options(translator: Any, greedy: bool, **overrides: Any) -> Any:
    """The run's decoding defaults with the command-line overrides; bad combinations exit 2."""
    from mtkit.translate import TranslationError

    if greedy:
        overrides["beam_size"] = 1
    options = translator.default_options(**overrides)
    try:
        options.check()
    except TranslationError as e:
        raise ConfigError(str(e)) from None
    return options


@app.command()
@handle_errors
def translate(
    run: RunArg,
    input: Annotated[
        Path | None, typer.Option("--input", "-i", help="Source file (default: stdin)")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Output file (default: stdout)")
    ] = None,
    beam: Annotated[int | None, typer.Option(help="Beam size (default: the run's)")] = None,
    greedy: Annotated[bool, typer.Option(help="Greedy search (same as --beam 1)")] = False,
    length_penalty: Annotated[float | None, typer.Option(help="GNMT length penalty alpha")] = None,
    max_len_a: Annotated[float | None, typer.Option(help="Max length = a * src_len + b")] = None,
    max_len_b: Annotated[int | None, typer.Option(help="Max length = a * src_len + b")] = None,
    batch_tokens: Annotated[int | None, typer.Option(help="Source tokens per batch")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
) -> None:
    """Translate one sentence per line, from a file or stdin, to a file or stdout.

    Examples:
      mtkit translate runs/demo -i data/test.en -o hyp.de --beam 5
      echo "How are you?" | mtkit translate runs/demo --greedy
    """
    setup_logging()
    from mtkit.translate import Translator

    translator = Translator.load(run, device=device)
    options = translator.default_options(
        beam_size=1 if greedy else beam, length_penalty=length_penalty,
        max_len_a=max_len_a, max_len_b=max_len_b, max_tokens=batch_tokens,
    )  # fmt: skip
    _check_positive("--beam", options.beam_size)
    _check_positive("--batch-tokens", options.max_tokens)
    if input is None and output is None and sys.stdin.isatty():
        _interactive(translator, options)
        return
    if input is not None:
        from mtkit.evaluate import read_lines

        lines: Any = read_lines(input)
    else:
        lines = _stdin_lines()
    if output is None:
        for text in translator.translate_stream(lines, options):
            sys.stdout.write(text + "\n")
            sys.stdout.flush()
        return
    from mtkit.checkpoint import atomic_write_bytes

    outputs = list(translator.translate_stream(lines, options))
    atomic_write_bytes(output, "".join(t + "\n" for t in outputs).encode("utf-8"))
    typer.echo(f"wrote {len(outputs)} lines to {output}", err=True)


def _stdin_lines() -> Any:
    """stdin lines split on "\\n" only (a stray "\\r" must not add a line), decoded as UTF-8;
    undecodable bytes become U+FFFD with a warning naming the line (never a traceback)."""
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is None:  # a text-only stdin (embedding, some test runners)
        for line in sys.stdin:
            yield line.rstrip("\n").rstrip("\r")
        return
    bad = 0
    for n, raw in enumerate(buffer, start=1):  # binary lines end at b"\n" only
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("utf-8", errors="replace")
            bad += 1
            if bad <= 5:
                logging.getLogger(__name__).warning(
                    "stdin line %d: invalid UTF-8; undecodable bytes replaced by U+FFFD", n
                )
        yield text.rstrip("\n").rstrip("\r")
    if bad > 5:
        logging.getLogger(__name__).warning("%d stdin lines had invalid UTF-8 in all", bad)


def _interactive(translator: Any, options: Any) -> None:
    typer.echo("Type a sentence and press Enter (Ctrl-D to quit).", err=True)
    while True:
        try:
            line = input("> ")
        except EOFError:
            return
        typer.echo(translator.translate([line], options)[0])


def _check_positive(name: str, value: int) -> None:
    if value < 1:
        raise ConfigError(f"{name}: expected a positive number, got {value}")


@app.command()
@handle_errors
def evaluate(
    run: Annotated[
        Path | None, typer.Argument(help="A run directory or checkpoint to translate with")
    ] = None,
    split: Annotated[
        str | None, typer.Option(help="A split of the run's data config: test or valid")
    ] = None,
    src: Annotated[Path | None, typer.Option(help="Source file to translate")] = None,
    ref: Annotated[
        list[Path] | None, typer.Option(help="Reference file (repeat for several references)")
    ] = None,
    hyp: Annotated[Path | None, typer.Option(help="Score this hypothesis file as it is")] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Where to write the hypotheses")
    ] = None,
    beam: Annotated[int | None, typer.Option(help="Beam size (default: the run's)")] = None,
    greedy: Annotated[bool, typer.Option(help="Greedy search (same as --beam 1)")] = False,
    length_penalty: Annotated[float | None, typer.Option(help="GNMT length penalty alpha")] = None,
    metrics: Annotated[
        str, typer.Option(help="Comma-separated: bleu, chrf, chrf++, ter")
    ] = "bleu,chrf",
    tokenize: Annotated[str, typer.Option(help="sacreBLEU tokenizer: 13a, intl, ...")] = "13a",
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON report")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
) -> None:
    """Score translations with sacreBLEU (BLEU, chrF, ...) and print their signatures.

    Examples:
      mtkit evaluate runs/demo --split test
      mtkit evaluate runs/demo --src data/test.en --ref data/test.de --beam 5 --json
      mtkit evaluate --hyp hyp.de --ref data/test.de
    """
    setup_logging()
    from mtkit.evaluate import EvaluationError, evaluate_model, score_files
    from mtkit.translate import Translator

    names = [m.strip() for m in metrics.split(",") if m.strip()]
    if hyp is not None:
        if not ref:
            raise EvaluationError("--hyp needs at least one --ref")
        report = score_files(hyp, ref, names, tokenize)
    else:
        if run is None:
            raise EvaluationError("give a run directory/checkpoint to translate, or --hyp")
        translator = Translator.load(run, device=device)
        options = translator.default_options(
            beam_size=1 if greedy else beam, length_penalty=length_penalty
        )
        source, refs = _eval_inputs(translator, split, src, ref)
        out = output or _default_hyp_path(translator, split, source)
        report = evaluate_model(translator, source, refs, options, names, out, tokenize)
    _print_report(report, json_out)


def _eval_inputs(
    translator: Any, split: str | None, src: Path | None, ref: list[Path] | None
) -> tuple[Path, list[Path]]:
    from mtkit.evaluate import EvaluationError, split_files

    if src is not None:
        if not ref:
            raise EvaluationError("--src needs at least one --ref")
        return src, list(ref)
    source, reference = split_files(translator, split or "test")
    return source, list(ref) if ref else [reference]


def _default_hyp_path(translator: Any, split: str | None, source: Path) -> Path:
    run_dir = translator.checkpoint.parent
    stem = split or source.stem
    return Path(run_dir) / f"{stem}.hyp.{translator.config.data.tgt_lang}"


def _print_report(report: Any, json_out: bool) -> None:
    if json_out:
        typer.echo(report.to_json())
        return
    for result in report.scores:
        typer.echo(f"{result.text}")
        typer.echo(f"  signature: {result.signature}")
    if report.hypotheses_file and report.source_file:
        typer.echo(
            f"{report.n_sentences} sentences in {report.seconds:.1f}s; "
            f"hypotheses in {report.hypotheses_file}"
        )


@app.command()
@handle_errors
def plot(
    run: Annotated[Path, typer.Argument(help="A run directory (reads its metrics.jsonl)")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="PNG file (default: RUN/curves.png)")
    ] = None,
) -> None:
    """Plot learning curves (training/validation loss and BLEU vs updates and time) to a PNG.

    Example: mtkit plot runs/demo -o demo_curves.png
    """
    from mtkit.learning_curves import plot_curves, read_curves

    curves = read_curves(run / "metrics.jsonl")
    out = plot_curves(curves, output or run / "curves.png", title=f"mtkit run: {run}")
    typer.echo(f"wrote {out}")


def main() -> None:
    """Entry point for `python -m mtkit`."""
    app()
