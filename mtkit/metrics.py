"""sacrebleu wrappers: corpus BLEU, chrF, chrF++ and TER, each with its signature."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

METRICS = ("bleu", "chrf", "chrf++", "ter")


@dataclass(frozen=True)
class MetricResult:
    """One corpus-level score with the sacrebleu signature that makes it reproducible."""

    name: str
    score: float
    signature: str
    text: str  # sacrebleu's own formatted line, e.g. "BLEU = 27.3 58.1/33.0/20.9/13.2 (BP = ...)"


def _metric(name: str, tokenize: str, lowercase: bool) -> object:
    from sacrebleu.metrics.bleu import BLEU
    from sacrebleu.metrics.chrf import CHRF
    from sacrebleu.metrics.ter import TER

    if name == "bleu":
        return BLEU(tokenize=tokenize, lowercase=lowercase)
    if name == "chrf":
        return CHRF(lowercase=lowercase)
    if name == "chrf++":
        return CHRF(word_order=2, lowercase=lowercase)
    if name == "ter":
        return TER(case_sensitive=not lowercase)
    raise ValueError(f"unknown metric '{name}' (expected one of {', '.join(METRICS)})")


def corpus_scores(
    hypotheses: Sequence[str],
    references: Sequence[Sequence[str]],
    metrics: Sequence[str] = ("bleu", "chrf"),
    tokenize: str = "13a",
    lowercase: bool = False,
) -> list[MetricResult]:
    """Score detokenised hypotheses against one or more reference streams."""
    for i, ref in enumerate(references):
        if len(ref) != len(hypotheses):
            raise ValueError(
                f"reference set {i + 1} has {len(ref)} lines but there are "
                f"{len(hypotheses)} hypotheses"
            )
    results = []
    for name in metrics:
        metric = _metric(name, tokenize, lowercase)
        score = metric.corpus_score(list(hypotheses), [list(r) for r in references])  # type: ignore[attr-defined]
        signature = str(metric.get_signature())  # type: ignore[attr-defined]
        results.append(MetricResult(name, float(score.score), signature, str(score)))
    return results


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Plain sacreBLEU (13a, cased) of one reference stream."""
    return corpus_scores(hypotheses, [references], metrics=("bleu",))[0].score
