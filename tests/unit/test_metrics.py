"""sacreBLEU wrappers and the paired bootstrap test."""

from __future__ import annotations

import logging
import random
import urllib.error

import pytest

from mtkit.evaluation.metrics import MetricError, corpus_scores, make_metric
from mtkit.evaluation.significance import paired_bootstrap
from tests.tiny_translator import DATA, head

REFS = head(DATA / "test.de", 200)


def damaged(lines: list[str], fraction: float, seed: int) -> list[str]:
    """Drop a word from about `fraction` of the lines."""
    rng = random.Random(seed)
    out = []
    for line in lines:
        words = line.split()
        if len(words) > 1 and rng.random() < fraction:
            del words[rng.randrange(len(words))]
        out.append(" ".join(words))
    return out


def test_all_metrics_with_signatures() -> None:
    hyps = damaged(REFS, 0.5, 0)
    results = corpus_scores(hyps, [REFS], ["bleu", "chrf", "chrf++", "ter"])
    assert [r.name for r in results] == ["bleu", "chrf", "chrf++", "ter"]
    bleu, chrf, chrfpp, ter = results
    assert 0 < bleu.score < 100 and 0 < ter.score < 100
    assert "nrefs:1" in bleu.signature and "tok:13a" in bleu.signature
    assert "nw:0" in chrf.signature and "nw:2" in chrfpp.signature
    assert bleu.text.startswith("BLEU = ") and chrfpp.text.startswith("chrF2++ = ")


def test_multi_reference_counts_and_helps() -> None:
    hyps = damaged(REFS, 0.5, 1)
    other = damaged(REFS, 0.5, 2)
    one = corpus_scores(hyps, [other], ["bleu"])[0]
    two = corpus_scores(hyps, [other, REFS], ["bleu"])[0]
    assert "nrefs:2" in two.signature
    assert two.score > one.score
    with pytest.raises(MetricError, match="reference set 2 has 3 lines"):
        corpus_scores(hyps, [REFS, REFS[:3]])


def test_tokenizer_is_passed_through_and_checked() -> None:
    hyps = damaged(REFS, 0.5, 3)
    assert "tok:intl" in corpus_scores(hyps, [REFS], ["bleu"], tokenize="intl")[0].signature
    assert "tok:char" in corpus_scores(hyps, [REFS], ["bleu"], tokenize="char")[0].signature
    with pytest.raises(MetricError, match="unknown sacreBLEU tokenizer 'bogus'.*flores200"):
        corpus_scores(hyps, [REFS], ["bleu"], tokenize="bogus")
    with pytest.raises(MetricError, match="unknown metric 'meteor'"):
        corpus_scores(hyps, [REFS], ["meteor"])


def test_tokenize_none_scores_tokenized_text_without_the_detokenize_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hyps = [f"a cat number {i} sits on the mat ." for i in range(120)]  # >= 100 end in " ."
    refs = [[f"a cat number {i} sat on the mat ." for i in range(120)]]
    with caplog.at_level(logging.WARNING, logger="sacrebleu"):
        corpus_scores(hyps, refs, ["bleu"], tokenize="13a")
    assert "detokenize" in caplog.text  # sacrebleu's check: a real warning for 13a
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sacrebleu"):
        (result,) = corpus_scores(hyps, refs, ["bleu"], tokenize="none")
    assert "detokenize" not in caplog.text
    assert "tok:none" in result.signature and 0 < result.score < 100


def test_flores_tokenizer_offline_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    import sacrebleu.metrics.bleu as bleu_module

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(bleu_module.BLEU, "__init__", offline)
    with pytest.raises(MetricError, match=r"flores200.*downloads.*~/.sacrebleu"):
        make_metric("bleu", tokenize="flores200")


def test_bootstrap_identical_systems_are_not_significant() -> None:
    hyps = damaged(REFS, 0.5, 4)
    result = paired_bootstrap([("a", hyps), ("b", list(hyps))], [REFS], ["bleu", "chrf", "ter"])
    for metric in result.metrics:
        base, other = metric.systems
        assert other.p_value == 1.0 and not other.significant()
        assert other.delta == 0.0 and other.delta_ci == (0.0, 0.0)
        assert base.p_value is None and base.ci > 0
        assert other.mean == base.mean


def test_bootstrap_clearly_better_system_is_significant() -> None:
    worse, better = damaged(REFS, 0.9, 5), damaged(REFS, 0.1, 6)
    result = paired_bootstrap([("worse", worse), ("better", better)], [REFS], ["bleu", "ter"])
    bleu, ter = result.metrics
    assert bleu.higher_is_better and not ter.higher_is_better
    for metric in (bleu, ter):
        other = metric.systems[1]
        assert other.p_value is not None and other.p_value < 0.01
        assert other.delta_ci is not None and other.delta is not None
        low, high = other.delta_ci
        assert low <= other.delta <= high and (low > 0 or high < 0)  # interval excludes 0
    assert bleu.systems[1].delta > 0 > ter.systems[1].delta  # type: ignore[operator]
    assert "bs:1000" in bleu.signature and "seed:12345" in bleu.signature


def test_bootstrap_matches_sacrebleu_on_different_systems() -> None:
    from sacrebleu.metrics.bleu import BLEU
    from sacrebleu.significance import PairedTest

    a, b = damaged(REFS, 0.5, 7), damaged(REFS, 0.4, 8)
    ours = paired_bootstrap([("a", a), ("b", b)], [REFS], ["bleu"]).metrics[0].systems
    _, theirs = PairedTest([("a", a), ("b", b)], {"BLEU": BLEU()}, [REFS], test_type="bs")()
    for mine, ref in zip(ours, theirs["BLEU"], strict=True):
        assert mine.score == pytest.approx(ref.score)  # type: ignore[union-attr]
        assert mine.mean == pytest.approx(ref.mean, abs=1e-3)  # type: ignore[union-attr]
        assert mine.ci == pytest.approx(ref.ci, abs=1e-3)  # type: ignore[union-attr]
    assert ours[1].p_value == pytest.approx(theirs["BLEU"][1].p_value)  # type: ignore[union-attr]
