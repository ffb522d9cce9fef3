"""Run the server: load the model, open the port, serve until SIGTERM or Ctrl-C.

Order matters: the model is loaded (and has translated one sentence) before the port opens, so
a client that can connect gets answers; a run that cannot be loaded fails with one line and
no port was ever opened. SIGTERM lets uvicorn stop accepting, finish the requests in flight,
close the batcher, and return; the process then exits 0.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import socket
from collections.abc import Iterator
from types import FrameType

from mtkit.serve.batcher import Batcher
from mtkit.serve.engines import LoadedEngine, load_engine, source_lengths
from mtkit.serve.settings import ServeSettings, require_serve_extra

logger = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 5  # beyond the request timeout, for the last answers to be written


def serve(settings: ServeSettings) -> None:
    """Serve `settings.runs` over HTTP until stopped; startup errors raise MtkitError/OSError."""
    settings.check()
    require_serve_extra()
    import uvicorn

    from mtkit.serve.app import create_app

    loaded = load_engine(settings)
    warm_up(loaded)
    batcher = Batcher(
        loaded.translator,
        functools.partial(source_lengths, loaded.translator),
        max_wait_s=settings.max_wait_ms / 1000,
        wait_always=settings.batch_wait == "always",
        max_pending=settings.queue_sentences,
        continuous=settings.batching == "continuous",
    )
    app = create_app(loaded, batcher, settings)
    sock = listen(settings.host, settings.port)
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(
        app, log_config=None, access_log=False, lifespan="on",
        timeout_graceful_shutdown=int(settings.timeout_s) + SHUTDOWN_GRACE_S,
    )  # fmt: skip
    batcher.start()
    logger.info(
        "serving %s (%s, %s -> %s) on http://%s:%d; API docs at /docs",
        loaded.source, loaded.name, loaded.config.data.src_lang, loaded.config.data.tgt_lang,
        host, port,
    )  # fmt: skip
    with sigterm_returns():
        uvicorn.Server(config).run(sockets=[sock])
    batcher.close()  # no-op after a normal shutdown; stops the worker if startup failed
    logger.info("server stopped")


def warm_up(loaded: LoadedEngine) -> None:
    """Translate one sentence, so the first client does not pay for lazy initialisation."""
    loaded.translator.translate_full(["hello"], loaded.config.decoding)


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free one); OSError names the address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on such sockets, and without it
    # a keep-alive client waits ~40 ms (Nagle + delayed ACK) for each response body
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise OSError(e.errno, f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.set_inheritable(True)
    return sock


@contextlib.contextmanager
def sigterm_returns() -> Iterator[None]:
    """uvicorn re-raises SIGTERM once it has shut down gracefully; absorb it so the process
    ends normally (exit 0) instead of being killed by the default handler."""

    def stopped(signum: int, frame: FrameType | None) -> None:
        logger.info("stopped by SIGTERM after finishing the requests in flight")

    previous = signal.signal(signal.SIGTERM, stopped)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
