"""Batching: token budget, coverage, epoch/seed order, rank sharding, padding, collate shapes
and shift."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import datasets
import numpy as np
import pytest
import torch

from mtkit.data.batching import (
    Batch,
    TokenBatchSampler,
    collate_columns,
    lengths,
    load_prepared,
    load_prepared_text,
    pad,
    token_batches,
)
from mtkit.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from mtkit.errors import MtkitError

rng = np.random.default_rng(0)
SRC_LEN = rng.integers(1, 40, size=500)
TGT_LEN = rng.integers(1, 40, size=500)


def cost(idx: list[int]) -> int:
    return len(idx) * int(SRC_LEN[idx].max() + TGT_LEN[idx].max())


def flat(sampler: TokenBatchSampler) -> list[int]:
    return [i for b in sampler for i in b]


# --------------------------------------------------------------------------- sampler


@pytest.mark.parametrize("shuffle", [True, False])
def test_budget_respected_and_every_example_once(shuffle: bool) -> None:
    sampler = TokenBatchSampler(SRC_LEN, TGT_LEN, max_tokens=300, shuffle=shuffle, seed=1)
    got = list(sampler)
    assert all(cost(b) <= 300 for b in got)
    assert sorted(i for b in got for i in b) == list(range(500))
    assert len(sampler) == len(got)


def test_batches_are_filled_close_to_the_budget() -> None:
    sampler = TokenBatchSampler(SRC_LEN, TGT_LEN, max_tokens=300, seed=1)
    used = sum(cost(b) for b in sampler)
    assert used > 0.8 * len(sampler) * 300  # length grouping keeps padding low


def test_similar_lengths_are_grouped() -> None:
    sampler = TokenBatchSampler(SRC_LEN, TGT_LEN, max_tokens=300, seed=1)
    spread = np.mean([SRC_LEN[b].max() - SRC_LEN[b].min() for b in sampler])
    assert spread < 3


def test_over_long_example_gets_its_own_batch() -> None:
    src = np.array([5, 5, 200, 5])
    tgt = np.array([5, 5, 200, 5])
    got = list(TokenBatchSampler(src, tgt, max_tokens=50, shuffle=False))
    assert [2] in got and sorted(i for b in got for i in b) == [0, 1, 2, 3]


def test_order_depends_on_epoch_and_seed_only() -> None:
    a = TokenBatchSampler(SRC_LEN, TGT_LEN, max_tokens=300, seed=3)
    b = TokenBatchSampler(SRC_LEN, TGT_LEN, max_tokens=300, seed=3)
    c = TokenBatchSampler(SRC_LEN, TGT_LEN, max_tokens=300, seed=4)
    epoch0 = list(a)
    assert list(b) == epoch0  # same seed, same epoch
    assert list(a) == epoch0  # iterating again does not advance the epoch
    assert list(c) != epoch0
    a.set_epoch(1)
    epoch1 = list(a)
    assert epoch1 != epoch0 and sorted(map(sorted, epoch1)) != sorted(map(sorted, epoch0))
    assert len(epoch1) == len(epoch0)  # the batch count never changes between epochs
    a.set_epoch(0)
    assert list(a) == epoch0


def test_no_shuffle_is_length_sorted_and_deterministic() -> None:
    a = list(TokenBatchSampler(SRC_LEN, TGT_LEN, max_tokens=300, shuffle=False))
    a_flat = [i for b in a for i in b]
    assert list(SRC_LEN[a_flat]) == sorted(SRC_LEN)
    s = TokenBatchSampler(SRC_LEN, TGT_LEN, max_tokens=300, shuffle=False)
    s.set_epoch(5)
    assert list(s) == a


@pytest.mark.parametrize("world_size", [2, 3, 7])
def test_ranks_are_disjoint_equal_and_cover_everything(world_size: int) -> None:
    shards = []
    for rank in range(world_size):
        s = TokenBatchSampler(SRC_LEN, TGT_LEN, 300, seed=2, rank=rank, world_size=world_size)
        s.set_epoch(4)
        shards.append(list(s))
        assert len(s) == len(shards[-1])
        assert all(cost(b) <= 300 for b in shards[-1])
    assert len({len(x) for x in shards}) == 1  # every rank runs the same number of steps
    seen = [i for shard in shards for b in shard for i in b]
    assert sorted(seen) == list(range(500))  # disjoint and complete


def test_fewer_examples_than_ranks_still_gives_every_rank_a_batch() -> None:
    per_rank = [
        list(TokenBatchSampler([3, 4], [3, 4], 100, rank=r, world_size=3)) for r in range(3)
    ]
    assert [len(x) for x in per_rank] == [1, 1, 1]
    assert {i for x in per_rank for b in x for i in b} == {0, 1}


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="rank"):
        TokenBatchSampler(SRC_LEN, TGT_LEN, 300, rank=2, world_size=2)
    with pytest.raises(ValueError, match="max_tokens"):
        TokenBatchSampler(SRC_LEN, TGT_LEN, 0)
    with pytest.raises(ValueError, match="equal length"):
        TokenBatchSampler(SRC_LEN, TGT_LEN[:-1], 300)


# --------------------------------------------------------------------------- translation batches


def test_token_batches_cover_every_index_once_within_budget() -> None:
    src = [5, 1, 9, 3, 3, 7, 2, 8]
    got = token_batches(src, max_tokens=16)
    assert sorted(i for b in got for i in b) == list(range(len(src)))
    for b in got:
        assert len(b) == 1 or max(src[i] for i in b) * len(b) <= 16
    flat_lengths = [src[i] for b in got for i in b]
    assert flat_lengths == sorted(flat_lengths)  # sorted by source length
    assert got[0] == [1, 6, 3, 4]  # equal lengths (3 and 4) keep their input order


def test_token_batches_are_the_samplers_batches() -> None:
    """One cost formula: translation's batches are the unshuffled sampler's batches."""
    sampler = TokenBatchSampler(SRC_LEN, TGT_LEN, max_tokens=300, shuffle=False)
    assert token_batches(SRC_LEN.tolist(), 300, TGT_LEN.tolist()) == list(sampler)
    no_tgt = TokenBatchSampler(SRC_LEN, np.zeros_like(SRC_LEN), max_tokens=300, shuffle=False)
    assert token_batches(SRC_LEN.tolist(), 300) == list(no_tgt)
    assert token_batches([], 300) == []


def test_pad_right_pads_with_the_pad_id() -> None:
    out = pad([[5, 6, 7], [8]])
    assert out.dtype == torch.long and out.tolist() == [[5, 6, 7], [8, PAD_ID, PAD_ID]]
    assert pad([[5], [6, 7]], pad_id=9).tolist() == [[5, 9], [6, 7]]


# --------------------------------------------------------------------------- collate


def test_collate_shapes_padding_and_shift() -> None:
    b = collate_columns(
        [[5, 6, 7, EOS_ID], [5, EOS_ID]], [[BOS_ID, 8, 9, EOS_ID], [BOS_ID, 8, 9, 10, 11, EOS_ID]]
    )
    assert b.src.shape == (2, 4) and b.src.dtype == torch.long
    assert b.tgt_in.shape == b.tgt_out.shape == (2, 5)
    assert b.src[1].tolist() == [5, EOS_ID, PAD_ID, PAD_ID]
    assert b.src_mask.dtype == torch.bool
    assert b.src_mask.tolist() == [[True] * 4, [True, True, False, False]]
    assert b.tgt_in[0].tolist() == [BOS_ID, 8, 9, EOS_ID, PAD_ID]
    assert b.tgt_out[0].tolist() == [8, 9, EOS_ID, PAD_ID, PAD_ID]
    assert b.tgt_in[1].tolist() == [BOS_ID, 8, 9, 10, 11]
    assert b.tgt_out[1].tolist() == [8, 9, 10, 11, EOS_ID]
    assert (b.n_src_tokens, b.n_tgt_tokens) == (6, 8)
    assert len(b) == 2


def test_collate_uses_the_given_pad_id() -> None:
    b = collate_columns([[5], [5, 6]], [[2, 3], [2, 7, 3]], 9)
    assert b.src[0].tolist() == [5, 9] and b.src_mask[0].tolist() == [True, False]
    assert b.tgt_out[0].tolist() == [3, 9] and b.n_tgt_tokens == 3


def test_batch_to_moves_every_tensor() -> None:
    b = collate_columns([[5, 3]], [[2, 5, 3]])
    moved = b.to("meta")
    assert isinstance(moved, Batch)
    assert {t.device.type for t in (moved.src, moved.src_mask, moved.tgt_in, moved.tgt_out)} == {
        "meta"
    }
    assert moved.n_tgt_tokens == b.n_tgt_tokens


# --------------------------------------------------------------------------- datasets


@pytest.fixture()
def prepared(tmp_path: Path) -> Path:
    """A tiny prepared_dir written directly (prepare itself is tested in test_prepare.py)."""
    r = np.random.default_rng(1)
    src = [[*r.integers(4, 50, size=n).tolist(), EOS_ID] for n in r.integers(1, 20, size=120)]
    tgt = [
        [BOS_ID, *r.integers(4, 50, size=n).tolist(), EOS_ID] for n in r.integers(1, 20, size=120)
    ]
    enc = datasets.Dataset.from_dict({"src_ids": src, "tgt_ids": tgt})
    datasets.DatasetDict({"train": enc}).save_to_disk(str(tmp_path / "encoded"))
    text = datasets.Dataset.from_dict({"src": ["a"] * 120, "tgt": ["b"] * 120})
    datasets.DatasetDict({"train": text}).save_to_disk(str(tmp_path / "text"))
    return tmp_path


def test_lengths_come_from_arrow(prepared: Path) -> None:
    train = load_prepared(prepared)["train"]
    src_len, tgt_len = lengths(train)
    assert src_len.tolist() == [len(x) for x in train["src_ids"]]
    assert tgt_len.tolist() == [len(x) - 1 for x in train["tgt_ids"]]


def epoch_batches(split: datasets.Dataset, rank: int = 0, world_size: int = 1) -> list[Batch]:
    """One shuffled epoch of a split's padded batches, drawn as the training loop draws them."""
    src_len, tgt_len = lengths(split)
    sampler = TokenBatchSampler(src_len, tgt_len, 200, seed=0, rank=rank, world_size=world_size)
    sampler.set_epoch(1)
    rows = [split[indices] for indices in sampler]
    return [collate_columns(r["src_ids"], r["tgt_ids"]) for r in rows]


def test_batches_cover_the_split_within_budget(prepared: Path) -> None:
    train = load_prepared(prepared)["train"]
    src_rows = {tuple(x) for x in train["src_ids"]}
    n = 0
    for b in epoch_batches(train):
        assert b.src.numel() + b.tgt_in.numel() <= 200
        for row, mask in zip(b.src.tolist(), b.src_mask.tolist(), strict=True):
            assert tuple(t for t, m in zip(row, mask, strict=True) if m) in src_rows
        n += len(b)
    assert n == len(train)
    ranks = [epoch_batches(train, rank=r, world_size=2) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) and sum(len(b) for r in ranks for b in r) == 120


def test_load_prepared_errors_name_the_directory(tmp_path: Path, prepared: Path) -> None:
    assert load_prepared_text(prepared)["train"].column_names == ["src", "tgt"]
    with pytest.raises(MtkitError, match=r"nothing-here: no prepared data found"):
        load_prepared(tmp_path / "nothing-here")
