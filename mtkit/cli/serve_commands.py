"""`mtkit serve`: an HTTP translation server with dynamic batching (needs the `serve` extra)."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import typer

from mtkit.cli.app import app, handle_errors, setup_logging
from mtkit.cli.engine_choice import ctranslate2_export
from mtkit.cli.options import DeviceOpt, EngineOpt, QuantizeOpt, RunsArg
from mtkit.serve.settings import ServeSettings, require_serve_extra

LIMITS = "Limits"
BATCHING = "Batching"

HostOpt = Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface)")]
PortOpt = Annotated[int, typer.Option(help="Port to listen on (0: any free port)")]
BatchingOpt = Annotated[
    str,
    typer.Option(
        help="rounds: each batch runs to its end before the next one starts; continuous: "
        "beam-search requests join the running search between its steps; auto: rounds, "
        "continuous while --continuous-from sentences are in flight",
        rich_help_panel=BATCHING,
    ),
]
ContinuousFromOpt = Annotated[
    int,
    typer.Option(
        help="--batching auto: sentences in flight or queued from which requests join the "
        "running search",
        rich_help_panel=BATCHING,
    ),
]
MaxWaitOpt = Annotated[
    float,
    typer.Option(
        help="Rounds: wait up to this long for concurrent clients to fill a batch (never for a "
        "lone one)",
        rich_help_panel=BATCHING,
    ),
]
BatchWaitOpt = Annotated[
    str,
    typer.Option(
        help="adaptive: wait only while fewer requests than recent clients are in (a lone client "
        "never waits); always: every round waits --max-wait-ms",
        rich_help_panel=BATCHING,
    ),
]
QueueOpt = Annotated[
    int,
    typer.Option(
        help="Sentences that may wait; past it requests get 503", rich_help_panel=BATCHING
    ),
]
MaxSentencesOpt = Annotated[
    int, typer.Option(help="Sentences per request (more: 413)", rich_help_panel=LIMITS)
]
MaxCharsOpt = Annotated[
    int, typer.Option(help="Characters per sentence (more: 413)", rich_help_panel=LIMITS)
]
MaxBeamOpt = Annotated[
    int, typer.Option(help="Largest beam_size/nbest a request may ask for", rich_help_panel=LIMITS)
]
TimeoutOpt = Annotated[
    float,
    typer.Option(help="Seconds per request, queueing included (then 504)", rich_help_panel=LIMITS),
]


@app.command()
@handle_errors
def serve(
    runs: RunsArg,
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8000,
    engine: EngineOpt = "auto",
    quantize: QuantizeOpt = "none",
    device: DeviceOpt = "auto",
    batching: BatchingOpt = "auto",
    continuous_from: ContinuousFromOpt = 16,
    max_wait_ms: MaxWaitOpt = 20.0,
    batch_wait: BatchWaitOpt = "adaptive",
    queue_sentences: QueueOpt = 2048,
    max_sentences: MaxSentencesOpt = 64,
    max_chars: MaxCharsOpt = 1000,
    max_beam: MaxBeamOpt = 16,
    timeout: TimeoutOpt = 30.0,
) -> None:
    """Serve a trained model over HTTP: POST /translate, /health, /info, /docs.

    Concurrent requests share batches (dynamic batching): the requests waiting
    are translated together in token-budget batches; with --batching continuous,
    beam-search requests join the running search between its steps instead, and
    with --batching auto they do so while the server is busy.
    The model is loaded before the port opens; SIGTERM finishes what is in flight.
    Needs FastAPI and uvicorn (the serve extra of mtkit).

    Examples:
      mtkit serve runs/demo --port 8000
      mtkit serve runs/demo --engine ctranslate2 --quantize int8
      mtkit serve runs/seed1 runs/seed2 --port 8001      # an ensemble
      curl -s localhost:8000/translate -H 'content-type: application/json' \\
        -d '{"sentences": ["A man is walking."], "beam_size": 5}'
    """
    setup_logging()
    from mtkit.serve.server import serve as run_server

    settings = ServeSettings(
        runs, host=host, port=port, engine=engine, quantize=quantize, device=device,
        batching=batching, continuous_from=continuous_from, max_wait_ms=max_wait_ms,
        batch_wait=batch_wait, max_sentences=max_sentences, max_chars=max_chars, max_beam=max_beam,
        queue_sentences=queue_sentences, timeout_s=timeout,
    )  # fmt: skip
    settings.check()
    require_serve_extra()
    if engine == "ctranslate2":
        settings = dataclasses.replace(settings, runs=[ctranslate2_export(runs[0])])
    run_server(settings)
