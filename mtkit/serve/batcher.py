"""Dynamic batching: the sentences of concurrent requests share the model's batches.

Requests are queued as `Job`s. One worker thread takes the first waiting job and those already
queued; while a round holds fewer jobs than there were clients at the end of recent rounds,
it waits up to `max_wait_s` for more (never past `decoding.max_tokens` source tokens),
groups the sentences by decoding options, cuts each group into token-budget batches with the
same `token_batches` that `mtkit translate` uses, runs each batch through the engine's batched
search, and hands every sentence back to its job. A job's future is done when its last
sentence is, so one request's sentences may span several batches (and rounds).

Sampling requests are never mixed with others: each is one `translate_full` call, so its seed
gives the samples `mtkit translate` gives for the same lines. The queue is bounded in sentences
(`QueueFull` past it); a cancelled job (timeout, client gone) loses its untranslated sentences.

With `batching="continuous"` (`--batching continuous`), beam-search requests on the PyTorch
engine do not wait for a round: their sentences join the running search between two steps
(iteration-level batching, mtkit.translation.streaming), up to `decoding.max_tokens`, and each
comes back as soon as it is done. Other requests (greedy, sampling, n-gram bans, CTranslate2) go
through rounds as above, without the wait.

With `batching="auto"` it depends on the load: a round that gathers at least `continuous_from`
sentences that could join a search starts one, and requests keep joining it while that many
sentences are in flight or queued; below that, the search runs out (its sentences finish,
nobody new joins) and the next requests go in rounds again. Under light load a round's
clients get their answers together and send again together, which keeps the slowest
request's wait short; under heavy load the tail of a round (a few long sentences decoded
alone) would waste the model, and continuous batching keeps it full.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mtkit.config.schema import DecodingConfig
from mtkit.data.batching import token_batches
from mtkit.serve.engines import Engine
from mtkit.serve.jobs import BatcherClosed, Item, Job, QueueFull
from mtkit.translation.results import Translation
from mtkit.translation.streaming import TranslationStream, can_stream
from mtkit.translation.translator import Translator

logger = logging.getLogger(__name__)


# Sentences join a running search at most every JOIN_EVERY steps: each join encodes its group
# and joins its cache, which costs more than the places it fills sooner save (one process, 64
# sentences in flight, 1,000 test2016 lines, one thread of the Intel Xeon VM, medians of 3:
# 218 / 213 / 156 sentences/s joining every 4 / 2 / 1 steps, `translate` 231), and joining at
# every step did not lower the tail either (a server at 8 clients, three alternating passes:
# p99 197-236 ms against 181-201 every 4 steps).
JOIN_EVERY = 4


class Batcher:
    """A bounded queue of jobs and the one worker thread that translates them."""

    def __init__(
        self,
        engine: Engine,
        lengths: Callable[[Sequence[str]], list[int]],
        *,
        max_wait_s: float = 0.02,
        wait_always: bool = False,
        max_pending: int = 2048,
        batching: str = "auto",
        continuous_from: int = 16,
    ) -> None:
        self.engine = engine
        self.batching = batching  # rounds, continuous or auto (mtkit.serve.settings)
        self.continuous_from = continuous_from  # auto: sentences in flight for continuous
        self.max_wait_s = max_wait_s
        self.wait_always = wait_always  # wait max_wait_s in every round, even for one client
        self.max_pending = max_pending  # sentences queued or being translated
        self._lengths = lengths
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pending = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="mtkit-batcher", daemon=True)
        self._recent: collections.deque[int] = collections.deque(maxlen=8)  # clients per round
        self._streams: dict[Any, _Stream] = {}  # running searches, by decoding options
        self.batches = 0  # batches run in rounds so far
        self.steps = 0  # steps of running searches (continuous batching) so far
        self.step_sentences = 0  # sentences decoded in those steps, summed over the steps
        self.sentences = 0  # sentences translated so far

    @property
    def pending(self) -> int:
        """Sentences queued or being translated."""
        return self._pending

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Translate what is queued, then stop the worker (if it ever started)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._queue.put(None)
        if self._thread.ident is not None:
            self._thread.join()

    def submit(
        self, lines: Sequence[str], dec: DecodingConfig, lengths: list[int] | None = None
    ) -> Job:
        """Queue `lines` (their source `lengths`, if known); the job's future gets one
        Translation per line, in order.

        Raises QueueFull when the queue cannot take this many sentences, BatcherClosed
        while shutting down.
        """
        job = Job(list(lines), self._lengths(lines) if lengths is None else lengths, dec)
        job.results = [None] * len(job.lines)
        job.left = len(job.lines)
        with self._lock:
            if self._closed:
                raise BatcherClosed("the server is shutting down")
            if self._pending + job.left > self.max_pending:
                raise QueueFull(f"{self._pending} sentences are queued (limit {self.max_pending})")
            self._pending += job.left
        if not job.lines:
            self._start(job)
            self._finish(job)
            return job
        self._queue.put(job)
        return job

    def cancel(self, job: Job) -> None:
        """Drop the job's untranslated sentences (its client has gone or timed out)."""
        job.cancelled = True
        job.future.cancel()  # succeeds only while it waits in the queue

    # ----------------------------------------------------------------- worker thread

    def _run(self) -> None:
        if self.batching == "continuous":
            self._run_continuous([], until_quiet=False)
            return
        while True:
            jobs = self._gather()
            if jobs is None:
                return
            if self.batching == "auto" and self._joinable(jobs) >= self.continuous_from:
                if self._run_continuous(jobs, until_quiet=True):
                    return
                continue
            groups: dict[Any, list[Job]] = {}
            for job in jobs:  # only sentences decoded the same way can share a batch
                groups.setdefault(_group_key(job), []).append(job)
            for group in groups.values():
                self._translate_group(group)
            # clients seen at the end of a round: its jobs (whose clients will likely send
            # again) and those that queued meanwhile
            self._recent.append(len(jobs) + self._queue.qsize())

    def _run_continuous(self, jobs: list[Job], *, until_quiet: bool) -> bool:
        """Start `jobs` (round jobs' batches, or sentences joining a search), one step of every
        running search, take what is queued (waiting only while idle), again. Returns True once
        closed and finished; with `until_quiet`, False once fewer than `continuous_from`
        sentences were in flight or queued (after taking no more and finishing the searches).
        """
        closing, taking = False, True
        while True:
            self._distribute(jobs)
            for key, stream in list(self._streams.items()):
                self._advance(stream)
                if not stream.waiting and not stream.search.sentences:
                    del self._streams[key]
            if until_quiet and taking and self._load() < self.continuous_from:
                taking = False  # run the searches out; the queue waits for the next round
            if not self._streams and (closing or not taking):
                return closing
            jobs = []
            if taking:
                jobs, closing = self._take(block=not self._streams and not closing, closing=closing)

    def _distribute(self, jobs: list[Job]) -> None:
        """Jobs' sentences wait to join their search; the others' batches run now, in rounds."""
        rounds: dict[Any, list[Job]] = {}
        for job in jobs:
            stream = self._stream_for(job.dec)
            if stream is None:
                rounds.setdefault(_group_key(job), []).append(job)
            else:
                stream.waiting.extend((job, i) for i in range(len(job.lines)))
        for group in rounds.values():
            self._translate_group(group)

    def _joinable(self, jobs: list[Job]) -> int:
        """Sentences of `jobs` that could join a running search."""
        return sum(len(job.lines) for job in jobs if can_stream(self.engine, job.dec))

    def _load(self) -> int:
        """Sentences in running searches or waiting to join them, and requests queued."""
        streams = self._streams.values()
        return sum(s.search.sentences + len(s.waiting) for s in streams) + self._queue.qsize()

    def _take(self, block: bool, closing: bool) -> tuple[list[Job], bool]:
        """Every queued job (after waiting for one if `block`), and whether the queue closed."""
        jobs: list[Job] = []
        while not closing:
            try:
                job = self._queue.get() if block and not jobs else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                closing = True
            else:
                jobs.append(job)
        return jobs, closing

    def _stream_for(self, dec: DecodingConfig) -> _Stream | None:
        """The running search for these options (started if need be), or None: not streamable."""
        if self.batching == "rounds" or not can_stream(self.engine, dec):
            return None
        key = dataclasses.astuple(dec)
        if key not in self._streams:
            assert isinstance(self.engine, Translator)
            self._streams[key] = _Stream(TranslationStream(self.engine, dec))
        return self._streams[key]

    def _advance(self, stream: _Stream) -> None:
        """Waiting sentences that fit join the search (at most every JOIN_EVERY steps while it
        runs); one step; finished sentences go back."""
        joining: list[Item] = []
        lengths: list[int] = []
        stream.since_join += 1
        may_join = not stream.search.sentences or stream.since_join >= JOIN_EVERY
        while stream.waiting and may_join:
            job, i = stream.waiting[0]
            if not stream.search.fits([*lengths, job.lengths[i]]):
                break
            stream.waiting.popleft()
            if self._live(job):
                joining.append((job, i))
                lengths.append(job.lengths[i])
            else:
                self._release(1)
        if joining:
            stream.since_join = 0
        try:
            done = stream.search.add([job.lines[i] for job, i in joining], joining)
            if stream.search.sentences:
                self.steps += 1
                self.step_sentences += stream.search.sentences
                done += stream.search.step()
        except Exception as e:  # the engine failed (out of memory, ...): fail its requests
            logger.exception("translation failed in a running search")
            self._fail_stream(stream, e)
            return
        for (job, i), translation in done:
            self._deliver(job, i, translation)

    def _fail_stream(self, stream: _Stream, error: Exception) -> None:
        """Fail the requests of a search that raised; the next sentences start a new one."""
        items = [s.key for s in stream.search.live.values()] + list(stream.waiting)
        stream.waiting.clear()
        stream.search = TranslationStream(stream.search.translator, stream.search.dec)
        self._fail(items, error)

    def _fail(self, items: list[Item], error: Exception) -> None:
        """The engine failed on these sentences: their requests get the error."""
        for job in {id(job): job for job, _ in items}.values():
            job.cancelled = True
            if not job.future.done():
                job.future.set_exception(error)
        self._release(len(items))

    def _deliver(self, job: Job, i: int, translation: Translation) -> None:
        job.results[i] = translation
        job.left -= 1
        self.sentences += 1
        if job.left == 0 and not job.cancelled:
            self._finish(job)
        self._release(1)

    def _gather(self) -> list[Job] | None:
        """The first waiting job, then more up to the token budget; None once closed and drained.

        It waits (up to max_wait_s) only for as many jobs as there were clients at the end of the
        recent rounds (a round's jobs plus those queued meanwhile, the most of the last 8): a
        lone client is served at once, while concurrent clients, whose requests come back a
        few ms apart after each round, share the next one. Queued jobs are always taken.
        """
        first = self._queue.get()
        if first is None:
            return None
        jobs, tokens = [first], first.tokens
        want = self.max_pending if self.wait_always else max(self._recent, default=1)
        deadline = time.monotonic() + self.max_wait_s
        while tokens < first.dec.max_tokens:
            wait = deadline - time.monotonic() if len(jobs) < want else 0.0
            try:
                job = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:  # closing: finish these, then stop
                self._queue.put(None)
                break
            jobs.append(job)
            tokens += job.tokens
        return jobs

    def _translate_group(self, jobs: list[Job]) -> None:
        """Token-budget batches over the sentences of jobs that share decoding options."""
        dec = jobs[0].dec
        items: list[Item] = [(job, i) for job in jobs for i in range(len(job.lines))]
        if dec.sampling:  # one call per request, as `mtkit translate` makes for these lines
            batches = [list(range(len(items)))]
        else:
            batches = token_batches([job.lengths[i] for job, i in items], dec.max_tokens)
        for batch in batches:
            live = [items[k] for k in batch if self._live(items[k][0])]
            self._release(len(batch) - len(live))
            if live:
                self._run_batch(live, dec)

    def _live(self, job: Job) -> bool:
        """Whether the job still wants its sentences (marking it running on first use)."""
        if job.cancelled:
            return False
        if job.started is None and not self._start(job):
            job.cancelled = True
            return False
        return True

    def _start(self, job: Job) -> bool:
        job.started = time.perf_counter()
        return job.future.set_running_or_notify_cancel()

    def _run_batch(self, items: list[Item], dec: DecodingConfig) -> None:
        start = time.perf_counter()
        try:
            out = self.engine.translate_full([job.lines[i] for job, i in items], dec)
        except Exception as e:  # the engine failed (out of memory, ...): fail these requests
            logger.exception("translation failed for a batch of %d sentences", len(items))
            self._fail(items, e)
            return
        self.batches += 1
        logger.debug(
            "batch of %d sentences from %d requests in %.0f ms; %d sentences wait",
            len(items), len({id(job) for job, _ in items}), (time.perf_counter() - start) * 1000,
            self._pending - len(items),
        )  # fmt: skip
        for (job, i), translation in zip(items, out, strict=True):
            self._deliver(job, i, translation)

    def _finish(self, job: Job) -> None:
        job.future.set_result([t for t in job.results if t is not None])

    def _release(self, n: int) -> None:
        if n:
            with self._lock:
                self._pending -= n


def _group_key(job: Job) -> Any:
    """Jobs with equal keys may share a batch: same decoding options, never sampling."""
    return id(job) if job.dec.sampling else dataclasses.astuple(job.dec)


@dataclass
class _Stream:
    """A running search and the sentences waiting to join it."""

    search: TranslationStream
    waiting: collections.deque[Item] = field(default_factory=collections.deque)
    since_join: int = 0  # steps since sentences last joined
