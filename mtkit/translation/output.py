"""Translations out: text, TSV, JSONL and Moses n-best lines, written chunk by chunk.

`stream_translations` gives the chunks of any engine (PyTorch `Translator` or a CTranslate2
export); `write_translations` writes them to `open_output(path)` (stdout, or a file renamed
into place when complete); `interactive` is the prompt loop of `mtkit translate` on a terminal.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from mtkit.config.schema import DecodingConfig
from mtkit.files import atomic_writer
from mtkit.progress import QUIET, Progress
from mtkit.translation.results import Candidate, Translation
from mtkit.translation.translator import (
    TranslationError,
    Translator,
    chunk_lines,
)

logger = logging.getLogger(__name__)

FORMATS = ("text", "tsv", "jsonl")


def _tsv_field(text: str) -> str:
    return text.replace("\t", " ")


def format_translation(t: Translation, fmt: str, index: int, nbest: bool = False) -> str:
    """One translation as output text (ending in a newline).

    text: the best hypothesis; with `nbest`, Moses n-best lines `index ||| hypothesis ||| score`
    per hypothesis. tsv: `source<TAB>hypothesis<TAB>score` per hypothesis. An empty input line
    gives one line of empty fields in both (`index |||  ||| `, three empty fields), so every
    input index appears. jsonl: one object per input line.
    """
    if fmt == "jsonl":
        record = {
            "index": index,
            "source": t.source,
            "translation": t.text,
            "nbest": [{"text": c.text, "score": c.score, "log_prob": c.log_prob} for c in t.nbest],
            "time": round(t.seconds, 6),
            "truncated": t.truncated,
        }
        return json.dumps(record, ensure_ascii=False) + "\n"
    if fmt == "tsv":
        if not t.nbest:
            return f"{_tsv_field(t.source)}\t\t\n"
        src = _tsv_field(t.source)
        return "".join(f"{src}\t{_tsv_field(c.text)}\t{c.score:.4f}\n" for c in t.nbest)
    if fmt == "text":
        if not nbest:
            return t.text + "\n"
        if not t.nbest:
            return f"{index} |||  ||| \n"
        return "".join(f"{index} ||| {c.text} ||| {c.score:.4f}\n" for c in t.nbest)
    raise TranslationError(f"format: expected one of {', '.join(FORMATS)}, got {fmt!r}")


@contextlib.contextmanager
def open_output(path: Path | None) -> Iterator[TextIO]:
    """stdout, or a file written through a temp file renamed into place on success.

    The temp file sits next to `path`, so a failed or interrupted run never leaves half a
    file under the final name, and lines are written as they come (nothing is held back).
    """
    if path is None:
        yield sys.stdout
        return
    with atomic_writer(path) as f:
        yield f


def write_translations(
    chunks: Iterable[list[Translation]],
    out: TextIO,
    fmt: str = "text",
    on_chunk: Callable[[int, list[Translation]], None] | None = None,
    nbest: bool = False,
) -> int:
    """Write each chunk as it arrives, flushing after it; returns the number of input lines.

    `nbest`: n-best lists in text format (see `format_translation`). `on_chunk(first_index,
    chunk)` runs after a chunk is written (e.g. to dump attention).
    """
    n = 0
    for chunk in chunks:
        out.write("".join(format_translation(t, fmt, n + i, nbest) for i, t in enumerate(chunk)))
        out.flush()
        if on_chunk is not None:
            on_chunk(n, chunk)
        n += len(chunk)
    return n


def interactive(
    translator: Any,
    dec: DecodingConfig,
    read: Callable[[str], str] = input,
    write: Callable[[str], None] = print,
    fmt: str = "text",
) -> int:
    """Prompt for a sentence, print its translation, repeat until EOF; returns lines read.

    `translator`: a Translator, or another engine `stream_translations` accepts.
    """
    n = 0
    while True:
        try:
            line = read("> ")
        except EOFError:
            return n
        except UnicodeDecodeError:  # a terminal that sent bytes that are not UTF-8
            logger.warning("that line was not valid UTF-8; please type it again")
            continue
        for chunk in stream_translations(translator, [line], dec):
            write(format_translation(chunk[0], fmt, n, dec.nbest > 1).rstrip("\n"))
        n += 1


def stream_translations(
    translator: Any,
    lines: Iterable[str],
    dec: DecodingConfig,
    chunk_size: int = 500,
    *,
    attention: bool = False,
    advance: Callable[[int], None] | None = None,
) -> Iterator[list[Translation]]:
    """`translator.stream(...)`, or for an engine with only `translate_nbest(lines, dec,
    nbest) -> [[(text, score)]]` (CTranslate2), the same chunks without log-probs/attention.
    `advance(n)`: n more lines are translated (per batch, or per chunk for CTranslate2)."""
    if isinstance(translator, Translator):
        yield from translator.stream(lines, dec, chunk_size, attention=attention, advance=advance)
        return
    if attention:
        raise TranslationError("--attention needs the PyTorch model, not an exported one")
    for chunk in chunk_lines(lines, chunk_size):
        start = time.perf_counter()
        found = translator.translate_nbest(chunk, dec, dec.nbest)
        seconds = (time.perf_counter() - start) / len(chunk)
        if advance is not None:
            advance(len(chunk))
        yield [
            Translation(
                line, [Candidate(t, s, None) for t, s in hyps] if line.strip() else [],
                seconds,
            )
            for line, hyps in zip(chunk, found, strict=True)
        ]  # fmt: skip


def translate_to_output(
    engine: Any,
    lines: Iterable[str],
    dec: DecodingConfig,
    output: Path | None,
    fmt: str = "text",
    chunk_size: int = 500,
    attention: Path | None = None,
    progress: Progress = QUIET,
    total: int | None = None,
) -> int:
    """Translate `lines` chunk by chunk to `output` (None: stdout) in format `fmt`, and each
    chunk's cross-attention to `attention` if given; returns the number of input lines.
    `progress` shows lines per second (and an ETA when the number of lines, `total`, is known).
    """
    with (
        progress.task("translating", total=total, unit="lines") as task,
        open_output(output) as out,
        _attention_writer(attention) as dump,
    ):
        chunks = stream_translations(
            engine, lines, dec, chunk_size, attention=attention is not None, advance=task.advance
        )
        on_chunk = (lambda _i, chunk: dump.write(chunk)) if dump is not None else None
        return write_translations(chunks, out, fmt, on_chunk, nbest=dec.nbest > 1)


def _attention_writer(path: Path | None) -> Any:
    if path is None:
        return contextlib.nullcontext(None)
    from mtkit.translation.attention_dump import AttentionWriter

    return AttentionWriter(path)
