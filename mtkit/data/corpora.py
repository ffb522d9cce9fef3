"""Per-corpus options of `data.train`: a source tag and a sampling weight.

Tagged back-translation (Caswell et al., 2019) marks synthetic pairs with a tag such as
`<BT>` in front of the source sentence, so the model can tell them from real ones; a weight
up- or down-samples a corpus (2: every pair twice; 0.5: a seeded half). Both apply to the
cleaned training split, after valid/test were carved from it (a carved pair never carries a
tag), and before the tokenizer is trained, which learns each tag as one piece.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from mtkit.data.rows import mark
from mtkit.data.sources import Source

logger = logging.getLogger(__name__)

CORPUS = "corpus"  # column: the index of the corpus in data.train a row came from


def add_corpus_column(parts: list[datasets.Dataset]) -> list[datasets.Dataset]:
    """Each corpus's rows labelled with its index (only while tags/weights are applied)."""
    return [
        part.add_column(CORPUS, np.full(len(part), i, dtype=np.int16))
        for i, part in enumerate(parts)
    ]


def drop_corpus_column(ds: datasets.Dataset) -> datasets.Dataset:
    return ds.remove_columns(CORPUS) if CORPUS in ds.column_names else ds


def apply_corpus_options(
    train: datasets.Dataset, sources: list[Source], seed: int, cache: Path
) -> tuple[datasets.Dataset, list[dict[str, Any]]]:
    """Prepend each corpus's tag to its sources, then sample by weight; drops the label column.

    Returns the new split and, per corpus, its path, tag, weight, pairs before and after.
    """
    if CORPUS not in train.column_names:
        return train, []
    corpus = train.with_format("arrow")[CORPUS].to_numpy(zero_copy_only=False)
    tags = [s.tag for s in sources]
    if any(t is not None for t in tags):
        train = mark(train, _tagger, cache, "train-tags", fn_kwargs={"tags": tags})
    picked, stats = [], []
    for i, source in enumerate(sources):
        rows = np.flatnonzero(corpus == i)
        chosen = _sample(rows, source.weight, np.random.default_rng([seed, i]))
        picked.append(chosen)
        stats.append({
            "path": source.spec, "tag": source.tag, "weight": source.weight,
            "pairs": len(rows), "sampled": len(chosen),
        })  # fmt: skip
        if source.tag is not None or source.weight != 1.0:
            logger.info(
                "train corpus %s: tag %s, weight %g: %d pairs -> %d",
                source.spec, source.tag, source.weight, len(rows), len(chosen),
            )  # fmt: skip
    order = np.sort(np.concatenate(picked)) if picked else np.array([], dtype=np.int64)
    if len(order) != len(train) or not np.array_equal(order, np.arange(len(train))):
        train = train.select(
            order, indices_cache_file_name=str(cache / "train-weights.indices.arrow")
        )
    return drop_corpus_column(train), stats


def _tagger(batch: dict[str, list[Any]], tags: list[str | None]) -> dict[str, list[Any]]:
    """Batched map: `tag + " " + source` for rows of a tagged corpus."""
    out = []
    for src, i in zip(batch["src"], batch[CORPUS], strict=True):
        tag = tags[i]
        out.append(src if tag is None else f"{tag} {src}")
    return {"src": out}


def _sample(rows: np.ndarray, weight: float, rng: np.random.Generator) -> np.ndarray:
    """`rows` repeated int(weight) times, plus a seeded share of them for the fraction."""
    whole = int(weight)
    extra = round((weight - whole) * len(rows))
    parts = [np.tile(rows, whole)] if whole else []
    if extra:
        parts.append(np.sort(rng.choice(rows, size=extra, replace=False)))
    return np.concatenate(parts) if parts else rows[:0]
