"""`mtkit serve` as a real process on a free 127.0.0.1 port, driven by a real HTTP client.

Every server is `python -m mtkit serve RUN --port P` on a tiny random-weight checkpoint; the
tests wait for /health by polling with a deadline, and stop each server with SIGTERM. Servers
that hold requests back (rounds with a long --max-wait-ms and --batch-wait always) make queueing,
timeouts and shutdown deterministic without sleeping.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mtkit.cli.main import app
from tests.conftest import mtkit_module
from tests.tiny_translator import DATA, head, make_translator, save

pytest.importorskip("fastapi", reason="needs the serve extra: pip install 'mtkit[serve]'")
pytest.importorskip("uvicorn", reason="needs the serve extra: pip install 'mtkit[serve]'")
pytest.importorskip("httpx", reason="needs httpx (the dev extra)")
import httpx

pytestmark = pytest.mark.slow  # real processes: a few seconds each to import torch

START_S = 120.0  # deadline for a server to answer /health (a loaded 2-core machine)
REQUEST_S = 60.0  # per request
SOURCES = [line for line in head(DATA / "test.en", 40) if line][:24]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save(make_translator(tmp_path_factory.mktemp("run")))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A `mtkit serve` process, its URL and its log file."""

    def __init__(self, ckpt: Path, log: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        command = [sys.executable, *mtkit_module(), "serve", str(ckpt), "--port", str(self.port)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        with open(log, "wb") as err:
            self.proc = subprocess.Popen(
                [*command, *args], stdout=subprocess.DEVNULL, stderr=err, env=env
            )

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            try:  # the poll interval; also notices a server that died
                code = self.proc.wait(timeout=0.2)
                raise AssertionError(f"server exited {code}:\n{self.output}")
            except subprocess.TimeoutExpired:
                continue
        raise AssertionError(f"no /health within {START_S} s:\n{self.output}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=REQUEST_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    @property
    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def post(self, body: Any, **kwargs: Any) -> httpx.Response:
        return httpx.post(f"{self.url}/translate", json=body, timeout=REQUEST_S, **kwargs)

    def info(self) -> dict[str, Any]:
        result: dict[str, Any] = httpx.get(f"{self.url}/info", timeout=REQUEST_S).json()
        return result


@contextmanager
def running(ckpt: Path, log: Path, *args: str) -> Iterator[Server]:
    server = Server(ckpt, log, *args)
    try:
        server.wait_healthy()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def server(ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("server") / "server.log"
    args = ["--max-sentences", "30", "--max-chars", "200", "--batching", "continuous"]
    with running(ckpt, log, *args) as s:
        yield s


def translate_cli(ckpt: Path, lines: list[str], *options: str) -> list[dict[str, Any]]:
    """`mtkit translate --format jsonl` records for `lines`."""
    result = CliRunner().invoke(
        app, ["translate", str(ckpt), "--format", "jsonl", *options], input="\n".join(lines) + "\n"
    )
    assert result.exit_code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


OPTIONS: list[tuple[list[str], dict[str, Any]]] = [
    ([], {}),
    (["--greedy"], {"beam_size": 1}),
    (["--beam", "3", "--nbest", "3", "--length-penalty", "0.6"],
     {"beam_size": 3, "nbest": 3, "length_penalty": 0.6}),
    (["--beam", "4", "--nbest", "2", "--early-stopping", "heuristic"],
     {"beam_size": 4, "nbest": 2, "early_stopping": "heuristic"}),
    (["--sample", "--seed", "7", "--top-k", "5", "--nbest", "2"],
     {"sampling": True, "seed": 7, "top_k": 5, "nbest": 2}),
]  # fmt: skip


@pytest.mark.parametrize(("flags", "options"), OPTIONS)
def test_same_output_as_translate(
    server: Server, ckpt: Path, flags: list[str], options: dict[str, Any]
) -> None:
    lines = [*SOURCES[:10], "", SOURCES[10]]
    expected = translate_cli(ckpt, lines, *flags)
    response = server.post({"sentences": lines, **options})
    assert response.status_code == 200, response.text
    got = response.json()["translations"]
    assert [t["translation"] for t in got] == [r["translation"] for r in expected]
    assert [t["source"] for t in got] == lines
    for t, r in zip(got, expected, strict=True):
        if r["nbest"]:
            assert t["score"] == pytest.approx(r["nbest"][0]["score"], rel=1e-4, abs=1e-4)
        if options.get("nbest", 1) > 1:
            assert [h["text"] for h in t["nbest"]] == [h["text"] for h in r["nbest"]]


def test_concurrent_clients_get_their_own_answers(server: Server, ckpt: Path) -> None:
    """32 clients at once, with three decoding set-ups; each answer matches translate's."""
    beams = (1, 2, 4)
    requests: list[dict[str, Any]] = [
        {"sentences": SOURCES[i % 20 : i % 20 + 1 + i % 3], "beam_size": beams[i % 3]}
        for i in range(32)
    ]
    expected = {b: translate_cli(ckpt, SOURCES, "--beam", str(b)) for b in beams}
    before = server.info()["stats"]

    async def send_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=REQUEST_S) as client:
            calls = [client.post(f"{server.url}/translate", json=r) for r in requests]
            return await asyncio.gather(*calls)

    responses = asyncio.run(send_all())
    for request, response in zip(requests, responses, strict=True):
        assert response.status_code == 200, response.text
        answer = [t["translation"] for t in response.json()["translations"]]
        want = expected[request["beam_size"]]
        assert answer == [want[SOURCES.index(s)]["translation"] for s in request["sentences"]]
    after = server.info()["stats"]
    sentences = sum(len(r["sentences"]) for r in requests)
    assert after["sentences"] - before["sentences"] == sentences
    greedy = sum(r["beam_size"] == 1 for r in requests)
    assert after["batches"] - before["batches"] < greedy  # greedy requests shared rounds
    assert after["steps"] > before["steps"]  # beam requests joined the running search ...
    assert after["sentences_per_step"] > 1  # ... together


def test_auto_batching_rounds_when_light_continuous_when_busy(ckpt: Path, tmp_path: Path) -> None:
    """`--batching auto --continuous-from 4`: a 2-sentence request is a round, a 12-sentence
    one a running search, and then a round again; every answer is translate's."""
    args = ["--batching", "auto", "--continuous-from", "4"]
    expected = translate_cli(ckpt, SOURCES[:14])
    with running(ckpt, tmp_path / "server.log", *args) as server:
        limits = server.info()["limits"]
        assert limits["batching"] == "auto" and limits["continuous_from"] == 4
        seen = []
        for lines in (SOURCES[:2], SOURCES[2:14], SOURCES[:2]):
            response = server.post({"sentences": lines})
            assert response.status_code == 200, response.text
            answer = [t["translation"] for t in response.json()["translations"]]
            assert answer == [expected[SOURCES.index(s)]["translation"] for s in lines]
            stats = server.info()["stats"]
            seen.append((stats["batches"], stats["steps"]))
    assert seen[0][1] == 0 and seen[0][0] >= 1  # a round
    assert seen[1][0] == seen[0][0] and seen[1][1] > 0  # a running search
    assert seen[2] == (seen[1][0] + 1, seen[1][1])  # a round again


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert isinstance(body["error"], str) and body["error"]
    return body


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"sentences": ["a"] * 31}, 413, "max_sentences"),
        ({"sentences": ["ok", "x" * 201]}, 413, "max_chars"),
        ({"sentences": ["a"], "beam_size": 17}, 422, "max_beam"),
        ({"sentences": "a sentence"}, 422, "sentences"),
        ({"sentences": [1, 2]}, 422, "sentences.0"),
        ({"sentences": ["a"], "beam_size": "5"}, 422, "beam_size"),
        ({"sentences": ["a"], "beam": 5}, 422, "beam"),
        ({"sentences": ["a"], "beam_size": 0}, 422, "beam_size"),
        ({"sentences": ["a"], "beam_size": 2, "nbest": 3}, 422, "nbest"),
        ({"sentences": ["a"], "top_p": 1.5}, 422, "top_p"),
        ({"sentences": ["a"], "length_norm": "sqrt"}, 422, "length_norm"),
        ({"sentences": ["a"], "early_stopping": "never"}, 422, "early_stopping"),
        ({}, 422, "sentences"),
        ([1, 2], 422, "object"),
    ],
)
def test_bad_requests_are_json_errors(server: Server, body: Any, status: int, says: str) -> None:
    found = error_of(server.post(body), status)
    assert says in found["error"] or found.get("limit") == says


