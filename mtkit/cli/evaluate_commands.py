"""`mtkit evaluate`: translate and score with sacreBLEU, or score and compare existing files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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
    NoRepeatOpt,
    OverwriteOpt,
    ProgressOpt,
    QuantizeOpt,
    SearchFlags,
    check_positive,
    output_guard,
)
from mtkit.cli.report_output import print_comparison, print_report
from mtkit.progress import Progress

EvalRunArg = Annotated[
    list[Path] | None,
    typer.Argument(
        help="A run directory or checkpoint to translate with; several: an ensemble",
    ),
]
SplitOpt = Annotated[
    str | None, typer.Option(help="A split of the run's data config: test or valid")
]
SrcOpt = Annotated[Path | None, typer.Option(help="Source file to translate")]
RefOpt = Annotated[
    list[Path] | None,
    typer.Option(help="Reference file (repeat for several references)", metavar="FILE"),
]
HypOpt = Annotated[
    list[Path] | None,
    typer.Option(
        help="Score this hypothesis file as it is (repeat with --paired-bs)", metavar="FILE"
    ),
]
PairedBsOpt = Annotated[
    bool,
    typer.Option(
        "--paired-bs",
        help="Paired bootstrap resampling between the --hyp files (the first is the "
        "baseline): p-values and 95% confidence intervals",
    ),
]
BsSamplesOpt = Annotated[int, typer.Option(help="Bootstrap resamples")]
BsSeedOpt = Annotated[int, typer.Option(help="Bootstrap seed (sacreBLEU's default)")]
HypOutputOpt = Annotated[
    Path | None,
    typer.Option(
        "--output",
        "-o",
        help="Where to write the hypotheses [default: RUN/<split>.<checkpoint>.<search>.hyp.<lang>"
        ", e.g. runs/demo/test.best.beam5.lp1.0.hyp.de]",
    ),
]
MetricsOpt = Annotated[str, typer.Option(help="Comma-separated: bleu, chrf, chrf++, ter")]
TokenizeOpt = Annotated[
    str | None,
    typer.Option(
        help="sacreBLEU tokenizer for BLEU: 13a, intl, char, zh, none (text that is already "
        "tokenized), flores200 (downloads a model on first use), ... [default: the run's "
        "evaluation.tokenize; 13a for --hyp]"
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON report")]


@app.command()
@handle_errors
def evaluate(
    run: EvalRunArg = None,
    split: SplitOpt = None,
    src: SrcOpt = None,
    ref: RefOpt = None,
    hyp: HypOpt = None,
    paired_bs: PairedBsOpt = False,
    bs_samples: BsSamplesOpt = 1000,
    bs_seed: BsSeedOpt = 12345,
    output: HypOutputOpt = None,
    beam: BeamOpt = None,
    greedy: GreedyOpt = False,
    length_penalty: LengthPenaltyOpt = None,
    length_norm: LengthNormOpt = None,
    early_stopping: EarlyStoppingOpt = None,
    max_len_a: MaxLenAOpt = None,
    max_len_b: MaxLenBOpt = None,
    min_len: MinLenOpt = None,
    no_repeat_ngram: NoRepeatOpt = None,
    batch_tokens: BatchTokensOpt = None,
    metrics: MetricsOpt = "bleu,chrf",
    tokenize: TokenizeOpt = None,
    json_out: JsonOpt = False,
    device: DeviceOpt = "auto",
    overwrite: OverwriteOpt = False,
    engine: EngineOpt = "auto",
    quantize: QuantizeOpt = "none",
    precision: DecodePrecisionOpt = None,
    attention_kernel: AttentionKernelOpt = None,
    progress: ProgressOpt = None,
) -> None:
    """Score translations with sacreBLEU (BLEU, chrF, chrF++, TER) and print their signatures.

    Examples:
      mtkit evaluate runs/demo --split test
      mtkit evaluate runs/demo --src data/test.en --ref data/test.de --beam 5 --json
      mtkit evaluate --hyp hyp.de --ref data/test.de --metrics bleu,chrf++,ter
      mtkit evaluate --hyp greedy.de --hyp beam5.de --ref data/test.de --paired-bs
    """
    setup_logging()
    from mtkit.evaluation import inputs
    from mtkit.evaluation.evaluate import evaluate_model

    names = inputs.metric_names(metrics, tokenize)
    if hyp:
        inputs.check_hyp_arguments(hyp, ref, bool(run or src or split), paired_bs)
        _score_files(hyp, ref or [], names, tokenize, paired_bs, bs_samples, bs_seed, json_out)
        return
    translator = open_engine(inputs.check_model_arguments(run, paired_bs), device, engine, quantize)
    dec = SearchFlags(
        beam_size=beam, greedy=greedy, length_penalty=length_penalty, length_norm=length_norm,
        early_stopping=early_stopping, max_len_a=max_len_a, max_len_b=max_len_b, min_len=min_len,
        no_repeat_ngram=no_repeat_ngram, max_tokens=batch_tokens, precision=precision,
        attention_kernel=attention_kernel,
    ).apply(translator.config.decoding)  # fmt: skip
    tokenize = inputs.run_tokenize(translator, tokenize, names)
    eval_set = inputs.eval_inputs(translator, split, src, ref)
    out = output or inputs.default_hyp_path(translator, split, src, dec, len(run or []))
    output_guard(list(run or []), list(eval_set.paths), overwrite).check(out)
    shown = Progress.on_stderr(progress)
    print_report(evaluate_model(translator, eval_set, dec, names, out, tokenize, shown), json_out)


def _score_files(
    hyps: list[Path],
    refs: list[Path],
    names: list[str],
    tokenize: str | None,
    paired_bs: bool,
    bs_samples: int,
    bs_seed: int,
    json_out: bool,
) -> None:
    """Score one hypothesis file, or compare several with paired bootstrap resampling (BLEU
    tokenized with --tokenize, 13a by default: files carry no run config)."""
    tokenize = tokenize or "13a"
    from mtkit.evaluation.evaluate import compare_files, score_files

    if paired_bs:
        check_positive("--bs-samples", bs_samples)
        comparison = compare_files(hyps, refs, names, tokenize, bs_samples, bs_seed)
        print_comparison(comparison, json_out)
        return
    print_report(score_files(hyps[0], refs, names, tokenize), json_out)
