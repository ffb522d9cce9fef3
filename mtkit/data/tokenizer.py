"""Thin sentencepiece wrapper: train, load, encode/decode, and the special ids.

Every model is trained with explicit ids (sentencepiece's default pad_id is -1, i.e. no pad):
PAD_ID=0, UNK_ID=1, BOS_ID=2, EOS_ID=3. `encode` never adds BOS/EOS; prepare/translate add them.
No torch import here.
"""

from __future__ import annotations

import io
import logging
import random
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sentencepiece as spm

from mtkit.config.schema import ConfigError, TokenizerConfig
from mtkit.errors import MtkitError
from mtkit.files import atomic_write_bytes, read_lines

logger = logging.getLogger(__name__)

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
SPECIAL_IDS = frozenset({PAD_ID, UNK_ID, BOS_ID, EOS_ID})
_SKIP_IDS = frozenset({PAD_ID, BOS_ID, EOS_ID})  # dropped by decode
# sentencepiece's list calls start a thread pool per call: ~0.1 ms on an idle CPU, 3-4 ms when
# every core is busy (a server's request, one sentence). Fewer lines go one call per line.
_THREAD_POOL_MIN = 64
# sentencepiece pieces are at most 16 characters, so a line of over MAX_CHARS_PER_TOKEN * N
# characters has over N tokens (with 4x slack for normalisation): it can be cut before encoding.
MAX_CHARS_PER_TOKEN = 64

JOINT_FILE = "spm.model"
SRC_FILE = "spm.src.model"
TGT_FILE = "spm.tgt.model"


class TokenizerError(MtkitError):
    """A sentencepiece model that cannot be read or trained; the message names the file/key."""


class Tokenizer:
    """One sentencepiece model. Picklable (it travels to `datasets.map` worker processes)."""

    def __init__(self, model_proto: bytes, name: str = "<bytes>") -> None:
        self.name = name  # where the model came from, for error messages
        self._proto = model_proto
        self._sp = _processor(model_proto, name)

    @classmethod
    def load(cls, path: Path) -> Tokenizer:
        """Read a .model file; a missing or corrupt file raises TokenizerError naming it."""
        path = Path(path)
        if not path.is_file():
            what = "is a directory" if path.is_dir() else "not found"
            raise TokenizerError(f"{path}: sentencepiece model {what}")
        return cls(path.read_bytes(), name=str(path))

    @property
    def vocab_size(self) -> int:
        return int(self._sp.get_piece_size())

    def model_proto(self) -> bytes:
        """The serialized model, as written to spm.model."""
        return self._proto

    def encode(self, lines: list[str]) -> list[list[int]]:
        """Token ids for each line, without BOS/EOS."""
        if len(lines) < _THREAD_POOL_MIN:
            return [self._sp.encode(line, out_type=int) for line in lines]
        return [list(ids) for ids in self._sp.encode(list(lines), out_type=int)]

    def encode_sampled(self, lines: list[str], alpha: float, seed: int) -> list[list[int]]:
        """Randomly segmented token ids (subword regularisation), the same for the same seed.

        BPE models drop each merge with probability `alpha` (BPE-dropout); unigram models
        sample from all segmentations with p ~ P(x)^alpha (Kudo 2018). The ids decode to the
        same text as `encode`'s. sentencepiece's generator is process-wide: it is seeded here,
        right before the one call that uses it (one thread, so the draws are in line order).
        """
        spm.set_random_generator_seed(seed)
        out = self._sp.encode(
            list(lines), out_type=int, enable_sampling=True, alpha=alpha, nbest_size=-1,
            num_threads=1,
        )  # fmt: skip
        return [list(ids) for ids in out]

    def encode_pieces(self, lines: list[str]) -> list[list[str]]:
        """Subword pieces for each line (for inspection and `mtkit tokenizer encode`)."""
        return [list(p) for p in self._sp.encode(list(lines), out_type=str)]

    def decode(self, ids: list[list[int]]) -> list[str]:
        """Detokenised text for each id list.

        PAD/BOS/EOS are skipped; UNK comes out as sentencepiece's " \u2047 " marker so unknown
        words stay visible in translations.
        """
        clean = [[int(i) for i in seq if int(i) not in _SKIP_IDS] for seq in ids]
        if len(clean) < _THREAD_POOL_MIN:
            return [str(self._sp.decode(seq)) for seq in clean]
        return [str(s) for s in self._sp.decode(clean)]

    def decode_pieces(self, pieces: list[list[str]]) -> list[str]:
        """Detokenised text for each list of subword pieces."""
        return [str(s) for s in self._sp.decode_pieces(pieces)]

    def id_to_piece(self, i: int) -> str:
        return str(self._sp.id_to_piece(i))

    def __getstate__(self) -> dict[str, Any]:
        return {"name": self.name, "proto": self._proto}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.name = state["name"]
        self._proto = state["proto"]
        self._sp = _processor(self._proto, self.name)

    def __repr__(self) -> str:
        return f"Tokenizer({self.name!r}, vocab_size={self.vocab_size})"


