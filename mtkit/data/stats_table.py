"""The table `prepare` logs: per split, pairs read and kept, token statistics, and why the rest
went, so that every row adds up (read - carved - removed +/- weights + reversed = kept).

A legend line explains each removal reason that occurs (stats.json keeps the short names).
"""

from __future__ import annotations

import logging
from typing import Any

from mtkit.config.schema import DataConfig

logger = logging.getLogger(__name__)

ORDER = ("train", "valid", "test")


def reasons(data: DataConfig) -> dict[str, str]:
    """What each removal reason of rows.REASONS means, for the legend."""
    return {
        "invalid_utf8": "a line that is not valid UTF-8",
        "malformed": "a row with missing columns or a NUL byte",
        "empty": "an empty source or target",
        "same": "the source equals the target (data.drop_same)",
        "duplicate": "a repeat of an earlier pair (data.dedup)",
        "overlap": "a train pair sharing a sentence with a carved valid/test pair (removed so "
        "that no evaluation sentence is trained on)",
        "too_long": f"more than data.max_len={data.max_len} tokens on a side",
        "ratio": f"token lengths differing by more than data.max_ratio={data.max_ratio:g}x",
    }


def removals(s: dict[str, Any]) -> str:
    """The last column of a split's row: carved, removed (by reason), reweighted, reversed,
    truncated."""
    parts = [f"carved {n} as {split}" for split, n in s.get("carved", {}).items()]
    parts += [f"{reason} {n}" for reason, n in s["dropped"].items()]
    weighted = sum(c["sampled"] - c["pairs"] for c in s.get("corpora", []))
    if weighted:
        parts.append(f"weights {weighted:+d}")
    if s.get("reversed"):
        parts.append(f"reversed +{s['reversed']}")
    text = ", ".join(parts) or "-"
    if s.get("carved_from"):
        text += f" (carved from {s['carved_from']})"
    if s.get("truncated"):
        text += f"; truncated {s['truncated']}"
    return text


def log_table(stats: dict[str, dict[str, Any]], data: DataConfig) -> None:
    """One log line per split (train, valid, test), then one per removal reason that occurs."""
    side = f"{'tokens':>9} {'mean/max':>10} {'unk%':>6}"
    header = f"{'split':<6} {'read':>9} {'kept':>9} | src {side} | tgt {side} | removed"
    logger.info(header)
    splits = sorted(stats, key=lambda k: ORDER.index(k) if k in ORDER else len(ORDER))
    for split in splits:
        s = stats[split]
        cells = [f"{split:<6} {s['read']:>9} {s['kept']:>9}"]
        for name in ("src", "tgt"):
            x = s[name]
            length = f"{x['mean_len']:.1f}/{x['max_len']}"
            cells.append(f"{name} {x['tokens']:>9} {length:>10} {100 * x['unk_share']:>6.2f}")
        logger.info(" | ".join([*cells, removals(s)]))
    meaning = reasons(data)
    seen = dict.fromkeys(r for s in stats.values() for r in s["dropped"])
    for reason in seen:
        logger.info("  %s: %s", reason, meaning.get(reason, reason))
    if any(s.get("truncated") for s in stats.values()):
        logger.info(
            "  truncated: valid/test pairs over data.max_len tokens, kept with their ids cut "
            "(their text stays whole for BLEU)"
        )
