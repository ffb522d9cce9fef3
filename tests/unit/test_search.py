"""Search tests on a tiny random Transformer and on stub models with fixed log-probs."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from typing import Any

import pytest
import torch
from torch import Tensor

from mtkit.config.schema import DecodingConfig, ModelConfig
from mtkit.model.cache import DecoderCache
from mtkit.model.masks import pad_mask
from mtkit.model.transformer import LogSoftmaxKernel, Transformer
from mtkit.search.beam import beam_search, top_candidates
from mtkit.search.common import (
    Hypothesis,
    chunk_maxima,
    constrain_,
    gnmt_penalty,
    row_argmax,
)
from mtkit.search.greedy import greedy_search, sample

PAD, BOS, EOS = 0, 1, 2
VOCAB = 20
IDS: dict[str, Any] = {"bos_id": BOS, "eos_id": EOS}


def tiny_model(vocab: int = VOCAB, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    cfg = ModelConfig(
        d_model=32, n_heads=2, encoder_layers=1, decoder_layers=2, d_ff=64, max_positions=64
    )
    return Transformer(cfg, vocab, vocab, pad_id=PAD).eval()


@pytest.fixture(scope="module")
def model() -> Transformer:
    return tiny_model()


@pytest.fixture(scope="module")
def batch() -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(1)
    src = torch.randint(3, VOCAB, (4, 6), generator=gen)  # (batch, src_len)
    src[1, 4:] = PAD
    src[2, 2:] = PAD
    return src, pad_mask(src, PAD)


class StubModel:
    """Next-token log-probs depend only on the position: table[min(position, last)]."""

    pad_id = PAD
    max_positions = 64
    log_softmax_kernel: LogSoftmaxKernel | None = None

    def __init__(self, probs: list[list[float]]) -> None:
        table = torch.tensor(probs, dtype=torch.float64).log().float()  # (positions, vocab)
        self.table = table

    def _row(self, position: int) -> Tensor:
        return self.table[min(position, len(self.table) - 1)]  # (vocab,)

    def encode(self, src: Tensor, src_mask: Tensor) -> Tensor:
        return torch.zeros(src.size(0), src.size(1), 1)

    def decode(self, tgt_in: Tensor, memory: Tensor, src_mask: Tensor) -> Tensor:
        rows = [self._row(t) for t in range(tgt_in.size(1))]
        return torch.stack(rows)[None].expand(tgt_in.size(0), -1, -1)

    def init_cache(self, memory: Tensor, src_mask: Tensor) -> DecoderCache:
        return DecoderCache(self_kv=[], cross_kv=[], src_mask=src_mask, position=0)

    def decode_step(self, tokens: Tensor, cache: DecoderCache) -> Tensor:
        logits = self._row(cache.position)[None].expand(tokens.size(0), -1)
        cache.position += 1
        return logits


def stub_src() -> tuple[Tensor, Tensor]:
    src = torch.tensor([[5, 5]])
    return src, pad_mask(src, PAD)


def sequence_log_prob(model: Transformer, src: Tensor, tokens: list[int]) -> float:
    """log P(tokens + EOS | src) by one teacher-forced pass."""
    tgt_in = torch.tensor([[BOS, *tokens]])
    tgt_out = torch.tensor([[*tokens, EOS]])
    with torch.inference_mode():
        logits = model(src, pad_mask(src, PAD), tgt_in)  # (1, len, vocab)
        lp = logits.log_softmax(-1).gather(2, tgt_out[..., None])
    return float(lp.sum())


def no_repeated_ngram(tokens: list[int], n: int) -> bool:
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return len(grams) == len(set(grams))


# --------------------------------------------------------------------------- consistency


def test_greedy_cached_equals_uncached(model: Transformer, batch: tuple[Tensor, Tensor]) -> None:
    src, mask = batch
    a = greedy_search(model, src, mask, DecodingConfig(), **IDS, use_cache=True)
    b = greedy_search(model, src, mask, DecodingConfig(), **IDS, use_cache=False)
    assert [h.tokens for h in a] == [h.tokens for h in b]
    assert [h.log_prob for h in a] == pytest.approx([h.log_prob for h in b], abs=1e-4)


def test_beam_cached_equals_uncached(model: Transformer, batch: tuple[Tensor, Tensor]) -> None:
    src, mask = batch
    dec = DecodingConfig(beam_size=4, nbest=3)
    a = beam_search(model, src, mask, dec, **IDS, use_cache=True)
    b = beam_search(model, src, mask, dec, **IDS, use_cache=False)
    for ha, hb in zip(a, b, strict=True):
        assert [h.tokens for h in ha] == [h.tokens for h in hb]
        assert [h.score for h in ha] == pytest.approx([h.score for h in hb], abs=1e-4)


def test_beam_one_equals_greedy(model: Transformer, batch: tuple[Tensor, Tensor]) -> None:
    src, mask = batch
    greedy = greedy_search(model, src, mask, DecodingConfig(), **IDS)
    beam = beam_search(model, src, mask, DecodingConfig(beam_size=1, length_penalty=0.0), **IDS)
    assert [h.tokens for h in greedy] == [hs[0].tokens for hs in beam]
    assert [h.log_prob for h in greedy] == pytest.approx([hs[0].log_prob for hs in beam], abs=1e-4)


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_batched_equals_one_at_a_time(
    model: Transformer, batch: tuple[Tensor, Tensor], search: str
) -> None:
    src, mask = batch

    def run(s: Tensor, m: Tensor) -> list[Hypothesis]:
        if search == "greedy":
            return greedy_search(model, s, m, DecodingConfig(), **IDS)
        return [hs[0] for hs in beam_search(model, s, m, DecodingConfig(beam_size=3), **IDS)]

    batched = run(src, mask)
    for i in range(src.size(0)):
        n = int(mask[i].sum())
        (alone,) = run(src[i : i + 1, :n], mask[i : i + 1, :n])
        assert batched[i].tokens == alone.tokens
        assert batched[i].score == pytest.approx(alone.score, abs=1e-4)


# --------------------------------------------------------------------------- beam search


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_wide_beam_matches_exhaustive_enumeration(length_penalty: float) -> None:
    model = tiny_model(vocab=5, seed=3)  # pad, bos, eos + two real tokens
    src = torch.tensor([[3, 4, 4]])
    max_len = 3
    best_score, best_tokens = -math.inf, []
    for length in range(max_len + 1):
        for tokens in itertools.product([3, 4], repeat=length):
            lp = sequence_log_prob(model, src, list(tokens))
            score = lp / gnmt_penalty(length + 1, length_penalty)
            if score > best_score:
                best_score, best_tokens = score, list(tokens)
    dec = DecodingConfig(
        beam_size=16, length_penalty=length_penalty, max_len_a=0.0, max_len_b=max_len
    )
    (hyps,) = beam_search(model, src, pad_mask(src, PAD), dec, **IDS)
    assert hyps[0].tokens == best_tokens
    assert hyps[0].score == pytest.approx(best_score, abs=1e-5)


def test_nbest_sorted_and_distinct(model: Transformer, batch: tuple[Tensor, Tensor]) -> None:
    src, mask = batch
    nbest = beam_search(model, src, mask, DecodingConfig(beam_size=5, nbest=4), **IDS)
    for hyps in nbest:
        assert len(hyps) == 4
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(h.tokens) for h in hyps}) == len(hyps)
        for h in hyps:
            assert h.score == pytest.approx(h.log_prob / gnmt_penalty(len(h.tokens) + 1, 1.0))


@pytest.mark.parametrize(("vocab", "beam"), [(20, 4), (64, 1), (130, 5), (3000, 3)])
def test_top_candidates_equal_a_plain_topk(vocab: int, beam: int) -> None:
    gen = torch.Generator().manual_seed(vocab)
    n, k = 3, 2 * beam
    lp = torch.randn(n * beam, vocab, generator=gen).log_softmax(dim=-1)  # (n*beam, vocab)
    lp[:, :2] = -math.inf  # banned columns, as PAD and BOS are
    scores = -5 * torch.rand(n, beam, generator=gen)  # (n, beam)
    expected = (lp + scores.view(-1, 1)).view(n, -1).topk(k, dim=1)
    top, index = top_candidates(lp, scores, k)
    assert torch.equal(top, expected.values)
    assert torch.equal(index, expected.indices)


@pytest.mark.parametrize(("vocab", "beam"), [(20, 4), (130, 5), (3000, 3), (8, 5)])
def test_top_candidates_of_a_shared_row_equal_those_of_repeated_rows(vocab: int, beam: int) -> None:
    gen = torch.Generator().manual_seed(vocab)
    n, k = 3, 2 * beam
    lp = torch.randint(-6, 0, (n, vocab), generator=gen).float()  # many exact ties
    lp[:, :2] = -math.inf
    scores = torch.full((n, beam), -math.inf)
    scores[:, 0] = 0.0  # a batch's first step: only the first beam is live
    shared = top_candidates(lp, scores, k)
    repeated = top_candidates(lp.repeat_interleave(beam, dim=0), scores, k)
    assert torch.equal(shared[0], repeated[0])
    assert torch.equal(shared[1], repeated[1])


@pytest.mark.parametrize(("vocab", "beam"), [(20, 4), (130, 5), (3000, 3)])
def test_top_candidates_through_a_row_map_equal_those_of_repeated_rows(
    vocab: int, beam: int
) -> None:
    """Two sentences with `beam` rows of log-probs, then two that share one row each (they
    joined a running search): the same candidates as with every row written out."""
    gen = torch.Generator().manual_seed(vocab)
    n, k, settled = 4, 2 * beam, 2
    lp = torch.randint(-6, 0, (settled * beam + n - settled, vocab), generator=gen).float()
    lp[:, :2] = -math.inf
    scores = -5 * torch.rand(n, beam, generator=gen)
    scores[settled:, 1:] = -math.inf  # the joiners' first step: only the first beam is live
    rows = torch.arange(n)[:, None] * beam + torch.arange(beam)  # (n, beam)
    rows[settled:] = (settled * beam + torch.arange(n - settled))[:, None]
    mapped = top_candidates(lp, scores, k, rows=rows)
    written = top_candidates(lp[rows.view(-1)], scores, k)
    assert torch.equal(mapped[0], written[0])
    assert torch.equal(mapped[1], written[1])


class RowCounter:
    """A model wrapper recording how many rows each decoding step carries."""

    def __init__(self, model: Transformer) -> None:
        self.model = model
        self.rows: list[int] = []
        self.pad_id, self.max_positions = model.pad_id, model.max_positions
        self.log_softmax_kernel = model.log_softmax_kernel

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def decode_step(self, tokens: Tensor, cache: DecoderCache) -> Tensor:
        self.rows.append(tokens.size(0))
        return self.model.decode_step(tokens, cache)


@pytest.mark.parametrize("sentences", [1, 4])
def test_a_batch_first_step_runs_one_row_per_sentence(
    model: Transformer, batch: tuple[Tensor, Tensor], sentences: int
) -> None:
    src, mask = batch[0][:sentences], batch[1][:sentences]
    dec = DecodingConfig(beam_size=3, nbest=3, max_len_a=1.5, max_len_b=5)
    counter = RowCounter(model)
    got = beam_search(counter, src, mask, dec, **IDS)
    # its beams are one prefix until then (a lone sentence keeps its rows: a one-row product
    # may round differently from the same row among others)
    assert counter.rows[0] == (3 if sentences == 1 else sentences)
    assert counter.rows[1] == 3 * sentences
    uncached = beam_search(model, src, mask, dec, **IDS, use_cache=False)
    for ha, hb in zip(got, uncached, strict=True):
        assert [h.tokens for h in ha] == [h.tokens for h in hb]
        assert [h.score for h in ha] == pytest.approx([h.score for h in hb], abs=1e-4)


@pytest.mark.parametrize("nbest", [1, 2, 3])
def test_stopping_at_the_nbest_keeps_the_same_list(
    model: Transformer, batch: tuple[Tensor, Tensor], nbest: int
) -> None:
    # nbest = beam_size waits for beam_size unbeatable hypotheses: the longest search
    src, mask = batch
    dec = DecodingConfig(beam_size=5, length_penalty=1.4, max_len_a=2.0)
    full = beam_search(model, src, mask, replace(dec, nbest=5), **IDS)
    short = beam_search(model, src, mask, replace(dec, nbest=nbest), **IDS)
    assert short == [hyps[:nbest] for hyps in full]


def test_length_penalty_changes_the_choice() -> None:
    # vocab: pad, bos, eos, A. EOS first is -1.20 raw; A A A EOS is -1.26 raw but 4 tokens long.
    stub = StubModel(
        [
            [1e-9, 1e-9, 0.3, 0.7],
            [1e-9, 1e-9, 0.1, 0.9],
            [1e-9, 1e-9, 0.1, 0.9],
            [1e-9, 1e-9, 0.5, 0.5],
        ]
    )
    src, mask = stub_src()
    dec = DecodingConfig(beam_size=3, max_len_a=0.0, max_len_b=3)
    (raw,) = beam_search(stub, src, mask, replace(dec, length_penalty=0.0), **IDS)
    (gnmt,) = beam_search(stub, src, mask, replace(dec, length_penalty=1.0), **IDS)
    assert raw[0].tokens == []
    assert raw[0].score == pytest.approx(math.log(0.3), abs=1e-5)
    assert gnmt[0].tokens == [3, 3, 3]
    long_lp = math.log(0.7) + 2 * math.log(0.9) + math.log(0.5)
    assert gnmt[0].log_prob == pytest.approx(long_lp, abs=1e-5)
    assert gnmt[0].score == pytest.approx(long_lp / ((5 + 4) / 6), abs=1e-5)


EOS_EAGER = [[1e-9, 1e-9, 0.6, 0.3, 0.1]]  # EOS is always the likeliest token


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_min_len_prevents_early_eos(search: str) -> None:
    stub = StubModel(EOS_EAGER)
    src, mask = stub_src()
    for min_len, expected in [(0, []), (2, [3, 3])]:
        dec = DecodingConfig(beam_size=2, min_len=min_len)
        if search == "greedy":
            (h,) = greedy_search(stub, src, mask, dec, **IDS)
        else:
            ((h, *_),) = beam_search(stub, src, mask, dec, **IDS)
        assert h.tokens == expected


def test_no_repeat_ngram_blocks_a_repeat() -> None:
    stub = StubModel([[1e-9, 1e-9, 0.01, 0.9, 0.09]])  # A (3) always wins, EOS unlikely
    src, mask = stub_src()
    dec = DecodingConfig(beam_size=2, max_len_a=0.0, max_len_b=4)
    ((free, *_),) = beam_search(stub, src, mask, dec, **IDS)
    ((blocked, *_),) = beam_search(stub, src, mask, replace(dec, no_repeat_ngram=2), **IDS)
    assert free.tokens == [3, 3, 3, 3]
    assert no_repeated_ngram(blocked.tokens, 2)
    assert blocked.tokens[:2] == [3, 3]


def test_no_repeat_ngram_on_real_model(model: Transformer, batch: tuple[Tensor, Tensor]) -> None:
    src, mask = batch
    out = beam_search(model, src, mask, DecodingConfig(nbest=3, no_repeat_ngram=1), **IDS)
    assert all(no_repeated_ngram(h.tokens, 1) for hyps in out for h in hyps)


@pytest.mark.parametrize("search", ["greedy", "beam", "sample"])
def test_max_length_respected(
    model: Transformer, batch: tuple[Tensor, Tensor], search: str
) -> None:
    src, mask = batch
    dec = DecodingConfig(max_len_a=0.5, max_len_b=1)
    if search == "greedy":
        hyps = greedy_search(model, src, mask, dec, **IDS)
    elif search == "beam":
        hyps = [hs[0] for hs in beam_search(model, src, mask, dec, **IDS)]
    else:
        hyps = sample(model, src, mask, dec, **IDS, generator=torch.Generator().manual_seed(0))
    for h, n in zip(hyps, mask.sum(1).tolist(), strict=True):
        assert len(h.tokens) <= int(0.5 * n + 1)


def test_max_length_reached_when_eos_never_wins() -> None:
    stub = StubModel([[1e-9, 1e-9, 1e-6, 0.5, 0.5]])
    src, mask = stub_src()  # 2 source tokens: max length int(1.5 * 2 + 1) = 4
    dec = DecodingConfig(max_len_a=1.5, max_len_b=1)
    (g,) = greedy_search(stub, src, mask, dec, **IDS)
    ((b, *_),) = beam_search(stub, src, mask, dec, **IDS)
    assert len(g.tokens) == 4
    assert len(b.tokens) == 4


# --------------------------------------------------------------------------- sampling


def test_sampling_top_k_one_equals_greedy(model: Transformer, batch: tuple[Tensor, Tensor]) -> None:
    src, mask = batch
    greedy = greedy_search(model, src, mask, DecodingConfig(), **IDS)
    sampled = sample(
        model, src, mask, DecodingConfig(top_k=1, temperature=1.3), **IDS,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert [h.tokens for h in sampled] == [h.tokens for h in greedy]
    assert [h.log_prob for h in sampled] == pytest.approx([h.log_prob for h in greedy], abs=1e-5)


def test_sampling_reproducible_with_seed(model: Transformer, batch: tuple[Tensor, Tensor]) -> None:
    src, mask = batch

    def run(seed: int) -> list[list[int]]:
        gen = torch.Generator().manual_seed(seed)
        hyps = sample(model, src, mask, DecodingConfig(top_p=0.9), **IDS, generator=gen)
        return [h.tokens for h in hyps]

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_stopping_bound_accounts_for_length_penalty() -> None:
    # After two steps, beam 2 holds two finished hypotheses ([] and [A]) and the live prefix
    # A A has a lower raw log-prob than both scores, yet A A A EOS wins once normalised.
    stub = StubModel(
        [
            [1e-9, 1e-9, 0.4, 0.6],
            [1e-9, 1e-9, 0.5, 0.5],
            [1e-9, 1e-9, 1e-6, 1.0],
            [1e-9, 1e-9, 1.0, 1e-6],
        ]
    )
    src, mask = stub_src()
    dec = DecodingConfig(beam_size=2, length_penalty=1.0, max_len_a=0.0, max_len_b=3)
    ((best, *_),) = beam_search(stub, src, mask, dec, **IDS)
    assert best.tokens == [3, 3, 3]
    assert best.score == pytest.approx(math.log(0.6 * 0.5) / 1.5, abs=1e-4)


EARLY_STOP = [  # [] ends at -0.92; A A A EOS wins (-0.87 normalised) but A A looks beaten at step 2
    [1e-9, 1e-9, 0.4, 0.6],
    [1e-9, 1e-9, 0.55, 0.45],
    [1e-9, 1e-9, 1e-6, 1.0],
    [1e-9, 1e-9, 1.0, 1e-6],
]


def test_heuristic_early_stopping_stops_where_the_exact_rule_searches_on() -> None:
    stub = StubModel(EARLY_STOP)
    src, mask = stub_src()
    dec = DecodingConfig(beam_size=2, length_penalty=1.0, max_len_a=0.0, max_len_b=3)
    ((exact, *_),) = beam_search(stub, src, mask, dec, **IDS)
    ((heuristic, *_),) = beam_search(
        stub, src, mask, replace(dec, early_stopping="heuristic"), **IDS
    )
    assert exact.tokens == [3, 3, 3]
    assert exact.score == pytest.approx(math.log(0.6 * 0.45) / 1.5, abs=1e-4)
    assert heuristic.tokens == []  # A A, scored as if it ended now, could not beat []
    assert heuristic.score == pytest.approx(math.log(0.4), abs=1e-4)


def test_early_stopping_rules_agree_without_length_normalisation(
    model: Transformer, batch: tuple[Tensor, Tensor]
) -> None:
    # raw log-probs only fall as a prefix grows: ending now is its best, so both rules stop together
    src, mask = batch
    dec = DecodingConfig(beam_size=4, nbest=2, length_norm="none", max_len_a=2.0)
    exact = beam_search(model, src, mask, dec, **IDS)
    assert beam_search(model, src, mask, replace(dec, early_stopping="heuristic"), **IDS) == exact


@pytest.mark.parametrize(("rows", "vocab"), [(3, 100), (9, 64), (20, 1000), (40, 8003)])
def test_row_argmax_is_argmax_ties_and_bans_included(rows: int, vocab: int) -> None:
    x = torch.randn(rows, vocab, generator=torch.Generator().manual_seed(rows)).log_softmax(-1)
    top = x.max(dim=1).values
    x[0, vocab // 2] = x[0, vocab - 1] = top[0] + 1  # a tie: the first index wins
    x[1] = -math.inf
    x[1, vocab - 1] = -0.5  # one allowed token, in the last (shorter) chunk
    x[-1, :] = -math.inf
    x[-1, 0] = x[-1, 5] = 0.0  # a tie inside the first chunk
    assert torch.equal(row_argmax(x), x.argmax(dim=-1))
    assert row_argmax(x)[0] == vocab // 2


@pytest.mark.parametrize("case", ["all rows", "early EOS per row", "forced rows", "n-gram ban"])
def test_constrain_keeps_the_chunk_maxima_exact(case: str) -> None:
    """The searches read chunk maxima a log-softmax kernel computed before the bans: every chunk
    a ban lowers must be recomputed, or top-k and argmax would look in the wrong chunks."""
    rows, vocab, eos = 6, 300, 70  # EOS in the second chunk
    lp = torch.randn(rows, vocab, generator=torch.Generator().manual_seed(4)).log_softmax(-1)
    lp[:, [PAD, BOS, eos]] = 0.0  # each the maximum of its chunk until banned
    maxima = chunk_maxima(lp)
    step: int | Tensor = 0
    max_lens = torch.full((rows,), 10)
    banned = None
    if case == "early EOS per row":
        step = torch.tensor([0, 5, 0, 5, 5, 5])
    if case == "forced rows":
        step, max_lens = 3, torch.tensor([3, 9, 9, 2, 9, 9])
    if case == "n-gram ban":
        banned = lp > lp.quantile(0.99, dim=1, keepdim=True)  # (rows, vocab) the best tokens
    constrain_(lp, step, max_lens, bos_id=BOS, eos_id=eos, pad_id=PAD, min_len=2, banned=banned,
               maxima=maxima)  # fmt: skip
    assert torch.equal(maxima, chunk_maxima(lp))


def _python_log_softmax_kernel(x: Tensor, chunk: int) -> Tensor:
    """What the native kernel does, in PyTorch: x becomes its log-softmax; its chunk maxima."""
    x.copy_(x.log_softmax(dim=-1))
    return chunk_maxima(x, chunk)


@pytest.mark.parametrize("beam", [1, 4])
def test_searches_read_the_kernels_chunk_maxima(beam: int, batch: tuple[Tensor, Tensor]) -> None:
    plain, with_kernel = tiny_model(), tiny_model()
    with_kernel.log_softmax_kernel = _python_log_softmax_kernel
    src, mask = batch
    dec = DecodingConfig(beam_size=beam, nbest=beam, max_len_a=1.5, max_len_b=5, min_len=2)
    search = greedy_search if beam == 1 else beam_search
    assert search(with_kernel, src, mask, dec, **IDS) == search(plain, src, mask, dec, **IDS)


def test_row_argmax_takes_the_callers_maxima() -> None:
    x = torch.randn(10, 500, generator=torch.Generator().manual_seed(5))
    assert torch.equal(row_argmax(x, chunk_maxima(x)), x.argmax(dim=-1))
    assert torch.equal(row_argmax(x[:3], chunk_maxima(x[:3])), x[:3].argmax(dim=-1))
