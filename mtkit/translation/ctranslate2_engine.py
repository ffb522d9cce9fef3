"""Translate with a CTranslate2 export: a `Translator`-compatible object over ctranslate2.

An export folder (written by mtkit/export.py) holds CTranslate2's model.bin, config.json and
vocabulary, the sentencepiece model(s), and mtkit_export.yaml (languages, decoding defaults,
the run's config). `ctranslate2` is an optional dependency, imported on first use only.

How mtkit's search options map onto CTranslate2's `translate_batch`:
- Source: pieces, then EOS (config.json has add_source_eos); decoding starts from BOS.
- Max length: mtkit allows int(a * src_len + b) tokens per sentence (src_len counts EOS), while
  CTranslate2 takes one absolute limit per call. Sentences are grouped by their limit and each
  group is one call, so every sentence gets exactly mtkit's limit. A hypothesis that reaches it
  without EOS is re-scored with EOS appended, as mtkit forces EOS there.
- Ranking: CTranslate2 divides scores by len ** alpha; mtkit's beam search uses
  `length_norm` (GNMT by default, len counting EOS). We ask CTranslate2 for raw log-probs
  (length_penalty=0) of all `beam` finished hypotheses and rank them here the mtkit way.
- min_len, no_repeat_ngram, n-best, sampling (temperature, top-k, top-p, seed) map to their
  CTranslate2 namesakes; PAD and BOS are never generated (suppress_sequences).
- Batches: `max_tokens` source tokens per batch (max_batch_size with batch_type="tokens").
Differences: CTranslate2 stops a beam search by its own rule (`early_stopping` is not used); at
the last step mtkit keeps `beam` live candidates besides those ending in EOS,
CTranslate2 the best `beam` of all, so a sentence that hits the max length can end differently;
log-probs and attention are not returned (Candidate.log_prob is None).
"""

from __future__ import annotations

import importlib
import logging
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import yaml

from mtkit.config.load import config_from_dict
from mtkit.config.schema import ConfigError, DecodingConfig, ExperimentConfig
from mtkit.data.tokenizer import MAX_CHARS_PER_TOKEN, UNK_ID, Tokenizer, TokenizerPair
from mtkit.errors import MtkitError, plural
from mtkit.search.common import length_normaliser
from mtkit.search.strategy import uses_beam
from mtkit.translation.results import Candidate, Translation

logger = logging.getLogger(__name__)

EXPORT_CONFIG = "mtkit_export.yaml"
MODEL_FILE = "model.bin"
EXPORT_VERSION = 1
# Pieces of ids 0-3 (PAD/UNK/BOS/EOS); UNK/BOS/EOS are CTranslate2's default token names.
SPECIAL_PIECES = ("<pad>", "<unk>", "<s>", "</s>")
INSTALL_HINT = "pip install 'mtkit[ctranslate2]' (or: pip install ctranslate2)"


class ExportError(MtkitError):
    """An export that cannot be written or read; the message names the setting or file."""


def require_ctranslate2() -> Any:
    """The `ctranslate2` module, or an ExportError saying how to install it."""
    try:
        return importlib.import_module("ctranslate2")
    except ImportError:
        raise ExportError(
            f"CTranslate2 is not installed; install it with: {INSTALL_HINT}"
        ) from None


def is_export(path: Path) -> bool:
    """True for a folder written by `mtkit export --format ctranslate2`."""
    path = Path(path)
    return (path / MODEL_FILE).is_file() and (path / EXPORT_CONFIG).is_file()


def vocabulary(tokenizer: Tokenizer) -> list[str]:
    """Token strings in id order: sentencepiece pieces, ids 0-3 named as SPECIAL_PIECES."""
    pieces = [tokenizer.id_to_piece(i) for i in range(tokenizer.vocab_size)]
    pieces[: len(SPECIAL_PIECES)] = SPECIAL_PIECES
    return pieces


# --------------------------------------------------------------------------- search mapping


def max_length(src_len: int, dec: DecodingConfig, max_positions: int) -> int:
    """int(a * src_len + b) tokens (EOS excluded), capped by the positional table.

    `src_len` counts EOS, like mtkit.search.common.max_lengths.
    """
    limit = int(dec.max_len_a * src_len + dec.max_len_b)
    return max(0, min(limit, max_positions - 1))


def engine_options(dec: DecodingConfig, limit: int) -> dict[str, Any]:
    """`translate_batch` keyword arguments for one group of sentences sharing `limit`."""
    common: dict[str, Any] = {
        "max_decoding_length": max(limit, 1),  # steps; a hypothesis this long has no EOS
        "min_decoding_length": min(dec.min_len, limit),  # the max length wins a clash
        "no_repeat_ngram_size": dec.no_repeat_ngram,
        "length_penalty": 0.0,  # raw log-probs; `rank` normalises like mtkit
        "return_scores": True,
        "max_input_length": 0,  # inputs are already cut to the positional table
        "max_batch_size": dec.max_tokens,
        "batch_type": "tokens",
        "suppress_sequences": [[SPECIAL_PIECES[0]], [SPECIAL_PIECES[2]]],  # PAD, BOS
    }
    if dec.sampling:
        return {
            **common, "beam_size": 1, "num_hypotheses": dec.nbest, "sampling_topk": dec.top_k,
            "sampling_topp": dec.top_p, "sampling_temperature": dec.temperature,
        }  # fmt: skip
    # every finished hypothesis comes back, so `rank` can pick as mtkit's beam search would
    return {**common, "beam_size": dec.beam_size, "num_hypotheses": dec.beam_size}


