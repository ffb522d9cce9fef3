"""Load a trained model from a run directory or checkpoint and translate lines of text.

`Translator.translate(lines, dec)` gives one string per line, searching as the DecodingConfig
`dec` says (the run's `config.decoding`, or a `dataclasses.replace` of it that
`validate_decoding` accepted). `Translator.stream` reads any iterable of lines chunk by chunk
and yields `Translation`s (n-best lists with scores, timing, optional cross-attention) as each
chunk finishes, so memory does not grow with the input. Writing them out (text, TSV, JSONL,
n-best) is in `output.py`; reading input lines in `input_lines.py`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from mtkit.checkpoint import (
    CheckpointError,
    load_checkpoint,
    resolve_checkpoint,
)
from mtkit.config.schema import DecodingConfig, ExperimentConfig
from mtkit.data.batching import pad, token_batches
from mtkit.data.tokenizer import (
    BOS_ID,
    EOS_ID,
    MAX_CHARS_PER_TOKEN,
    PAD_ID,
    Tokenizer,
    TokenizerPair,
)
from mtkit.errors import MtkitError, plural
from mtkit.model.inference import transpose_linears
from mtkit.model.layers import fuse_attention_projections
from mtkit.model.masks import pad_mask
from mtkit.model.transformer import Transformer, set_attention_kernel, set_log_softmax_kernel
from mtkit.runtime import (
    autocast_context,
    check_precision,
    keep_freed_memory,
    limit_onednn_caches,
    resolve_device,
    resolve_precision,
)  # fmt: skip
from mtkit.search.common import Hypothesis
from mtkit.search.ensemble import Ensemble
from mtkit.search.strategy import search
from mtkit.translation.engine import check_quantization
from mtkit.translation.native_kernels import NativeKernels, resolve_native_kernels
from mtkit.translation.quantize import is_quantized, quantize_model
from mtkit.translation.restore import restore
from mtkit.translation.results import Attention, Candidate, Translation

logger = logging.getLogger(__name__)

EOS_PIECE = "</s>"


class TranslationError(MtkitError):
    """A translation request that cannot be served (output format, attention on an export,
    an unreadable input file)."""


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
    model: Transformer | Ensemble,
    src_ids: Sequence[Sequence[int]],
    dec: DecodingConfig,
    device: torch.device,
    *,
    attention: bool = False,
    generator: torch.Generator | None = None,
    advance: Callable[[int], None] | None = None,
) -> list[Decoded]:
    """Translate encoded sources (each ending in EOS) in token-budget batches sorted by length;
    results come back in input order. `advance(n)` is told each batch's size when it is done."""
    if model.training:  # eval() walks every module: 0.7 ms, a lot for one short sentence
        model.eval()
    results: list[Decoded] = [Decoded([], 0.0) for _ in src_ids]
    for index in token_batches([len(s) for s in src_ids], dec.max_tokens):
        start = time.perf_counter()
        src = pad([src_ids[i] for i in index]).to(device)  # (batch, src_len)
        src_mask = pad_mask(src, PAD_ID)  # (batch, src_len)
        nbest = search(model, src, src_mask, dec, bos_id=BOS_ID, eos_id=EOS_ID, generator=generator)
        weights: Sequence[npt.NDArray[np.float32] | None] = [None] * len(index)
        if attention:
            if isinstance(model, Ensemble):
                raise TranslationError("--attention needs one model, not an ensemble")
            weights = best_attention(model, src, src_mask, [hs[0].tokens for hs in nbest])
        seconds = (time.perf_counter() - start) / len(index)
        for i, hyps, w in zip(index, nbest, weights, strict=True):
            results[i] = Decoded(hyps, seconds, w)
        if advance is not None:
            advance(len(index))
    return results


