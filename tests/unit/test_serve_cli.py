"""`mtkit serve` start-up failures (one line, no port opened) and the request -> DecodingConfig
mapping; in process, no server is started."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mtkit.cli.main import app
from mtkit.config.schema import ConfigError, DecodingConfig

pydantic = pytest.importorskip("pydantic", reason="needs the serve extra")


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["serve", *args])
    return result.exit_code, result.stderr


def test_missing_extra_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # `import uvicorn` raises ImportError
    code, err = invoke(str(tmp_path))
    assert code == 1
    assert err == "error: mtkit serve needs uvicorn; install it with: pip install 'mtkit[serve]'\n"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--engine", "onnx"], "--engine: expected one of auto, pytorch, ctranslate2, got 'onnx'"),
        (["--engine", "ctranslate2", "--quantize", "int4"], "--quantize: expected"),
        (["--max-sentences", "0"], "--max-sentences: expected a positive number, got 0"),
        (["--timeout", "0"], "--timeout: expected a positive number"),
        (["--port", "70000"], "--port: expected 0 to 65535"),
        (["--batch-wait", "never"], "--batch-wait: expected adaptive or always, got 'never'"),
        (
            ["--batching", "sometimes"],
            "--batching: expected rounds, continuous, auto, got 'sometimes'",
        ),
        (["--continuous-from", "0"], "--continuous-from: expected a positive number, got 0"),
    ],
)
def test_bad_options_exit_2(tmp_path: Path, args: list[str], says: str) -> None:
    code, err = invoke(str(tmp_path), *args)
    assert code == 2 and err.startswith(f"error: {says}") and err.count("\n") == 1, err


def test_bad_run_fails_at_start_with_one_line(tmp_path: Path) -> None:
    pytest.importorskip("fastapi", reason="needs the serve extra")
    pytest.importorskip("uvicorn", reason="needs the serve extra")
    code, err = invoke(str(tmp_path / "nope"), "--port", "0")
    assert code == 1
    assert err == f"error: {tmp_path / 'nope'}: no such run directory or checkpoint file\n"
    (tmp_path / "best.pt").write_bytes(b"not a checkpoint")
    code, err = invoke(str(tmp_path), "--port", "0")
    assert code == 1 and err.startswith(f"error: {tmp_path / 'best.pt'}") and err.count("\n") == 1


def test_request_options_map_onto_the_run_decoding() -> None:
    from mtkit.serve.schema import TranslateRequest, request_decoding

    defaults = DecodingConfig(beam_size=5, max_tokens=123, seed=9)
    body = TranslateRequest(sentences=["a"], beam_size=3, nbest=2, length_penalty=0.0)
    dec = request_decoding(body, defaults)
    assert (dec.beam_size, dec.nbest, dec.length_penalty) == (3, 2, 0.0)
    assert (dec.max_tokens, dec.seed, dec.max_len_a) == (123, 9, defaults.max_len_a)
    with pytest.raises(ConfigError, match=r"^nbest \(6\) must be at most the beam size \(5\)"):
        request_decoding(TranslateRequest(sentences=["a"], nbest=6), defaults)
    with pytest.raises(pydantic.ValidationError):
        TranslateRequest.model_validate({"sentences": ["a"], "max_tokens": 10})


def test_listening_socket_gets_tcp_nodelay_connections() -> None:
    """asyncio disables Nagle only on IPPROTO_TCP sockets; a proto-0 socket made every
    keep-alive response wait ~40 ms for the client's delayed ACK."""
    import socket

    from mtkit.serve.server import listen

    sock = listen("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
        with socket.create_connection(sock.getsockname()[:2]):
            accepted, _ = sock.accept()
            with accepted:
                assert accepted.proto == socket.IPPROTO_TCP
    finally:
        sock.close()


def test_an_ensemble_is_served_as_translate_runs_it(tmp_path: Path) -> None:
    """Several runs: one ensemble Translator behind the batcher, answers as `translate R1 R2`."""
    import functools

    import torch

    from mtkit.model.transformer import build_model
    from mtkit.serve.batcher import Batcher
    from mtkit.serve.engines import load_engine
    from mtkit.serve.info import parameter_count
    from mtkit.serve.jobs import source_lengths
    from mtkit.serve.settings import ServeSettings
    from mtkit.translation.translator import Translator
    from tests.tiny_translator import DATA, head, make_translator, save

    first = make_translator(tmp_path / "a")
    torch.manual_seed(1)
    other = build_model(
        first.config, first.tokenizers.src.vocab_size, first.tokenizers.tgt.vocab_size
    )
    second = Translator(other, first.tokenizers, first.config, first.device, tmp_path / "b.pt")
    runs = [save(first).parent / "best.pt", save(second)]
    loaded = load_engine(ServeSettings(runs, device="cpu"))
    assert loaded.name == "pytorch" and loaded.checkpoints == runs
    assert parameter_count(loaded) == 2 * sum(p.numel() for p in first.model.parameters())
    lines = [line for line in head(DATA / "test.en", 8) if line]
    max_positions = loaded.config.model.max_positions
    lengths = functools.partial(source_lengths, loaded.translator.tokenizers, max_positions)
    batcher = Batcher(loaded.translator, lengths)
    job = batcher.submit(lines, loaded.config.decoding)
    batcher.start()
    got = [t.text for t in job.future.result(timeout=60)]
    batcher.close()
    result = CliRunner().invoke(app, ["translate", *map(str, runs)], input="\n".join(lines) + "\n")
    assert result.exit_code == 0, result.output
    assert got == result.stdout.splitlines()
    single = CliRunner().invoke(app, ["translate", str(runs[0])], input="\n".join(lines) + "\n")
    assert got != single.stdout.splitlines()  # the second model does take part


def test_an_ensemble_needs_the_pytorch_engine(tmp_path: Path) -> None:
    code, err = invoke(str(tmp_path), str(tmp_path), "--engine", "ctranslate2")
    assert code == 2
    assert err == "error: --engine ctranslate2 translates with one model, not an ensemble\n"


def test_the_http_side_does_not_import_torch() -> None:
    """The model lives in the model process; the server's own process (the CLI, the settings
    check, the app) stays free of torch, which would cost it ~190 MiB."""
    import subprocess

    code = (
        "import sys; import mtkit.cli.main, mtkit.serve.app, mtkit.serve.server; "
        "from mtkit.serve.settings import ServeSettings; "
        "ServeSettings(['x'], quantize='int8').check(); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
