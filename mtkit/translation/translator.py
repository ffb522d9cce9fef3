"""Load a trained model from a run directory or checkpoint and translate lines of text.

`Translator.translate(lines, dec)` gives one string per line, searching as the DecodingConfig
`dec` says (the run's `config.decoding`, or a `dataclasses.replace` of it that
`validate_decoding` accepted). `Translator.stream` reads any iterable of lines chunk by chunk
and yields `Translation`s (n-best lists with scores, timing, optional cross-attention) as each
chunk finishes, so memory does not grow with the input.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt
import torch

from mtkit.checkpoint import (
    CheckpointError,
    check_weights,
    load_checkpoint,
    load_weights,
    resolve_checkpoint,
)
from mtkit.config.load import config_from_dict
from mtkit.config.schema import ConfigError, DecodingConfig, ExperimentConfig
from mtkit.data.batching import pad, token_batches
from mtkit.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer, TokenizerPair
from mtkit.errors import MtkitError
from mtkit.files import atomic_writer
from mtkit.model.masks import pad_mask
from mtkit.model.transformer import Transformer, build_model
from mtkit.runtime import (
    autocast_context,
    check_precision,
    keep_freed_memory,
    resolve_device,
    resolve_precision,
)  # fmt: skip
from mtkit.search.common import Hypothesis
from mtkit.search.strategy import search

logger = logging.getLogger(__name__)

FORMATS = ("text", "tsv", "jsonl")
# sentencepiece pieces are at most 16 characters, so a line of over MAX_CHARS_PER_TOKEN * N
# characters has over N tokens (with 4x slack for normalisation); it is cut before encoding.
MAX_CHARS_PER_TOKEN = 64
EOS_PIECE = "</s>"


class TranslationError(MtkitError):
    """A translation request that cannot be served (output format, attention on an export)."""


@dataclass
class Decoded:
    """Search output for one sentence."""

    hyps: list[Hypothesis]  # best first
    seconds: float  # its batch's decoding time divided by the batch size
    attention: npt.NDArray[np.float32] | None = None  # (output + EOS, source + EOS)


def best_attention(
    model: Transformer, src: torch.Tensor, src_mask: torch.Tensor, outputs: Sequence[list[int]]
) -> list[npt.NDArray[np.float32]]:
    """Last decoder layer's cross-attention, averaged over heads, for each output.

    Shapes: src/src_mask (batch, src_len) -> per sentence (len(output) + 1, real src_len); row t
    is the attention while producing output token t (the last row: EOS).
    """
    tgt_in = pad([[BOS_ID, *tokens] for tokens in outputs]).to(src.device)  # (batch, tgt)
    weights = model.cross_attention(src, src_mask, tgt_in)[-1].mean(dim=1)  # (batch, tgt, src)
    src_lens = src_mask.sum(dim=1).tolist()
    return [
        weights[i, : len(tokens) + 1, : src_lens[i]].float().cpu().numpy()
        for i, tokens in enumerate(outputs)
    ]


@torch.inference_mode()
def translate_nbest(
    model: Transformer,
    src_ids: Sequence[Sequence[int]],
    dec: DecodingConfig,
    device: torch.device,
    *,
    attention: bool = False,
    generator: torch.Generator | None = None,
) -> list[Decoded]:
    """Translate encoded sources (each ending in EOS) in token-budget batches sorted by length;
    results come back in input order."""
    model.eval()
    results: list[Decoded] = [Decoded([], 0.0) for _ in src_ids]
    for index in token_batches([len(s) for s in src_ids], dec.max_tokens):
        start = time.perf_counter()
        src = pad([src_ids[i] for i in index]).to(device)  # (batch, src_len)
        src_mask = pad_mask(src, PAD_ID)  # (batch, src_len)
        nbest = search(model, src, src_mask, dec, bos_id=BOS_ID, eos_id=EOS_ID, generator=generator)
        weights: Sequence[npt.NDArray[np.float32] | None] = [None] * len(index)
        if attention:
            weights = best_attention(model, src, src_mask, [hs[0].tokens for hs in nbest])
        seconds = (time.perf_counter() - start) / len(index)
        for i, hyps, w in zip(index, nbest, weights, strict=True):
            results[i] = Decoded(hyps, seconds, w)
    return results


def translate_ids(
    model: Transformer,
    src_ids: Sequence[Sequence[int]],
    dec: DecodingConfig,
    device: torch.device,
) -> list[list[int]]:
    """Best output ids per encoded source (each ending in EOS), in input order."""
    return [d.hyps[0].tokens for d in translate_nbest(model, src_ids, dec, device)]


def restore(state: dict[str, Any]) -> tuple[ExperimentConfig, TokenizerPair, Transformer]:
    """Config, tokenizers and model of a loaded checkpoint; an MtkitError says what is wrong."""
    if not isinstance(state["config"], dict):
        raise CheckpointError("the embedded config is not a mapping")
    try:
        cfg = config_from_dict(state["config"])
    except ConfigError as e:
        raise CheckpointError(f"the embedded config is invalid: {e}") from None
    files = state["tokenizer"]
    if not isinstance(files, dict) or not all(isinstance(v, bytes) for v in files.values()):
        raise CheckpointError("the embedded tokenizer is not a set of sentencepiece model files")
    tokenizers = TokenizerPair.from_model_files(files)
    sizes = (tokenizers.src.vocab_size, tokenizers.tgt.vocab_size)
    vocab = state["vocab"]
    if not isinstance(vocab, dict) or (vocab.get("src"), vocab.get("tgt")) != sizes:
        raise CheckpointError(
            f"its vocabulary sizes do not match its tokenizers ({sizes[0]}/{sizes[1]} pieces)"
        )
    with torch.device("meta"):  # shapes only: nothing is allocated before they are checked
        check_weights(_build(cfg, sizes).state_dict(), state["model"])
    model = _build(cfg, sizes)
    load_weights(model, state["model"])
    return cfg, tokenizers, model


def _build(cfg: ExperimentConfig, sizes: tuple[int, int]) -> Transformer:
    try:
        return build_model(cfg, *sizes, pad_id=PAD_ID)
    except (ValueError, RuntimeError) as e:  # share_embeddings with two vocabularies, memory
        raise CheckpointError(f"cannot build its model: {e}") from None


# --------------------------------------------------------------------------- results


@dataclass
class Candidate:
    """One hypothesis of an n-best list."""

    text: str
    score: float  # what search ranked by (length-normalised for beam search)
    log_prob: float | None  # total log-probability under the model, EOS included (None: unknown)


@dataclass
class Attention:
    """Cross-attention of one translation: rows are output pieces, columns source pieces."""

    source: list[str]  # source pieces + EOS
    target: list[str]  # output pieces + EOS
    weights: npt.NDArray[np.float32]  # (len(target), len(source)); rows sum to 1


@dataclass
class Translation:
    """The result for one input line."""

    source: str
    nbest: list[Candidate] = field(default_factory=list)  # best first; empty for an empty line
    seconds: float = 0.0  # this sentence's share of its batch's decoding time
    truncated: bool = False  # the source was cut to the model's maximum length
    attention: Attention | None = None

    @property
    def text(self) -> str:
        return self.nbest[0].text if self.nbest else ""


def _valid_text(text: str) -> str:
    """`text` with lone surrogates replaced by U+FFFD (sentencepiece and UTF-8 output reject
    them); they come from undecodable bytes read with errors="surrogateescape", e.g. a prompt."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        try:
            raw = text.encode("utf-8", "surrogateescape")  # the original bytes
        except UnicodeEncodeError:
            raw = text.encode("utf-8", "surrogatepass")
        return raw.decode("utf-8", "replace")


