"""Load a trained model from a run directory or checkpoint and translate lines of text."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from mtkit.checkpoint import CheckpointError, load_checkpoint, load_weights, resolve_checkpoint
from mtkit.config import ConfigError, DecodingConfig, ExperimentConfig, config_from_dict
from mtkit.errors import MtkitError
from mtkit.masks import pad_mask
from mtkit.model import Transformer
from mtkit.runtime import resolve_device
from mtkit.search import beam_search, greedy_search
from mtkit.tokenizer import BOS_ID, EOS_ID, PAD_ID, TokenizerPair

logger = logging.getLogger(__name__)

# sentencepiece pieces are at most 16 characters, so a line of over MAX_CHARS_PER_TOKEN * N
# characters has over N tokens (with 4x slack for normalisation); it is cut before encoding.
MAX_CHARS_PER_TOKEN = 64


@dataclass(frozen=True)
class DecodeOptions:
    """How to search; defaults come from the run's `decoding` config section."""

    beam_size: int = 5  # 1 = greedy
    length_penalty: float = 1.0
    max_len_a: float = 1.5
    max_len_b: int = 10
    max_tokens: int = 4000  # source tokens per batch

    @classmethod
    def from_config(cls, cfg: DecodingConfig) -> DecodeOptions:
        return cls(cfg.beam_size, cfg.length_penalty, cfg.max_len_a, cfg.max_len_b, cfg.max_tokens)


def token_batches(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Indices grouped into batches of similar length whose padded size fits `max_tokens`."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    out: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        longest_if_added = max(longest, lengths[i])
        if current and longest_if_added * (len(current) + 1) > max_tokens:
            out.append(current)
            current, longest_if_added = [], lengths[i]
        current.append(i)
        longest = longest_if_added
    if current:
        out.append(current)
    return out


def pad_batch(id_lists: Sequence[Sequence[int]], device: torch.device) -> torch.Tensor:
    """Right-pad lists of ids into one tensor. Shapes: -> (batch, max_len)."""
    width = max(len(ids) for ids in id_lists)
    out = torch.full((len(id_lists), width), PAD_ID, dtype=torch.long)  # (batch, max_len)
    for row, ids in enumerate(id_lists):
        out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out.to(device)


@torch.inference_mode()
def translate_ids(
    model: Transformer,
    src_ids: Sequence[Sequence[int]],
    options: DecodeOptions,
    device: torch.device,
) -> list[list[int]]:
    """Translate encoded sources (each ending in EOS); results come back in input order."""
    model.eval()
    results: list[list[int]] = [[] for _ in src_ids]
    for index in token_batches([len(s) for s in src_ids], options.max_tokens):
        src = pad_batch([src_ids[i] for i in index], device)  # (batch, src_len)
        src_mask = pad_mask(src, PAD_ID)  # (batch, src_len)
        if options.beam_size == 1:
            hyps = greedy_search(
                model, src, src_mask, bos_id=BOS_ID, eos_id=EOS_ID,
                max_len_a=options.max_len_a, max_len_b=options.max_len_b,
            )  # fmt: skip
            best = [h.tokens for h in hyps]
        else:
            nbest = beam_search(
                model, src, src_mask, bos_id=BOS_ID, eos_id=EOS_ID,
                beam_size=options.beam_size, length_penalty=options.length_penalty,
                max_len_a=options.max_len_a, max_len_b=options.max_len_b,
            )  # fmt: skip
            best = [hs[0].tokens for hs in nbest]
        for i, tokens in zip(index, best, strict=True):
            results[i] = tokens
    return results


def build_model(cfg: ExperimentConfig, src_vocab: int, tgt_vocab: int) -> Transformer:
    """The Transformer a config describes, with the given vocabulary sizes."""
    return Transformer(cfg.model, src_vocab=src_vocab, tgt_vocab=tgt_vocab, pad_id=PAD_ID)


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
    try:
        model = build_model(cfg, *sizes)
    except (ValueError, RuntimeError) as e:  # share_embeddings with two vocabularies, memory
        raise CheckpointError(f"cannot build its model: {e}") from None
    load_weights(model, state["model"])
    return cfg, tokenizers, model


def _one_line(text: str) -> str:
    """Output stays one line per input line: byte-fallback pieces can decode to \\n or \\r."""
    return text.replace("\r", " ").replace("\n", " ") if "\n" in text or "\r" in text else text


@dataclass
class Translator:
    """A model, its tokenizers and its decoding defaults, ready to translate text."""

    model: Transformer
    tokenizers: TokenizerPair
    config: ExperimentConfig
    device: torch.device
    checkpoint: Path

    @classmethod
    def load(cls, path: Path, device: str = "auto") -> Translator:
        """Load from a run directory (its best checkpoint) or a checkpoint file."""
        ckpt_path = resolve_checkpoint(path)
        state = load_checkpoint(ckpt_path)
        try:
            cfg, tokenizers, model = restore(state)
        except MtkitError as e:  # one line naming the file, never a torch traceback
            raise CheckpointError(f"{ckpt_path}: {e}") from None
        torch_device = resolve_device(device)
        model.to(torch_device).eval()
        return cls(model, tokenizers, cfg, torch_device, ckpt_path)

    def default_options(self, **overrides: Any) -> DecodeOptions:
        """The run's decoding config with any non-None overrides applied."""
        options = DecodeOptions.from_config(self.config.decoding)
        return replace(options, **{k: v for k, v in overrides.items() if v is not None})

    def translate(self, lines: Sequence[str], options: DecodeOptions) -> list[str]:
        """Translate lines; an empty (or whitespace-only) line gives an empty line."""
        limit = self.config.model.max_positions - 1
        cap = limit * MAX_CHARS_PER_TOKEN  # longer text is cut first: encoding it all is slow
        texts = [line.strip() for line in lines]
        pieces = self.tokenizers.src.encode([text[:cap] for text in texts])
        src_ids: list[list[int]] = []
        too_long = 0
        for text, ids in zip(texts, pieces, strict=True):
            if len(ids) > limit or len(text) > cap:
                too_long += 1
            src_ids.append([*ids[:limit], EOS_ID])
        if too_long:
            logger.warning("%d input line(s) longer than %d tokens were truncated", too_long, limit)
        keep = [i for i, line in enumerate(lines) if line.strip()]
        out_ids = translate_ids(self.model, [src_ids[i] for i in keep], options, self.device)
        outputs = [""] * len(lines)
        for i, text in zip(keep, self.tokenizers.tgt.decode(out_ids), strict=True):
            outputs[i] = _one_line(text)
        return outputs

    def translate_stream(
        self, lines: Iterable[str], options: DecodeOptions, chunk_size: int = 500
    ) -> Iterator[str]:
        """Translate an iterable chunk by chunk, yielding outputs in input order."""
        chunk: list[str] = []
        for line in lines:
            chunk.append(line.rstrip("\n"))
            if len(chunk) >= chunk_size:
                yield from self.translate(chunk, options)
                chunk = []
        if chunk:
            yield from self.translate(chunk, options)
