"""The model in a process of its own, so that HTTP work and decoding never wait for one GIL.

`ModelProcess.start(settings)` spawns the model process, which loads the engine (as `mtkit
translate` would), translates one sentence, and runs the `Batcher` (rounds or continuous
batching); it answers with what the HTTP side needs to know (`ModelFacts`), or with the error
that stopped it. The server's own process keeps uvicorn, FastAPI, the request checks and the
tokenizing that sizes batches. Requests cross a pipe as jobs:

    HTTP process -> model process: ("submit", key, lines, lengths, dec), ("cancel", key), ("close",)
    model process -> HTTP process: ("done", key, (translations, seconds), stats),
                                   ("failed", key, message, stats), ("log", name, level, text),
                                   ("closed", stats)

Why: in one process the HTTP thread (about 0.9 ms of Python a request) and the batcher thread
took turns on one GIL; under 64 clients the two threads together used one core (0.88 + 0.11)
while the second core idled (docs/serve.md).

The model process ignores SIGINT and SIGTERM: the HTTP process decides when it stops (after the
requests in flight), and it stops by itself when the HTTP process is gone. If it dies, every
waiting request fails and `on_exit` is called, so the server can stop with one line.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import multiprocessing
import pickle
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from mtkit.config.schema import DecodingConfig, ExperimentConfig
from mtkit.data.tokenizer import TokenizerPair
from mtkit.errors import MtkitError
from mtkit.serve.jobs import BatcherClosed, Job, QueueFull, source_lengths
from mtkit.serve.settings import ServeError, ServeSettings
from mtkit.translation.results import Translation

logger = logging.getLogger(__name__)

STOP_S = 30.0  # how long a closing model process may take before it is terminated


class ModelError(Exception):
    """The engine failed on a request's sentences (out of memory, ...), or the model process
    is gone; the message says which."""


@dataclass
class ModelFacts:
    """What the HTTP side knows of the model, sent once by the model process when ready."""

    name: str  # pytorch or ctranslate2
    source: Path  # the (first) checkpoint file, or the CTranslate2 export folder
    config: ExperimentConfig
    tokenizers: TokenizerPair
    info: dict[str, Any]  # the static part of GET /info


@dataclass
class BatchStats:
    """The batcher's counters, as of its last answer."""

    batches: int = 0  # batches run in rounds
    steps: int = 0  # steps of running searches (continuous batching)
    step_sentences: int = 0  # sentences decoded in those steps, summed over the steps
    sentences: int = 0  # sentences translated


