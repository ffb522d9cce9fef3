"""The dynamic batcher of `mtkit serve`, in process, on a tiny random-weight Translator:
rounds, continuous batching (beam-search sentences joining the running search), and auto
(rounds, continuous while enough sentences are in flight).

Jobs are queued before the worker starts, so which jobs share a round is fixed, not timing.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Sequence
from typing import Any, cast

import pytest

from mtkit.config.schema import DecodingConfig
from mtkit.search.beam import BeamSearch
from mtkit.serve.batcher import Batcher
from mtkit.serve.engines import Engine
from mtkit.serve.jobs import Job, QueueFull, source_lengths
from mtkit.translation.results import Translation
from mtkit.translation.streaming import TranslationStream
from mtkit.translation.translator import Translator
from tests.tiny_translator import DATA, head, make_translator

SOURCES = [line for line in head(DATA / "test.en", 30) if line][:20]
TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def translator(tmp_path_factory: pytest.TempPathFactory) -> Translator:
    return make_translator(tmp_path_factory.mktemp("tiny"))


def batcher_of(
    engine: Engine, translator: Translator, batching: str = "rounds", **kwargs: float
) -> Batcher:
    lengths = functools.partial(
        source_lengths, translator.tokenizers, translator.config.model.max_positions
    )
    return Batcher(engine, lengths, max_wait_s=kwargs.get("max_wait_s", 0.0),
                   max_pending=int(kwargs.get("max_pending", 1000)), batching=batching,
                   continuous_from=int(kwargs.get("continuous_from", 3)))  # fmt: skip


# auto starts a running search from 3 sentences here, so these tests take both of its paths
@pytest.fixture(params=["rounds", "continuous", "auto"])
def modes(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def batcher(translator: Translator) -> Iterator[Batcher]:
    b = batcher_of(translator, translator)
    yield b
    b.close()


@pytest.fixture
def either(translator: Translator, modes: str) -> Iterator[Batcher]:
    """A batcher in rounds, in continuous mode, then in auto."""
    b = batcher_of(translator, translator, modes)
    yield b
    b.close()


def dec_of(translator: Translator, **options: object) -> DecodingConfig:
    return dataclasses.replace(translator.config.decoding, **options)  # type: ignore[arg-type]


def results(job: Job) -> list[Translation]:
    return job.future.result(timeout=TIMEOUT_S)


def same(got: list[Translation], want: list[Translation]) -> None:
    assert [t.text for t in got] == [t.text for t in want]
    assert [t.source for t in got] == [t.source for t in want]
    for g, w in zip(got, want, strict=True):
        assert [c.text for c in g.nbest] == [c.text for c in w.nbest]
        assert [c.score for c in g.nbest] == pytest.approx([c.score for c in w.nbest], rel=1e-4)


def test_jobs_share_batches_and_get_their_own_answers(
    translator: Translator, batcher: Batcher
) -> None:
    decs = [dec_of(translator, beam_size=b, nbest=min(b, 2)) for b in (1, 2, 4)]
    jobs = [
        (batcher.submit(SOURCES[i : i + 1 + i % 3], decs[i % 3]), i) for i in range(15)
    ]  # queued before the worker runs: one round takes several of them
    batcher.start()
    for job, i in jobs:
        same(results(job), translator.translate_full(SOURCES[i : i + 1 + i % 3], decs[i % 3]))
    assert batcher.sentences == sum(len(job.lines) for job, _ in jobs)
    assert batcher.batches < len(jobs)
    assert batcher.pending == 0


def test_a_job_spans_batches_in_order(translator: Translator, either: Batcher) -> None:
    dec = dec_of(translator, beam_size=2, max_tokens=40)  # a few sentences per batch
    lines = [*SOURCES[:12], "", SOURCES[12]]
    job = either.submit(lines, dec)
    either.start()
    same(results(job), translator.translate_full(lines, dec))
    assert either.batches > 1 or either.batching != "rounds"


def test_sampling_requests_are_not_mixed(translator: Translator, either: Batcher) -> None:
    """Each sampling job is its own call, so its seed gives translate's samples."""
    dec = dec_of(translator, sampling=True, seed=3, nbest=2, top_k=10)
    first = either.submit(SOURCES[:4], dec)
    second = either.submit(SOURCES[4:9], dec)
    either.start()
    same(results(first), translator.translate_full(SOURCES[:4], dec))
    same(results(second), translator.translate_full(SOURCES[4:9], dec))


