"""keep_freed_memory: large freed tensors stay in the process for the next step to reuse;
limit_onednn_caches: training keeps no oneDNN primitive per batch shape."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from mtkit.runtime import keep_freed_memory, limit_onednn_caches


def resident_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_a_freed_large_tensor_is_not_handed_back() -> None:
    if not Path("/proc/self/statm").exists() or not keep_freed_memory():
        pytest.skip("needs Linux with glibc")
    x = torch.ones(32 * 2**20)  # 128 MB: above glibc's largest mmap threshold
    before = resident_mb()
    del x
    assert resident_mb() > before - 64  # kept for reuse, not unmapped
    y = torch.ones(24 * 2**20)  # 96 MB, served from the kept block: no new resident pages
    assert resident_mb() < before + 64
    del y


def test_onednn_caches_are_limited_unless_the_user_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    monkeypatch.delenv("LRU_CACHE_CAPACITY", raising=False)
    assert limit_onednn_caches()
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "16"
    assert os.environ["LRU_CACHE_CAPACITY"] == "1"  # 0 crashes ideep
    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "64")
    monkeypatch.delenv("LRU_CACHE_CAPACITY")
    assert not limit_onednn_caches() and "LRU_CACHE_CAPACITY" not in os.environ
