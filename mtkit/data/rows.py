"""The rows every prepare step passes on: columns `src`, `tgt`, `drop`, and the drop reasons.

A row is never deleted where it is judged: its `drop` column gets a reason code (0 keeps it),
`drop_counts` tallies the codes for stats.json, and `keep` selects the rows still at 0.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from mtkit.errors import MtkitError


class DataError(MtkitError):
    """Bad input data; a one-line message naming the file/line and what was expected."""


# Reason codes in the `drop` column; 0 keeps the pair. Order = order of the checks.
REASONS = (
    "invalid_utf8",
    "malformed",  # a NUL byte
    "bad_row",  # not the shape of its format (columns, JSON object, keys): data.on_bad_row
    "empty",
    "same",
    "duplicate",
    "overlap",
    "too_long",
    "ratio",
)
CODE = {name: i + 1 for i, name in enumerate(REASONS)}


FEATURES = datasets.Features(
    {
        "src": datasets.Value("string"),
        "tgt": datasets.Value("string"),
        "drop": datasets.Value("int8"),
    }
)


def drop_counts(ds: datasets.Dataset) -> dict[str, int]:
    """Rows per drop reason (only reasons that occur)."""
    codes = ds.with_format("arrow")["drop"].to_numpy(zero_copy_only=False)
    counts = np.bincount(codes.astype(np.int64), minlength=len(REASONS) + 1)
    return {name: int(counts[CODE[name]]) for name in REASONS if counts[CODE[name]]}


def keep(ds: datasets.Dataset, cache: Path, name: str) -> datasets.Dataset:
    """Rows with drop == 0."""
    codes = ds.with_format("arrow")["drop"].to_numpy(zero_copy_only=False)
    kept = np.flatnonzero(codes == 0)
    if len(kept) == len(ds):
        return ds
    return ds.select(kept, indices_cache_file_name=str(cache / f"{name}.indices.arrow"))


def mark(
    ds: datasets.Dataset,
    fn: Callable[..., Any],
    cache: Path,
    name: str,
    advance: Callable[[int], None] | None = None,
    **kw: Any,
) -> datasets.Dataset:
    """Run a batched map writing into the build cache (never reusing a stale result).

    `advance(n)` is told each batch's size once it is done (progress; one process only).
    """
    if advance is not None:
        fn = _counting(fn, advance)
    return ds.map(
        fn,
        batched=True,
        cache_file_name=str(cache / f"{name}.arrow"),
        new_fingerprint=name,
        load_from_cache_file=False,
        desc=name,
        **kw,
    )


def _counting(fn: Callable[..., Any], advance: Callable[[int], None]) -> Callable[..., Any]:
    """`fn` that reports the rows of each batch it has processed."""

    def counted(batch: dict[str, list[Any]], **kwargs: Any) -> Any:
        out = fn(batch, **kwargs)
        advance(len(next(iter(batch.values()))))
        return out

    return counted
