"""Every input format into one Dataset(src, tgt, drop) per split.

text, tsv and csv are read here line by line (`files.numbered_lines`: split on "\\n" only, so a
stray "\\r" cannot shift one side of a parallel corpus); jsonl, parquet and hub datasets go
through `datasets.load_dataset` (loaders.py).
"""

from __future__ import annotations

import csv
import itertools
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import datasets

from mtkit.config.schema import DataConfig
from mtkit.data.bad_lines import NUL_BYTE, BadRows, report_bad_line
from mtkit.data.corpora import add_corpus_column
from mtkit.data.loaders import load_with_datasets, select_columns
from mtkit.data.rows import CODE, FEATURES, DataError
from mtkit.data.sources import Source, has_corpus_options
from mtkit.errors import plural
from mtkit.files import count_lines, numbered_lines
from mtkit.progress import QUIET, Progress

logger = logging.getLogger(__name__)


def read_split(
    data: DataConfig, sources: list[Source], work: Path, progress: Progress = QUIET
) -> datasets.Dataset:
    """All corpora of one split as one Dataset(src, tgt, drop); with per-corpus tags or
    weights, a `corpus` column says which corpus each row came from (corpora.py)."""
    parts = [_read_source(data, s, work, i, progress) for i, s in enumerate(sources)]
    if has_corpus_options(sources):
        parts = add_corpus_column(parts)
    if len(parts) == 1:
        return parts[0]
    return datasets.concatenate_datasets(parts)


def _read_source(
    data: DataConfig, source: Source, work: Path, index: int, progress: Progress
) -> datasets.Dataset:
    cache = str(work / ".cache")
    if data.format in ("text", "tsv", "csv"):
        reader = {"text": _text_rows, "tsv": _tsv_rows, "csv": _csv_rows}[data.format]
        total = count_lines(source.files[0]) if progress.enabled else None
        try:
            with progress.task(f"reading {source.spec}", total=total, unit="pairs") as task:
                kwargs = {"reader": reader, "data": data, "source": source, "advance": task.advance}
                ds = datasets.Dataset.from_generator(
                    _counted_rows, features=FEATURES, cache_dir=cache, gen_kwargs=kwargs,
                    fingerprint=f"{source.split}-{index}-read",  # fresh cache: nothing to hash
                )  # fmt: skip
        except datasets.exceptions.DatasetGenerationError as e:
            if isinstance(e.__cause__, DataError):
                raise e.__cause__ from None
            raise DataError(f"{source.key}: could not read {source.spec}: {e.__cause__}") from None
        except ValueError as e:  # datasets cannot build a split of zero rows
            if "corresponds to no data" not in str(e):
                raise
            raise DataError(f"{source.key}: {source.spec} has no rows (only a header?)") from None
        return ds
    with progress.stage(f"reading {source.spec}"):
        loaded = load_with_datasets(data, source, work, cache)
        cache_file = work / ".cache" / f"{source.split}-{index}.arrow"
        return select_columns(data, source, loaded, cache_file)


def _counted_rows(
    reader: Callable[[DataConfig, Source], Iterator[dict[str, Any]]],
    data: DataConfig,
    source: Source,
    advance: Callable[[int], None],
) -> Iterator[dict[str, Any]]:
    """The rows of `reader`, telling `advance` about every 10,000 (and the rest at the end)."""
    n = 0
    for n, row in enumerate(reader(data, source), start=1):
        yield row
        if n % 10_000 == 0:
            advance(10_000)
    advance(n % 10_000)


def _text_rows(data: DataConfig, source: Source) -> Iterator[dict[str, Any]]:
    """Rows of a pair of line-aligned files; unequal line counts raise DataError."""
    src_path, tgt_path = source.files
    seen = [0]
    n_src = n_tgt = 0
    for src, tgt in itertools.zip_longest(numbered_lines(src_path), numbered_lines(tgt_path)):
        n_src += src is not None
        n_tgt += tgt is not None
        if src is None or tgt is None:
            continue  # one side ran out: count the rest, then fail below
        (n, s), (_, t) = src, tgt
        drop = 0
        for text, path in ((s, src_path), (t, tgt_path)):
            if text is None:
                report_bad_line(data, path, n, seen)
                drop = CODE["invalid_utf8"]
            elif "\x00" in text:
                report_bad_line(data, path, n, seen, NUL_BYTE)
                drop = drop or CODE["malformed"]
        yield {"src": s or "", "tgt": t or "", "drop": drop}
    if n_src != n_tgt:
        raise DataError(
            f"{source.key}: {src_path} has {plural(n_src, 'line')} but {tgt_path} has {n_tgt}; "
            "parallel files must be line-aligned"
        )