class ModelProcess:
    """The HTTP side's handle on the model process: submit and cancel jobs, read the stats."""

    def __init__(self, process: Any, conn: Connection, facts: ModelFacts, max_pending: int) -> None:
        self.facts = facts
        self.max_pending = max_pending  # sentences queued or being translated
        self.stats = BatchStats()
        self.lost: str | None = None  # why the model process ended on its own, if it did
        self.on_exit: Callable[[str], None] | None = None  # called once if it does
        self._process = process
        self._conn = conn
        self._lock = threading.Lock()  # _jobs, _pending, _closed, and sends on _conn
        self._jobs: dict[int, Job] = {}  # by key (the job's id), until answered or cancelled
        self._pending = 0
        self._closed = False
        self._reader = threading.Thread(target=self._read, name="mtkit-model-answers", daemon=True)

    @classmethod
    def start(cls, settings: ServeSettings) -> ModelProcess:
        """Spawn the model process and wait until it is ready; its startup error is raised
        here as it was raised there (an unusable run: MtkitError with one line)."""
        context = multiprocessing.get_context("spawn")  # no fork of a threaded process
        conn, child_conn = context.Pipe()
        level = logging.getLogger().getEffectiveLevel()
        process = context.Process(
            target=model_process_main, args=(settings, child_conn, level), name="mtkit-model",
            daemon=True,
        )  # fmt: skip
        process.start()
        child_conn.close()
        while True:
            try:
                message = conn.recv()
            except EOFError:
                process.join()
                raise ServeError(
                    f"the model process exited ({exit_reason(process.exitcode)}) before it was "
                    "ready"
                ) from None
            if message[0] == "log":
                relay_log(*message[1:])
            elif message[0] == "failed":
                process.join()
                raise message[1]
            else:
                break
        model = cls(process, conn, message[1], settings.queue_sentences)
        model._reader.start()
        return model

    @property
    def pid(self) -> int:
        return int(self._process.pid)

    @property
    def exitcode(self) -> int | None:
        """None while it runs."""
        code = self._process.exitcode
        return None if code is None else int(code)

    @property
    def pending(self) -> int:
        """Sentences queued or being translated."""
        return self._pending

    def submit(self, lines: Sequence[str], dec: DecodingConfig) -> Job:
        """Queue `lines`; the job's future gets one Translation per line, in order.

        Raises QueueFull when the queue cannot take this many sentences, BatcherClosed
        while shutting down or once the model process is gone.
        """
        cfg = self.facts.config
        job = Job(
            list(lines), source_lengths(self.facts.tokenizers, cfg.model.max_positions, lines), dec
        )
        with self._lock:
            if self._closed:
                raise BatcherClosed(self.lost or "the server is shutting down")
            if self._pending + len(job.lines) > self.max_pending:
                raise QueueFull(f"{self._pending} sentences are queued (limit {self.max_pending})")
            if job.lines:
                self._pending += len(job.lines)
                self._jobs[id(job)] = job
                self._conn.send(("submit", id(job), job.lines, job.lengths, dec))
        if not job.lines:
            job.started = time.perf_counter()
            job.future.set_result([])
        return job

    def cancel(self, job: Job) -> None:
        """Drop the job's untranslated sentences (its client has gone or timed out)."""
        job.cancelled = True
        job.future.cancel()
        with self._lock:
            if self._jobs.pop(id(job), None) is None:
                return
            self._pending -= len(job.lines)
            if not self._closed:
                self._conn.send(("cancel", id(job)))

    def close(self) -> None:
        """Let the model process finish what it holds, then stop it; idempotent."""
        with self._lock:
            closing, self._closed = not self._closed, True
            if closing and self.lost is None:
                with contextlib.suppress(OSError):  # it died just now: the reader notices
                    self._conn.send(("close",))
        if self._reader.ident is not None:
            self._reader.join()
        self._process.join(STOP_S)
        if self._process.is_alive():
            logger.warning("the model process did not stop within %g s: terminating it", STOP_S)
            self._process.terminate()
            self._process.join()

    # ------------------------------------------------------------------ reader thread

    def _read(self) -> None:
        """Answers from the model process, until it closes or is gone."""
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                break
            kind = message[0]
            if kind == "log":
                relay_log(*message[1:])
                continue
            self.stats = message[-1]
            if kind == "closed":
                return
            self._answer(kind, message[1], message[2])
        self._gone()

    def _answer(self, kind: str, key: int, payload: Any) -> None:
        with self._lock:
            job = self._jobs.pop(key, None)
            if job is not None:
                self._pending -= len(job.lines)
        if job is None:  # cancelled meanwhile
            return
        try:
            if kind == "done":
                translations, seconds = payload
                job.started = time.perf_counter() - seconds
                job.future.set_result(translations)
            else:
                job.future.set_exception(ModelError(payload))
        except InvalidStateError:  # cancelled by its client at this very moment
            pass

    def _gone(self) -> None:
        """The model process ended without being asked: fail what waits, tell the server."""
        self._process.join(5.0)
        reason = f"the model process exited unexpectedly ({exit_reason(self._process.exitcode)})"
        with self._lock:
            self._closed = True
            self.lost = reason
            jobs, self._jobs, self._pending = list(self._jobs.values()), {}, 0
        logger.error("%s; stopping the server", reason)
        for job in jobs:
            with contextlib.suppress(InvalidStateError):
                job.future.set_exception(ModelError(reason))
        if self.on_exit is not None:
            self.on_exit(reason)