def rank(
    hypotheses: Sequence[Sequence[str]],
    scores: Sequence[float],
    limit: int,
    dec: DecodingConfig,
) -> list[tuple[list[str], float]]:
    """(tokens, score) best first, hypotheses cut at `limit` tokens.

    Beam search: score = log_prob / length_normaliser(len + EOS) and duplicates (made by the
    cut) are dropped; greedy search and sampling: score = log_prob.
    """
    cut = [
        (list(tokens[:limit]), float(raw)) for tokens, raw in zip(hypotheses, scores, strict=True)
    ]
    if not uses_beam(dec):
        return sorted(cut, key=lambda ts: -ts[1])
    best: dict[tuple[str, ...], float] = {}
    for tokens, raw in cut:
        norm = length_normaliser(len(tokens) + 1, dec.length_penalty, dec.length_norm)
        key = tuple(tokens)
        best[key] = max(raw / norm, best.get(key, -math.inf))
    return sorted(((list(k), s) for k, s in best.items()), key=lambda ks: -ks[1])


def translate_pieces(
    engine: Any,
    sources: Sequence[Sequence[str]],
    dec: DecodingConfig,
    max_positions: int,
) -> list[list[tuple[list[str], float]]]:
    """Translate source pieces (without EOS) with a ctranslate2.Translator, mtkit's way.

    Returns per sentence up to `dec.nbest` (target pieces, score), best first.
    """
    groups: dict[int, list[int]] = {}
    for i, src in enumerate(sources):
        groups.setdefault(max_length(len(src) + 1, dec, max_positions), []).append(i)
    out: list[list[tuple[list[str], float]]] = [[] for _ in sources]
    for limit, index in sorted(groups.items()):
        batch = [list(sources[i]) for i in index]
        results = engine.translate_batch(batch, **engine_options(dec, limit))
        scores = [list(r.scores) for r in results]
        if not dec.sampling:
            _score_cut(engine, batch, results, scores, limit, dec)
        for i, result, raw in zip(index, results, scores, strict=True):
            out[i] = rank(result.hypotheses, raw, limit, dec)[: dec.nbest]
    return out


def _score_cut(
    engine: Any,
    sources: Sequence[Sequence[str]],
    results: Sequence[Any],
    scores: list[list[float]],
    limit: int,
    dec: DecodingConfig,
) -> None:
    """Give hypotheses that reached `limit` without EOS mtkit's forced EOS and its log-prob.

    CTranslate2 stops them there unfinished, scored without EOS; ranking them fairly against
    finished ones needs the log-prob of EOS after `limit` tokens.
    """
    cut = [
        (r, h)
        for r, result in enumerate(results)
        for h, tokens in enumerate(result.hypotheses)
        if len(tokens) >= max(limit, 1)  # finished ones are shorter: EOS is not returned
    ]
    if not cut:
        return
    rescored = engine.score_batch(
        [list(sources[r]) for r, _ in cut],
        [list(results[r].hypotheses[h][:limit]) for r, h in cut],
        max_batch_size=dec.max_tokens,
        batch_type="tokens",
        max_input_length=0,
    )
    for (r, h), res in zip(cut, rescored, strict=True):
        scores[r][h] = float(sum(res.log_probs))  # limit tokens + EOS


# --------------------------------------------------------------------------- translator


def read_export_config(path: Path) -> dict[str, Any]:
    """The parsed mtkit_export.yaml of an export folder."""
    file = Path(path) / EXPORT_CONFIG
    if not is_export(path):
        raise ExportError(
            f"{path}: not an mtkit export (expected {MODEL_FILE} and {EXPORT_CONFIG})"
        )
    try:
        info = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ExportError(f"{file}: unreadable ({type(e).__name__})") from None
    if not isinstance(info, dict) or info.get("format") != "ctranslate2":
        raise ExportError(f"{file}: not an mtkit CTranslate2 export config")
    if info.get("export_version") != EXPORT_VERSION:
        raise ExportError(
            f"{file}: export version {info.get('export_version')} is not supported "
            f"(this mtkit reads version {EXPORT_VERSION})"
        )
    return info


def resolve_ct2_device(ct2: Any, device: str) -> str:
    """'auto' -> 'cuda' when CTranslate2 sees a GPU, else 'cpu'."""
    if device == "auto":
        return "cuda" if ct2.get_cuda_device_count() > 0 else "cpu"
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"--device: expected auto, cpu or cuda, got {device!r}")
    return device


