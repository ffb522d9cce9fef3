"""Encode and decode text files and streams with a tokenizer (`mtkit tokenizer encode/decode`).

Pieces or ids, one line per input line, read and written in batches so large files stream.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TextIO

from mtkit.data.tokenizer import Tokenizer, TokenizerError, text_lines
from mtkit.files import atomic_writer


def encode_file(
    tokenizer: Tokenizer,
    src: Path,
    dst: Path,
    *,
    as_ids: bool = False,
    batch_lines: int = 10_000,
) -> int:
    """Write one line of space-separated pieces (or ids) per input line; returns lines written.

    Reads in batches, so large files stream. Lines are split on "\\n" only.
    """
    with atomic_writer(Path(dst)) as out:
        return encode_lines(tokenizer, Path(src), out, as_ids=as_ids, batch_lines=batch_lines)


def encode_lines(
    tokenizer: Tokenizer,
    lines: Iterable[str] | Path,
    out: TextIO,
    *,
    as_ids: bool = False,
    batch_lines: int = 10_000,
) -> int:
    """`encode_file` from any lines (a file, stdin) to any text stream, flushed per batch."""
    n = 0
    for batch in _batched(text_lines(lines), batch_lines):
        if as_ids:
            rows = [" ".join(map(str, ids)) for ids in tokenizer.encode(batch)]
        else:
            rows = [" ".join(p) for p in tokenizer.encode_pieces(batch)]
        out.writelines(r + "\n" for r in rows)
        out.flush()
        n += len(rows)
    return n


def decode_file(tokenizer: Tokenizer, src: Path, dst: Path, *, batch_lines: int = 10_000) -> int:
    """Inverse of `encode_file`: pieces or integer ids per line back to text; returns lines."""
    with atomic_writer(Path(dst)) as out:
        return decode_lines(tokenizer, Path(src), out, batch_lines=batch_lines)


def decode_lines(
    tokenizer: Tokenizer,
    lines: Iterable[str] | Path,
    out: TextIO,
    *,
    batch_lines: int = 10_000,
) -> int:
    """`decode_file` from any lines (a file, stdin) to any text stream, flushed per batch."""
    where = str(lines) if isinstance(lines, Path) else "stdin"  # names a line out of range
    n = 0
    for batch in _batched(text_lines(lines), batch_lines):
        tokens = [line.split() for line in batch]
        if all(t.isdigit() for row in tokens for t in row):
            ids = [[int(t) for t in row] for row in tokens]
            for i, row in enumerate(ids):
                if any(x >= tokenizer.vocab_size for x in row):
                    raise TokenizerError(
                        f"{where}:{n + i + 1}: id out of range (the model has "
                        f"{tokenizer.vocab_size} pieces)"
                    )
            rows = tokenizer.decode(ids)
        else:
            rows = tokenizer.decode_pieces(tokens)
        out.writelines(r + "\n" for r in rows)
        out.flush()
        n += len(rows)
    return n


def _batched(it: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for x in it:
        batch.append(x)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
