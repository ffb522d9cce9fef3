"""The HTTP API: POST /translate, GET /health, GET /info, and FastAPI's /docs.

Every error is a JSON body `{"error": ..., "limit": ...}`: 413 past a size limit, 422 for
malformed JSON, wrong types or impossible options, 503 (with Retry-After) when the queue is
full, 504 past the per-request timeout. A client that disconnects has its queued sentences
dropped, so it costs the others nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

import mtkit
from mtkit.config.schema import ConfigError, DecodingConfig
from mtkit.serve.access_log import AccessLog
from mtkit.serve.jobs import BatcherClosed, Job, QueueFull
from mtkit.serve.model_process import ModelError, ModelProcess
from mtkit.serve.schema import (
    ErrorBody,
    TranslateRequest,
    TranslateResponse,
    error_body,
    request_decoding,
    translation_out,
)
from mtkit.serve.settings import ServeSettings
from mtkit.translation.results import Translation

logger = logging.getLogger(__name__)

CLIENT_GONE = 499  # nginx's "client closed request": logged, never seen by the client
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in [
        (413, "too many sentences, or a sentence too long"),
        (422, "malformed JSON, wrong types, or impossible decoding options"),
        (503, "the queue is full; retry after Retry-After seconds"),
        (504, "the request timed out"),
    ]
}


class ApiError(Exception):
    """An error answer: status, one-line message, the limit that was hit, extra headers."""

    def __init__(
        self,
        status: int,
        message: str,
        limit: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.limit, self.headers = status, message, limit, headers


class ClientGone(Exception):
    """The client closed its connection before its answer was ready."""


def create_app(model: ModelProcess, settings: ServeSettings) -> FastAPI:
    """The FastAPI app over a started model process (closed at shutdown)."""
    facts = model.facts

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await asyncio.to_thread(model.close)  # in-flight requests are done by now

    app = FastAPI(
        title="mtkit translation server",
        version=mtkit.__version__,
        description=f"{facts.config.data.src_lang} → {facts.config.data.tgt_lang} with "
        f"{facts.name} ({facts.source})",
        lifespan=lifespan,
    )
    app.add_middleware(AccessLog, max_body=max_body_bytes(settings))
    add_error_handlers(app)
    add_routes(app, model, settings)
    return app


def max_body_bytes(settings: ServeSettings) -> int:
    """A body larger than the limits allow (4 bytes per character, JSON escapes aside)."""
    return settings.max_sentences * (settings.max_chars * 4 + 16) + 64 * 1024


def add_routes(app: FastAPI, model: ModelProcess, settings: ServeSettings) -> None:
    @app.post("/translate", response_model=TranslateResponse, responses=ERRORS)
    async def translate(body: TranslateRequest, request: Request) -> Any:
        """Translate a list of sentences; options not given take the run's defaults."""
        arrived = time.perf_counter()
        check_limits(body, settings)
        dec = decoding(body, model.facts.config.decoding, settings)
        lines = [valid_text(s) for s in body.sentences]
        try:
            job = model.submit(lines, dec)
        except QueueFull as e:
            raise ApiError(
                503, f"server busy: {e}", "queue_sentences", {"Retry-After": "1"}
            ) from None
        except BatcherClosed as e:
            raise ApiError(503, str(e), None, {"Retry-After": "5"}) from None
        request.state.sentences, request.state.tokens = len(lines), job.tokens
        try:
            results = await wait_for(job, model, request, settings.timeout_s)
        except ClientGone:
            return JSONResponse(error_body("client closed the connection"), CLIENT_GONE)
        return response(job, results, dec, arrived, model.facts.name)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness: the model is loaded and the batcher runs."""
        return {"status": "ok", "engine": model.facts.name, "queued_sentences": model.pending}

    @app.get("/info")
    async def get_info() -> dict[str, Any]:
        """Model, languages, parameters, validation scores, decoding defaults, limits."""
        counts = model.stats
        stats = {
            "batches": counts.batches,
            "steps": counts.steps,
            "sentences_per_step": round(counts.step_sentences / max(counts.steps, 1), 2),
            "sentences": counts.sentences,
        }
        return {**model.facts.info, "stats": stats, "queued_sentences": model.pending}


def check_limits(body: TranslateRequest, settings: ServeSettings) -> None:
    n = len(body.sentences)
    if n > settings.max_sentences:
        raise ApiError(
            413, f"{n} sentences; this server takes at most {settings.max_sentences} per request",
            "max_sentences",
        )  # fmt: skip
    for i, sentence in enumerate(body.sentences):
        if len(sentence) > settings.max_chars:
            raise ApiError(
                413, f"sentence {i} has {len(sentence)} characters; this server takes at most "
                f"{settings.max_chars}", "max_chars",
            )  # fmt: skip


def decoding(body: TranslateRequest, defaults: DecodingConfig, settings: ServeSettings) -> Any:
    """The request's DecodingConfig; impossible or too costly options are a 422."""
    for name in ("beam_size", "nbest"):
        value = getattr(body, name)
        if value is not None and value > settings.max_beam:
            raise ApiError(
                422, f"{name}: {value} is more than this server allows ({settings.max_beam})",
                "max_beam",
            )  # fmt: skip
    try:
        return request_decoding(body, defaults)
    except ConfigError as e:
        raise ApiError(422, str(e)) from None


