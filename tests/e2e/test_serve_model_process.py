"""The server's model process: jobs cross the pipe and come back as `translate` makes them,
cancelled jobs are dropped, startup errors come back as they were raised, and a model process
that dies fails what waits and stops the server with one line."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from mtkit.serve.jobs import QueueFull
from mtkit.serve.model_process import ModelError, ModelProcess, exit_reason
from mtkit.serve.settings import ServeSettings
from mtkit.translation.translator import Translator
from tests.tiny_translator import DATA, head, make_translator, save

pytestmark = pytest.mark.slow  # each test spawns a process that imports torch

LINES = [line for line in head(DATA / "test.en", 12) if line]
WAIT_S = 60.0


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save(make_translator(tmp_path_factory.mktemp("run")))


def test_jobs_come_back_as_translate_makes_them(ckpt: Path) -> None:
    model = ModelProcess.start(ServeSettings([ckpt], device="cpu", queue_sentences=100))
    try:
        assert model.facts.name == "pytorch" and model.facts.info["checkpoints"] == [str(ckpt)]
        assert model.facts.tokenizers.joint  # the pair keeps its joint vocabulary
        dec = model.facts.config.decoding
        jobs = [model.submit(LINES[:5], dec), model.submit([], dec), model.submit(LINES[5:], dec)]
        assert model.pending == len(LINES)  # the empty job is answered at once
        got = [job.future.result(timeout=WAIT_S) for job in jobs]
        assert model.pending == 0 and got[1] == []
        with pytest.raises(QueueFull, match="limit 100"):
            model.submit(["a"] * 101, dec)
    finally:
        model.close()
    assert model.exitcode == 0 and model.lost is None
    expected = Translator.load(ckpt, device="cpu").translate_full(LINES, dec)
    translations = got[0] + got[2]
    assert [t.text for t in translations] == [t.text for t in expected]
    assert [t.nbest[0].score for t in translations] == pytest.approx(
        [t.nbest[0].score for t in expected], abs=1e-4
    )
    assert model.stats.sentences == len(LINES)
    assert all(job.started is not None and job.started >= job.submitted for job in jobs)


def test_a_cancelled_job_is_dropped(ckpt: Path) -> None:
    """Held in a 3-second round, a cancelled job's sentences are released at once and never
    translated; the other job of the round is."""
    settings = ServeSettings(
        [ckpt], device="cpu", max_wait_ms=3000, batch_wait="always", batching="rounds"
    )
    model = ModelProcess.start(settings)
    try:
        dec = model.facts.config.decoding
        dropped, kept = model.submit(LINES[:4], dec), model.submit(LINES[4:6], dec)
        model.cancel(dropped)
        assert model.pending == 2 and dropped.future.cancelled()
        assert len(kept.future.result(timeout=WAIT_S)) == 2
    finally:
        model.close()
    assert model.stats.sentences == 2


def test_a_startup_error_is_raised_as_it_was_raised_there(tmp_path: Path) -> None:
    from mtkit.serve.engines import load_engine

    settings = ServeSettings([tmp_path / "missing"], device="cpu")
    with pytest.raises(Exception) as here:
        load_engine(settings)
    with pytest.raises(type(here.value)) as there:
        ModelProcess.start(settings)
    assert str(there.value) == str(here.value)


def test_a_dead_model_process_fails_what_waits(ckpt: Path) -> None:
    settings = ServeSettings(
        [ckpt], device="cpu", max_wait_ms=60_000, batch_wait="always", batching="rounds"
    )
    model = ModelProcess.start(settings)
    stopped: list[str] = []
    model.on_exit = stopped.append
    try:
        job = model.submit(LINES[:3], model.facts.config.decoding)
        os.kill(model.pid, signal.SIGKILL)
        with pytest.raises(ModelError, match="killed by SIGKILL"):
            job.future.result(timeout=WAIT_S)
    finally:
        model.close()  # waits for the thread that noticed
    assert stopped == ["the model process exited unexpectedly (killed by SIGKILL)"]
    assert model.pending == 0 and model.lost == stopped[0]
    with pytest.raises(Exception, match="exited unexpectedly"):
        model.submit(["a"], model.facts.config.decoding)


@pytest.mark.parametrize(
    ("code", "says"), [(0, "exit code 0"), (3, "exit code 3"), (-9, "killed by SIGKILL")]
)
def test_exit_reason(code: int, says: str) -> None:
    assert exit_reason(code) == says


def test_the_server_stops_with_one_line_when_its_model_process_dies(
    ckpt: Path, tmp_path: Path
) -> None:
    """A request waiting when the model process is killed gets a JSON 500; the server exits 1
    with one error line, no traceback."""
    from tests.e2e.test_serve import REQUEST_S, held_request, holding_server

    server = holding_server(ckpt, tmp_path / "server.log", 60_000)
    try:
        server.wait_healthy()
        response = held_request(
            server, LINES[:3], lambda: os.kill(model_process_of(server.proc.pid), signal.SIGKILL)
        )
        code = server.proc.wait(timeout=REQUEST_S)
    finally:
        server.stop()
    assert response.status_code == 500
    assert response.json()["error"] == (
        "translation failed: the model process exited unexpectedly (killed by SIGKILL)"
    )
    assert code == 1, server.output
    last = server.output.strip().splitlines()[-1]
    assert last == (
        "error: the model process exited unexpectedly (killed by SIGKILL); the server stopped"
    )
    assert "Traceback" not in server.output


def model_process_of(pid: int) -> int:
    """The server's model process: its child started by multiprocessing's spawn."""
    if not sys.platform.startswith("linux"):
        pytest.skip("finds the child process in /proc")
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in task.read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"spawn_main" in cmdline:
                return int(child)
    raise AssertionError(f"no model process under {pid}")
