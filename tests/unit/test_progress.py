"""mtkit.progress: plain lines off a terminal, a live bar on one, nothing when off."""

from __future__ import annotations

import io

import pytest

from mtkit.progress import QUIET, Progress, format_rate


def test_quiet_writes_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    with QUIET.task("translating", total=3) as task:
        task.advance(3)
    with QUIET.stage("compiling"):
        pass
    assert capsys.readouterr() == ("", "")


def test_plain_lines_have_count_rate_and_eta() -> None:
    out = io.StringIO()
    progress = Progress(enabled=True, stream=out, terminal=False, interval=0.0)
    with progress.task("translating", total=4, unit="lines") as task:
        task.advance(1)
        task.advance(3)
    first, second, summary = out.getvalue().splitlines()
    assert first.startswith("translating: 1/4 lines (25%), ") and "lines/s" in first
    assert ", eta " in first and "elapsed " in first
    assert second.startswith("translating: 4/4 lines (100%)")
    assert summary.startswith("translating: 4 lines in ") and summary.endswith("lines/s)")


def test_unknown_total_has_no_eta() -> None:
    out = io.StringIO()
    with Progress(enabled=True, stream=out, terminal=False, interval=0.0).task("reading") as t:
        t.advance(10)
    assert "eta" not in out.getvalue() and out.getvalue().startswith("reading: 10 lines, ")


def test_lines_wait_for_the_interval() -> None:
    out = io.StringIO()
    with Progress(enabled=True, stream=out, terminal=False).task("encoding", 5, "pairs") as t:
        t.advance(5)
    assert out.getvalue().splitlines() == [out.getvalue().strip()]  # the summary only
    assert "encoding: 5 pairs in " in out.getvalue()


def test_stage_says_start_and_elapsed_time() -> None:
    out = io.StringIO()
    with Progress(enabled=True, stream=out, terminal=False).stage("training the tokenizer"):
        pass
    lines = out.getvalue().splitlines()
    assert lines[0] == "training the tokenizer..."
    assert lines[1].startswith("training the tokenizer: done in ")


def test_a_failed_task_leaves_no_summary() -> None:
    out = io.StringIO()
    progress = Progress(enabled=True, stream=out, terminal=False)
    with pytest.raises(RuntimeError), progress.task("translating", total=2) as task:
        task.advance(1)
        raise RuntimeError("boom")
    assert "translating" not in out.getvalue()


def test_terminal_draws_a_bar_then_one_summary_line() -> None:
    out = io.StringIO()
    progress = Progress(enabled=True, stream=out, terminal=True)
    with progress.task("translating", total=3, unit="lines") as task:
        task.advance(3)
    with progress.stage("compiling the model"):
        pass
    text = out.getvalue()
    assert "\x1b[" in text  # rich's live display (cursor control)
    assert "translating: 3 lines in " in text and "compiling the model: done in " in text


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_stderr_follows_the_flag_then_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    for stderr, shown in [(io.StringIO(), False), (_Terminal(), True)]:
        monkeypatch.setattr("sys.stderr", stderr)
        assert Progress.on_stderr(None).enabled is shown
        assert Progress.on_stderr(True).enabled and not Progress.on_stderr(False).enabled


@pytest.mark.parametrize(
    ("rate", "text"),
    [(1234.5, "1,234 lines/s"), (12.34, "12.3 lines/s"), (0.314, "0.31 lines/s")],
)
def test_format_rate(rate: float, text: str) -> None:
    assert format_rate(rate, "lines") == text


def test_torch_compile_is_announced_and_timed(caplog: pytest.LogCaptureFixture) -> None:
    """The first update of a compiled model waits minutes for torch.compile: say so, and how
    long it took; without compile, nothing."""
    from types import SimpleNamespace
    from typing import Any, cast

    from mtkit.training.progress import compile_finished, compile_started

    def fake_run(compile: bool) -> Any:
        training = SimpleNamespace(compile=compile)
        return cast(Any, SimpleNamespace(cfg=SimpleNamespace(training=training),
                                         dist=SimpleNamespace(is_main=True)))  # fmt: skip

    caplog.set_level("INFO")
    assert compile_started(fake_run(False)) is None and not caplog.records
    started = compile_started(fake_run(True))
    assert started is not None
    compile_finished(fake_run(True), started)
    assert [r.getMessage().split(";")[0] for r in caplog.records] == [
        "compiling the model (torch.compile)",
        "compiled: the first update took 0s",
    ]