def valid_text(text: str) -> str:
    """`text` with lone surrogates (JSON escapes like "\\ud800") replaced by U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in text)


async def wait_for(job: Job, model: ModelProcess, request: Request, timeout: float) -> Any:
    """The job's translations; ApiError 504 past `timeout`, ClientGone if the client left.
    Either way the job is cancelled, so its untranslated sentences cost nothing."""
    result: asyncio.Future[Any] = asyncio.wrap_future(job.future)
    gone: asyncio.Future[Any] = asyncio.ensure_future(disconnected(request))
    try:
        done, _ = await asyncio.wait(
            {result, gone}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        gone.cancel()
    if result in done:
        return result.result()  # an engine failure raises here: a 500
    model.cancel(job)
    result.cancel()
    if gone in done:
        raise ClientGone
    raise ApiError(504, f"no answer within {timeout:g} s (the server's --timeout)", "timeout_s")


async def disconnected(request: Request) -> None:
    """Return once the client has closed the connection (the body is already read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def response(
    job: Job, results: list[Translation], dec: DecodingConfig, arrived: float, engine: str
) -> TranslateResponse:
    now = time.perf_counter()
    started = job.started if job.started is not None else now
    timing = {
        "total_ms": (now - arrived) * 1000,
        "queue_ms": (started - job.submitted) * 1000,
        "decode_ms": sum(t.seconds for t in results) * 1000,
    }
    return TranslateResponse.model_validate({
        "translations": [translation_out(t, dec.nbest > 1) for t in results],
        "timing": timing,
        "engine": engine,
    })  # fmt: skip


def add_error_handlers(app: FastAPI) -> None:
    """JSON error bodies for our errors, for request validation (422) and for crashes (500)."""

    @app.exception_handler(ApiError)
    async def api_error(_: Request, e: ApiError) -> JSONResponse:
        return JSONResponse(error_body(e.message, e.limit), e.status, headers=e.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": err.get("loc"), "msg": err.get("msg"), "type": err.get("type")}
            for err in e.errors()
        ]
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(part) for part in first["loc"] or () if part != "body")
        message = f"{where}: {first['msg']}" if where else str(first["msg"])
        return JSONResponse({**error_body(message), "detail": jsonable_encoder(errors)}, 422)

    @app.exception_handler(ModelError)
    async def model_failed(_: Request, e: ModelError) -> JSONResponse:
        return JSONResponse(error_body(f"translation failed: {e}"), 500)

    @app.exception_handler(Exception)
    async def crashed(_: Request, e: Exception) -> JSONResponse:
        logger.error("request failed: %s: %s", type(e).__name__, e)
        return JSONResponse(error_body(f"internal error: {type(e).__name__}"), 500)
