"""What `mtkit evaluate` scores: which arguments go together, the metrics and BLEU tokenizer,
the sources and references, and where the hypotheses go."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mtkit.evaluation.evaluate import (
    EvalSet,
    EvaluationError,
    check_counts,
    file_set,
    read_lines,
    split_set,
)
from mtkit.evaluation.metrics import make_metric


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
        inputs.references = [read_lines(r) for r in refs]
        inputs.reference_names = [str(r) for r in refs]
        check_counts(
            inputs.source_name, len(inputs.sources), inputs.reference_names, inputs.references
        )
    return inputs


def default_hyp_path(engine: Any, split: str | None, src: Path | None) -> Path:
    """RUN/<split or source stem>.hyp.<target language>, beside the checkpoint."""
    run_dir = engine.checkpoint.parent
    stem = src.stem if src is not None else (split or "test")
    return Path(run_dir) / f"{stem}.hyp.{engine.config.data.tgt_lang}"