def test_full_queue_refuses(translator: Translator, modes: str) -> None:
    batcher = batcher_of(translator, translator, modes, max_pending=3)
    dec = translator.config.decoding
    kept = batcher.submit(SOURCES[:2], dec)
    with pytest.raises(QueueFull, match="limit 3"):
        batcher.submit(SOURCES[:2], dec)
    small = batcher.submit(SOURCES[:1], dec)
    batcher.start()
    assert len(results(kept)) == 2 and len(results(small)) == 1
    batcher.close()
    assert batcher.pending == 0


def test_cancelled_job_is_dropped(translator: Translator, either: Batcher) -> None:
    dec = translator.config.decoding
    gone = either.submit(SOURCES[:5], dec)
    kept = either.submit(SOURCES[5:7], dec)
    either.cancel(gone)
    either.start()
    assert len(results(kept)) == 2
    either.close()
    assert gone.future.cancelled()
    assert either.sentences == 2 and either.pending == 0


def test_empty_request(translator: Translator, either: Batcher) -> None:
    assert results(either.submit([], translator.config.decoding)) == []
    assert either.pending == 0


class Failing:
    """An engine that fails on any batch holding the line 'boom'."""

    def __init__(self, translator: Translator) -> None:
        self.translator = translator

    def translate_full(self, lines: Sequence[str], dec: DecodingConfig) -> list[Translation]:
        if "boom" in lines:
            raise RuntimeError("engine failure")
        return self.translator.translate_full(lines, dec)


def test_engine_failure_fails_only_its_requests(translator: Translator) -> None:
    batcher = batcher_of(cast(Engine, Failing(translator)), translator)
    failing = batcher.submit(["boom", SOURCES[0]], dec_of(translator, beam_size=1))
    fine = batcher.submit(SOURCES[:2], dec_of(translator, beam_size=2))
    batcher.start()
    with pytest.raises(RuntimeError, match="engine failure"):
        results(failing)
    assert len(results(fine)) == 2
    batcher.close()
    assert batcher.pending == 0


def test_close_translates_what_is_queued(translator: Translator, modes: str) -> None:
    batcher = batcher_of(translator, translator, modes)
    jobs = [batcher.submit([s], translator.config.decoding) for s in SOURCES[:4]]
    batcher.start()
    batcher.close()
    assert all(job.future.done() and len(job.future.result()) == 1 for job in jobs)


def test_source_lengths_count_eos_and_cap(translator: Translator) -> None:
    limit = translator.config.model.max_positions - 1
    lengths = source_lengths(
        translator.tokenizers, translator.config.model.max_positions,
        ["", "   ", "a cat", "word " * 500],
    )  # fmt: skip
    assert lengths[:2] == [0, 0]
    assert 2 <= lengths[2] <= limit and lengths[3] == limit + 1


class Recording:
    """An engine that records the lines of every batch it is given."""

    def __init__(self, translator: Translator) -> None:
        self.translator = translator
        self.batches: list[list[str]] = []

    def translate_full(self, lines: Sequence[str], dec: DecodingConfig) -> list[Translation]:
        self.batches.append(list(lines))
        return self.translator.translate_full(lines, dec)


def test_a_lone_client_is_not_kept_waiting(translator: Translator) -> None:
    """With one client there is nobody to wait for: max_wait (an hour here) is not spent."""
    batcher = batcher_of(translator, translator, max_wait_s=3600.0)
    batcher.start()
    dec = translator.config.decoding
    for line in SOURCES[:3]:  # one request at a time, each answered before the next
        assert len(results(batcher.submit([line], dec))) == 1
    batcher.close()
    assert batcher.batches == 3


def test_concurrent_clients_share_the_next_round(translator: Translator) -> None:
    """After a round of three clients, the next round waits for three requests (and no
    longer: max_wait is an hour), so requests arriving one after another share a batch."""
    engine = Recording(translator)
    batcher = batcher_of(cast(Engine, engine), translator, max_wait_s=3600.0)
    dec = dec_of(translator, beam_size=2)
    first = [batcher.submit([line], dec) for line in SOURCES[:3]]
    batcher.start()
    assert all(len(results(job)) == 1 for job in first)
    second = [batcher.submit([line], dec) for line in SOURCES[3:6]]
    for job, line in zip(second, SOURCES[3:6], strict=True):
        same(results(job), translator.translate_full([line], dec))
    batcher.close()
    assert sorted(map(sorted, engine.batches)) == sorted(
        [sorted(SOURCES[:3]), sorted(SOURCES[3:6])]
    )


# --------------------------------------------------------------------------- continuous


