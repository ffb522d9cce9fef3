"""What `mtkit evaluate` scores: which arguments go together, the metrics and BLEU tokenizer,
the sources and references, and where the hypotheses go."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mtkit.config.schema import DecodingConfig
from mtkit.evaluation.evaluate import (
    EvalSet,
    EvaluationError,
    check_counts,
    file_set,
    split_set,
)
from mtkit.evaluation.metrics import make_metric
from mtkit.files import read_lines


def metric_names(metrics: str, tokenize: str | None) -> list[str]:
    """The comma-separated metric names, each checked now: a typo fails before translating."""
    names = [m.strip() for m in metrics.split(",") if m.strip()]
    for name in names:
        make_metric(name, tokenize or "13a")
    return names


def check_hyp_arguments(
    hyps: Sequence[Path], refs: Sequence[Path] | None, model_given: bool, paired_bs: bool
) -> None:
    """--hyp scores existing files: it needs --ref and excludes a model, --src and --split."""
    if not refs:
        raise EvaluationError("--hyp needs at least one --ref")
    if model_given:
        raise EvaluationError("--hyp scores existing files: drop the run, --src and --split")
    if not paired_bs and len(hyps) > 1:
        raise EvaluationError("several --hyp files: add --paired-bs to compare them")


def check_model_arguments(run: Sequence[Path] | None, paired_bs: bool) -> Sequence[Path]:
    """Without --hyp, a run or checkpoint translates the sources; --paired-bs needs --hyp."""
    if paired_bs:
        raise EvaluationError("--paired-bs compares hypothesis files: give two or more --hyp")
    if not run:
        raise EvaluationError("give a run directory/checkpoint to translate, or --hyp")
    return run


def run_tokenize(engine: Any, tokenize: str | None, names: Sequence[str]) -> str:
    """--tokenize, else the run's `evaluation.tokenize` (checked before translating)."""
    if tokenize is None:
        tokenize = str(engine.config.evaluation.tokenize)
        if "bleu" in names:
            make_metric("bleu", tokenize)
    return tokenize


def eval_inputs(
    engine: Any, split: str | None, src: Path | None, refs: Sequence[Path] | None
) -> EvalSet:
    """--src with its --ref files, or a split of the run's data (test by default), scored
    against the split's references or against --ref files given for its sources."""
    if src is not None:
        if split is not None:
            raise EvaluationError("give either --split or --src, not both")
        if not refs:
            raise EvaluationError("--src needs at least one --ref")
        return file_set(src, refs)
    inputs = split_set(engine, split or "test")
    if refs:  # other references for the split's sources
        inputs.references = [list(read_lines(r)) for r in refs]
        inputs.reference_names = [str(r) for r in refs]
        inputs.paths += refs
        check_counts(
            inputs.source_name, len(inputs.sources), inputs.reference_names, inputs.references
        )
    return inputs


def default_hyp_path(
    engine: Any, split: str | None, src: Path | None, dec: DecodingConfig, n_models: int = 1
) -> Path:
    """RUN/<split or source stem>.<checkpoint>.<search>.hyp.<target language>, beside the
    checkpoint, e.g. runs/demo/test.best.beam5.lp1.0.hyp.de: evaluations with another
    checkpoint or other search options never share a file."""
    checkpoint = Path(engine.checkpoint)
    stem = src.stem if src is not None else (split or "test")
    model = checkpoint.stem if n_models == 1 else f"ensemble{n_models}"
    search = search_label(dec, engine.config.decoding)
    name = f"{stem}.{model}.{search}.hyp.{engine.config.data.tgt_lang}"
    return checkpoint.parent / name


def search_label(dec: DecodingConfig, default: DecodingConfig) -> str:
    """'greedy' or 'beam5.lp1.0', then every other search option that differs from the run's
    `default` ('norm-average', 'minlen3', 'norepeat3', 'maxlen1.5x10')."""
    parts = ["greedy" if dec.beam_size == 1 else f"beam{dec.beam_size}.lp{dec.length_penalty}"]
    if dec.beam_size > 1 and dec.length_norm != default.length_norm:
        parts.append(f"norm-{dec.length_norm}")
    if dec.beam_size > 1 and dec.early_stopping != default.early_stopping:
        parts.append(f"stop-{dec.early_stopping}")
    if dec.min_len != default.min_len:
        parts.append(f"minlen{dec.min_len}")
    if dec.no_repeat_ngram != default.no_repeat_ngram:
        parts.append(f"norepeat{dec.no_repeat_ngram}")
    if (dec.max_len_a, dec.max_len_b) != (default.max_len_a, default.max_len_b):
        parts.append(f"maxlen{dec.max_len_a}x{dec.max_len_b}")
    return ".".join(parts)