def translate_ids(
    model: Transformer | Ensemble,
    src_ids: Sequence[Sequence[int]],
    dec: DecodingConfig,
    device: torch.device,
) -> list[list[int]]:
    """Best output ids per encoded source (each ending in EOS), in input order."""
    return [d.hyps[0].tokens for d in translate_nbest(model, src_ids, dec, device)]


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
    """A model (or an ensemble: translation/ensemble.py), its tokenizers and its decoding
    defaults, ready to translate text."""

    model: Transformer | Ensemble
    tokenizers: TokenizerPair
    config: ExperimentConfig
    device: torch.device
    checkpoint: Path
    auto_precision: str | None = None  # what decoding.precision auto resolved to (on first use)
    # decoding.attention_kernel values resolved so far: the native kernels, or None (PyTorch's)
    kernels: dict[str, NativeKernels | None] = field(default_factory=dict)
    # per-call facts of the model, found once (each walks its ~200 modules, ~0.3 ms a walk):
    installed: str | None = field(default=None, init=False)  # the kernel choice it holds
    quantized: bool | None = field(default=None, init=False)  # int8 Linears (quantize_model)

    @classmethod
    def load(cls, path: Path, device: str = "auto", quantize: str = "none") -> Translator:
        """Load from a run directory (its best checkpoint) or a checkpoint file.

        `quantize` "int8": the Linear layers run in int8 (translation/quantize.py; CPU only).
        """
        check_quantization(quantize)  # before the (slow) load
        ckpt_path = resolve_checkpoint(path)
        state = load_checkpoint(ckpt_path)
        try:
            cfg, tokenizers, model = restore(state)
        except MtkitError as e:  # one line naming the file, never a torch traceback
            raise CheckpointError(f"{ckpt_path}: {e}") from None
        torch_device = resolve_device(device)
        keep_freed_memory()  # per-step logits reuse the heap instead of fresh pages
        limit_onednn_caches()  # bf16 on CPU: no oneDNN primitive kept per batch shape
        model.to(torch_device).eval()
        fuse_attention_projections(model)
        quantize_model(model, quantize)
        if torch_device.type == "cpu":
            transpose_linears(model)  # the float Linears left: faster products at decoding sizes
        return cls(model, tokenizers, cfg, torch_device, ckpt_path)

    def translate(
        self,
        lines: Sequence[str],
        dec: DecodingConfig,
        advance: Callable[[int], None] | None = None,
    ) -> list[str]:
        """Translate lines; an empty (or whitespace-only) line gives an empty line.
        `advance(n)`: n more lines are done (progress)."""
        return [t.text for t in self.translate_full(lines, dec, advance=advance)]

    def translate_full(
        self,
        lines: Sequence[str],
        dec: DecodingConfig,
        *,
        attention: bool = False,
        generator: torch.Generator | None = None,
        warn: bool = True,
        advance: Callable[[int], None] | None = None,
    ) -> list[Translation]:
        """Translate lines into n-best lists with scores (and cross-attention if asked).

        Sources longer than the model's maximum are truncated; `warn` logs how many.
        `advance(n)`: n more lines are done (after each batch; empty lines at the end).
        """
        out, keep, src_ids = self.sources(lines)
        too_long = sum(t.truncated for t in out)
        if warn and too_long:
            logger.warning(
                "%s longer than %d tokens %s truncated", plural(too_long, "input line"),
                self.config.model.max_positions - 1, "was" if too_long == 1 else "were",
            )  # fmt: skip
        if generator is None and dec.sampling:
            generator = self.generator(dec.seed)
        self.use_attention_kernel(dec)
        with autocast_context(self.device, self.precision_for(dec)):
            decoded = translate_nbest(
                self.model, src_ids, dec, self.device, attention=attention,
                generator=generator, advance=advance,
            )  # fmt: skip
        if advance is not None and len(keep) < len(lines):
            advance(len(lines) - len(keep))
        for i, ids, d in zip(keep, src_ids, decoded, strict=True):
            self.fill(out[i], ids, d)
        return out

    def sources(self, lines: Sequence[str]) -> tuple[list[Translation], list[int], list[list[int]]]:
        """A Translation per line (text made valid, `truncated` set), the indices of the lines
        that are not empty, and their source ids: cut to the model's maximum, EOS appended."""
        lines = [_valid_text(line) for line in lines]
        limit = self.config.model.max_positions - 1
        cap = limit * MAX_CHARS_PER_TOKEN  # longer text is cut first: encoding it all is slow
        keep = [i for i, line in enumerate(lines) if line.strip()]
        pieces = self.tokenizers.src.encode([lines[i].strip()[:cap] for i in keep])
        src_ids = [[*ids[:limit], EOS_ID] for ids in pieces]
        out = [Translation(line) for line in lines]
        for i, ids in zip(keep, pieces, strict=True):
            out[i].truncated = len(ids) > limit or len(lines[i].strip()) > cap
        return out, keep, src_ids

    def fill(self, out: Translation, src_ids: Sequence[int], d: Decoded) -> None:
        """Put a sentence's search output into its Translation: texts, scores, timing, attention."""
        tgt = self.tokenizers.tgt
        texts = [_one_line(t) for t in tgt.decode([h.tokens for h in d.hyps])]
        out.nbest = [
            Candidate(text, h.score, h.log_prob) for text, h in zip(texts, d.hyps, strict=True)
        ]
        out.seconds = d.seconds
        if d.attention is not None:
            source = _pieces(self.tokenizers.src, src_ids)
            target = _pieces(tgt, d.hyps[0].tokens)
            out.attention = Attention(source, target, d.attention)

    def precision_for(self, dec: DecodingConfig) -> str:
        """`dec.precision`: float32 for an int8 model; `auto` resolved once per translator (the
        choice is logged); float16 needs CUDA."""
        if self.quantized is None:
            self.quantized = is_quantized(self.model)
        if self.quantized:
            return "float32"  # int8 Linears take and return float32
        if dec.precision != "auto":
            check_precision(dec.precision, self.device, "decoding.precision")
            return dec.precision
        if self.auto_precision is None:
            self.auto_precision = resolve_precision("auto", self.device)
        return self.auto_precision

    def use_attention_kernel(self, dec: DecodingConfig) -> None:
        """Let the model's attention and the searches' log-softmax run the kernels
        `dec.attention_kernel` resolves to (once per translator and value; logged)."""
        choice = dec.attention_kernel
        if choice == self.installed:
            return
        if choice not in self.kernels:
            self.kernels[choice] = resolve_native_kernels(choice, self.device)
        kernels = self.kernels[choice]
        set_attention_kernel(self.model, None if kernels is None else kernels.attention)
        set_log_softmax_kernel(self.model, None if kernels is None else kernels.log_softmax_)
        self.installed = choice

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
        advance: Callable[[int], None] | None = None,
    ) -> Iterator[list[Translation]]:
        """Translate an iterable chunk by chunk; each chunk's results are yielded (in input
        order) as soon as it is done, before the next chunk is read. `advance(n)`: as in
        `translate_full`."""
        generator = self.generator(dec.seed) if dec.sampling else None
        truncated = total = 0
        for chunk in chunk_lines(lines, chunk_size):
            result = self.translate_full(
                chunk, dec, attention=attention, generator=generator, warn=False, advance=advance
            )
            truncated += sum(t.truncated for t in result)
            total += len(result)
            yield result
        if truncated:
            limit = self.config.model.max_positions - 1
            logger.warning(
                "%d of %s %s longer than %d tokens and truncated",
                truncated, plural(total, "input line"), "was" if truncated == 1 else "were", limit,
            )  # fmt: skip

    def translate_stream(
        self, lines: Iterable[str], dec: DecodingConfig, chunk_size: int = 500
    ) -> Iterator[str]:
        """Translate an iterable chunk by chunk, yielding outputs in input order."""
        for chunk in self.stream(lines, dec, chunk_size):
            yield from (t.text for t in chunk)


def chunk_lines(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    """Lists of up to `size` newline-stripped lines; each is yielded as soon as it is full."""
    chunk: list[str] = []
    for line in lines:
        chunk.append(line.rstrip("\n").rstrip("\r"))
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