@pytest.mark.parametrize(
    "raw", [b'{"sentences": ["a"', b"", b"\xff\xfe", b"sentences=a", b'{"sentences": ["a"]}}']
)
def test_malformed_json_is_422(server: Server, raw: bytes) -> None:
    response = httpx.post(
        f"{server.url}/translate", content=raw, timeout=REQUEST_S,
        headers={"content-type": "application/json"},
    )  # fmt: skip
    error_of(response, 422)


def test_oversized_body_is_413(server: Server) -> None:
    body = json.dumps({"sentences": ["a" * 200] * 30, "pad": " " * 200_000}).encode()
    response = httpx.post(
        f"{server.url}/translate", content=body, timeout=REQUEST_S,
        headers={"content-type": "application/json"},
    )  # fmt: skip
    assert error_of(response, 413)["limit"] == "max_body_bytes"


def test_info_health_docs(server: Server, ckpt: Path) -> None:
    assert server.post({"sentences": ["a b"]}).status_code == 200  # for the access log below
    info = server.info()
    assert info["engine"] == "pytorch" and info["checkpoints"] == [str(ckpt)]
    assert (info["src_lang"], info["tgt_lang"]) == ("en", "de")
    assert info["parameters"] > 0 and info["decoding"]["beam_size"] == 4
    assert info["limits"]["max_sentences"] == 30 and info["validation"] is None
    health = httpx.get(f"{server.url}/health", timeout=REQUEST_S).json()
    assert health["status"] == "ok"
    spec = httpx.get(f"{server.url}/openapi.json", timeout=REQUEST_S).json()
    assert "/translate" in spec["paths"] and "TranslateRequest" in str(spec)
    assert httpx.get(f"{server.url}/docs", timeout=REQUEST_S).status_code == 200
    assert "path=/translate status=200" in server.output  # the access log


