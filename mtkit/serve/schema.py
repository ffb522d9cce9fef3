"""The JSON bodies of the HTTP API (pydantic models, so /docs shows them) and the mapping of a
request's options onto the run's DecodingConfig."""

from __future__ import annotations

import dataclasses
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mtkit.config.schema import DecodingConfig, EarlyStopping, LengthNorm
from mtkit.config.validate import validate_decoding
from mtkit.translation.results import Translation

# request fields that are DecodingConfig keys (max_tokens stays the server's batch budget)
DECODING_FIELDS = (
    "beam_size", "nbest", "length_penalty", "length_norm", "early_stopping",
    "max_len_a", "max_len_b", "min_len",
    "no_repeat_ngram", "sampling", "temperature", "top_k", "top_p", "seed",
)  # fmt: skip


class TranslateRequest(BaseModel):
    """Sentences to translate; options left out take the run's decoding defaults (GET /info)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    sentences: list[str] = Field(description="One sentence per item; an empty one stays empty")
    beam_size: int | None = Field(default=None, description="1 = greedy search")
    nbest: int | None = Field(default=None, description="return this many hypotheses")
    length_penalty: float | None = Field(default=None, description="GNMT alpha (0: raw)")
    length_norm: LengthNorm | None = None
    early_stopping: EarlyStopping | None = Field(
        default=None, description="beam search: exact (default) or heuristic (faster)"
    )
    max_len_a: float | None = Field(default=None, description="max length = a * src_len + b")
    max_len_b: int | None = None
    min_len: int | None = Field(default=None, description="no EOS before this many tokens")
    no_repeat_ngram: int | None = Field(default=None, description="n-gram size never repeated")
    sampling: bool | None = Field(default=None, description="sample instead of searching")
    temperature: float | None = None
    top_k: int | None = Field(default=None, description="sample from the k best (0: all)")
    top_p: float | None = Field(default=None, description="nucleus sampling mass")
    seed: int | None = Field(default=None, description="sampling seed: same seed, same samples")


class Hypothesis(BaseModel):
    text: str
    score: float = Field(description="what search ranked by (length-normalised for beams)")
    log_prob: float | None = Field(description="total log-probability (null: engine can't say)")


class TranslationOut(BaseModel):
    source: str
    translation: str
    score: float | None = Field(description="the best hypothesis' score; null for empty input")
    truncated: bool = Field(description="the source was cut to the model's maximum length")
    nbest: list[Hypothesis] | None = Field(default=None, description="only when nbest > 1")


class Timing(BaseModel):
    total_ms: float = Field(description="from the request's arrival to its answer")
    queue_ms: float = Field(description="waiting for its first batch")
    decode_ms: float = Field(description="this request's share of its batches' decoding time")


class TranslateResponse(BaseModel):
    translations: list[TranslationOut]
    timing: Timing
    engine: str


class ErrorBody(BaseModel):
    error: str = Field(description="what is wrong, in one line")
    limit: str | None = Field(default=None, description="the server limit that was hit, if any")


def request_decoding(request: TranslateRequest, defaults: DecodingConfig) -> DecodingConfig:
    """The run's decoding defaults with the request's options applied, checked by the config's
    own validator (its ConfigError names the key)."""
    given = {name: getattr(request, name) for name in DECODING_FIELDS}
    dec = dataclasses.replace(defaults, **{k: v for k, v in given.items() if v is not None})
    validate_decoding(dec, prefix="")
    return dec


def translation_out(t: Translation, nbest: bool) -> TranslationOut:
    """One sentence's answer; with `nbest` its whole n-best list."""
    best = t.nbest[0].score if t.nbest else None
    out = TranslationOut(source=t.source, translation=t.text, score=best, truncated=t.truncated)
    if nbest:
        out.nbest = [Hypothesis(text=c.text, score=c.score, log_prob=c.log_prob) for c in t.nbest]
    return out


def error_body(message: str, limit: str | None = None) -> dict[str, Any]:
    return ErrorBody(error=message, limit=limit).model_dump(exclude_none=True)
