"""Encoding a cleaned split into token ids, the length/ratio filters, and their statistics.

Length and ratio are measured in sentencepiece tokens (without BOS/EOS), i.e. in the units the
model sees. Train pairs over the limits are dropped; valid/test ids are truncated instead
(unless `data.clean_eval`), so `text/` and `encoded/` keep the same rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]

from mtkit.config.schema import DataConfig
from mtkit.data.clean import check_not_empty
from mtkit.data.rows import CODE, drop_counts, keep, mark
from mtkit.data.tokenizer import (
    BOS_ID,
    EOS_ID,
    MAX_CHARS_PER_TOKEN,
    UNK_ID,
    Tokenizer,
    TokenizerPair,
)
from mtkit.progress import QUIET, Progress


def encode_batch(
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


ENCODED_FEATURES = datasets.Features(
    {
        "src": datasets.Value("string"),
        "tgt": datasets.Value("string"),
        "drop": datasets.Value("int8"),
        "src_ids": datasets.Sequence(datasets.Value("int32")),
        "tgt_ids": datasets.Sequence(datasets.Value("int32")),
        "truncated": datasets.Value("int8"),
    }
)


def length_stats(ids: pa.ChunkedArray, specials: int) -> dict[str, float]:
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


def encode_split(
    split: str,
    ds: datasets.Dataset,
    tokenizers: TokenizerPair,
    data: DataConfig,
    stats: dict[str, Any],
    cache: Path,
    progress: Progress = QUIET,
) -> datasets.Dataset:
    """Add src_ids/tgt_ids; drop (train) or truncate (valid/test) over-long pairs.

    `progress` counts the pairs encoded (in one process; with several, it shows elapsed time).
    """
    # worker start-up costs more than it saves on small splits
    num_proc = data.num_proc if len(ds) >= 10_000 * data.num_proc else None
    with progress.task(f"encoding {split}", total=len(ds), unit="pairs") as task:
        enc = mark(
            ds,
            encode_batch,
            cache,
            f"{split}-encode",
            advance=task.advance if num_proc is None else None,  # workers cannot report
            fn_kwargs={
                "src_tok": tokenizers.src,
                "tgt_tok": tokenizers.tgt,
                "max_len": data.max_len,
                "max_ratio": data.max_ratio,
                "filter_lengths": split == "train" or data.clean_eval,
            },
            features=ENCODED_FEATURES,
            num_proc=num_proc,
        )
        if num_proc is not None:
            task.advance(len(ds))
    counts = drop_counts(enc)
    stats["dropped"].update({k: counts[k] for k in ("too_long", "ratio") if k in counts})
    enc = keep(enc, cache, f"{split}-encode")
    check_not_empty(split, enc, stats, data)
    stats.update(split_stats(enc))
    return enc


def split_stats(enc: datasets.Dataset) -> dict[str, Any]:
    """Kept and truncated pairs, and the length stats of each side, of an encoded split."""
    table = enc.with_format("arrow")
    trunc = table["truncated"].to_numpy(zero_copy_only=False)
    return {
        "kept": len(enc),
        "truncated": int(trunc.sum()),
        "src": length_stats(table["src_ids"], specials=1),
        "tgt": length_stats(table["tgt_ids"], specials=2),
    }