def _one_line(text: str) -> str:
    """Output stays one line per input line: byte-fallback pieces can decode to \\n or \\r."""
    return text.replace("\r", " ").replace("\n", " ") if "\n" in text or "\r" in text else text


def _pieces(tokenizer: Tokenizer, ids: Sequence[int]) -> list[str]:
    return [tokenizer.id_to_piece(i) for i in ids if i != EOS_ID] + [EOS_PIECE]


@dataclass
class Translator:
    """A model, its tokenizers and its decoding defaults, ready to translate text."""

    model: Transformer
    tokenizers: TokenizerPair
    config: ExperimentConfig
    device: torch.device
    checkpoint: Path
    precision: str = "float32"  # resolved (never auto): float32, bfloat16 or float16

    @classmethod
    def load(cls, path: Path, device: str = "auto", precision: str | None = None) -> Translator:
        """Load from a run directory (its best checkpoint) or a checkpoint file.

        `precision` None: the run's `decoding.precision` (auto by default).
        """
        ckpt_path = resolve_checkpoint(path)
        state = load_checkpoint(ckpt_path)
        try:
            cfg, tokenizers, model = restore(state)
        except MtkitError as e:  # one line naming the file, never a torch traceback
            raise CheckpointError(f"{ckpt_path}: {e}") from None
        torch_device = resolve_device(device)
        precision = precision or cfg.decoding.precision
        check_precision(precision, torch_device, "decoding.precision")
        keep_freed_memory()  # per-step logits reuse the heap instead of fresh pages
        model.to(torch_device).eval()
        chosen = resolve_precision(precision, torch_device)
        return cls(model, tokenizers, cfg, torch_device, ckpt_path, chosen)

    def translate(self, lines: Sequence[str], dec: DecodingConfig) -> list[str]:
        """Translate lines; an empty (or whitespace-only) line gives an empty line."""
        return [t.text for t in self.translate_full(lines, dec)]

    def translate_full(
        self,
        lines: Sequence[str],
        dec: DecodingConfig,
        *,
        attention: bool = False,
        generator: torch.Generator | None = None,
        warn: bool = True,
    ) -> list[Translation]:
        """Translate lines into n-best lists with scores (and cross-attention if asked).

        Sources longer than the model's maximum are truncated; `warn` logs how many.
        """
        lines = [_valid_text(line) for line in lines]
        limit = self.config.model.max_positions - 1
        cap = limit * MAX_CHARS_PER_TOKEN  # longer text is cut first: encoding it all is slow
        keep = [i for i, line in enumerate(lines) if line.strip()]
        pieces = self.tokenizers.src.encode([lines[i].strip()[:cap] for i in keep])
        src_ids = [[*ids[:limit], EOS_ID] for ids in pieces]
        out = [Translation(line) for line in lines]
        for i, ids in zip(keep, pieces, strict=True):
            out[i].truncated = len(ids) > limit or len(lines[i].strip()) > cap
        too_long = sum(t.truncated for t in out)
        if warn and too_long:
            logger.warning("%d input line(s) longer than %d tokens were truncated", too_long, limit)
        if generator is None and dec.sampling:
            generator = self.generator(dec.seed)
        with autocast_context(self.device, self.precision_for(dec)):
            decoded = translate_nbest(
                self.model, src_ids, dec, self.device, attention=attention,
                generator=generator,
            )  # fmt: skip
        tgt = self.tokenizers.tgt
        for i, ids, d in zip(keep, src_ids, decoded, strict=True):
            texts = [_one_line(t) for t in tgt.decode([h.tokens for h in d.hyps])]
            out[i].nbest = [
                Candidate(text, h.score, h.log_prob) for text, h in zip(texts, d.hyps, strict=True)
            ]
            out[i].seconds = d.seconds
            if d.attention is not None:
                source = _pieces(self.tokenizers.src, ids)
                target = _pieces(tgt, d.hyps[0].tokens)
                out[i].attention = Attention(source, target, d.attention)
        return out

    def precision_for(self, dec: DecodingConfig) -> str:
        """`dec.precision`; `auto` as it was resolved when the translator was loaded."""
        if dec.precision == "auto":
            return self.precision
        check_precision(dec.precision, self.device, "decoding.precision")
        return dec.precision

    def generator(self, seed: int) -> torch.Generator:
        """A random generator on the model's device (sampling)."""
        return torch.Generator(device=self.device).manual_seed(seed)

    def stream(
        self,
        lines: Iterable[str],
        dec: DecodingConfig,
        chunk_size: int = 500,
        *,
        attention: bool = False,
    ) -> Iterator[list[Translation]]:
        """Translate an iterable chunk by chunk; each chunk's results are yielded (in input
        order) as soon as it is done, before the next chunk is read."""
        generator = self.generator(dec.seed) if dec.sampling else None
        truncated = total = 0
        for chunk in _chunk_lines(lines, chunk_size):
            result = self.translate_full(
                chunk, dec, attention=attention, generator=generator, warn=False
            )
            truncated += sum(t.truncated for t in result)
            total += len(result)
            yield result
        if truncated:
            limit = self.config.model.max_positions - 1
            logger.warning(
                "%d of %d input line(s) were longer than %d tokens and were truncated",
                truncated, total, limit,
            )  # fmt: skip

    def translate_stream(
        self, lines: Iterable[str], dec: DecodingConfig, chunk_size: int = 500
    ) -> Iterator[str]:
        """Translate an iterable chunk by chunk, yielding outputs in input order."""
        for chunk in self.stream(lines, dec, chunk_size):
            yield from (t.text for t in chunk)


