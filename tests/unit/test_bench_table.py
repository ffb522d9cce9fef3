"""`make bench` with two precisions: the argument, and the side-by-side table with its ratios."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from benchmarks.bench import precision_list
from benchmarks.bench_table import format_table


def s(median: float) -> dict[str, float]:
    return {"median": median, "min": median, "max": median, "n": 1}


def train_entry(tokens_per_s: float, peak_rss_mb: float) -> dict[str, Any]:
    return {
        "tokens_per_s": s(tokens_per_s), "flops_per_s": s(2e10), "peak_flops_per_s": s(3e10),
        "mfu": s(0.7), "flops_per_token": s(2.3e7), "step_s": s(1.0), "padding_share": s(0.01),
        "host_share": s(0.003), "peak_rss_mb": peak_rss_mb, "rss_steps": 23,
        "rss_growth_mb": 1.0, "rss_growth_second_half_mb": 0.0, "timed_steps": 33,
        "valid_loss": 6.5,
    }  # fmt: skip


def test_precision_list() -> None:
    assert precision_list("float32, bfloat16,float32") == ["float32", "bfloat16"]
    for bad in ("float16", "", "fp32"):
        with pytest.raises(argparse.ArgumentTypeError):
            precision_list(bad)


def test_table_puts_precisions_side_by_side_with_ratios() -> None:
    results = {
        "meta": {
            "torch": "2.x", "device": "cpu", "threads": 1, "cpu_model": "AMD EPYC",
            "load_avg_start": [1.0], "load_avg_end": [1.0], "repeats": 5,
            "precision": "float32,bfloat16", "precisions": ["float32", "bfloat16"],
            "bf16": {"native": "AVX512_BF16", "matmul_speedup": 2.1, "auto": "bfloat16",
                     "reason": "CPU has AVX512_BF16, bf16 matmul 2.1x fp32"},
        },
        "train": {"float32": train_entry(1000, 1300), "bfloat16": train_entry(2000, 1250)},
    }  # fmt: skip
    table = format_table(results)
    assert "bf16 support: AVX512_BF16 | precision auto -> bfloat16" in table
    assert "float32" in table.splitlines()[3] and "bfloat16/float32" in table.splitlines()[3]
    tokens = next(line for line in table.splitlines() if line.startswith("train tokens/s"))
    assert tokens.split()[-1] == "2.00x" and "1,000" in tokens and "2,000" in tokens
    rss = next(line for line in table.splitlines() if line.startswith("train peak RSS"))
    assert rss.split()[-1] == "0.96x"


def test_mfu_above_one_is_not_printed_as_a_percentage() -> None:
    """bf16 on a CPU without native bf16: the square-matmul probe ran slower than the model."""
    slow_probe = train_entry(100, 800) | {"mfu": s(6.95)}
    results = {
        "meta": {
            "torch": "2.x", "device": "cpu", "threads": 1, "cpu_model": "AMD EPYC",
            "load_avg_start": [1.0], "load_avg_end": [1.0], "repeats": 3,
            "precision": "float32,bfloat16", "precisions": ["float32", "bfloat16"],
            "bf16": {"native": None, "matmul_speedup": 0.004, "auto": "float32",
                     "reason": "CPU has no AVX512_BF16 or AMX (bf16 would be slow)"},
        },
        "train": {"float32": train_entry(2500, 850), "bfloat16": slow_probe},
    }  # fmt: skip
    mfu = next(line for line in format_table(results).splitlines() if "MFU" in line)
    assert "70.0%" in mfu and "695" not in mfu and "n/a (peak probe slower" in mfu