def exit_reason(code: int | None) -> str:
    """A process's exit code in words."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def relay_log(name: str, level: int, text: str) -> None:
    """Log a record of the model process here, where logging is set up."""
    logging.getLogger(name).log(level, "%s", text)


# ---------------------------------------------------------------------- model process


def model_process_main(settings: ServeSettings, conn: Connection, level: int) -> None:
    """The model process: load, warm up, say ready (or why not), then serve jobs."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    send = functools.partial(send_locked, conn, threading.Lock())
    root = logging.getLogger()
    root.handlers[:] = [PipeLogHandler(send)]
    root.setLevel(level)
    try:
        batcher, facts = load(settings)
    except BaseException as e:
        send(("failed", portable(e)))
        return
    send(("ready", facts))
    batcher.start()
    run_jobs(conn, batcher, send)


def load(settings: ServeSettings) -> tuple[Any, ModelFacts]:
    """The engine loaded and warmed up, its batcher (not started), and its facts."""
    from mtkit.serve.batcher import Batcher
    from mtkit.serve.engines import load_engine
    from mtkit.serve.info import describe

    loaded = load_engine(settings)
    loaded.translator.translate_full(["hello"], loaded.config.decoding)  # lazy init, before clients
    tokenizers = loaded.translator.tokenizers
    facts = ModelFacts(
        loaded.name, loaded.source, loaded.config, tokenizers, describe(loaded, settings)
    )
    lengths = functools.partial(source_lengths, tokenizers, loaded.config.model.max_positions)
    batcher = Batcher(
        loaded.translator, lengths, max_wait_s=settings.max_wait_ms / 1000,
        wait_always=settings.batch_wait == "always", max_pending=sys.maxsize,
        batching=settings.batching, continuous_from=settings.continuous_from,
    )  # fmt: skip
    return batcher, facts


def run_jobs(conn: Connection, batcher: Any, send: Callable[[tuple[Any, ...]], None]) -> None:
    """Pass jobs to the batcher until told to close (then finish them) or the server is gone."""
    jobs: dict[int, Job] = {}
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # the HTTP process is gone: nobody waits for answers
        if message[0] == "submit":
            _, key, lines, lengths, dec = message
            job = batcher.submit(lines, dec, lengths)
            jobs[key] = job
            job.future.add_done_callback(functools.partial(answer, send, batcher, jobs, key, job))
        elif message[0] == "cancel":
            cancelled = jobs.pop(message[1], None)
            if cancelled is not None:
                batcher.cancel(cancelled)
        else:
            break
    batcher.close()
    send(("closed", stats_of(batcher)))


def answer(
    send: Callable[[tuple[Any, ...]], None], batcher: Any, jobs: dict[int, Job], key: int,
    job: Job, future: Future[list[Translation]],
) -> None:  # fmt: skip
    """Send a finished job's translations (or its error) back; a cancelled one needs none."""
    jobs.pop(key, None)
    if future.cancelled():
        return
    error = future.exception()
    if error is not None:
        send(("failed", key, f"{type(error).__name__}: {error}", stats_of(batcher)))
        return
    seconds = time.perf_counter() - (job.started or time.perf_counter())
    send(("done", key, (future.result(), seconds), stats_of(batcher)))


def stats_of(batcher: Any) -> BatchStats:
    return BatchStats(batcher.batches, batcher.steps, batcher.step_sentences, batcher.sentences)


def send_locked(conn: Connection, lock: threading.Lock, message: tuple[Any, ...]) -> None:
    """One message on the pipe; several threads send (the batcher's, the reader's, logging)."""
    with lock:
        conn.send(message)


def portable(error: BaseException) -> BaseException:
    """`error` if it survives pickling as itself, else a MtkitError with its message."""
    try:
        copy = pickle.loads(pickle.dumps(error))
        if type(copy) is type(error) and str(copy) == str(error):
            return error
    except Exception:
        pass
    return MtkitError(f"{type(error).__name__}: {error}")


class PipeLogHandler(logging.Handler):
    """Sends the model process's log records to the HTTP process, which prints them."""

    def __init__(self, send: Callable[[tuple[Any, ...]], None]) -> None:
        super().__init__()
        self._send = send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            self._send(("log", record.name, record.levelno, text))
        except Exception:
            self.handleError(record)
