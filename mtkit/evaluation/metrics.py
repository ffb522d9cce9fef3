"""sacrebleu wrappers: corpus BLEU, chrF, chrF++ and TER, each with its signature."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mtkit.errors import MtkitError, plural

METRICS = ("bleu", "chrf", "chrf++", "ter")
# sacrebleu tokenizers that fetch a sentencepiece model on first use (into ~/.sacrebleu)
DOWNLOADING_TOKENIZERS = ("spm", "flores101", "flores200", "spBLEU-1K")


class MetricError(MtkitError):
    """An unknown metric or tokenizer, or one that cannot be set up (e.g. offline)."""


@dataclass(frozen=True)
class MetricResult:
    """One corpus-level score with the sacrebleu signature that makes it reproducible."""

    name: str
    score: float
    signature: str
    text: str  # sacrebleu's own formatted line, e.g. "BLEU = 27.3 58.1/33.0/20.9/13.2 (BP = ...)"


def tokenizers() -> list[str]:
    """The tokenizer names sacrebleu's BLEU accepts (13a, intl, flores200, ...)."""
    from sacrebleu.metrics.bleu import _TOKENIZERS

    return list(_TOKENIZERS)


def make_metric(name: str, tokenize: str = "13a", lowercase: bool = False) -> Any:
    """A sacrebleu metric object; `tokenize` applies to BLEU (chrF/TER have their own)."""
    from sacrebleu.metrics.bleu import BLEU
    from sacrebleu.metrics.chrf import CHRF
    from sacrebleu.metrics.ter import TER

    if name not in METRICS:
        raise MetricError(f"unknown metric '{name}' (expected one of {', '.join(METRICS)})")
    if name == "chrf":
        return CHRF(lowercase=lowercase)
    if name == "chrf++":
        return CHRF(word_order=2, lowercase=lowercase)
    if name == "ter":
        return TER(case_sensitive=not lowercase)
    if tokenize not in tokenizers():
        raise MetricError(
            f"unknown sacreBLEU tokenizer '{tokenize}' (expected one of {', '.join(tokenizers())})"
        )
    try:  # tok:none scores text tokenized on purpose: no "forgot to detokenize?" warning
        return BLEU(tokenize=tokenize, lowercase=lowercase, force=tokenize == "none")
    except (OSError, ImportError, RuntimeError) as e:  # URLError is an OSError
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if tokenize in DOWNLOADING_TOKENIZERS:
            raise MetricError(
                f"tokenizer '{tokenize}': sacreBLEU downloads its sentencepiece model on first "
                f"use (into ~/.sacrebleu/models) and that failed ({reason}); run once with "
                "network access, or copy the model there"
            ) from None
        raise MetricError(f"tokenizer '{tokenize}' cannot be set up: {reason}") from None


def corpus_scores(
    hypotheses: Sequence[str],
    references: Sequence[Sequence[str]],
    metrics: Sequence[str] = ("bleu", "chrf"),
    tokenize: str = "13a",
    lowercase: bool = False,
) -> list[MetricResult]:
    """Score detokenised hypotheses against one or more reference streams."""
    check_references(hypotheses, references)
    results = []
    for name in metrics:
        metric = make_metric(name, tokenize, lowercase)
        score = metric.corpus_score(list(hypotheses), [list(r) for r in references])
        signature = str(metric.get_signature())
        results.append(MetricResult(name, float(score.score), signature, str(score)))
    return results


def check_references(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    """At least one reference stream, each as long as the hypotheses."""
    if not references:
        raise MetricError("no reference stream given")
    for i, ref in enumerate(references):
        if len(ref) != len(hypotheses):
            raise MetricError(
                f"reference set {i + 1} has {plural(len(ref), 'line')} but there "
                f"{'is' if len(hypotheses) == 1 else 'are'} "
                f"{plural(len(hypotheses), 'hypothesis', 'hypotheses')}"
            )


def sentence_statistics(
    metric: Any, hypotheses: Sequence[str], references: Sequence[Sequence[str]]
) -> list[list[float]]:
    """sacrebleu's per-sentence sufficient statistics (n-gram matches, lengths, edits...).

    Summing rows of a subset and calling `score_from_statistics` scores that subset exactly,
    which is what makes bootstrap resampling cheap. (sacrebleu's own significance module uses
    these same two methods.)
    """
    stats = metric._extract_corpus_statistics(list(hypotheses), [list(r) for r in references])
    return [list(map(float, row)) for row in stats]


def score_from_statistics(metric: Any, summed: Any) -> float:
    """The corpus score of summed sufficient statistics (see `sentence_statistics`)."""
    return float(metric._compute_score_from_stats(summed).score)


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Plain sacreBLEU (13a, cased) of one reference stream."""
    return corpus_scores(hypotheses, [references], metrics=("bleu",))[0].score