def test_continuous_jobs_get_translate_outputs(translator: Translator) -> None:
    """Beam-search jobs join one running search per set of options; greedy ones go in rounds."""
    batcher = batcher_of(translator, translator, "continuous")
    decs = [dec_of(translator, beam_size=b, nbest=min(b, 2)) for b in (1, 2, 4)]
    lines = [SOURCES[i : i + 1 + i % 3] + ([""] if i % 4 == 0 else []) for i in range(15)]
    jobs = [batcher.submit(lines[i], decs[i % 3]) for i in range(15)]
    batcher.start()
    for i, job in enumerate(jobs):
        same(results(job), translator.translate_full(lines[i], decs[i % 3]))
    batcher.close()
    assert batcher.sentences == sum(len(job.lines) for job in jobs)
    assert batcher.pending == 0


def test_sentences_join_as_others_finish(
    translator: Translator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With room for a few sentences at a time, the rest join the running search at later
    steps, as others finish, and still get translate's outputs."""
    columns: list[int] = []  # the step (prefix column) at which each join happened
    original = BeamSearch.add

    def add(self: BeamSearch, src: Any, src_mask: Any, keys: list[Any]) -> None:
        columns.append(self.prefix.size(1) - 1 if self.sentences else 0)
        original(self, src, src_mask, keys)

    monkeypatch.setattr(BeamSearch, "add", add)
    dec = dec_of(translator, beam_size=3, max_tokens=80)  # two or three sentences at a time
    batcher = batcher_of(translator, translator, "continuous")
    job = batcher.submit(SOURCES[:14], dec)
    batcher.start()
    same(results(job), translator.translate_full(SOURCES[:14], dec))
    batcher.close()
    assert len(columns) > 5 and max(columns) > 0  # joined a search that was running


def test_a_failing_search_fails_only_its_requests(
    translator: Translator, monkeypatch: pytest.MonkeyPatch
) -> None:
    batcher = batcher_of(translator, translator, "continuous")
    beam, greedy = dec_of(translator, beam_size=2), dec_of(translator, beam_size=1)
    original = TranslationStream.step

    def step(self: TranslationStream) -> list[tuple[Any, Translation]]:
        if self.dec == beam:
            raise RuntimeError("engine failure")
        return original(self)

    monkeypatch.setattr(TranslationStream, "step", step)
    failing = batcher.submit(SOURCES[:3], beam)
    fine = batcher.submit(SOURCES[3:5], greedy)
    batcher.start()
    with pytest.raises(RuntimeError, match="engine failure"):
        results(failing)
    same(results(fine), translator.translate_full(SOURCES[3:5], greedy))
    batcher.close()
    assert batcher.pending == 0


# --------------------------------------------------------------------------------- auto


def test_auto_runs_small_rounds_and_large_ones_continuously(translator: Translator) -> None:
    """auto, from 4 sentences: a 3-sentence round runs to its end, a 6-sentence one starts a
    running search, and once that has run out the next small request is a round again."""
    batcher = batcher_of(translator, translator, "auto", continuous_from=4)
    dec = dec_of(translator, beam_size=2)
    batcher.start()
    counts = []
    for lines in (SOURCES[:3], SOURCES[3:9], SOURCES[9:11]):
        same(results(batcher.submit(lines, dec)), translator.translate_full(lines, dec))
        counts.append((batcher.batches, batcher.steps))
    batcher.close()
    assert counts[0] == (1, 0)  # a round, no search steps
    assert counts[1][0] == 1 and counts[1][1] > 0  # a running search, no round
    assert counts[2] == (2, counts[1][1])  # a round again


def test_auto_lets_the_search_run_out_when_load_falls(
    translator: Translator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request that arrives once fewer than `continuous_from` sentences are in flight does
    not join the running search: it waits for it to finish and goes in the next round."""
    dec = dec_of(translator, beam_size=2)
    late_lines = SOURCES[12:14]
    want = translator.translate_full(late_lines, dec)
    batcher = batcher_of(translator, translator, "auto", continuous_from=5)
    late: list[Job] = []
    original = TranslationStream.step

    def step(self: TranslationStream) -> list[tuple[Any, Translation]]:
        if not late and self.sentences < 4:  # 3 or fewer in flight, 1 request queued
            late.append(batcher.submit(late_lines, dec))
        return original(self)

    monkeypatch.setattr(TranslationStream, "step", step)
    first = batcher.submit(SOURCES[:6], dec)
    batcher.start()
    same(results(first), translator.translate_full(SOURCES[:6], dec))
    assert late, "the search never held fewer than 4 sentences"
    same(results(late[0]), want)
    batcher.close()
    assert batcher.batches == 1  # the late request: a round of its own
