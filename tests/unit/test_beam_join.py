"""Continuous batching in beam search: sentences that join a running `BeamSearch` between steps
get the hypotheses they get alone (mtkit.search.beam, mtkit.model.cache)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import torch
from torch import Tensor

from mtkit.config.schema import DecodingConfig
from mtkit.model.masks import pad_mask
from mtkit.search.beam import BeamSearch, beam_search
from mtkit.search.common import Hypothesis, Seq2Seq
from mtkit.search.ensemble import Ensemble
from tests.unit.test_search import IDS, PAD, VOCAB, tiny_model


def sources(n: int, seed: int = 3) -> list[Tensor]:
    """`n` sources of 2..9 tokens (no EOS needed by the model)."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 10, (n,), generator=gen).tolist()
    return [torch.randint(3, VOCAB, (length,), generator=gen) for length in lengths]


def padded(rows: list[Tensor]) -> tuple[Tensor, Tensor]:
    src = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=PAD)
    return src, pad_mask(src, PAD)


def alone(model: Seq2Seq, src: Tensor, dec: DecodingConfig) -> list[Hypothesis]:
    return beam_search(model, *padded([src]), dec, **IDS)[0]


def run_joining(
    model: Seq2Seq, srcs: list[Tensor], dec: DecodingConfig, arrivals: list[int]
) -> dict[int, list[Hypothesis]]:
    """Sentence i joins before step arrivals[i]; step until all are done."""
    search = BeamSearch(model, dec, use_cache=True, **IDS)
    done: dict[int, list[Hypothesis]] = {}
    step = 0
    with torch.inference_mode():
        while len(done) < len(srcs):
            new = [i for i, at in enumerate(arrivals) if at == step]
            if new:
                search.add(*padded([srcs[i] for i in new]), new)
            done.update(search.step())
            step += 1
            assert step < 500
    return done


def assert_same(got: list[Hypothesis], want: list[Hypothesis]) -> None:
    assert [h.tokens for h in got] == [h.tokens for h in want]
    assert [h.score for h in got] == pytest.approx([h.score for h in want], abs=1e-4)
    assert [h.log_prob for h in got] == pytest.approx([h.log_prob for h in want], abs=1e-4)


@pytest.mark.parametrize(
    "dec",
    [
        DecodingConfig(beam_size=4, max_len_a=1.5, max_len_b=4),
        DecodingConfig(beam_size=3, nbest=2, min_len=3, max_len_a=1.0, max_len_b=3),
        DecodingConfig(beam_size=2, length_norm="average", max_len_b=6),
    ],
    ids=["gnmt", "nbest-min-len", "average"],
)
def test_sentences_joining_between_steps_decode_as_alone(dec: DecodingConfig) -> None:
    model = tiny_model()
    srcs = sources(7)
    arrivals = [0, 0, 1, 3, 3, 4, 9]  # a later source may be longer than all before it
    got = run_joining(model, srcs, dec, arrivals)
    for i, src in enumerate(srcs):
        assert_same(got[i], alone(model, src, dec))


def test_sentences_added_twice_before_the_first_step_decode_as_alone() -> None:
    model, dec = tiny_model(), DecodingConfig(beam_size=3, nbest=2, max_len_a=1.5, max_len_b=4)
    srcs = sources(5, seed=4)
    search = BeamSearch(model, dec, use_cache=True, **IDS)
    done: dict[int, list[Hypothesis]] = {}
    with torch.inference_mode():
        search.add(*padded(srcs[:3]), [0, 1, 2])  # a new batch: its first step has one row each
        search.add(*padded(srcs[3:]), [3, 4])  # joins before that step
        while search.sentences:
            done.update(search.step())
    for i, src in enumerate(srcs):
        assert_same(done[i], alone(model, src, dec))


def test_an_ensemble_can_be_joined() -> None:
    ensemble = Ensemble([tiny_model(seed=0), tiny_model(seed=1)]).eval()
    dec = DecodingConfig(beam_size=3, max_len_b=5)
    srcs = sources(4, seed=5)
    got = run_joining(ensemble, srcs, dec, [0, 1, 2, 2])
    for i, src in enumerate(srcs):
        assert_same(got[i], alone(ensemble, src, dec))


def test_free_cache_columns_never_reach_a_joined_search() -> None:
    """The free column `select` leaves (uninitialised memory) is filled with NaN before every
    join: the joined sentences still decode as alone, so no step reads it unwritten."""
    model = tiny_model()
    dec = DecodingConfig(beam_size=3, max_len_b=5)
    srcs = sources(4, seed=11)
    search = BeamSearch(model, dec, use_cache=True, **IDS)
    done: dict[Any, list[Hypothesis]] = {}
    with torch.inference_mode():
        for step in range(60):
            if search.stepper is not None and search.stepper.cache is not None:
                for k, v in search.stepper.cache.self_kv:
                    k[:, :, -1].fill_(float("nan"))
                    v[:, :, -1].fill_(float("nan"))
            if step < len(srcs):
                search.add(*padded([srcs[step]]), [step])
            done.update(search.step())
            if len(done) == len(srcs):
                break
    assert len(done) == len(srcs)
    for i, src in enumerate(srcs):
        assert_same(done[i], alone(model, src, dec))


def test_a_search_joined_at_every_step_keeps_its_cache_short() -> None:
    model = tiny_model()
    dec = DecodingConfig(beam_size=2, max_len_a=0.0, max_len_b=6)  # at most 6 tokens each
    srcs = sources(30, seed=7)
    search = BeamSearch(model, dec, use_cache=True, **IDS)
    widths: list[int] = []
    done: dict[Any, list[Hypothesis]] = {}
    with torch.inference_mode():
        for step in range(200):
            if step < len(srcs):
                search.add(*padded([srcs[step]]), [step])
            done.update(search.step())
            if search.stepper is not None:
                assert search.stepper.cache is not None
                widths.append(search.stepper.cache.position)
            if len(done) == len(srcs):
                break
    assert len(done) == len(srcs)
    assert max(widths) <= 7  # columns of sentences that left are dropped: never 30+
    for i in (0, 10, 29):
        assert_same(done[i], alone(model, srcs[i], dec))


def test_joining_is_refused_without_the_cache_or_with_an_ngram_ban() -> None:
    model = tiny_model()
    src, mask = padded(sources(2))
    for dec, cache in ((DecodingConfig(beam_size=2), False),
                       (DecodingConfig(beam_size=2, no_repeat_ngram=2), True)):  # fmt: skip
        search = BeamSearch(model, dec, use_cache=cache, **IDS)
        with torch.inference_mode():
            search.add(src, mask, [0, 1])
            search.step()
            with pytest.raises(ValueError, match="join"):
                search.add(src, mask, [2, 3])


def test_a_search_that_ran_empty_starts_again_at_column_zero() -> None:
    model = tiny_model()
    dec = replace(DecodingConfig(beam_size=2), max_len_a=0.0, max_len_b=2)
    srcs = sources(2)
    search = BeamSearch(model, dec, use_cache=True, **IDS)
    with torch.inference_mode():
        search.add(*padded([srcs[0]]), ["a"])
        first = dict(search.step() + search.step() + search.step())
        assert search.sentences == 0 and search.stepper is None
        search.add(*padded([srcs[1]]), ["b"])
        assert search.prefix.size(1) == 1  # BOS only: a new batch
        second = dict(search.step() + search.step() + search.step())
    assert_same(first["a"], alone(model, srcs[0], dec))
    assert_same(second["b"], alone(model, srcs[1], dec))
