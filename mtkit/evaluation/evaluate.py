"""`mtkit evaluate`: translate a test set (or take existing hypotheses) and score it."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mtkit.config.schema import DecodingConfig
from mtkit.errors import MtkitError, plural
from mtkit.evaluation.config_paths import file_problem, path_hint
from mtkit.evaluation.metrics import MetricResult, corpus_scores
from mtkit.evaluation.significance import (
    DEFAULT_SAMPLES,
    DEFAULT_SEED,
    Comparison,
    paired_bootstrap,
)
from mtkit.files import atomic_write_bytes, read_lines
from mtkit.progress import QUIET, Progress
from mtkit.translation.translator import Translator

logger = logging.getLogger(__name__)


class EvaluationError(MtkitError):
    """Inputs to evaluation that cannot be scored (missing files, unequal line counts...)."""


@dataclass
class Report:
    """What was scored, how, and the scores with their sacrebleu signatures."""

    scores: list[MetricResult]
    n_sentences: int
    references: list[str]
    hypotheses_file: str | None = None
    source_file: str | None = None
    checkpoint: str | None = None
    decoding: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    tokenize: str = "13a"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)


@dataclass
class EvalSet:
    """Sources and line-aligned reference streams, with names for the report."""

    sources: list[str]
    references: list[list[str]]
    source_name: str
    reference_names: list[str]
    paths: list[Path] = field(default_factory=list)  # the files read (an output must not be one)


def check_counts(
    name: str, n: int, ref_names: Sequence[str], refs: Sequence[Sequence[str]]
) -> None:
    """Every reference stream must have as many lines as the hypotheses/sources."""
    for ref_name, lines in zip(ref_names, refs, strict=True):
        if len(lines) != n:
            raise EvaluationError(
                f"{ref_name} has {plural(len(lines), 'line')} but {name} has {n}; they must be "
                "line-aligned"
            )


def score_files(
    hyp: Path, refs: Sequence[Path], metrics: Sequence[str], tokenize: str = "13a"
) -> Report:
    """Score an existing hypothesis file against one or more reference files."""
    hypotheses = list(read_lines(hyp))
    references = [list(read_lines(r)) for r in refs]
    names = [str(r) for r in refs]
    check_counts(str(hyp), len(hypotheses), names, references)
    scores = corpus_scores(hypotheses, references, metrics, tokenize=tokenize)
    return Report(scores, len(hypotheses), names, hypotheses_file=str(hyp), tokenize=tokenize)


def compare_files(
    hyps: Sequence[Path],
    refs: Sequence[Path],
    metrics: Sequence[str],
    tokenize: str = "13a",
    n_samples: int = DEFAULT_SAMPLES,
    seed: int = DEFAULT_SEED,
) -> Comparison:
    """Paired bootstrap resampling between hypothesis files; the first is the baseline."""
    if len(hyps) < 2:
        raise EvaluationError("--paired-bs compares systems: give two or more --hyp files")
    references = [list(read_lines(r)) for r in refs]
    names = [str(r) for r in refs]
    systems = []
    for path in hyps:
        lines = list(read_lines(path))
        check_counts(str(path), len(lines), names, references)
        systems.append((str(path), lines))
    comparison = paired_bootstrap(systems, references, metrics, tokenize, n_samples, seed)
    comparison.references = names
    return comparison


def file_set(src: Path, refs: Sequence[Path]) -> EvalSet:
    """A source file and its reference files."""
    sources = list(read_lines(src))
    references = [list(read_lines(r)) for r in refs]
    names = [str(r) for r in refs]
    check_counts(str(src), len(sources), names, references)
    return EvalSet(sources, references, str(src), names, [src, *refs])


def split_set(translator: Any, split: str) -> EvalSet:
    """A split of the run's data config (`translator`: an engine, or anything with the
    run's `config` and a `checkpoint` path that error messages name as its origin).

    `format: text` splits given as files are read as they are (scores compare with other
    systems on the same files). Any other format, and splits carved out of train, come from
    the prepared data (`<prepared_dir>/text/<split>`, Unicode/whitespace-normalised).
    """
    data = translator.config.data
    if split not in ("test", "valid"):
        raise EvaluationError(f"--split: expected test or valid, got '{split}'")
    prefix = getattr(data, split)
    if data.format == "text" and prefix is not None:
        files = [Path(f"{prefix}.{lang}") for lang in (data.src_lang, data.tgt_lang)]
        for path in files:
            problem = file_problem(translator, f"data.{split}", path)
            if problem is not None:
                raise EvaluationError(problem)
        return file_set(files[0], files[1:])
    from mtkit.data.batching import load_prepared_text

    prepared = Path(data.prepared_dir)
    try:
        splits = load_prepared_text(prepared)
    except MtkitError:
        hint = path_hint(translator, "data.prepared_dir", prepared)
        raise EvaluationError(
            f"the {split} split comes from the prepared data, but {prepared} holds none{hint}; "
            "run `mtkit prepare` with the run's config, or pass --src and --ref"
        ) from None
    if split not in splits:
        raise EvaluationError(f"{prepared} has no {split} split; pass --src and --ref")
    rows = splits[split]
    name = f"{prepared / 'text' / split}"
    return EvalSet(list(rows["src"]), [list(rows["tgt"])], f"{name} (src)", [f"{name} (tgt)"])


def evaluate_model(
    translator: Translator,
    inputs: EvalSet,
    dec: DecodingConfig,
    metrics: Sequence[str],
    out: Path,
    tokenize: str = "13a",
    progress: Progress = QUIET,
) -> Report:
    """Translate the sources, write the hypotheses to `out`, and score them."""
    start = time.monotonic()
    with progress.task("translating", total=len(inputs.sources), unit="lines") as task:
        if isinstance(translator, Translator):
            hypotheses = translator.translate(inputs.sources, dec, advance=task.advance)
        else:  # a CTranslate2 export translates the whole set at once
            hypotheses = translator.translate(inputs.sources, dec)
            task.advance(len(hypotheses))
    seconds = time.monotonic() - start
    atomic_write_bytes(out, "".join(h + "\n" for h in hypotheses).encode("utf-8"))
    scores = corpus_scores(hypotheses, inputs.references, metrics, tokenize=tokenize)
    return Report(
        scores,
        len(inputs.sources),
        inputs.reference_names,
        hypotheses_file=str(out),
        source_file=inputs.source_name,
        checkpoint=str(translator.checkpoint),
        decoding=asdict(dec),
        seconds=seconds,
        tokenize=tokenize,
    )
