"""Subword regularisation: alpha 0 rebuilds the prepared ids; alpha > 0 samples, seeded."""

from __future__ import annotations

from pathlib import Path

import pytest

from mtkit.config.load import config_from_dict
from mtkit.config.schema import ConfigError
from mtkit.data.batching import Batch, TokenBatchSampler, lengths, load_prepared, load_prepared_text
from mtkit.data.prepare import is_prepared
from mtkit.data.sampling import SubwordSampler, position_seed
from mtkit.data.tokenizer import BOS_ID, EOS_ID, TokenizerPair
from tests.tiny_corpus import make_cfg, run

ROWS = list(range(0, 120, 3))


TOKENIZERS = {
    "bpe": {"type": "bpe", "vocab_size": 80},
    "unigram": {"type": "unigram", "vocab_size": 60},
}


@pytest.fixture(scope="module", params=list(TOKENIZERS))
def prepared(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tmp/prepared, built with the tokenizer of the directory's name (bpe0, unigram0)."""
    tmp = tmp_path_factory.mktemp(request.param)
    run(tmp, tokenizer=TOKENIZERS[request.param])
    return tmp


def sampler(tmp: Path, alpha: float, max_len: int = 100) -> SubwordSampler:
    text = load_prepared_text(tmp / "prepared")["train"]
    tokenizers = TokenizerPair.load(tmp / "prepared")
    return SubwordSampler(tokenizers, text, alpha, max_len, seed=1234)


def test_alpha_zero_gives_the_prepared_ids(prepared: Path) -> None:
    encoded = load_prepared(prepared / "prepared")["train"][:]
    src, tgt = sampler(prepared, 0.0).ids(0)
    assert src == encoded["src_ids"] and tgt == encoded["tgt_ids"]


def test_sampled_segmentations_differ_and_decode_to_the_same_text(prepared: Path) -> None:
    s = sampler(prepared, 0.3)
    plain_src, plain_tgt = sampler(prepared, 0.0).ids(0)
    src, tgt = s.ids(0)
    assert src != plain_src and tgt != plain_tgt
    assert sum(map(len, src)) > sum(map(len, plain_src))  # dropped merges: more pieces
    text = load_prepared_text(prepared / "prepared")["train"][:]
    tok = s.tokenizers
    assert tok.src.decode(src) == text["src"] and tok.tgt.decode(tgt) == text["tgt"]
    assert all(t[0] == BOS_ID and t[-1] == EOS_ID for t in tgt)
    assert all(x[-1] == EOS_ID for x in src)


def test_the_same_epoch_gives_the_same_segmentation(prepared: Path) -> None:
    """Resuming rebuilds an epoch from its number alone, whatever was sampled in between."""
    s = sampler(prepared, 0.3)
    first = s.ids(2)
    assert s.ids(3) != first
    assert s.ids(2) == first
    assert sampler(prepared, 0.3).ids(2) == first


def test_sampled_ids_are_cut_to_max_len(prepared: Path) -> None:
    src, tgt = sampler(prepared, 0.5, max_len=4).ids(0)
    assert max(map(len, src)) == 4 + 1 and max(map(len, tgt)) == 4 + 2


def padded_cost(batch: Batch) -> int:
    """What the token budget counts: rows x (src_len + tgt_len), padding included."""
    return len(batch) * (batch.src.shape[1] + batch.tgt_in.shape[1])


@pytest.mark.parametrize("world_size", [1, 2])
def test_an_epoch_is_planned_on_its_sampled_lengths(prepared: Path, world_size: int) -> None:
    """Every row once per epoch, every batch within the budget on the sampled lengths."""
    budget = 120
    plain = load_prepared(prepared / "prepared")["train"]
    like = TokenBatchSampler(*lengths(plain), budget, seed=1234, world_size=world_size)
    ranks = [
        sampler(prepared, 0.3).epoch(1, like=TokenBatchSampler(*lengths(plain), budget,
                                     seed=1234, rank=r, world_size=world_size))
        for r in range(world_size)
    ]  # fmt: skip
    rows = sorted(i for e in ranks for b in e.sampler for i in b)
    assert rows == list(range(len(plain)))
    for e in ranks:
        assert len(e.sampler) == len(ranks[0].sampler) > 0
        for indices in e.sampler:
            batch = e.batch(indices)
            assert len(indices) == 1 or padded_cost(batch) <= budget
            assert batch.n_tgt_tokens == sum(len(e.tgt[i]) - 1 for i in indices)
    # the plan of the prepared (shorter) lengths, filled with sampled ids, breaks the budget
    like.set_epoch(1)
    over = [padded_cost(ranks[0].batch(b)) for b in like if len(b) > 1]
    assert max(over) > budget


def test_position_seed_depends_on_every_part() -> None:
    seeds = {position_seed(1, 0, 1, 0), position_seed(2, 0, 1, 0), position_seed(1, 1, 1, 0),
             position_seed(1, 0, 2, 0), position_seed(1, 0, 1, 1)}  # fmt: skip
    assert len(seeds) == 5 and all(0 <= s < 2**32 - 1 for s in seeds)


def test_sampling_alpha_does_not_invalidate_the_prepared_data(prepared: Path) -> None:
    tokenizer = TOKENIZERS[prepared.name.rstrip("0123456789")]
    assert is_prepared(make_cfg(prepared, tokenizer=tokenizer))
    assert is_prepared(make_cfg(prepared, tokenizer={**tokenizer, "sampling_alpha": 0.1}))


@pytest.mark.parametrize(
    ("tokenizer", "message"),
    [
        ({"sampling_alpha": -0.1}, "tokenizer.sampling_alpha: expected zero or more"),
        ({"sampling_alpha": 1.0}, "tokenizer.sampling_alpha: expected less than 1 for bpe"),
    ],
)
def test_bad_sampling_alpha_is_rejected(tokenizer: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"tokenizer": tokenizer})


def test_unigram_accepts_alpha_above_one() -> None:
    cfg = config_from_dict({"tokenizer": {"type": "unigram", "sampling_alpha": 1.5}})
    assert cfg.tokenizer.sampling_alpha == 1.5
