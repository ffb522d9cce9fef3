"""The `mtkit` command line: parse arguments, load config, set up logging, call a command.

Heavy imports (torch, datasets) happen inside the command bodies so `mtkit --help` is fast.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from mtkit.config.load import load_config
from mtkit.config.schema import ConfigError, DecodingConfig, ExperimentConfig
from mtkit.config.validate import validate_decoding
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
    cfg = _load(config, overrides)
    setup_logging()
    from mtkit.data.prepare import build_tokenizers

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
    from mtkit.data.tokenizer import Tokenizer, encode_file

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
    from mtkit.data.tokenizer import Tokenizer, decode_file

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
        from mtkit.training.loop import train as run_train

        run_dir = run_train(cfg, resume=resume, overwrite=overwrite)
    except (MtkitError, KeyboardInterrupt):
        if rank != 0:  # rank 0 shows the error once; the other ranks just exit
            raise typer.Exit(1) from None
        raise
    except Exception as e:
        from mtkit.distributed import is_peer_failure

        if not is_peer_failure(e):
            raise
        if rank == 0:  # the failed rank printed its own error; say once why the rest stop
            typer.echo("error: training stopped: another rank failed (see its error)", err=True)
        raise typer.Exit(1) from None
    if rank == 0:
        best = run_dir / "best.pt"
        typer.echo(
            f"run directory: {run_dir}" + (f" (best checkpoint: {best})" if best.exists() else "")
        )


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
    last: Annotated[
        list[int] | None,
        typer.Option(help="Average the newest N step checkpoints; repeat for several averages"),
    ] = None,
    select_on: Annotated[
        str | None,
        typer.Option(
            help="valid: translate the valid split with each average (the run's decoding "
            "settings) and rank them by BLEU (the run's evaluation.tokenize)"
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Default: RUN/average_last<N>.pt; with --select-on, a copy of the best average",
        ),
    ] = None,
    device: DeviceOpt = "auto",
) -> None:
    """Average the model weights of a run's last N checkpoints into one checkpoint.

    The result translates like any checkpoint (often a little better than each one).

    Examples:
      mtkit average runs/demo --last 5 -o runs/demo/avg5.pt
      mtkit average runs/demo --last 5 --last 10 --select-on valid -o runs/demo/chosen.pt
    """
    setup_logging()
    from mtkit.training.average import average_run, select_average

    lasts = last or [5]
    if select_on is None:
        if output is not None and len(lasts) > 1:
            raise ConfigError("-o names one file: give one --last, or add --select-on valid")
        for n in lasts:
            typer.echo(f"wrote {average_run(run, n, output)}")
        return
    ranked = select_average(run, lasts, select_on, device)
    for c in ranked:
        typer.echo(f"{c.path}: {select_on} {c.bleu.text}\n  signature: {c.bleu.signature}")
    if output is not None:
        from mtkit.files import atomic_write_bytes

        atomic_write_bytes(output, ranked[0].path.read_bytes())
    typer.echo(
        f"best on {select_on}: {ranked[0].path}" + (f" (copied to {output})" if output else "")
    )


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
PrecisionOpt = Annotated[
    str | None,
    typer.Option(help="auto (bf16 where the hardware runs it natively fast), float32, bfloat16 "
                 "or float16 (CUDA); default: the run's decoding.precision"),
]  # fmt: skip


def _load_translator(run: Path, device: str) -> Any:
    """A CTranslate2 export (`mtkit export`) runs on CTranslate2; anything else on PyTorch."""
    from mtkit.translation.ctranslate2_engine import CT2Translator, is_export

    if is_export(run):
        return CT2Translator.load(run, device=device)
    from mtkit.translation.translator import Translator

    return Translator.load(run, device=device)


def _decoding(translator: Any, greedy: bool, **flags: Any) -> DecodingConfig:
    """The run's `decoding` config with the flags that were given (not None) applied, checked
    once by the config validator; a bad value or combination exits 2."""
    if greedy:
        flags["beam_size"] = 1
    given = {key: value for key, value in flags.items() if value is not None}
    run_decoding: DecodingConfig = translator.config.decoding  # PyTorch or CTranslate2 engine
    dec = dataclasses.replace(run_decoding, **given)
    validate_decoding(dec, prefix="")  # messages name the keys, as the flags stand for them
    return dec


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
    format: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="text (one line per input; Moses 'i ||| hyp ||| score' lines with --nbest), "
            "tsv (source, hypothesis, score) or jsonl (n-best list with scores and time)",
        ),
    ] = "text",
    attention: Annotated[
        Path | None,
        typer.Option(help="Also write cross-attention per sentence to this .jsonl or .npz file"),
    ] = None,
    chunk_size: Annotated[
        int,
        typer.Option(
            help="Lines read, translated and written at a time (outputs appear per chunk)"
        ),
    ] = 500,
    beam: BeamOpt = None,
    greedy: GreedyOpt = False,
    nbest: Annotated[
        int | None,
        typer.Option(help="Output the N best hypotheses with scores", rich_help_panel=SEARCH),
    ] = None,
    length_penalty: LengthPenaltyOpt = None,
    length_norm: LengthNormOpt = None,
    max_len_a: MaxLenAOpt = None,
    max_len_b: MaxLenBOpt = None,
    min_len: MinLenOpt = None,
    no_repeat_ngram: NoRepeatOpt = None,
    batch_tokens: BatchTokensOpt = None,
    precision: PrecisionOpt = None,
    sample: Annotated[
        bool,
        typer.Option("--sample", help="Sample instead of searching", rich_help_panel=SAMPLING),
    ] = False,
    temperature: Annotated[float | None, typer.Option(rich_help_panel=SAMPLING)] = None,
    top_k: Annotated[
        int | None, typer.Option(help="Sample from the k best tokens", rich_help_panel=SAMPLING)
    ] = None,
    top_p: Annotated[
        float | None, typer.Option(help="Nucleus sampling mass", rich_help_panel=SAMPLING)
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Sampling seed", rich_help_panel=SAMPLING)
    ] = None,
    device: DeviceOpt = "auto",
) -> None:
    """Translate one sentence per line, from a file or stdin, to a file or stdout.

    Outputs are written chunk by chunk as they are translated; empty lines stay empty.
    Without --input, a terminal on stdin gets a prompt: one translation per line typed.

    Examples:
      mtkit translate runs/demo -i data/test.en -o hyp.de --beam 5
      echo "How are you?" | mtkit translate runs/demo --greedy
      mtkit translate runs/demo -i data/test.en --nbest 3 --format jsonl
      mtkit translate runs/demo -i mono.en --sample --top-p 0.9 -o back.de
    """
    setup_logging()
    from mtkit.translation.translator import (
        FORMATS,
        interactive,
        iter_lines,
        open_output,
        stream_translations,
        write_translations,
    )

    if format not in FORMATS:
        raise ConfigError(f"--format: expected one of {', '.join(FORMATS)}, got '{format}'")
    _check_positive("--chunk-size", chunk_size)
    translator = _load_translator(run, device)
    dec = _decoding(
        translator, greedy, beam_size=beam, nbest=nbest, length_penalty=length_penalty,
        length_norm=length_norm, max_len_a=max_len_a, max_len_b=max_len_b, min_len=min_len,
        no_repeat_ngram=no_repeat_ngram, max_tokens=batch_tokens, sampling=sample or None,
        temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, precision=precision,
    )  # fmt: skip
    if input is None and output is None and attention is None and sys.stdin.isatty():
        typer.echo("Type a sentence and press Enter (Ctrl-D to quit).", err=True)
        interactive(translator, dec, write=typer.echo, fmt=format)
        return
    lines = iter_lines(input) if input is not None else _stdin_lines()
    chunks = stream_translations(
        translator, lines, dec, chunk_size, attention=attention is not None
    )
    with open_output(output) as out, _attention_writer(attention) as dump:
        on_chunk = (lambda _i, chunk: dump.write(chunk)) if dump is not None else None
        n = write_translations(chunks, out, format, on_chunk, nbest=dec.nbest > 1)
    if output is not None:
        typer.echo(f"wrote {n} translations to {output}", err=True)
    if attention is not None:
        typer.echo(f"wrote cross-attention of {n} sentences to {attention}", err=True)


def _attention_writer(path: Path | None) -> Any:
    if path is None:
        return contextlib.nullcontext(None)
    from mtkit.translation.attention_dump import AttentionWriter

    return AttentionWriter(path)


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


def _check_positive(name: str, value: int) -> None:
    if value < 1:
        raise ConfigError(f"{name}: expected a positive number, got {value}")


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
) -> None:
    """Draw one sentence's cross-attention as a PNG heatmap (needs matplotlib, the plot extra).

    Example:
      echo "Tom is here." | mtkit translate runs/demo --attention att.jsonl
      mtkit plot-attention att.jsonl --line 1 -o att.png
    """
    from mtkit.translation.attention_dump import plot_attention as plot_matrix
    from mtkit.translation.attention_dump import read_attention

    _check_positive("--line", line)
    att = read_attention(attention, line - 1)
    out = output or Path(f"attention_{line}.png")
    plot_matrix(att, out, title=f"{attention}: line {line}")
    typer.echo(f"wrote {out}")


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
    hyp: Annotated[
        list[Path] | None,
        typer.Option(help="Score this hypothesis file as it is (repeat with --paired-bs)"),
    ] = None,
    paired_bs: Annotated[
        bool,
        typer.Option(
            "--paired-bs",
            help="Paired bootstrap resampling between the --hyp files (the first is the "
            "baseline): p-values and 95% confidence intervals",
        ),
    ] = False,
    bs_samples: Annotated[int, typer.Option(help="Bootstrap resamples")] = 1000,
    bs_seed: Annotated[int, typer.Option(help="Bootstrap seed (sacreBLEU's default)")] = 12345,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Where to write the hypotheses")
    ] = None,
    beam: BeamOpt = None,
    greedy: GreedyOpt = False,
    length_penalty: LengthPenaltyOpt = None,
    length_norm: LengthNormOpt = None,
    max_len_a: MaxLenAOpt = None,
    max_len_b: MaxLenBOpt = None,
    min_len: MinLenOpt = None,
    no_repeat_ngram: NoRepeatOpt = None,
    batch_tokens: BatchTokensOpt = None,
    precision: PrecisionOpt = None,
    metrics: Annotated[
        str, typer.Option(help="Comma-separated: bleu, chrf, chrf++, ter")
    ] = "bleu,chrf",
    tokenize: Annotated[
        str | None,
        typer.Option(
            help="sacreBLEU tokenizer for BLEU: 13a, intl, char, zh, none (text that is already "
            "tokenized), flores200 (downloads a model on first use), ... [default: the run's "
            "evaluation.tokenize; 13a for --hyp]"
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON report")] = False,
    device: DeviceOpt = "auto",
) -> None:
    """Score translations with sacreBLEU (BLEU, chrF, chrF++, TER) and print their signatures.

    Examples:
      mtkit evaluate runs/demo --split test
      mtkit evaluate runs/demo --src data/test.en --ref data/test.de --beam 5 --json
      mtkit evaluate --hyp hyp.de --ref data/test.de --metrics bleu,chrf++,ter
      mtkit evaluate --hyp greedy.de --hyp beam5.de --ref data/test.de --paired-bs
    """
    setup_logging()
    from mtkit.evaluation.evaluate import (
        EvaluationError,
        compare_files,
        evaluate_model,
        score_files,
    )

    names = [m.strip() for m in metrics.split(",") if m.strip()]
    from mtkit.evaluation.metrics import make_metric

    for name in names:  # a typo fails now, not after translating the whole test set
        make_metric(name, tokenize or "13a")
    if hyp:
        tokenize = tokenize or "13a"
        if not ref:
            raise EvaluationError("--hyp needs at least one --ref")
        if run is not None or src is not None or split is not None:
            raise EvaluationError("--hyp scores existing files: drop the run, --src and --split")
        if paired_bs:
            _check_positive("--bs-samples", bs_samples)
            comparison = compare_files(hyp, ref, names, tokenize, bs_samples, bs_seed)
            _print_comparison(comparison, json_out)
            return
        if len(hyp) > 1:
            raise EvaluationError("several --hyp files: add --paired-bs to compare them")
        _print_report(score_files(hyp[0], ref, names, tokenize), json_out)
        return
    if paired_bs:
        raise EvaluationError("--paired-bs compares hypothesis files: give two or more --hyp")
    if run is None:
        raise EvaluationError("give a run directory/checkpoint to translate, or --hyp")
    translator = _load_translator(run, device)
    dec = _decoding(
        translator, greedy, beam_size=beam, length_penalty=length_penalty,
        length_norm=length_norm, max_len_a=max_len_a, max_len_b=max_len_b, min_len=min_len,
        no_repeat_ngram=no_repeat_ngram, max_tokens=batch_tokens, precision=precision,
    )  # fmt: skip
    tokenize = _run_tokenizer(translator, tokenize, names)
    inputs = _eval_inputs(translator, split, src, ref)
    out = output or _default_hyp_path(translator, split, src)
    report = evaluate_model(translator, inputs, dec, names, out, tokenize)
    _print_report(report, json_out)


def _run_tokenizer(translator: Any, tokenize: str | None, names: list[str]) -> str:
    """--tokenize, else the run's `evaluation.tokenize` (checked before translating)."""
    from mtkit.evaluation.metrics import make_metric

    if tokenize is None:
        tokenize = str(translator.config.evaluation.tokenize)
        if "bleu" in names:
            make_metric("bleu", tokenize)
    return tokenize