@dataclass
class CT2Translator:
    """An exported model run by CTranslate2; used like mtkit.translation.translator.Translator."""

    engine: Any  # ctranslate2.Translator
    tokenizers: TokenizerPair
    config: ExperimentConfig
    device: str
    checkpoint: Path  # the export's model.bin; its parent is the export folder
    info: dict[str, Any]  # mtkit_export.yaml
    _piece_ids: dict[str, int] = field(default_factory=dict, repr=False)  # target piece -> id

    @classmethod
    def load(
        cls, path: Path, device: str = "auto", threads: int = 0, compute_type: str = "default"
    ) -> CT2Translator:
        """Open an export folder. `threads` 0: as many as PyTorch would use (OMP_NUM_THREADS,
        else the cores); `compute_type` 'default' runs the weights as exported (int8, ...)."""
        path = Path(path)
        info = read_export_config(path)
        raw = dict(info["experiment"])
        raw["decoding"] = info["decoding"]  # the export's defaults win (they can be edited)
        cfg = config_from_dict(raw)
        tokenizers = TokenizerPair.load(path)
        ct2 = require_ctranslate2()
        where = resolve_ct2_device(ct2, device)
        engine = ct2.Translator(
            str(path), device=where, compute_type=compute_type, inter_threads=1,
            intra_threads=threads or torch.get_num_threads(),
        )  # fmt: skip
        return cls(engine, tokenizers, cfg, where, path / MODEL_FILE, info)

    def translate(self, lines: Sequence[str], dec: DecodingConfig) -> list[str]:
        """Translate lines; an empty (or whitespace-only) line gives an empty line."""
        return [t.text for t in self.translate_full(lines, dec)]

    def translate_full(self, lines: Sequence[str], dec: DecodingConfig) -> list[Translation]:
        """n-best lists with scores, like Translator.translate_full (log_prob unknown: None)."""
        start = time.perf_counter()
        found, truncated = self._translate(lines, dec)
        seconds = (time.perf_counter() - start) / max(1, len(lines))
        out = [
            Translation(line, seconds=seconds, truncated=cut)
            for line, cut in zip(lines, truncated, strict=True)
        ]
        for t, hyps in zip(out, found, strict=True):
            if t.source.strip():
                t.nbest = [Candidate(text, score, None) for text, score in hyps]
        return out

    def translate_nbest(
        self, lines: Sequence[str], dec: DecodingConfig, nbest: int
    ) -> list[list[tuple[str, float]]]:
        """Up to `nbest` (text, score) per line, best first; an empty line gives [("", 0.0)]."""
        return self._translate(lines, replace(dec, nbest=nbest))[0]

    def _translate(
        self, lines: Sequence[str], dec: DecodingConfig
    ) -> tuple[list[list[tuple[str, float]]], list[bool]]:
        """n-best (text, score) lists and which sources were truncated."""
        limit = self.config.model.max_positions - 1
        cap = limit * MAX_CHARS_PER_TOKEN  # longer text is cut before encoding, as in translate
        keep = [i for i, line in enumerate(lines) if line.strip()]
        pieces = self.tokenizers.src.encode_pieces([lines[i].strip()[:cap] for i in keep])
        truncated = [False] * len(lines)
        for i, p in zip(keep, pieces, strict=True):
            truncated[i] = len(p) > limit or len(lines[i].strip()) > cap
        if any(truncated):
            n = sum(truncated)
            logger.warning(
                "%s longer than %d tokens %s truncated", plural(n, "input line"), limit,
                "was" if n == 1 else "were",
            )  # fmt: skip
        if dec.sampling:
            require_ctranslate2().set_random_seed(dec.seed)
        sources = [p[:limit] for p in pieces]
        found = translate_pieces(self.engine, sources, dec, limit + 1)
        outputs: list[list[tuple[str, float]]] = [[("", 0.0)] for _ in lines]
        texts = iter(self.tokenizers.tgt.decode([self._ids(t) for hyps in found for t, _ in hyps]))
        for i, hyps in zip(keep, found, strict=True):
            outputs[i] = [(_one_line(next(texts)), score) for _, score in hyps]
        return outputs, truncated

    def _ids(self, pieces: Sequence[str]) -> list[int]:
        if not self._piece_ids:
            self._piece_ids = {p: i for i, p in enumerate(vocabulary(self.tokenizers.tgt))}
        return [self._piece_ids.get(p, UNK_ID) for p in pieces]

    def translate_stream(
        self, lines: Iterable[str], dec: DecodingConfig, chunk_size: int = 500
    ) -> Iterator[str]:
        """Translate an iterable chunk by chunk, yielding outputs in input order."""
        chunk: list[str] = []
        for line in lines:
            chunk.append(line.rstrip("\n").rstrip("\r"))
            if len(chunk) >= chunk_size:
                yield from self.translate(chunk, dec)
                chunk = []
        if chunk:
            yield from self.translate(chunk, dec)


def _one_line(text: str) -> str:
    """One output line per input line: byte-fallback pieces can decode to \\n or \\r."""
    return text.replace("\r", " ").replace("\n", " ")
