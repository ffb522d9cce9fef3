"""Progress on stderr for steps that take a while: the one small interface over rich.

Library code takes a `Progress` (default `QUIET`: shows nothing) and reports through it:

    with progress.task("translating", total=len(lines), unit="lines") as task:
        task.advance(len(batch))
    with progress.stage("training the tokenizer"):  # a step that cannot count its own work
        ...

The command line decides whether it shows (`Progress.on_stderr`, from --progress/--no-progress;
default: when stderr is a terminal). On a terminal a task is a live rich bar with count, rate,
elapsed time and ETA, which disappears when done; elsewhere (a log file, CI) it is a plain line
every `interval` seconds. Either way a finished task leaves one summary line (count, time, rate).
Only stderr is written, never stdout, so translations piped from stdout stay clean.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TextIO


class Task(Protocol):
    """What a running task offers the code doing the work."""

    def advance(self, n: float = 1) -> None:
        """`n` more units are done."""


class _Silent:
    def advance(self, n: float = 1) -> None:
        pass


def format_duration(seconds: float) -> str:
    """'1h02m', '4m10s' or '12s'."""
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def _took(seconds: float) -> str:
    """'0.4s' under ten seconds (a summary line says how long a short step took), else as
    `format_duration`."""
    return f"{seconds:.1f}s" if seconds < 10 else format_duration(seconds)


def format_rate(per_second: float, unit: str) -> str:
    """'1,234 lines/s', '12.5 lines/s' or '0.31 checkpoints/s'."""
    digits = 0 if per_second >= 100 else (1 if per_second >= 1 else 2)
    return f"{per_second:,.{digits}f} {unit}/s"


@dataclass
class _Counter:
    """Count, rate and ETA of one task, for the plain lines and the summary."""

    description: str
    total: float | None
    unit: str
    start: float
    done: float = 0.0

    def rate(self, now: float) -> float:
        return self.done / max(now - self.start, 1e-9)

    def line(self, now: float) -> str:
        """'translating: 400/1,000 lines (40%), 85.0 lines/s, elapsed 4s, eta 7s'."""
        rate = self.rate(now)
        if self.total is None:
            count = f"{self.done:,.0f} {self.unit}"
        else:
            share = 100 * self.done / max(self.total, 1e-9)
            count = f"{self.done:,.0f}/{self.total:,.0f} {self.unit} ({share:.0f}%)"
        text = f"{self.description}: {count}, {format_rate(rate, self.unit)}, "
        text += f"elapsed {format_duration(now - self.start)}"
        if self.total is not None and rate > 0:
            text += f", eta {format_duration((self.total - self.done) / rate)}"
        return text

    def summary(self, now: float) -> str:
        """'translating: 1,000 lines in 12s (83.3 lines/s)'."""
        seconds = now - self.start
        return (
            f"{self.description}: {self.done:,.0f} {self.unit} in {_took(seconds)} "
            f"({format_rate(self.rate(now), self.unit)})"
        )


class _Lines:
    """A task shown as a plain line every `interval` seconds (stderr is not a terminal)."""

    def __init__(self, counter: _Counter, stream: TextIO, interval: float) -> None:
        self.counter, self.stream, self.interval = counter, stream, interval
        self.last = counter.start

    def advance(self, n: float = 1) -> None:
        self.counter.done += n
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self.stream.write(self.counter.line(now) + "\n")
            self.stream.flush()


class _Bar:
    """A task shown as a live rich bar (stderr is a terminal)."""

    def __init__(self, counter: _Counter, bar: Any) -> None:
        self.counter, self.bar = counter, bar
        self.task_id = bar.add_task(counter.description, total=counter.total, rate="")

    def advance(self, n: float = 1) -> None:
        self.counter.done += n
        rate = format_rate(self.counter.rate(time.monotonic()), self.counter.unit)
        self.bar.update(self.task_id, advance=n, rate=rate)


@dataclass(frozen=True)
class Progress:
    """Whether and where progress shows; `task` and `stage` report one step each.

    `terminal` None asks the stream (`isatty`); True draws live bars, False plain lines.
    """

    enabled: bool = False
    stream: TextIO | None = None  # None: sys.stderr at the time a task starts
    terminal: bool | None = None
    interval: float = 10.0  # seconds between plain lines

    @classmethod
    def on_stderr(cls, asked: bool | None) -> Progress:
        """--progress (True), --no-progress (False), or neither (None): shown when stderr is a
        terminal."""
        return cls(enabled=sys.stderr.isatty() if asked is None else asked)

    @contextlib.contextmanager
    def task(
        self, description: str, total: float | None = None, unit: str = "lines"
    ) -> Iterator[Task]:
        """A step of `total` units (None: unknown, no ETA); ends with a summary line unless
        it raised."""
        if not self.enabled:
            yield _Silent()
            return
        stream = self.stream or sys.stderr
        counter = _Counter(description, total, unit, time.monotonic())
        if not self._live(stream):
            yield _Lines(counter, stream, self.interval)
        else:
            with _live_bar(stream, total, unit) as bar:
                yield _Bar(counter, bar)
        stream.write(counter.summary(time.monotonic()) + "\n")
        stream.flush()

    @contextlib.contextmanager
    def stage(self, description: str) -> Iterator[None]:
        """A step that reports nothing while it runs (C++ code, torch.compile): a start line
        (a spinner on a terminal) and a 'done in' line."""
        if not self.enabled:
            yield
            return
        stream = self.stream or sys.stderr
        start = time.monotonic()
        if not self._live(stream):
            stream.write(f"{description}...\n")
            stream.flush()
            yield
        else:
            with _live_bar(stream, None, "") as bar:
                bar.add_task(description, total=None, rate="")
                yield
        stream.write(f"{description}: done in {_took(time.monotonic() - start)}\n")
        stream.flush()

    def _live(self, stream: TextIO) -> bool:
        return stream.isatty() if self.terminal is None else self.terminal


QUIET = Progress()  # the default everywhere: nothing is shown


@contextlib.contextmanager
def _live_bar(stream: TextIO, total: float | None, unit: str) -> Iterator[Any]:
    """A transient rich Progress on `stream` (stdout is never redirected: it may carry
    translations); text written to stderr meanwhile (log lines) prints above the bar."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as RichProgress

    columns: list[Any] = [TextColumn("{task.description}")]
    if total is None:
        columns = [SpinnerColumn(), *columns]
        count = f"{{task.completed:,.0f}} {unit}"
    else:
        columns += [BarColumn(), TextColumn("{task.percentage:>3.0f}%")]
        count = f"{{task.completed:,.0f}}/{{task.total:,.0f}} {unit}"
    if unit:
        columns += [TextColumn(count), TextColumn("{task.fields[rate]}")]
    columns += [TimeElapsedColumn()] + ([TimeRemainingColumn()] if total is not None else [])
    console = Console(file=stream, force_terminal=True)
    with RichProgress(*columns, console=console, transient=True, redirect_stdout=False,
                      refresh_per_second=4) as bar:  # fmt: skip
        yield bar
