"""The inputs of a prepare: each `data.train/valid/test` value resolved to its files and checked."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mtkit.config.schema import CorpusConfig, DataConfig
from mtkit.data.rows import DataError
from mtkit.files import special_kind


@dataclass
class Source:
    """One corpus of one split: the config value and the local files it reads."""

    split: str  # train / valid / test
    spec: str  # the config value (path, prefix, or hub NAME[:SPLIT])
    files: list[Path] = field(default_factory=list)  # local files (empty for hub)
    tag: str | None = None  # prepended to its source sentences (a train corpus's option)
    weight: float = 1.0  # sampling weight (a train corpus's option)

    @property
    def key(self) -> str:
        """The config key, for messages."""
        return f"data.{self.split}"


def resolve_sources(data: DataConfig) -> dict[str, list[Source]]:
    """Resolve and check every configured input; missing files fail here, before any work."""
    trains = data.train_entries()
    out: dict[str, list[Source]] = {"train": []}
    for entry in trains:
        if isinstance(entry, CorpusConfig):
            source = _source(data, "train", entry.path)
            source.tag, source.weight = entry.tag, entry.weight
        else:
            source = _source(data, "train", entry)
        out["train"].append(source)
    for split in ("valid", "test"):
        value = getattr(data, split)
        if value is not None:
            out[split] = [_source(data, split, value)]
    return out


def has_corpus_options(sources: list[Source]) -> bool:
    """Some corpus carries a tag or a weight other than 1."""
    return any(s.tag is not None or s.weight != 1.0 for s in sources)


def tags(sources: list[Source]) -> list[str]:
    """The distinct source tags of these corpora, in order."""
    return list(dict.fromkeys(s.tag for s in sources if s.tag is not None))


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
        if path.exists() and not path.is_file():  # /dev/zero, a FIFO: never read (or waited on)
            raise DataError(
                f"{src.key}: {path} is {special_kind(path)}, expected a regular {data.format} file"
            )
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