def _column_indices(data: DataConfig, source: Source, header: list[str] | None) -> tuple[int, int]:
    """Column positions of the source and target side in a tsv/csv file."""
    cols = (data.src_column, data.tgt_column)
    if header is None:
        return (0, 1) if cols[0] is None else (int(cols[0]), int(cols[1]))  # type: ignore[arg-type]
    missing = [str(c) for c in cols if c not in header]
    if missing:
        raise DataError(
            f"{source.key}: {source.files[0]} has no column {', '.join(map(repr, missing))} "
            f"(found: {', '.join(map(repr, header))}); set data.src_column/data.tgt_column"
        )
    return header.index(str(cols[0])), header.index(str(cols[1]))


def _table_rows(
    data: DataConfig, source: Source, records: Iterator[tuple[int, list[str] | None]]
) -> Iterator[dict[str, Any]]:
    """Rows from (line, fields) records of a tsv/csv file; a header row when columns are named.

    Every row must have as many fields as the header (or the first row): another number is a
    bad row (a tab or comma inside a field), never a silently shortened pair.
    """
    path = source.files[0]
    named = isinstance(data.src_column, str)
    indices: tuple[int, int] | None = None if named else _column_indices(data, source, None)
    width: int | None = None  # fields per row: the header's, or the first row's
    seen, bad = [0], BadRows(data, path, source.key)
    for line, fields in records:
        if fields is None:
            report_bad_line(data, path, line, seen)
            yield {"src": "", "tgt": "", "drop": CODE["invalid_utf8"]}
            continue
        if any("\x00" in f for f in fields):
            report_bad_line(data, path, line, seen, NUL_BYTE)
            yield {"src": "", "tgt": "", "drop": CODE["malformed"]}
            continue
        if indices is None:
            indices = _column_indices(data, source, [f.strip() for f in fields])
            width = len(fields)
            continue
        if width is None:  # the first row: it must hold the configured columns
            width = _first_width(data, path, line, fields, max(indices) + 1)
        if len(fields) != width:
            sep = "tab" if data.format == "tsv" else "comma or quote"
            found = plural(len(fields), "column")
            bad.add(line, f"{found}, expected {width} (a {sep} inside a field?)")
            yield {"src": "", "tgt": "", "drop": CODE["bad_row"]}
            continue
        yield {"src": fields[indices[0]], "tgt": fields[indices[1]], "drop": 0}
    bad.finish()


def _first_width(data: DataConfig, path: Path, line: int, fields: list[str], need: int) -> int:
    """The number of fields of the first row, which must hold the configured columns."""
    if len(fields) < need:
        raise DataError(
            f"{path}:{line}: expected at least {plural(need, data.format + ' column')}, found "
            f"{len(fields)} (check data.format, data.src_column/data.tgt_column)"
        )
    return len(fields)


def _tsv_rows(data: DataConfig, source: Source) -> Iterator[dict[str, Any]]:
    """Tab-separated rows; no quoting (a quote character is just text)."""
    lines = numbered_lines(source.files[0])
    records = ((n, None if t is None else t.split("\t")) for n, t in lines)
    yield from _table_rows(data, source, records)


def _csv_rows(data: DataConfig, source: Source) -> Iterator[dict[str, Any]]:
    """Comma-separated rows with standard CSV quoting (a quoted field may span lines)."""

    def records() -> Iterator[tuple[int, list[str] | None]]:
        bad: list[int] = []  # undecodable lines met since the last record
        last = [0]  # line number of the last line handed to the csv reader

        def text_lines() -> Iterator[str]:
            for n, t in numbered_lines(source.files[0]):
                if t is None:
                    bad.append(n)
                    continue
                last[0] = n
                yield t.replace("\r", " ")

        for fields in csv.reader(text_lines()):
            while bad:
                yield bad.pop(0), None
            yield last[0], fields
        while bad:
            yield bad.pop(0), None

    try:
        yield from _table_rows(data, source, records())
    except csv.Error as e:
        raise DataError(f"{source.files[0]}: invalid CSV: {e}") from None
