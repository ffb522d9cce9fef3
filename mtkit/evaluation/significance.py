"""Paired bootstrap resampling between systems (`mtkit evaluate --hyp A --hyp B --paired-bs`).

This is sacreBLEU's paired bootstrap test (`sacrebleu --paired-bs`, after Koehn 2004): draw
`n_samples` resamples of the test sentences (the same ones for every system), score each with
the per-sentence sufficient statistics, and take
- per system: the mean resampled score and the half-width of its 95% interval;
- per system against the baseline (the first): the p-value of the null hypothesis "no
  difference", from the resampled absolute differences shifted to mean zero, p = (1 + #{shifted
  >= observed}) / (1 + n_samples); and the 95% interval of the paired difference.
With the same seed the resamples, means and intervals equal sacreBLEU's. One change: sacreBLEU
counts shifted > observed, which gives two identical systems p = 1 / (n + 1), "significant";
counting >= gives them p = 1, as it should. Differing systems practically never tie.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import numpy.typing as npt

from mtkit.evaluation.metrics import (
    check_references,
    make_metric,
    score_from_statistics,
    sentence_statistics,
)

DEFAULT_SAMPLES = 1000
DEFAULT_SEED = 12345  # sacreBLEU's default (SACREBLEU_SEED)


@dataclass
class SystemResult:
    """One system's score on one metric, with bootstrap statistics."""

    name: str
    score: float  # on the full test set
    mean: float  # mean over the resamples
    ci: float  # half-width of the 95% interval around `mean`
    p_value: float | None = None  # against the baseline; None for the baseline itself
    delta: float | None = None  # score - baseline score
    delta_ci: tuple[float, float] | None = None  # 95% interval of the paired difference

    def significant(self, level: float = 0.05) -> bool:
        return self.p_value is not None and self.p_value < level


@dataclass
class MetricComparison:
    """All systems on one metric; `systems[0]` is the baseline."""

    metric: str
    signature: str
    higher_is_better: bool
    systems: list[SystemResult]


@dataclass
class Comparison:
    """The whole paired test: what was compared, how, and the results per metric."""

    metrics: list[MetricComparison]
    n_sentences: int
    n_samples: int
    seed: int
    references: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)


def _interval(values: npt.NDArray[np.float64]) -> tuple[float, float]:
    """The 95% interval of resampled values, with sacreBLEU's index convention."""
    ordered = np.sort(values)
    low = len(ordered) // 40
    return float(ordered[low]), float(ordered[len(ordered) - low - 1])


def resample_indices(n_sentences: int, n_samples: int, seed: int) -> npt.NDArray[np.int64]:
    """Shapes: -> (n_samples, n_sentences) sentence indices, drawn with replacement."""
    rng = np.random.default_rng(seed)
    return rng.choice(n_sentences, size=(n_samples, n_sentences), replace=True)


def _resampled_scores(
    metric: object, stats: npt.NDArray[np.float64], idx: npt.NDArray[np.int64]
) -> npt.NDArray[np.float64]:
    """Shapes: stats (n_sentences, n_stats), idx (n_samples, n_sentences) -> (n_samples,)."""
    return np.array([score_from_statistics(metric, stats[row].sum(axis=0)) for row in idx])


def paired_bootstrap(
    systems: Sequence[tuple[str, Sequence[str]]],
    references: Sequence[Sequence[str]],
    metrics: Sequence[str] = ("bleu",),
    tokenize: str = "13a",
    n_samples: int = DEFAULT_SAMPLES,
    seed: int = DEFAULT_SEED,
) -> Comparison:
    """Compare named hypothesis lists (the first is the baseline) on the same references."""
    if len(systems) < 2:
        raise ValueError("paired bootstrap needs at least two systems")
    if n_samples < 1:
        raise ValueError(f"n_samples must be positive, got {n_samples}")
    n = len(systems[0][1])
    for _, hyps in systems:
        check_references(hyps, references)
    idx = resample_indices(n, n_samples, seed)  # (n_samples, n)
    out = []
    for name in metrics:
        metric = make_metric(name, tokenize)
        higher = name != "ter"
        results: list[SystemResult] = []
        base_score, base_samples = 0.0, np.zeros(0)
        for i, (sys_name, hyps) in enumerate(systems):
            stats = np.array(sentence_statistics(metric, hyps, references), dtype=np.float64)
            score = score_from_statistics(metric, stats.sum(axis=0))
            samples = _resampled_scores(metric, stats, idx)  # (n_samples,)
            low, high = _interval(samples)
            result = SystemResult(sys_name, score, float(samples.mean()), 0.5 * (high - low))
            if i == 0:
                base_score, base_samples = score, samples
            else:
                diffs = np.abs(samples - base_samples)  # (n_samples,)
                shifted = diffs - diffs.mean()
                observed = abs(score - base_score)
                result.p_value = float((np.sum(shifted >= observed) + 1) / (n_samples + 1))
                result.delta = score - base_score
                result.delta_ci = _interval(samples - base_samples)
            results.append(result)
        signature = metric.get_signature()  # known once statistics were extracted (nrefs)
        signature.update("seed", str(seed))
        signature.update("bs", n_samples)
        out.append(MetricComparison(name, str(signature), higher, results))
    return Comparison(out, n, n_samples, seed)
