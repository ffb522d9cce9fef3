"""`mtkit evaluate`: translate a test set (or take existing hypotheses) and score it."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mtkit.checkpoint import atomic_write_bytes
from mtkit.errors import MtkitError
from mtkit.metrics import MetricResult, corpus_scores
from mtkit.translate import DecodeOptions, Translator


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

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)


def read_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 text file without their newline; errors name the file and line."""
    if not path.exists():
        raise EvaluationError(f"{path}: file not found")
    if path.is_dir():
        raise EvaluationError(f"{path}: expected a text file, found a directory")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise EvaluationError(f"{path}: line {line}: invalid UTF-8") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def score_files(
    hyp: Path, refs: Sequence[Path], metrics: Sequence[str], tokenize: str = "13a"
) -> Report:
    """Score an existing hypothesis file against one or more reference files."""
    hypotheses = read_lines(hyp)
    references = [read_lines(r) for r in refs]
    check_counts(hyp, len(hypotheses), refs, references)
    scores = corpus_scores(hypotheses, references, metrics, tokenize=tokenize)
    return Report(scores, len(hypotheses), [str(r) for r in refs], hypotheses_file=str(hyp))


def check_counts(
    hyp: Path, n_hyp: int, refs: Sequence[Path], references: Sequence[Sequence[str]]
) -> None:
    """Every reference file must have as many lines as the hypotheses/sources."""
    for path, lines in zip(refs, references, strict=True):
        if len(lines) != n_hyp:
            raise EvaluationError(
                f"{path} has {len(lines)} lines but {hyp} has {n_hyp}; they must be line-aligned"
            )


def split_files(translator: Translator, split: str) -> tuple[Path, Path]:
    """Source and reference files of a split named in the run's data config."""
    data = translator.config.data
    prefix = {"test": data.test, "valid": data.valid, "train": data.train}.get(split)
    if prefix is None:
        raise EvaluationError(f"the run's config has no data.{split} split; pass --src and --ref")
    if data.format != "text":
        raise EvaluationError(
            f"data.format is '{data.format}': pass the split as --src and --ref text files"
        )
    return Path(f"{prefix}.{data.src_lang}"), Path(f"{prefix}.{data.tgt_lang}")


def evaluate_model(
    translator: Translator,
    src: Path,
    refs: Sequence[Path],
    options: DecodeOptions,
    metrics: Sequence[str],
    out: Path,
    tokenize: str = "13a",
) -> Report:
    """Translate `src`, write the hypotheses to `out`, and score them against `refs`."""
    sources = read_lines(src)
    references = [read_lines(r) for r in refs]
    check_counts(src, len(sources), refs, references)
    start = time.monotonic()
    hypotheses = translator.translate(sources, options)
    seconds = time.monotonic() - start
    atomic_write_bytes(out, "".join(h + "\n" for h in hypotheses).encode("utf-8"))
    scores = corpus_scores(hypotheses, references, metrics, tokenize=tokenize)
    return Report(
        scores,
        len(sources),
        [str(r) for r in refs],
        hypotheses_file=str(out),
        source_file=str(src),
        checkpoint=str(translator.checkpoint),
        decoding=asdict(options),
        seconds=seconds,
    )