def _processor(model_proto: bytes, name: str) -> spm.SentencePieceProcessor:
    try:
        sp = spm.SentencePieceProcessor(model_proto=model_proto)
    except (RuntimeError, OSError):
        raise TokenizerError(f"{name}: not a valid sentencepiece model") from None
    ids = (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id())
    if ids != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
        raise TokenizerError(
            f"{name}: expected special ids pad/unk/bos/eos = 0/1/2/3, got {'/'.join(map(str, ids))}"
            " (train it with mtkit, or with pad_id=0 unk_id=1 bos_id=2 eos_id=3)"
        )
    return sp


@dataclass
class TokenizerPair:
    """Source and target tokenizers; `src is tgt` when the vocabulary is joint."""

    src: Tokenizer
    tgt: Tokenizer

    @property
    def joint(self) -> bool:
        return self.src is self.tgt

    @classmethod
    def load(cls, directory: Path) -> TokenizerPair:
        """Read spm.model (joint) or spm.src.model + spm.tgt.model from `directory`."""
        directory = Path(directory)
        if (directory / JOINT_FILE).exists():
            tok = Tokenizer.load(directory / JOINT_FILE)
            return cls(tok, tok)
        if (directory / SRC_FILE).exists() or (directory / TGT_FILE).exists():
            return cls(Tokenizer.load(directory / SRC_FILE), Tokenizer.load(directory / TGT_FILE))
        raise TokenizerError(
            f"{directory}: no sentencepiece model found (expected {JOINT_FILE}, "
            f"or {SRC_FILE} and {TGT_FILE}); run `mtkit prepare` first"
        )

    def model_files(self) -> dict[str, bytes]:
        """File name -> serialized model, so a checkpoint can embed the tokenizers."""
        if self.joint:
            return {JOINT_FILE: self.src.model_proto()}
        return {SRC_FILE: self.src.model_proto(), TGT_FILE: self.tgt.model_proto()}

    @classmethod
    def from_model_files(cls, files: dict[str, bytes]) -> TokenizerPair:
        """Inverse of `model_files`."""
        if JOINT_FILE in files:
            tok = Tokenizer(files[JOINT_FILE], name=JOINT_FILE)
            return cls(tok, tok)
        missing = [f for f in (SRC_FILE, TGT_FILE) if f not in files]
        if missing:
            found = ", ".join(files) or "none"
            raise TokenizerError(f"tokenizer files: missing {', '.join(missing)} (found: {found})")
        return cls(Tokenizer(files[SRC_FILE], SRC_FILE), Tokenizer(files[TGT_FILE], TGT_FILE))

    def save(self, directory: Path) -> None:
        """Write the .model file(s) into `directory` (a run dir, a checkpoint dir)."""
        for name, data in self.model_files().items():
            atomic_write_bytes(Path(directory) / name, data)


# --------------------------------------------------------------------------- training


def text_lines(source: Iterable[str] | Path) -> Iterator[str]:
    """Lines of a file (`files.read_lines`: split on \\n only) or of an iterable, newline-free.

    A file line that is not UTF-8 raises InputFileError naming file:line.
    """
    if isinstance(source, (str, Path)):
        for line in read_lines(Path(source)):
            yield line.replace("\r", " ")
    else:
        for line in source:
            yield line.replace("\n", " ").replace("\r", " ")


