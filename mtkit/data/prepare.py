"""Raw parallel text -> cleaned, tokenised, encoded `datasets` on disk (`mtkit prepare`).

Pipeline (each step streams through Arrow; the corpus is never held in Python lists):

1. read every corpus of a split into a Dataset with columns `src`, `tgt`, `drop` (a reason code);
2. clean: Unicode normalisation (NFC by default), whitespace normalisation, then mark empty,
   src == tgt (optional) and duplicate pairs; invalid UTF-8 / malformed rows were marked in 1;
3. carve valid/test out of train when they are not given (seeded; no sentence shared with train);
4. train sentencepiece on the train split only (or reuse a given one: `tokenizer.model`, or a
   parent run's tokenizer, copied byte for byte); with `data.bidirectional`, append each train
   pair reversed;
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

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from mtkit.config.schema import ConfigError, DataConfig, ExperimentConfig, TokenizerConfig
from mtkit.data.clean import Cleaner, carve, check_not_empty
from mtkit.data.corpora import apply_corpus_options, drop_corpus_column
from mtkit.data.encode import encode_split
from mtkit.data.prepared_dir import (
    check_replaceable,
    fingerprint_of,
    matches,
    remove_stale,
    replace_dir,
)
from mtkit.data.readers import read_split
from mtkit.data.reused_tokenizer import files_digest, load_reused
from mtkit.data.reversed_pairs import add_reversed_pairs
from mtkit.data.rows import DataError, drop_counts, keep, mark
from mtkit.data.sources import Source, resolve_sources, tags
from mtkit.data.stats_table import log_table
from mtkit.data.tokenizer import TokenizerPair, train_tokenizers
from mtkit.errors import plural
from mtkit.progress import QUIET, Progress

logger = logging.getLogger(__name__)


def prepare(
    cfg: ExperimentConfig,
    force: bool = False,
    tokenizers: TokenizerPair | None = None,
    progress: Progress = QUIET,
) -> Path:
    """Build (or reuse) `cfg.data.prepared_dir`; returns it as a Path.

    Unchanged inputs (size + mtime of every file) and data/tokenizer config reuse the existing
    result; `force` rebuilds it anyway. `tokenizers` (a parent run's) are used as they are,
    like a `tokenizer.model`: no tokenizer is trained then. `progress` shows each stage
    (reading, cleaning, tokenizer training, encoding, saving).
    """
    out = Path(cfg.data.prepared_dir)
    reused = tokenizers if tokenizers is not None else reused_tokenizers(cfg)
    sources = resolve_sources(cfg.data)
    fingerprint = fingerprint_of(cfg, sources, reused)
    if not force and matches(out, fingerprint):
        logger.info("%s is up to date; reusing it (`mtkit prepare --force` rebuilds it)", out)
        return out
    check_replaceable(out)
    remove_stale(out)
    work = out.parent / f".{out.name}.tmp-{os.getpid()}"
    work.mkdir(parents=True)
    try:
        with quiet_datasets():
            stats = _build(cfg, sources, work, reused, progress)
        (work / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
        (work / "fingerprint.json").write_text(json.dumps(fingerprint, indent=2) + "\n")
        shutil.rmtree(work / ".cache", ignore_errors=True)
        replace_dir(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out  # `mtkit prepare` says where on stdout (once); the table said what


def build_tokenizers(
    cfg: ExperimentConfig, out_dir: Path, progress: Progress = QUIET
) -> TokenizerPair:
    """Train only the sentencepiece model(s), on the cleaned train split, into `out_dir`.

    This is what `mtkit tokenizer train` runs; `prepare` does the same as its first step.
    (Pairs that `prepare` would later carve out of train for valid/test are included here.)
    With `tokenizer.model` set, that tokenizer is copied instead.
    """
    reused = reused_tokenizers(cfg)
    if reused is not None:
        reused.save(out_dir)
        return reused
    sources = resolve_sources(cfg.data)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = out_dir / f".tokenizer.tmp-{os.getpid()}"
    cache = work / ".cache"
    cache.mkdir(parents=True)
    try:
        with quiet_datasets():
            train, stats = _read_clean(cfg.data, "train", sources["train"], work, progress)
            check_not_empty("train", train, stats, cfg.data)
            train, _ = apply_corpus_options(train, sources["train"], cfg.data.seed, cache)
            symbols = tags(sources["train"])
            tokenizers = _train_tokenizers(cfg.tokenizer, cfg.data, train, cache, symbols, progress)
        tokenizers.save(out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return tokenizers


def reused_tokenizers(cfg: ExperimentConfig) -> TokenizerPair | None:
    """The tokenizer `tokenizer.model` names (ConfigError if unusable), or None: train one."""
    if cfg.tokenizer.model is None:
        return None
    return load_reused(Path(cfg.tokenizer.model), cfg.tokenizer.joint)


def is_prepared(cfg: ExperimentConfig, tokenizers: TokenizerPair | None = None) -> bool:
    """True when `prepared_dir` is complete and was built from the current inputs and config."""
    try:
        sources = resolve_sources(cfg.data)
        reused = tokenizers if tokenizers is not None else reused_tokenizers(cfg)
    except (DataError, ConfigError):
        return False
    return matches(Path(cfg.data.prepared_dir), fingerprint_of(cfg, sources, reused))


def load_stats(prepared_dir: Path) -> dict[str, Any]:
    """The stats.json written by `prepare`."""
    return dict(json.loads((Path(prepared_dir) / "stats.json").read_text(encoding="utf-8")))


@contextlib.contextmanager
def quiet_datasets() -> Iterator[None]:
    """No `datasets` progress bars (tqdm) meanwhile: prepare shows its own, through
    mtkit.progress, only where asked."""
    was_on = not datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_on:
            datasets.enable_progress_bars()


def _read_clean(
    data: DataConfig, split: str, sources: list[Source], work: Path, progress: Progress
) -> tuple[datasets.Dataset, dict[str, Any]]:
    """One split read and cleaned (full cleaning for train, or with `data.clean_eval`), and
    its stats so far (read, dropped)."""
    raw = read_split(data, sources, work, progress)
    full = split == "train" or data.clean_eval
    with progress.task(f"cleaning {split}", total=len(raw), unit="pairs") as task:
        cleaned = mark(raw, Cleaner(data, full), work / ".cache", f"{split}-clean", task.advance)
    stats = {"read": len(raw), "dropped": drop_counts(cleaned)}
    return keep(cleaned, work / ".cache", f"{split}-clean"), stats


def _build(
    cfg: ExperimentConfig,
    sources: dict[str, list[Source]],
    work: Path,
    reused: TokenizerPair | None,
    progress: Progress,
) -> dict[str, Any]:
    """Read, clean, carve, train (or take) the tokenizer, encode, save; returns the stats table."""
    data = cfg.data
    cache = work / ".cache"
    cache.mkdir(parents=True, exist_ok=True)
    stats: dict[str, dict[str, Any]] = {}
    splits: dict[str, datasets.Dataset] = {}
    for split, srcs in sources.items():
        splits[split], stats[split] = _read_clean(data, split, srcs, work, progress)
        check_not_empty(split, splits[split], stats[split], data)
    _carve(data, splits, stats, cache)
    check_not_empty("train", splits["train"], stats["train"], data)
    splits["train"], corpora = apply_corpus_options(
        splits["train"], sources["train"], data.seed, cache
    )
    if corpora:
        stats["train"]["corpora"] = corpora
    symbols = tags(sources["train"])
    if reused is None:
        tokenizers = _train_tokenizers(
            cfg.tokenizer, data, splits["train"], cache, symbols, progress
        )
    else:
        check_tags(reused, symbols)
        tokenizers = reused
        logger.info("using the given tokenizer (%s), not training one", _describe(reused))
    tokenizers.save(work)
    if data.bidirectional:
        stats["train"]["reversed"] = len(splits["train"])
        splits["train"] = add_reversed_pairs(splits["train"])
    encoded = {
        split: encode_split(split, ds, tokenizers, data, stats[split], cache, progress)
        for split, ds in splits.items()
    }
    text = datasets.DatasetDict({k: v.select_columns(["src", "tgt"]) for k, v in encoded.items()})
    ids = datasets.DatasetDict(
        {k: v.select_columns(["src_ids", "tgt_ids"]) for k, v in encoded.items()}
    )
    with progress.stage("saving the prepared data"):
        text.save_to_disk(str(work / "text"))
        ids.save_to_disk(str(work / "encoded"))
    log_table(stats, data)
    return {
        "splits": stats,
        "vocab_size": {"src": tokenizers.src.vocab_size, "tgt": tokenizers.tgt.vocab_size},
    }


def _carve(
    data: DataConfig,
    splits: dict[str, datasets.Dataset],
    stats: dict[str, dict[str, Any]],
    cache: Path,
) -> None:
    """Carve the missing valid/test splits out of train (in place), counting what went where."""
    train = carve(data, splits["train"], splits, cache)
    carved = {k: len(v) for k, v in splits.items() if k not in stats}
    if carved:
        stats["train"]["carved"] = carved
        for split, n in carved.items():
            stats[split] = {"read": n, "dropped": {}, "carved_from": "train"}
            splits[split] = drop_corpus_column(splits[split])
    stats["train"]["dropped"].update(drop_counts(train))
    splits["train"] = keep(train, cache, "train-overlap")


def _train_tokenizers(
    tok: TokenizerConfig,
    data: DataConfig,
    train: datasets.Dataset,
    cache: Path,
    symbols: list[str],
    progress: Progress = QUIET,
) -> TokenizerPair:
    """sentencepiece on the train split, streamed from Arrow; `symbols` (the corpus tags)
    become single pieces of the source model.

    At most `tokenizer.input_sentence_size` sentences per model are sampled here, with
    `data.seed` (a joint model takes both sides of half as many pairs).
    """
    n = tok.input_sentence_size // 2 if tok.joint else tok.input_sentence_size
    if len(train) > n:
        rng = np.random.default_rng(data.seed)
        sample = np.sort(rng.choice(len(train), size=max(n, 1), replace=False))
        logger.info("training the tokenizer on a sample of %d of %d pairs", len(sample), len(train))
        train = train.select(
            sample, indices_cache_file_name=str(cache / "spm-sample.indices.arrow")
        )

    def column(name: str) -> Iterator[str]:
        for batch in train.select_columns([name]).iter(batch_size=10_000):
            yield from batch[name]

    with progress.stage(f"training the {tok.type} tokenizer (sentencepiece)"):
        return train_tokenizers(
            column("src"), column("tgt"), cache, tok, data.src_lang, data.tgt_lang,
            seed=data.seed, src_symbols=symbols,
        )  # fmt: skip


def _describe(pair: TokenizerPair) -> str:
    """'spm.model sha256 1a2b3c4d5e6f, vocab 8000' for log lines."""
    files = ", ".join(f"{name} sha256 {h[:12]}" for name, h in files_digest(pair).items())
    return f"{files}, vocab {pair.src.vocab_size}/{pair.tgt.vocab_size}"


def check_tags(tokenizers: TokenizerPair, symbols: list[str]) -> None:
    """Warn when a corpus tag is not one piece of a reused tokenizer (it still works, as pieces)."""
    for tag in symbols:
        pieces = tokenizers.src.encode_pieces([tag])[0]
        if tag not in pieces:
            logger.warning(
                "tag %s is not one piece of the given tokenizer; it is encoded as %s (%s)",
                tag, plural(len(pieces), "piece"), " ".join(pieces),
            )  # fmt: skip