def _eval_inputs(
    translator: Any, split: str | None, src: Path | None, ref: list[Path] | None
) -> Any:
    from mtkit.evaluation.evaluate import EvaluationError, file_set, split_set

    if src is not None:
        if split is not None:
            raise EvaluationError("give either --split or --src, not both")
        if not ref:
            raise EvaluationError("--src needs at least one --ref")
        return file_set(src, ref)
    inputs = split_set(translator, split or "test")
    if ref:  # other references for the split's sources
        from mtkit.evaluation.evaluate import check_counts, read_lines

        inputs.references = [read_lines(r) for r in ref]
        inputs.reference_names = [str(r) for r in ref]
        check_counts(
            inputs.source_name, len(inputs.sources), inputs.reference_names, inputs.references
        )
    return inputs


def _default_hyp_path(translator: Any, split: str | None, src: Path | None) -> Path:
    run_dir = translator.checkpoint.parent
    stem = src.stem if src is not None else (split or "test")
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


def _print_comparison(comparison: Any, json_out: bool) -> None:
    if json_out:
        typer.echo(comparison.to_json())
        return
    typer.echo(
        f"paired bootstrap resampling: {comparison.n_samples} resamples of "
        f"{comparison.n_sentences} sentences, seed {comparison.seed}; baseline: "
        f"{comparison.metrics[0].systems[0].name}"
    )
    width = max(len(s.name) for s in comparison.metrics[0].systems)
    for m in comparison.metrics:
        better = "higher" if m.higher_is_better else "lower"
        typer.echo(f"{m.metric} ({better} is better)  signature: {m.signature}")
        for s in m.systems:
            line = f"  {s.name:<{width}}  {s.score:6.2f}  (mean {s.mean:.2f} ± {s.ci:.2f})"
            if s.p_value is not None and s.delta_ci is not None:
                star = " *" if s.significant() else ""
                line += (
                    f"  delta {s.delta:+.2f} [{s.delta_ci[0]:+.2f}, {s.delta_ci[1]:+.2f}]"
                    f"  p = {s.p_value:.4f}{star}"
                )
            typer.echo(line)
    typer.echo("* p < 0.05: the difference from the baseline is unlikely to be chance")


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
    from mtkit.training.curves import plot_curves, read_curves

    curves = read_curves(run / "metrics.jsonl")
    out = plot_curves(curves, output or run / "curves.png", title=f"mtkit run: {run}")
    typer.echo(f"wrote {out}")


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
    force: Annotated[bool, typer.Option(help="Replace an earlier export in --output")] = False,
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
    from mtkit.export.ctranslate2 import export_ctranslate2

    path = export_ctranslate2(run, output, quantization=quantization, force=force)
    typer.echo(f"exported to {path}; translate with: mtkit translate {path} -i SOURCE")


def main() -> None:
    """Entry point for `python -m mtkit`."""
    app()
