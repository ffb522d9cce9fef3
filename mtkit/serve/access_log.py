"""A plain ASGI middleware: one structured access-log line per request, and a 413 for bodies
that announce (Content-Length) more bytes than the server's limits could ever accept.

The line is logfmt (`key=value`), e.g.
 access method=POST path=/translate status=200 latency_ms=41.2 sentences=3 tokens=57 client=::1
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("mtkit.serve.access")


class AccessLog:
    """Logs every HTTP request; refuses over-long bodies before reading them."""

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # unless a response starts

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        scope.setdefault("state", {})
        try:
            if self._too_long(scope):
                await self._refuse(send_status)
            else:
                await self.app(scope, receive, send_status)
        finally:
            log_request(scope, status, time.perf_counter() - start)

    def _too_long(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    return int(value) > self.max_body
                except ValueError:
                    return False
        return False

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({
            "error": f"request body over {self.max_body} bytes", "limit": "max_body_bytes"
        }).encode()  # fmt: skip
        headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def log_request(scope: Scope, status: int, seconds: float) -> None:
    state: dict[str, Any] = scope.get("state") or {}
    client = scope.get("client")
    fields = {
        "method": scope.get("method"),
        "path": scope.get("path"),
        "status": status,
        "latency_ms": f"{seconds * 1000:.1f}",
        "sentences": state.get("sentences", 0),
        "tokens": state.get("tokens", 0),
        "client": client[0] if client else "-",
    }
    logger.info("access %s", " ".join(f"{k}={v}" for k, v in fields.items()))