def train_sentencepiece(
    sentences: Iterable[str] | Path,
    cfg: TokenizerConfig,
    name: str,
    symbols: Sequence[str] = (),
) -> Tokenizer:
    """Train one sentencepiece model in memory from sentences (an iterable or a text file).

    `symbols` (e.g. a back-translation tag "<BT>") are each kept as one piece.

    sentencepiece samples at most `cfg.input_sentence_size` of them (shuffled); its own stderr
    logging is switched off. "Vocabulary size too high" becomes a TokenizerError that names
    `tokenizer.vocab_size` and the largest size the corpus supports.
    """
    out = io.BytesIO()
    lines, sample_size = text_lines(sentences), cfg.input_sentence_size
    if sample_size <= _SPM_MIN_SAMPLE:  # sentencepiece refuses to sample this few: do it here
        lines, sample_size = iter(_reservoir(lines, sample_size, random.Random(0))), 0
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=lines,
            model_writer=out,
            model_type=cfg.type,
            vocab_size=cfg.vocab_size,
            character_coverage=cfg.character_coverage,
            byte_fallback=cfg.byte_fallback,
            input_sentence_size=sample_size,
            shuffle_input_sentence=True,
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            pad_piece="<pad>",
            user_defined_symbols=list(symbols),
            minloglevel=2,  # quiet: sentencepiece logs every step to stderr by default
            num_threads=1,
        )
    except RuntimeError as e:
        raise _training_error(e, cfg, name) from None
    return Tokenizer(out.getvalue(), name=name)


_SPM_MIN_SAMPLE = 100  # sentencepiece's input_sentence_size must be 0 or above this


def _reservoir(lines: Iterator[str], k: int, rng: random.Random) -> list[str]:
    """A uniform sample of at most k lines (Algorithm R), for small k."""
    sample: list[str] = []
    for i, line in enumerate(lines):
        if i < k:
            sample.append(line)
        else:
            j = rng.randint(0, i)
            if j < k:
                sample[j] = line
    return sample


def _training_error(e: RuntimeError, cfg: TokenizerConfig, name: str) -> Exception:
    msg = str(e)
    m = re.search(r"Vocabulary size too high \((\d+)\).*?<= (\d+)", msg)
    if m:
        return ConfigError(
            f"tokenizer.vocab_size: {cfg.vocab_size} is too large for the {name} training text; "
            f"sentencepiece allows at most {m.group(2)} (set tokenizer.vocab_size <= {m.group(2)} "
            "or use more data)"
        )
    if "Vocabulary size is smaller than required_chars" in msg:
        return ConfigError(
            f"tokenizer.vocab_size: {cfg.vocab_size} is smaller than the number of distinct "
            f"characters in the {name} training text; raise it, or lower "
            "tokenizer.character_coverage"
        )
    detail = msg.split("] ", 1)[-1].strip() or msg.strip()
    return TokenizerError(f"sentencepiece training failed for {name}: {detail}")


def train_tokenizers(
    train_src: Iterable[str] | Path,
    train_tgt: Iterable[str] | Path,
    out_dir: Path,
    cfg: TokenizerConfig,
    src_lang: str,
    tgt_lang: str,
    *,
    seed: int | None = None,
    src_symbols: Sequence[str] = (),
) -> TokenizerPair:
    """Train a joint model (spm.model) or one per side (spm.src.model, spm.tgt.model).

    Pass the training split only. sentencepiece samples at most `cfg.input_sentence_size`
    sentences per model (for a joint model, from both sides together). The model files are
    written into `out_dir`. `seed` fixes sentencepiece's sampling (the default: its own seed).
    `src_symbols` (source tags) are single pieces of the source (or joint) model.
    """
    if seed is not None:
        spm.set_random_generator_seed(seed)
    if cfg.joint:
        both = _chain(text_lines(train_src), text_lines(train_tgt))
        tok = train_sentencepiece(both, cfg, f"joint {src_lang}+{tgt_lang}", src_symbols)
        pair = TokenizerPair(tok, tok)
    else:
        pair = TokenizerPair(
            train_sentencepiece(train_src, cfg, f"source ({src_lang})", src_symbols),
            train_sentencepiece(train_tgt, cfg, name=f"target ({tgt_lang})"),
        )
    pair.save(out_dir)
    logger.info(
        "trained %s: vocab %d/%d",
        f"a joint {cfg.type} tokenizer" if pair.joint else f"separate {cfg.type} tokenizers",
        pair.src.vocab_size,
        pair.tgt.vocab_size,
    )
    return pair


def _chain(*its: Iterator[str]) -> Iterator[str]:
    for it in its:
        yield from it
