"""A request's sentences on their way through the server, and what refuses them.

Light on imports (no torch): the HTTP process imports this, the model process too.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from mtkit.config.schema import DecodingConfig
from mtkit.data.tokenizer import MAX_CHARS_PER_TOKEN, TokenizerPair
from mtkit.translation.results import Translation


class QueueFull(Exception):
    """The queue holds too many sentences to take this request now."""


class BatcherClosed(Exception):
    """The server is shutting down (or its model is gone) and takes no new requests."""


@dataclass(eq=False)
class Job:
    """One request's sentences on their way through the batcher."""

    lines: list[str]
    lengths: list[int]  # source tokens per line, EOS included (0 for an empty line)
    dec: DecodingConfig
    future: Future[list[Translation]] = field(default_factory=Future)
    results: list[Translation | None] = field(default_factory=list)
    left: int = 0  # sentences not translated yet
    submitted: float = field(default_factory=time.perf_counter)
    started: float | None = None  # when its first batch began
    cancelled: bool = False

    @property
    def tokens(self) -> int:
        return sum(self.lengths)


Item = tuple[Job, int]  # a job and the index of one of its sentences


def source_lengths(
    tokenizers: TokenizerPair, max_positions: int, lines: Sequence[str]
) -> list[int]:
    """Source tokens (EOS included) each line will take in a batch, as `translate_full` cuts
    them; an empty line takes none."""
    limit = max_positions - 1
    cap = limit * MAX_CHARS_PER_TOKEN
    keep = [i for i, line in enumerate(lines) if line.strip()]
    ids = tokenizers.src.encode([lines[i].strip()[:cap] for i in keep])
    lengths = [0] * len(lines)
    for i, tokens in zip(keep, ids, strict=True):
        lengths[i] = min(len(tokens), limit) + 1
    return lengths
