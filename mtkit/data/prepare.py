"""Raw parallel text -> cleaned, tokenised, encoded `datasets` on disk (`mtkit prepare`).

Pipeline (each step streams through Arrow; the corpus is never held in Python lists):

1. read every corpus of a split into a Dataset with columns `src`, `tgt`, `drop` (a reason code);
2. clean: Unicode normalisation (NFC by default), whitespace normalisation, then mark empty,
   src == tgt (optional) and duplicate pairs; invalid UTF-8 / malformed rows were marked in 1;
3. carve valid/test out of train when they are not given (seeded; no sentence shared with train);
4. train sentencepiece on the train split only;
5. encode every split, then drop train pairs over `data.max_len` tokens or `data.max_ratio`.
   Length and ratio are measured in sentencepiece tokens (without BOS/EOS), i.e. in the units
   the model sees, so the limits mean the same thing for every language and vocabulary;
6. save `text/`, `encoded/`, the tokenizer, `stats.json` and `fingerprint.json` into a temporary
   directory next to `data.prepared_dir`, then rename it into place.

valid/test files are only normalised and stripped of empty/unreadable pairs unless
`data.clean_eval` is set: dropping test sentences makes scores incomparable. Their encoded ids are
truncated to `data.max_len` instead (text/ keeps the full sentence for BLEU), so `text/` and
`encoded/` always have the same rows in the same order.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import itertools
import json
import logging
import os
import shutil
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]

from mtkit.config.schema import DataConfig, ExperimentConfig, TokenizerConfig
from mtkit.data.tokenizer import (
    BOS_ID,
    EOS_ID,
    JOINT_FILE,
    SRC_FILE,
    TGT_FILE,
    UNK_ID,
    Tokenizer,
    TokenizerPair,
    train_tokenizers,
)
from mtkit.errors import MtkitError
from mtkit.files import pid_alive

logger = logging.getLogger(__name__)

FINGERPRINT_VERSION = 1  # bump when the prepared layout or the cleaning changes meaning

# Reason codes in the `drop` column; 0 keeps the pair. Order = order of the checks.
REASONS = (
    "invalid_utf8",
    "malformed",
    "empty",
    "same",
    "duplicate",
    "overlap",
    "too_long",
    "ratio",
)
CODE = {name: i + 1 for i, name in enumerate(REASONS)}

_FEATURES = datasets.Features(
    {
        "src": datasets.Value("string"),
        "tgt": datasets.Value("string"),
        "drop": datasets.Value("int8"),
    }
)
_HUB_SPLITS = {"train": "train", "valid": "validation", "test": "test"}
_MAX_REPORTED = 5  # bad lines named individually in the log before summarising
MAX_CHARS_PER_TOKEN = 64  # sentencepiece pieces are <= 16 characters; 4x slack for normalising


class DataError(MtkitError):
    """Bad input data; a one-line message naming the file/line and what was expected."""


# --------------------------------------------------------------------------- public API


def prepare(cfg: ExperimentConfig, force: bool = False) -> Path:
    """Build (or reuse) `cfg.data.prepared_dir`; returns it as a Path.

    Unchanged inputs (size + mtime of every file) and data/tokenizer config reuse the existing
    result; `force` rebuilds it anyway.
    """
    out = Path(cfg.data.prepared_dir)
    sources = _sources(cfg.data)
    fingerprint = _fingerprint(cfg, sources)
    if not force and _matches(out, fingerprint):
        logger.info("%s is up to date; reusing it (force to rebuild)", out)
        return out
    _check_replaceable(out)
    _remove_stale(out)
    work = out.parent / f".{out.name}.tmp-{os.getpid()}"
    work.mkdir(parents=True)
    try:
        stats = _build(cfg, sources, work)
        (work / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
        (work / "fingerprint.json").write_text(json.dumps(fingerprint, indent=2) + "\n")
        shutil.rmtree(work / ".cache", ignore_errors=True)
        _replace_dir(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info("prepared data in %s", out)
    return out


def build_tokenizers(cfg: ExperimentConfig, out_dir: Path) -> TokenizerPair:
    """Train only the sentencepiece model(s), on the cleaned train split, into `out_dir`.

    This is what `mtkit tokenizer train` runs; `prepare` does the same as its first step.
    (Pairs that `prepare` would later carve out of train for valid/test are included here.)
    """
    sources = _sources(cfg.data)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = out_dir / f".tokenizer.tmp-{os.getpid()}"
    cache = work / ".cache"
    cache.mkdir(parents=True)
    try:
        raw = _read_split(cfg.data, sources["train"], work)
        cleaned = _mark(raw, _Cleaner(cfg.data, True), cache, "train-clean")
        stats = {"read": len(raw), "dropped": _drop_counts(cleaned)}
        train = _keep(cleaned, cache, "train-clean")
        _check_not_empty("train", train, stats, cfg.data)
        tokenizers = _train_tokenizers(cfg.tokenizer, cfg.data, train, cache)
        tokenizers.save(out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return tokenizers


def _check_replaceable(out: Path) -> None:
    """Refuse to replace a directory that prepare did not write (it would be deleted)."""
    if out.is_file():
        raise DataError(f"data.prepared_dir: {out} is a file, expected a directory")
    ours = (out / "fingerprint.json").is_file() or (out / "encoded").is_dir()
    if out.is_dir() and any(out.iterdir()) and not ours:
        raise DataError(
            f"data.prepared_dir: {out} already holds other files (no fingerprint.json); "
            "prepare replaces the whole directory, so choose an empty or new path"
        )


def _remove_stale(out: Path) -> None:
    """Delete temp/old dirs that a killed prepare left next to `out` (their pid is gone)."""
    for path in out.parent.glob(f".{out.name}.*-*"):
        kind, _, pid = path.name[len(out.name) + 2 :].partition("-")
        if kind not in ("tmp", "old") or not pid.isdigit():
            continue
        # our own pid: left by an earlier failed call in this process
        if int(pid) == os.getpid() or not pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def is_prepared(cfg: ExperimentConfig) -> bool:
    """True when `prepared_dir` is complete and was built from the current inputs and config."""
    try:
        sources = _sources(cfg.data)
    except DataError:
        return False
    return _matches(Path(cfg.data.prepared_dir), _fingerprint(cfg, sources))


def load_stats(prepared_dir: Path) -> dict[str, Any]:
    """The stats.json written by `prepare`."""
    return dict(json.loads((Path(prepared_dir) / "stats.json").read_text(encoding="utf-8")))


# --------------------------------------------------------------------------- inputs


@dataclass
class Source:
    """One corpus of one split: the config value and the local files it reads."""

    split: str  # train / valid / test
    spec: str  # the config value (path, prefix, or hub NAME[:SPLIT])
    files: list[Path] = field(default_factory=list)  # local files (empty for hub)

    @property
    def key(self) -> str:
        """The config key, for messages."""
        return f"data.{self.split}"


def _sources(data: DataConfig) -> dict[str, list[Source]]:
    """Resolve and check every configured input; missing files fail here, before any work."""
    specs: dict[str, list[str]] = {
        "train": data.train if isinstance(data.train, list) else [data.train]
    }
    for split in ("valid", "test"):
        value = getattr(data, split)
        if value is not None:
            specs[split] = [value]
    out: dict[str, list[Source]] = {}
    for split, values in specs.items():
        out[split] = [_source(data, split, v) for v in values]
    return out


def _source(data: DataConfig, split: str, spec: str) -> Source:
    src = Source(split, spec)
    if data.format == "hub":
        return src
    if data.format == "text":
        src.files = [Path(f"{spec}.{data.src_lang}"), Path(f"{spec}.{data.tgt_lang}")]
    else:
        src.files = [Path(spec)]
    for path in src.files:
        if path.is_dir():
            raise DataError(f"{src.key}: {path} is a directory, expected a {data.format} file")
        if not path.exists():
            hint = (
                f" (format text reads PREFIX.{data.src_lang} and PREFIX.{data.tgt_lang}; "
                f"data.{split} is the PREFIX)"
                if data.format == "text"
                else ""
            )
            raise DataError(f"{src.key}: file not found: {path}{hint}")
        _check_readable(src, path, data.format)
    return src


def _check_readable(src: Source, path: Path, fmt: str) -> None:
    """An empty file, or a UTF-16 one (every line would be unreadable), is one clear error."""
    if path.stat().st_size == 0:
        raise DataError(f"{src.key}: {path} is empty; expected one {fmt} record per line")
    with open(path, "rb") as f:
        head = f.read(2)
    if fmt != "parquet" and head in (b"\xff\xfe", b"\xfe\xff"):
        raise DataError(
            f"{src.key}: {path} is UTF-16 (it starts with a UTF-16 byte-order mark); convert it "
            "to UTF-8, e.g. iconv -f UTF-16 -t UTF-8"
        )


def _read_split(data: DataConfig, sources: list[Source], work: Path) -> datasets.Dataset:
    """All corpora of one split as one Dataset(src, tgt, drop)."""
    parts = [_read_source(data, s, work, i) for i, s in enumerate(sources)]
    if len(parts) == 1:
        return parts[0]
    return datasets.concatenate_datasets(parts)


def _read_source(data: DataConfig, source: Source, work: Path, index: int) -> datasets.Dataset:
    cache = str(work / ".cache")
    if data.format in ("text", "tsv", "csv"):
        reader = {"text": _text_rows, "tsv": _tsv_rows, "csv": _csv_rows}[data.format]
        kwargs = {"data": data, "source": source}
        try:
            ds = datasets.Dataset.from_generator(
                reader, features=_FEATURES, cache_dir=cache, gen_kwargs=kwargs
            )
        except datasets.exceptions.DatasetGenerationError as e:
            if isinstance(e.__cause__, DataError):
                raise e.__cause__ from None
            raise DataError(f"{source.key}: could not read {source.spec}: {e.__cause__}") from None
        except ValueError as e:  # datasets cannot build a split of zero rows
            if "corresponds to no data" not in str(e):
                raise
            raise DataError(f"{source.key}: {source.spec} has no rows (only a header?)") from None
        return ds
    raw, unreadable = _load_with_datasets(data, source, work, cache)
    cache_file = work / ".cache" / f"{source.split}-{index}.arrow"
    return _select_columns(data, source, raw, cache_file, unreadable)


def _lines(path: Path) -> Iterator[tuple[int, str | None]]:
    """(line number, text or None when not valid UTF-8), split on "\\n" only.

    `open()` in text mode (and so `load_dataset("text")`) also splits on a lone "\\r", which
    shifts every later line of one side of a parallel corpus; here a stray "\\r" stays inside
    its line (whitespace normalisation turns it into a space), and "\\r\\n" endings are accepted.
    """
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            raw = raw[:-1] if raw.endswith(b"\n") else raw
            raw = raw[:-1] if raw.endswith(b"\r") else raw
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                yield n, None
                continue
            yield n, text.lstrip("\ufeff") if n == 1 else text


def _bad_utf8(
    data: DataConfig, path: Path, line: int, seen: list[int], what: str = "invalid UTF-8"
) -> None:
    """Fail (strict) or log (first few) an undecodable line."""
    if data.strict:
        raise DataError(f"{path}:{line}: {what} (data.strict is true; fix or drop the line)")
    seen[0] += 1
    if seen[0] <= _MAX_REPORTED:
        logger.warning("%s:%d: %s; skipping the pair", path, line, what)


_NUL = "a NUL byte (binary data?)"  # valid UTF-8, but never part of a sentence


def _text_rows(data: DataConfig, source: Source) -> Iterator[dict[str, Any]]:
    """Rows of a pair of line-aligned files; unequal line counts raise DataError."""
    src_path, tgt_path = source.files
    seen = [0]
    n_src = n_tgt = 0
    for src, tgt in itertools.zip_longest(_lines(src_path), _lines(tgt_path)):
        n_src += src is not None
        n_tgt += tgt is not None
        if src is None or tgt is None:
            continue  # one side ran out: count the rest, then fail below
        (n, s), (_, t) = src, tgt
        drop = 0
        for text, path in ((s, src_path), (t, tgt_path)):
            if text is None:
                _bad_utf8(data, path, n, seen)
                drop = CODE["invalid_utf8"]
            elif "\x00" in text:
                _bad_utf8(data, path, n, seen, _NUL)
                drop = drop or CODE["malformed"]
        yield {"src": s or "", "tgt": t or "", "drop": drop}
    if n_src != n_tgt:
        raise DataError(
            f"{source.key}: {src_path} has {n_src} lines but {tgt_path} has {n_tgt}; "
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
    """Rows from (line, fields) records of a tsv/csv file; a header row when columns are named."""
    path = source.files[0]
    named = isinstance(data.src_column, str)
    indices: tuple[int, int] | None = None if named else _column_indices(data, source, None)
    seen = [0]
    for line, fields in records:
        if fields is None:
            _bad_utf8(data, path, line, seen)
            yield {"src": "", "tgt": "", "drop": CODE["invalid_utf8"]}
            continue
        if any("\x00" in f for f in fields):
            _bad_utf8(data, path, line, seen, _NUL)
            yield {"src": "", "tgt": "", "drop": CODE["malformed"]}
            continue
        if indices is None:
            indices = _column_indices(data, source, [f.strip() for f in fields])
            continue
        need = max(indices) + 1
        if len(fields) < need:
            if data.strict or line == 1:
                raise DataError(
                    f"{path}:{line}: expected at least {need} {data.format} columns, found "
                    f"{len(fields)} (check data.format, data.src_column/data.tgt_column)"
                )
            seen[0] += 1
            if seen[0] <= _MAX_REPORTED:
                logger.warning(
                    "%s:%d: %d columns, expected %d; skipping", path, line, len(fields), need
                )
            yield {"src": "", "tgt": "", "drop": CODE["malformed"]}
            continue
        yield {"src": fields[indices[0]], "tgt": fields[indices[1]], "drop": 0}


def _tsv_rows(data: DataConfig, source: Source) -> Iterator[dict[str, Any]]:
    """Tab-separated rows; no quoting (a quote character is just text)."""
    records = ((n, None if t is None else t.split("\t")) for n, t in _lines(source.files[0]))
    yield from _table_rows(data, source, records)


def _csv_rows(data: DataConfig, source: Source) -> Iterator[dict[str, Any]]:
    """Comma-separated rows with standard CSV quoting (a quoted field may span lines)."""

    def records() -> Iterator[tuple[int, list[str] | None]]:
        bad: list[int] = []  # undecodable lines met since the last record
        last = [0]  # line number of the last line handed to the csv reader

        def text_lines() -> Iterator[str]:
            for n, t in _lines(source.files[0]):
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


def _load_with_datasets(
    data: DataConfig, source: Source, work: Path, cache: str
) -> tuple[datasets.Dataset, int]:
    """jsonl / parquet through `datasets.load_dataset`, hub datasets by name.

    Returns the dataset and the number of undecodable lines removed before loading.
    """
    if data.format == "hub":
        return _load_hub(data, source), 0
    path, unreadable = source.files[0], 0
    if data.format == "jsonl":
        path, unreadable = _without_bad_utf8(data, source, path, work)
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


def _without_bad_utf8(data: DataConfig, source: Source, path: Path, work: Path) -> tuple[Path, int]:
    """`path`, or a copy in `work` without its undecodable lines; and how many were removed."""
    bad = _scan_utf8(path)
    if not bad:
        return path, 0
    seen = [0]
    for line in bad:
        _bad_utf8(data, path, line, seen)
    copy = work / ".cache" / f"{source.split}-{path.name}"
    copy.parent.mkdir(parents=True, exist_ok=True)
    skip = set(bad)
    with open(path, "rb") as f, open(copy, "wb") as out:
        for n, raw in enumerate(f, start=1):
            if n not in skip:
                out.write(raw)
    return copy, len(bad)


def _scan_utf8(path: Path, chunk: int = 8 << 20) -> list[int]:
    """Line numbers (1-based) that are not valid UTF-8; fast path decodes whole chunks."""
    bad: list[int] = []
    line = 1
    with open(path, "rb") as f:
        rest = b""
        while True:
            block = f.read(chunk)
            if not block:
                break
            block = rest + block
            cut = block.rfind(b"\n") + 1
            block, rest = block[:cut], block[cut:]
            line = _scan_block(block, line, bad)
        _scan_block(rest, line, bad)
    return bad


def _scan_block(block: bytes, line: int, bad: list[int]) -> int:
    try:
        block.decode("utf-8")
    except UnicodeDecodeError:
        for i, raw in enumerate(block.split(b"\n")):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                bad.append(line + i)
    return line + block.count(b"\n")


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


def _select_columns(
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
        features=_FEATURES,
        cache_file_name=str(cache_file),
        new_fingerprint=cache_file.stem,
        desc=f"reading {source.spec}",
    )
    if unreadable:  # lines removed before loading become dropped rows, so they are counted
        n = unreadable
        bad = datasets.Dataset.from_dict(
            {"src": [""] * n, "tgt": [""] * n, "drop": [CODE["invalid_utf8"]] * n},
            features=_FEATURES,
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


# --------------------------------------------------------------------------- cleaning


class _Cleaner:
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


def _drop_counts(ds: datasets.Dataset) -> dict[str, int]:
    """Rows per drop reason (only reasons that occur)."""
    codes = ds.with_format("arrow")["drop"].to_numpy(zero_copy_only=False)
    counts = np.bincount(codes.astype(np.int64), minlength=len(REASONS) + 1)
    return {name: int(counts[CODE[name]]) for name in REASONS if counts[CODE[name]]}


def _keep(ds: datasets.Dataset, cache: Path, name: str) -> datasets.Dataset:
    """Rows with drop == 0."""
    codes = ds.with_format("arrow")["drop"].to_numpy(zero_copy_only=False)
    keep = np.flatnonzero(codes == 0)
    if len(keep) == len(ds):
        return ds
    return ds.select(keep, indices_cache_file_name=str(cache / f"{name}.indices.arrow"))


def _mark(
    ds: datasets.Dataset, fn: Callable[..., Any], cache: Path, name: str, **kw: Any
) -> datasets.Dataset:
    """Run a batched map writing into the build cache (never reusing a stale result)."""
    return ds.map(
        fn,
        batched=True,
        cache_file_name=str(cache / f"{name}.arrow"),
        new_fingerprint=name,
        load_from_cache_file=False,
        desc=name,
        **kw,
    )


def _carve(
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
        logger.info("carved %d %s pairs out of train (data.seed=%d)", size, split, data.seed)
    rest = train.select(
        np.sort(perm[start:]), indices_cache_file_name=str(cache / "train-rest.indices.arrow")
    )

    def overlap(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        drop = [
            CODE["overlap"] if s in carved_text or t in carved_text else 0
            for s, t in zip(batch["src"], batch["tgt"], strict=True)
        ]
        return {"drop": drop}

    return _mark(rest, overlap, cache, "train-overlap")


# --------------------------------------------------------------------------- encoding


def _encode_batch(
    batch: dict[str, list[Any]],
    src_tok: Tokenizer,
    tgt_tok: Tokenizer,
    max_len: int,
    max_ratio: float,
    filter_lengths: bool,
) -> dict[str, list[Any]]:
    """src_ids = ids + [EOS]; tgt_ids = [BOS] + ids + [EOS]; mark or truncate long pairs.

    Text over `max_len * MAX_CHARS_PER_TOKEN` characters has more than `max_len` tokens (no
    piece is longer than 16 characters), so only that prefix is encoded: a stray 10 MB line
    costs no more than a long sentence.
    """
    cap = max_len * MAX_CHARS_PER_TOKEN
    src = src_tok.encode([text[:cap] for text in batch["src"]])
    tgt = tgt_tok.encode([text[:cap] for text in batch["tgt"]])
    drop = list(batch["drop"])
    truncated = [0] * len(src)
    huge = [max(len(a), len(b)) > cap for a, b in zip(batch["src"], batch["tgt"], strict=True)]
    for i, (s, t) in enumerate(zip(src, tgt, strict=True)):
        if filter_lengths:
            if len(s) > max_len or len(t) > max_len or huge[i]:
                drop[i] = drop[i] or CODE["too_long"]
            elif max(len(s), len(t)) > max_ratio * max(min(len(s), len(t)), 1):
                drop[i] = drop[i] or CODE["ratio"]
        elif len(s) > max_len or len(t) > max_len or huge[i]:
            truncated[i] = 1
            src[i], tgt[i] = s[:max_len], t[:max_len]
    return {
        "src_ids": [s + [EOS_ID] for s in src],
        "tgt_ids": [[BOS_ID, *t, EOS_ID] for t in tgt],
        "drop": drop,
        "truncated": truncated,
    }


_ENCODED_FEATURES = datasets.Features(
    {
        "src": datasets.Value("string"),
        "tgt": datasets.Value("string"),
        "drop": datasets.Value("int8"),
        "src_ids": datasets.Sequence(datasets.Value("int32")),
        "tgt_ids": datasets.Sequence(datasets.Value("int32")),
        "truncated": datasets.Value("int8"),
    }
)


def _length_stats(ids: pa.ChunkedArray, specials: int) -> dict[str, float]:
    """Token count, mean/max length and <unk> share of an id column (specials excluded)."""
    if len(ids) == 0:
        return {"tokens": 0, "mean_len": 0.0, "max_len": 0, "unk_share": 0.0}
    lengths = pc.subtract(pc.list_value_length(ids), specials)
    tokens = int(pc.sum(lengths).as_py())
    unk = int(pc.sum(pc.equal(pc.list_flatten(ids), UNK_ID)).as_py() or 0)
    return {
        "tokens": tokens,
        "mean_len": round(tokens / len(ids), 2),
        "max_len": int(pc.max(lengths).as_py()),
        "unk_share": round(unk / max(tokens, 1), 5),
    }


# --------------------------------------------------------------------------- build


def _build(cfg: ExperimentConfig, sources: dict[str, list[Source]], work: Path) -> dict[str, Any]:
    """Read, clean, carve, train the tokenizer, encode, save; returns the stats table."""
    data = cfg.data
    cache = work / ".cache"
    cache.mkdir(parents=True, exist_ok=True)
    stats: dict[str, dict[str, Any]] = {}
    splits: dict[str, datasets.Dataset] = {}
    for split, srcs in sources.items():
        raw = _read_split(data, srcs, work)
        full = split == "train" or data.clean_eval
        cleaned = _mark(raw, _Cleaner(data, full), cache, f"{split}-clean")
        stats[split] = {"read": len(raw), "dropped": _drop_counts(cleaned)}
        splits[split] = _keep(cleaned, cache, f"{split}-clean")
        _check_not_empty(split, splits[split], stats[split], data)
    train = _carve(data, splits["train"], splits, cache)
    carved = {k: len(v) for k, v in splits.items() if k not in stats}
    if carved:
        stats["train"]["carved"] = carved
        for split, n in carved.items():
            stats[split] = {"read": n, "dropped": {}, "carved_from": "train"}
    stats["train"]["dropped"].update(_drop_counts(train))
    splits["train"] = _keep(train, cache, "train-overlap")
    _check_not_empty("train", splits["train"], stats["train"], data)
    tokenizers = _train_tokenizers(cfg.tokenizer, data, splits["train"], cache)
    tokenizers.save(work)
    encoded = {
        split: _encode_split(split, ds, tokenizers, data, stats[split], cache)
        for split, ds in splits.items()
    }
    text = datasets.DatasetDict({k: v.select_columns(["src", "tgt"]) for k, v in encoded.items()})
    ids = datasets.DatasetDict(
        {k: v.select_columns(["src_ids", "tgt_ids"]) for k, v in encoded.items()}
    )
    text.save_to_disk(str(work / "text"))
    ids.save_to_disk(str(work / "encoded"))
    _log_table(stats)
    return {
        "splits": stats,
        "vocab_size": {"src": tokenizers.src.vocab_size, "tgt": tokenizers.tgt.vocab_size},
    }


def _encode_split(
    split: str,
    ds: datasets.Dataset,
    tokenizers: TokenizerPair,
    data: DataConfig,
    stats: dict[str, Any],
    cache: Path,
) -> datasets.Dataset:
    """Add src_ids/tgt_ids; drop (train) or truncate (valid/test) over-long pairs."""
    enc = _mark(
        ds,
        _encode_batch,
        cache,
        f"{split}-encode",
        fn_kwargs={
            "src_tok": tokenizers.src,
            "tgt_tok": tokenizers.tgt,
            "max_len": data.max_len,
            "max_ratio": data.max_ratio,
            "filter_lengths": split == "train" or data.clean_eval,
        },
        features=_ENCODED_FEATURES,
        # worker start-up costs more than it saves on small splits
        num_proc=data.num_proc if len(ds) >= 10_000 * data.num_proc else None,
    )
    counts = _drop_counts(enc)
    stats["dropped"].update({k: counts[k] for k in ("too_long", "ratio") if k in counts})
    enc = _keep(enc, cache, f"{split}-encode")
    _check_not_empty(split, enc, stats, data)
    stats.update(_split_stats(enc))
    return enc


def _split_stats(enc: datasets.Dataset) -> dict[str, Any]:
    table = enc.with_format("arrow")
    trunc = table["truncated"].to_numpy(zero_copy_only=False)
    return {
        "kept": len(enc),
        "truncated": int(trunc.sum()),
        "src": _length_stats(table["src_ids"], specials=1),
        "tgt": _length_stats(table["tgt_ids"], specials=2),
    }


def _check_not_empty(
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


def _train_tokenizers(
    tok: TokenizerConfig, data: DataConfig, train: datasets.Dataset, cache: Path
) -> TokenizerPair:
    """sentencepiece on the train split, streamed from Arrow.

    At most `tokenizer.input_sentence_size` sentences per model are sampled here, with
    `data.seed` (a joint model takes both sides of half as many pairs).
    """
    n = tok.input_sentence_size // 2 if tok.joint else tok.input_sentence_size
    if len(train) > n:
        rng = np.random.default_rng(data.seed)
        keep = np.sort(rng.choice(len(train), size=max(n, 1), replace=False))
        logger.info("training the tokenizer on a sample of %d of %d pairs", len(keep), len(train))
        train = train.select(keep, indices_cache_file_name=str(cache / "spm-sample.indices.arrow"))

    def column(name: str) -> Iterator[str]:
        for batch in train.select_columns([name]).iter(batch_size=10_000):
            yield from batch[name]

    return train_tokenizers(
        column("src"), column("tgt"), cache, tok, data.src_lang, data.tgt_lang, seed=data.seed
    )


def _log_table(stats: dict[str, dict[str, Any]]) -> None:
    """One log line per split: read, kept, tokens, mean/max length, <unk> share, drops."""
    side = f"{'tokens':>9} {'mean/max':>10} {'unk%':>6}"
    logger.info(f"{'split':<6} {'read':>9} {'kept':>9} | src {side} | tgt {side} | dropped")
    for split, s in stats.items():
        dropped = ", ".join(f"{k} {v}" for k, v in s["dropped"].items()) or "-"
        if s.get("truncated"):
            dropped += f"; truncated {s['truncated']}"
        cells = [f"{split:<6} {s['read']:>9} {s['kept']:>9}"]
        for name in ("src", "tgt"):
            x = s[name]
            length = f"{x['mean_len']:.1f}/{x['max_len']}"
            cells.append(f"{name} {x['tokens']:>9} {length:>10} {100 * x['unk_share']:>6.2f}")
        logger.info(" | ".join([*cells, dropped]))


# --------------------------------------------------------------------------- fingerprint


def _fingerprint(cfg: ExperimentConfig, sources: dict[str, list[Source]]) -> dict[str, Any]:
    """What the prepared data depends on: data/tokenizer config and input file size + mtime."""
    data = dataclasses.asdict(cfg.data)
    for irrelevant in ("prepared_dir", "num_proc"):
        data.pop(irrelevant)
    inputs = []
    for split, srcs in sources.items():
        for s in srcs:
            for path in s.files:
                st = path.stat()
                inputs.append(
                    {
                        "split": split,
                        "path": str(path.resolve()),
                        "size": st.st_size,
                        "mtime_ns": st.st_mtime_ns,
                    }
                )
    body = {
        "version": FINGERPRINT_VERSION,
        "data": data,
        "tokenizer": dataclasses.asdict(cfg.tokenizer),
        "inputs": inputs,
    }
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    return {"digest": digest, **body}


def _matches(out: Path, fingerprint: dict[str, Any]) -> bool:
    """`out` is complete and its fingerprint.json has the same digest."""
    fp = out / "fingerprint.json"
    if not fp.is_file():
        return False
    has_tokenizer = (out / JOINT_FILE).is_file() or (
        (out / SRC_FILE).is_file() and (out / TGT_FILE).is_file()
    )
    complete = has_tokenizer and all((out / p).exists() for p in ("encoded", "text", "stats.json"))
    try:
        stored = json.loads(fp.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return complete and stored.get("digest") == fingerprint["digest"]


def _replace_dir(new: Path, out: Path) -> None:
    """Move `new` to `out`, replacing an older `out` (renames, so no half-written `out`)."""
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        out.rename(old)
    new.rename(out)
    shutil.rmtree(old, ignore_errors=True)