def _chunk_lines(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    """Lists of up to `size` newline-stripped lines; each is yielded as soon as it is full."""
    chunk: list[str] = []
    for line in lines:
        chunk.append(line.rstrip("\n").rstrip("\r"))
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# --------------------------------------------------------------------------- output


def _tsv_field(text: str) -> str:
    return text.replace("\t", " ")


def format_translation(t: Translation, fmt: str, index: int, nbest: bool = False) -> str:
    """One translation as output text (ending in a newline).

    text: the best hypothesis; with `nbest`, Moses n-best lines `index ||| hypothesis ||| score`
    (none for an empty input line). tsv: `source<TAB>hypothesis<TAB>score` per hypothesis (an
    empty input line gives one row of empty fields). jsonl: one object per input line.
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
) -> Iterator[list[Translation]]:
    """`translator.stream(...)`, or for an engine with only `translate_nbest(lines, dec,
    nbest) -> [[(text, score)]]` (CTranslate2), the same chunks without log-probs/attention."""
    if isinstance(translator, Translator):
        yield from translator.stream(lines, dec, chunk_size, attention=attention)
        return
    if attention:
        raise TranslationError("--attention needs the PyTorch model, not an exported one")
    for chunk in _chunk_lines(lines, chunk_size):
        start = time.perf_counter()
        found = translator.translate_nbest(chunk, dec, dec.nbest)
        seconds = (time.perf_counter() - start) / len(chunk)
        yield [
            Translation(
                line, [Candidate(t, s, None) for t, s in hyps] if line.strip() else [],
                seconds,
            )
            for line, hyps in zip(chunk, found, strict=True)
        ]  # fmt: skip


def iter_lines(path: Path) -> Iterator[str]:
    """Lines of a UTF-8 file, read lazily and split on "\\n" only (a stray "\\r" is no break);
    invalid UTF-8 raises TranslationError naming the line."""
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "not found"
        raise TranslationError(f"{path}: input file {what}")
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            try:
                yield raw.decode("utf-8").rstrip("\n").rstrip("\r")
            except UnicodeDecodeError:
                raise TranslationError(f"{path}: line {n}: invalid UTF-8") from None
