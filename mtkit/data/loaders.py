"""jsonl, parquet and Hub inputs: loaded by `datasets.load_dataset`, mapped onto (src, tgt, drop).

A jsonl file's undecodable lines are reported and cut out first (bad_lines.py), then appended
back as dropped rows, so they are counted like those of the line readers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from mtkit.config.schema import DataConfig
from mtkit.data.bad_lines import BadRows, scan_utf8, without_bad_utf8, without_lines
from mtkit.data.rows import CODE, FEATURES, DataError, drop_counts
from mtkit.data.sources import Source
from mtkit.files import numbered_lines

_HUB_SPLITS = {"train": "train", "valid": "validation", "test": "test"}


@dataclass
class Loaded:
    """A dataset read by `datasets`, and the lines cut out of its file before loading."""

    ds: datasets.Dataset
    unreadable: int = 0  # lines that were not UTF-8
    not_objects: int = 0  # jsonl lines that were not JSON objects (data.on_bad_row: skip)


def load_with_datasets(data: DataConfig, source: Source, work: Path, cache: str) -> Loaded:
    """jsonl / parquet through `datasets.load_dataset`, hub datasets by name.

    A jsonl file's lines that are not UTF-8 are cut out first (bad_lines.py); so are, when
    `datasets` cannot read it, the lines that are not JSON objects (`BadRows`).
    """
    if data.format == "hub":
        return Loaded(_load_hub(data, source))
    original, unreadable = source.files[0], 0
    path = original
    if data.format == "jsonl":
        path, unreadable = without_bad_utf8(data, source, original, work)
    builder = {"jsonl": "json", "parquet": "parquet"}[data.format]
    try:
        return Loaded(_load(builder, path, cache), unreadable)
    except datasets.exceptions.DatasetGenerationError as e:
        cause = str(e.__cause__ or e).splitlines()[0]
        not_objects = bad_json_lines(original) if data.format == "jsonl" else []
        if not not_objects:
            raise DataError(f"{source.key}: could not read {original}: {cause}") from None
    bad = BadRows(data, original, source.key)
    for line, what in not_objects:
        bad.add(line, what)
    bad.finish()  # fails unless data.on_bad_row: skip
    skip = {n for n, _ in not_objects} | set(scan_utf8(original))
    path = without_lines(original, skip, work / ".cache" / f"{source.split}-objects.jsonl")
    return Loaded(_load(builder, path, cache), unreadable, len(not_objects))


def _load(builder: str, path: Path, cache: str) -> datasets.Dataset:
    return datasets.load_dataset(builder, data_files=str(path), split="train", cache_dir=cache)


def bad_json_lines(path: Path) -> list[tuple[int, str]]:
    """(line, problem) for each line that is not a JSON object (UTF-8 errors aside)."""
    found = []
    for n, text in numbered_lines(path):
        if text is None or not text.strip():
            continue
        try:
            obj = json.loads(text)
        except ValueError as e:
            found.append((n, f"invalid JSON ({str(e)[:60]})"))
            continue
        if not isinstance(obj, dict):
            found.append((n, f"not a JSON object (found {type(obj).__name__})"))
    return found


def missing_key_lines(data: DataConfig, path: Path) -> list[tuple[int, str]]:
    """(line, problem) for each JSON object lacking its source or target (or holding null)."""
    found = []
    for n, text in numbered_lines(path):
        if text is None or not text.strip():
            continue
        try:
            obj = json.loads(text)
        except ValueError:
            continue  # reported by bad_json_lines
        problem = _missing_key(data, obj) if isinstance(obj, dict) else None
        if problem:
            found.append((n, problem))
    return found


def _missing_key(data: DataConfig, obj: dict[str, Any]) -> str | None:
    cols = (data.src_column, data.tgt_column)
    if isinstance(cols[0], int):  # columns by position: nothing to name
        return None
    if isinstance(cols[0], str) and isinstance(cols[1], str):
        keys: tuple[str, str] = (cols[0], cols[1])
        missing = [k for k in keys if obj.get(k) is None]
    else:  # {src_lang: .., tgt_lang: ..}, or the same under "translation"
        s, t = data.src_lang, data.tgt_lang
        nested = obj.get("translation")
        where = nested if isinstance(nested, dict) and s not in obj and t not in obj else obj
        missing = [k for k in (s, t) if where.get(k) is None]
    if not missing:
        return None
    return f"no {' or '.join(map(repr, missing))} (or null)"


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
    data: DataConfig, source: Source, loaded: Loaded, cache_file: Path
) -> datasets.Dataset:
    """Map a loaded dataset's columns onto (src, tgt, drop); the lines cut out before loading
    are appended as dropped rows. A jsonl row without its source or target is a bad row."""
    ds = loaded.ds
    getters = _column_getters(data, source, ds)
    lacks = CODE["bad_row"] if data.format == "jsonl" else 0  # elsewhere a null is "empty"

    def pick(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        src, tgt = getters[0](batch), getters[1](batch)
        drop = [lacks if s is None or t is None else 0 for s, t in zip(src, tgt, strict=True)]
        return {"src": [_as_text(v) for v in src], "tgt": [_as_text(v) for v in tgt], "drop": drop}

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
    if lacks and drop_counts(out).get("bad_row"):
        bad = BadRows(data, source.files[0], source.key)
        for line, what in missing_key_lines(data, source.files[0]):
            bad.add(line, what)
        bad.finish()  # fails unless data.on_bad_row: skip
    cut = [(loaded.unreadable, CODE["invalid_utf8"]), (loaded.not_objects, CODE["bad_row"])]
    rows = [code for n, code in cut for _ in range(n)]
    if rows:  # lines removed before loading become dropped rows, so they are counted
        n = len(rows)
        dropped = datasets.Dataset.from_dict(
            {"src": [""] * n, "tgt": [""] * n, "drop": rows}, features=FEATURES
        )
        out = datasets.concatenate_datasets([out, dropped])
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