# --------------------------------------------------------------------------- held requests


def wait_until(condition: Callable[[], bool], what: str, proc: subprocess.Popen[bytes]) -> None:
    """Poll `condition` with a deadline (the interval is a wait on the server process)."""
    deadline = time.monotonic() + REQUEST_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=0.05)


def queued(server: Server, n: int) -> Callable[[], bool]:
    return lambda: bool(server.info()["queued_sentences"] >= n)


def test_full_queue_503_and_timeout_504(ckpt: Path, tmp_path: Path) -> None:
    """A request held past --timeout gets 504; while it fills the queue others get 503."""
    args = [
        "--max-wait-ms",
        "3000",
        "--batch-wait",
        "always",
        "--batching",
        "rounds",
        "--queue-sentences",
        "3",
        "--timeout",
        "1.5",
    ]
    with running(ckpt, tmp_path / "server.log", *args) as server:

        async def scenario() -> tuple[httpx.Response, httpx.Response]:
            async with httpx.AsyncClient(timeout=REQUEST_S) as client:
                held = asyncio.ensure_future(
                    client.post(f"{server.url}/translate", json={"sentences": SOURCES[:3]})
                )
                await asyncio.to_thread(wait_until, queued(server, 3), "3 queued", server.proc)
                refused = await client.post(f"{server.url}/translate", json={"sentences": ["a"]})
                return await held, refused

        timed_out, refused = asyncio.run(scenario())
        assert error_of(refused, 503)["limit"] == "queue_sentences"
        assert int(refused.headers["retry-after"]) >= 1
        assert error_of(timed_out, 504)["limit"] == "timeout_s"


