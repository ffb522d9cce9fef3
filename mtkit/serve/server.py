"""Run the server: load the model, open the port, serve until SIGTERM or Ctrl-C.

Order matters: the model is loaded in its own process (mtkit.serve.model_process) and has
translated one sentence before the port opens, so a client that can connect gets answers; a
run that cannot be loaded fails with one line and no port was ever opened. SIGTERM lets uvicorn
stop accepting, finish the requests in flight, close the model process, and return; the
process then exits 0.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import socket
from collections.abc import Iterator
from types import FrameType
from typing import Any

from mtkit.serve.model_process import ModelProcess
from mtkit.serve.settings import ServeError, ServeSettings, require_serve_extra

logger = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 5  # beyond the request timeout, for the last answers to be written


def serve(settings: ServeSettings) -> None:
    """Serve `settings.runs` over HTTP until stopped; startup errors raise MtkitError/OSError,
    and so does a model process that dies while serving (after the server has stopped)."""
    settings.check()
    require_serve_extra()
    import uvicorn

    from mtkit.serve.app import create_app

    model = ModelProcess.start(settings)
    try:
        app = create_app(model, settings)
        sock = listen(settings.host, settings.port)
        host, port = sock.getsockname()[:2]
        config = uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="on",
            timeout_graceful_shutdown=int(settings.timeout_s) + SHUTDOWN_GRACE_S,
        )  # fmt: skip
        server = uvicorn.Server(config)
        model.on_exit = functools.partial(stop_server, server)
        facts = model.facts
        logger.info(
            "serving %s (%s, %s -> %s) on http://%s:%d; API docs at /docs",
            facts.source, facts.name, facts.config.data.src_lang, facts.config.data.tgt_lang,
            host, port,
        )  # fmt: skip
        if model.lost is None:
            with sigterm_returns():
                server.run(sockets=[sock])
    finally:
        model.close()  # no-op after a normal shutdown; stops the model if startup failed
    if model.lost is not None:
        raise ServeError(f"{model.lost}; the server stopped")
    logger.info("server stopped")


def stop_server(server: Any, reason: str) -> None:
    """Make uvicorn stop (the model process is gone: nothing could be answered)."""
    server.should_exit = True


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
