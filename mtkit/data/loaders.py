"""jsonl, parquet and Hub inputs: loaded by `datasets.load_dataset`, mapped onto (src, tgt, drop).

A jsonl file's undecodable lines are reported and cut out first (bad_lines.py), then appended
back as dropped rows, so they are counted like those of the line readers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets

from mtkit.config.schema import DataConfig
from mtkit.data.bad_lines import without_bad_utf8
from mtkit.data.rows import CODE, FEATURES, DataError
from mtkit.data.sources import Source

_HUB_SPLITS = {"train": "train", "valid": "validation", "test": "test"}


def load_with_datasets(
    data: DataConfig, source: Source, work: Path, cache: str
) -> tuple[datasets.Dataset, int]:
    """jsonl / parquet through `datasets.load_dataset`, hub datasets by name.

    Returns the dataset and the number of undecodable lines removed before loading.
    """
    if data.format == "hub":
        return _load_hub(data, source), 0
    path, unreadable = source.files[0], 0
    if data.format == "jsonl":
        path, unreadable = without_bad_utf8(data, source, path, work)
    builder = {"jsonl": "json", "parquet": "parquet"}[data.format]
    try:
        ds = datasets.load_dataset(builder, data_files=str(path), split="train", cache_dir=cache)
    except datasets.exceptions.DatasetGenerationError as e:
        where = _first_bad_json_line(path) if data.format == "jsonl" else None
        cause = where or str(e.__cause__ or e).splitlines()[0]
        raise DataError(f"{source.key}: could not read {source.files[0]}: {cause}") from None
    return ds, unreadable


def _first_bad_json_line(path: Path) -> str | None:
    """'line N: problem' for the first line that is not a JSON object (error path only)."""
    with open(path, encoding="utf-8", errors="replace", newline="\n") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                return f"line {n}: invalid JSON ({e})"
            if not isinstance(obj, dict):
                return f"line {n}: expected one JSON object per line, found {type(obj).__name__}"
    return None


def _load_hub(data: DataConfig, source: Source) -> datasets.Dataset:
    name, _, split = source.spec.partition(":")
    split = split or _HUB_SPLITS[source.split]
    what = f"hub dataset '{name}'" + (f" (config '{data.hub_config}')" if data.hub_config else "")
    try:
        return datasets.load_dataset(name, data.hub_config, split=split)
    except Exception as e:  # the hub raises many types; all become one user-facing line
        env = os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}
        offline = env or bool(datasets.config.HF_HUB_OFFLINE)
        text = str(e)
        no_network = isinstance(e, (ConnectionError, TimeoutError)) or "Couldn't reach" in text
        if no_network or (offline and "offline" in text.lower()):
            why = "disabled (HF_HUB_OFFLINE is set)" if offline else "unreachable"
            fast = "" if offline else "; HF_HUB_OFFLINE=1 makes this fail without waiting"
            raise DataError(
                f"{source.key}: cannot load {what} split '{split}': the Hugging Face Hub is {why} "
                "and it is not in the local cache; download it where there is internet, or use "
                f"local files (data.format: text, tsv, csv, jsonl or parquet){fast}"
            ) from None
        first = text.splitlines()[0] if text else type(e).__name__
        raise DataError(f"{source.key}: cannot load {what} split '{split}': {first}") from None


def select_columns(
    data: DataConfig, source: Source, ds: datasets.Dataset, cache_file: Path, unreadable: int
) -> datasets.Dataset:
    """Map a loaded dataset's columns onto (src, tgt, drop); `unreadable` rows are appended."""
    getters = _column_getters(data, source, ds)

    def pick(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        src = [_as_text(v) for v in getters[0](batch)]
        tgt = [_as_text(v) for v in getters[1](batch)]
        return {"src": src, "tgt": tgt, "drop": [0] * len(src)}

    cache_file.parent.mkdir(parents=True, exist_ok=True)
    out = ds.map(
        pick,
        batched=True,
        remove_columns=ds.column_names,
        features=FEATURES,
        cache_file_name=str(cache_file),
        new_fingerprint=cache_file.stem,
        desc=f"reading {source.spec}",
    )
    if unreadable:  # lines removed before loading become dropped rows, so they are counted
        n = unreadable
        bad = datasets.Dataset.from_dict(
            {"src": [""] * n, "tgt": [""] * n, "drop": [CODE["invalid_utf8"]] * n},
            features=FEATURES,
        )
        out = datasets.concatenate_datasets([out, bad])
    return out


def _as_text(value: Any) -> str:
    return "" if value is None else value if isinstance(value, str) else str(value)


Getter = Callable[[dict[str, list[Any]]], list[Any]]


def _column_getters(
    data: DataConfig, source: Source, ds: datasets.Dataset
) -> tuple[Getter, Getter]:
    """Functions pulling the source and target column out of a batch."""
    names = list(ds.column_names)
    where = source.files[0] if source.files else source.spec
    cols = (data.src_column, data.tgt_column)
    if isinstance(cols[0], int) and isinstance(cols[1], int):
        if max(cols[0], cols[1]) >= len(names):
            raise DataError(
                f"{source.key}: {where} has {len(names)} columns ({', '.join(names)}); "
                f"data.src_column/tgt_column ask for {cols[0]} and {cols[1]}"
            )
        cols = (names[cols[0]], names[cols[1]])
    if isinstance(cols[0], str) and isinstance(cols[1], str):
        missing = [c for c in cols if c not in names]
        if missing:
            raise DataError(
                f"{source.key}: {where} has no column {', '.join(map(repr, missing))} "
                f"(found: {', '.join(map(repr, names))}); set data.src_column/data.tgt_column"
            )
        a, b = cols
        return (lambda batch: batch[a]), (lambda batch: batch[b])
    s, t = data.src_lang, data.tgt_lang
    if s in names and t in names:
        return (lambda batch: batch[s]), (lambda batch: batch[t])
    nested = ds.features.get("translation")
    if isinstance(nested, dict) and s in nested and t in nested:
        return (
            lambda batch: [r.get(s) if r else None for r in batch["translation"]],
            lambda batch: [r.get(t) if r else None for r in batch["translation"]],
        )
    found = ", ".join(map(repr, names))
    if isinstance(nested, dict):
        found += f"; translation has {', '.join(map(repr, nested))}"
    raise DataError(
        f"{source.key}: {where} has no '{s}'/'{t}' columns nor translation.{s}/translation.{t} "
        f"(found: {found}); set data.src_column/data.tgt_column"
    )
