"""Cleaning: normalise text, mark empty / same / duplicate pairs, carve valid/test from train.

valid/test files are only normalised and stripped of empty/unreadable pairs unless
`data.clean_eval` is set: dropping test sentences makes scores incomparable.
"""

from __future__ import annotations

import logging
import unicodedata
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from mtkit.config.schema import DataConfig
from mtkit.data.rows import CODE, DataError, mark
from mtkit.errors import plural

logger = logging.getLogger(__name__)


class Cleaner:
    """Batched map: normalise text and mark empty / same / duplicate pairs in `drop`.

    Holds the duplicate set, so it must run in one process (num_proc=1).
    """

    def __init__(self, data: DataConfig, full: bool) -> None:
        self.form = None if data.unicode_form == "none" else data.unicode_form
        self.whitespace = data.normalize_whitespace
        self.drop_same = data.drop_same and full
        self.dedup = data.dedup and full
        self.seen: set[int] = set()

    def norm(self, text: str) -> str:
        if self.form:
            text = unicodedata.normalize(self.form, text)
        return " ".join(text.split()) if self.whitespace else text.strip()

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        src = [self.norm(s) for s in batch["src"]]
        tgt = [self.norm(t) for t in batch["tgt"]]
        drop = list(batch["drop"])
        for i, (s, t) in enumerate(zip(src, tgt, strict=True)):
            if drop[i]:
                continue
            if not s or not t:
                drop[i] = CODE["empty"]
            elif self.drop_same and s == t:
                drop[i] = CODE["same"]
            elif self.dedup:
                h = hash((s, t))
                if h in self.seen:
                    drop[i] = CODE["duplicate"]
                else:
                    self.seen.add(h)
        return {"src": src, "tgt": tgt, "drop": drop}


def carve(
    data: DataConfig, train: datasets.Dataset, splits: dict[str, datasets.Dataset], cache: Path
) -> datasets.Dataset:
    """Seeded valid/test carved from cleaned train; train loses pairs sharing a sentence."""
    n = len(train)
    sizes: dict[str, int] = {}
    if data.valid is None:
        sizes["valid"] = round(data.valid_fraction * n) if data.valid_fraction else data.valid_size
    if data.test is None and (data.test_size or data.test_fraction):
        sizes["test"] = round(data.test_fraction * n) if data.test_fraction else data.test_size
    if not sizes:
        return train
    if sum(sizes.values()) >= n:
        asked = " + ".join(f"{v} {k}" for k, v in sizes.items())
        raise DataError(
            f"data.valid_size/test_size: cannot carve {asked} pairs out of {n} cleaned training "
            "pairs; lower them, use data.valid_fraction, or give data.valid/data.test files"
        )
    perm = np.random.default_rng(data.seed).permutation(n)
    start = 0
    carved_text: set[str] = set()
    for split, size in sizes.items():
        idx = np.sort(perm[start : start + size])
        start += size
        part = train.select(
            idx, indices_cache_file_name=str(cache / f"{split}-carved.indices.arrow")
        )
        splits[split] = part.flatten_indices(cache_file_name=str(cache / f"{split}-carved.arrow"))
        for batch in splits[split].iter(batch_size=10_000):
            carved_text.update(batch["src"])
            carved_text.update(batch["tgt"])
        logger.info(
            "carved %s out of train (data.seed=%d)", plural(size, f"{split} pair"), data.seed
        )
    rest = train.select(
        np.sort(perm[start:]), indices_cache_file_name=str(cache / "train-rest.indices.arrow")
    )

    def overlap(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        drop = [
            CODE["overlap"] if s in carved_text or t in carved_text else 0
            for s, t in zip(batch["src"], batch["tgt"], strict=True)
        ]
        return {"drop": drop}

    return mark(rest, overlap, cache, "train-overlap")


def check_not_empty(
    split: str, ds: datasets.Dataset, stats: dict[str, Any], data: DataConfig
) -> None:
    """DataError saying which filters removed what when a split ends up empty."""
    if len(ds):
        return
    limits = {
        "too_long": f"data.max_len={data.max_len}",
        "ratio": f"data.max_ratio={data.max_ratio}",
    }
    detail = ", ".join(
        f"{reason} {n}" + (f" ({limits[reason]})" if reason in limits else "")
        for reason, n in stats.get("dropped", {}).items()
    )
    raise DataError(
        f"data.{split}: no pairs left after cleaning (read {stats.get('read', 0)}; "
        f"dropped: {detail or 'none'})"
    )