def test_client_that_disconnects_costs_nothing(ckpt: Path, tmp_path: Path) -> None:
    """A client gone while its request is queued: its sentences are dropped, others answered."""
    hold = ["--max-wait-ms", "1500", "--batch-wait", "always", "--batching", "rounds"]
    with running(ckpt, tmp_path / "server.log", *hold) as server:
        body = json.dumps({"sentences": SOURCES[:5]}).encode()
        with socket.create_connection(("127.0.0.1", server.port), timeout=REQUEST_S) as raw:
            raw.sendall(
                b"POST /translate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            wait_until(queued(server, 5), "5 queued", server.proc)
        answered = server.post({"sentences": SOURCES[:2]})
        assert answered.status_code == 200 and len(answered.json()["translations"]) == 2
        wait_until(lambda: server.info()["queued_sentences"] == 0, "empty queue", server.proc)
        assert server.info()["stats"]["sentences"] == 2  # the 5 of the client gone: dropped
    assert "status=499" in server.output


def holding_server(ckpt: Path, log: Path, wait_ms: int) -> Server:
    """A server whose rounds wait `wait_ms` for more requests, so a request stays queued."""
    args = ["--max-wait-ms", str(wait_ms), "--batch-wait", "always", "--batching", "rounds"]
    return Server(ckpt, log, *args)


def held_request(server: Server, sentences: list[str], then: Callable[[], None]) -> Any:
    """Send `sentences` in one request, wait until the server has them queued, call `then`,
    and return the response."""

    async def scenario() -> httpx.Response:
        async with httpx.AsyncClient(timeout=REQUEST_S) as client:
            held = asyncio.ensure_future(
                client.post(f"{server.url}/translate", json={"sentences": sentences})
            )
            n = len(sentences)
            await asyncio.to_thread(wait_until, queued(server, n), f"{n} queued", server.proc)
            then()
            return await held

    return asyncio.run(scenario())


def test_sigterm_finishes_requests_in_flight(ckpt: Path, tmp_path: Path) -> None:
    """SIGTERM while a request is held in the batcher: it is answered, then exit 0."""
    server = holding_server(ckpt, tmp_path / "server.log", 2000)
    try:
        server.wait_healthy()
        response = held_request(
            server, SOURCES[:3], lambda: server.proc.send_signal(signal.SIGTERM)
        )
        code = server.proc.wait(timeout=REQUEST_S)
    finally:
        server.stop()
    assert response.status_code == 200 and len(response.json()["translations"]) == 3
    assert code == 0, server.output
    assert "stopped by SIGTERM" in server.output and "Traceback" not in server.output


def test_port_in_use_fails_at_start(ckpt: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        command = [sys.executable, *mtkit_module(), "serve", str(ckpt), "--port", port]
        result = subprocess.run(command, capture_output=True, text=True, timeout=START_S)
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: cannot listen on 127.0.0.1:{port}")
    )
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(
    importlib.util.find_spec("ctranslate2") is None,
    reason="needs ctranslate2 (the ctranslate2 extra)",
)
def test_ctranslate2_engine_exports_on_first_use(ckpt: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(ckpt, run / "best.pt")
    with running(run, tmp_path / "server.log", "--engine", "ctranslate2") as server:
        export = run / "ctranslate2-float32"
        lines = [*SOURCES[:6], ""]
        response = server.post({"sentences": lines, "beam_size": 2, "nbest": 2})
        assert server.info()["engine"] == "ctranslate2"
    assert response.status_code == 200, response.text
    expected = translate_cli(export, lines, "--beam", "2", "--nbest", "2")
    got = response.json()["translations"]
    assert [t["translation"] for t in got] == [r["translation"] for r in expected]
    assert [len(t["nbest"]) for t in got] == [len(r["nbest"]) for r in expected]
