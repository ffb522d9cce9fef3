"""The native kernels of decoding steps: the same results as PyTorch's attention and
log-softmax on every shape a search gives them, built once and cached, refused with one line
when they cannot be built or are wrong, and chosen by `decoding.attention_kernel`."""

from __future__ import annotations

import logging
import math
import os
import shutil
from pathlib import Path

import pytest
import torch

from mtkit.errors import MtkitError, UsageError
from mtkit.model.layers import attention
from mtkit.search.common import chunk_maxima
from mtkit.translation import native_kernels as na
from mtkit.translation.native_kernels import (
    MAX_QUERIES,
    KernelError,
    build_native_kernels,
    resolve_native_kernels,
)

needs_cc = pytest.mark.skipif(
    shutil.which((os.environ.get("CC") or "cc").split()[0]) is None,
    reason="needs a C compiler (the errors without one are tested without one)",
)


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> na.NativeKernels:
    return build_native_kernels(tmp_path_factory.mktemp("kernels"))


def _problem(
    rows: int, heads: int, q_len: int, k_len: int, head_dim: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q as a strided view (as the fused projection gives it), k/v with a free last column (as
    the decoder cache holds them)."""
    gen = torch.Generator().manual_seed(seed)
    qkv = torch.randn(rows, q_len, 3, heads, head_dim, generator=gen)
    q = qkv.permute(2, 0, 3, 1, 4)[0]  # (rows, heads, q_len, head_dim), not contiguous
    k, v = (torch.randn(rows, heads, k_len + 1, head_dim, generator=gen)[:, :, :k_len]
            for _ in range(2))  # fmt: skip
    return q, k, v


@needs_cc
@pytest.mark.parametrize(
    ("rows", "heads", "q_len", "k_len", "head_dim"),
    [(1, 1, 1, 1, 8), (5, 4, 1, 20, 32), (3, 4, 5, 17, 32), (6, 8, 1, 30, 64), (4, 2, 2, 9, 48),
     (2, 2, MAX_QUERIES, 33, 96)],
)  # fmt: skip
def test_matches_pytorch_attention(
    kernel: na.NativeKernels, rows: int, heads: int, q_len: int, k_len: int, head_dim: int
) -> None:
    q, k, v = _problem(rows, heads, q_len, k_len, head_dim)
    per_row = torch.rand(rows, 1, 1, k_len, generator=torch.Generator().manual_seed(1)) > 0.4
    per_row[..., -1] = True  # every row may attend somewhere
    shared = per_row[:1]  # one mask for all rows (broadcast)
    window = torch.zeros(rows, 1, 1, k_len, dtype=torch.bool)  # a late start, source padding
    for r in range(rows):
        start = min(r % 3, k_len - 1)
        window[r, ..., start : max(start + 1, k_len - r % 2)] = True
    for mask in (None, per_row, shared, window):
        got = kernel.attention(q, k, v, mask)
        assert got is not None
        assert got.shape == (rows, heads, q_len, head_dim)
        torch.testing.assert_close(got, attention(q, k, v, mask), rtol=0, atol=2e-6)


@needs_cc
def test_masks_of_any_broadcastable_shape(kernel: na.NativeKernels) -> None:
    q, k, v = _problem(3, 2, 2, 7, 32)
    gen = torch.Generator().manual_seed(2)
    full = torch.rand(3, 2, 2, 7, generator=gen) > 0.4  # per row, head and query
    full[..., 0] = True
    for mask in (full, full[:1, :1, :1, :], full[0, 0, 0], full[:, :1, :1, :], full[:1, :, :1, :],
                 full[:1, :1, :, :], full[0, 0]):  # fmt: skip
        got = kernel.attention(q, k, v, mask)
        assert got is not None
        torch.testing.assert_close(got, attention(q, k, v, mask), rtol=0, atol=2e-6)
    with pytest.raises(ValueError, match="does not broadcast"):
        kernel.attention(q, k, v, full[:2])  # 2 rows of masks for 3 rows of queries


@needs_cc
def test_masked_keys_get_no_weight(kernel: na.NativeKernels) -> None:
    q, k, v = _problem(2, 2, 1, 6, 16)
    mask = torch.tensor([True, True, False, False, False, False]).view(1, 1, 1, 6)
    v_changed = v.clone()
    v_changed[:, :, 2:] = 1e6  # values behind the mask must not matter
    before, after = kernel.attention(q, k, v, mask), kernel.attention(q, k, v_changed, mask)
    assert before is not None and after is not None
    assert torch.equal(before, after)


@needs_cc
def test_bfloat16_in_bfloat16_out(kernel: na.NativeKernels) -> None:
    q, k, v = (x.bfloat16() for x in _problem(3, 2, 1, 7, 32))
    got = kernel.attention(q, k, v, None)
    assert got is not None and got.dtype == torch.bfloat16
    want = attention(q.float(), k.float(), v.float(), None).bfloat16()
    torch.testing.assert_close(got, want, rtol=0, atol=1e-2)


@needs_cc
def test_refuses_what_it_does_not_take(kernel: na.NativeKernels) -> None:
    q, k, v = _problem(2, 2, 1, 5, 32)
    teacher_forced = _problem(2, 2, MAX_QUERIES + 1, 5, 32)
    assert kernel.attention(*teacher_forced, None) is None
    assert kernel.attention(*_problem(2, 2, 1, 5, 12), None) is None  # head_dim not a multiple of 8
    assert kernel.attention(q.double(), k.double(), v.double(), None) is None
    assert kernel.attention(q, k, v, torch.zeros(1, 1, 1, 5)) is None  # an additive float mask
    assert kernel.attention(q, k[:1], v[:1], None) is None  # keys broadcast over rows
    assert kernel.attention(q, k, v[:, :, :4], None) is None


@needs_cc
@pytest.mark.parametrize(
    ("rows", "vocab", "chunk"),
    [(1, 1, 64), (5, 8000, 64), (3, 8003, 64), (7, 63, 64), (2, 64, 64), (4, 1000, 16),
     (3, 517, 10)],
)  # fmt: skip
def test_log_softmax_matches_pytorch(
    kernel: na.NativeKernels, rows: int, vocab: int, chunk: int
) -> None:
    gen = torch.Generator().manual_seed(rows * vocab)
    wide = torch.randn(rows, vocab + 3, generator=gen) * 6.0  # rows further apart than vocab
    x = wide[:, :vocab]  # (rows, vocab) as a view with a row stride of vocab + 3
    want = x.log_softmax(dim=-1)
    maxima = kernel.log_softmax_(x, chunk)
    assert maxima is not None and maxima.shape == (rows, -(-vocab // chunk))
    torch.testing.assert_close(x, want, rtol=0, atol=1e-5)
    assert torch.equal(maxima, chunk_maxima(x, chunk))  # exactly those of the result
    assert torch.equal(wide[:, vocab:], wide[:, vocab:])  # finite: the padding was not touched
    assert torch.isfinite(wide).all()


@needs_cc
def test_log_softmax_keeps_minus_infinity_and_refuses_what_it_does_not_take(
    kernel: na.NativeKernels,
) -> None:
    x = torch.randn(3, 200, generator=torch.Generator().manual_seed(2))
    x[1, 5] = -math.inf
    want = x.log_softmax(dim=-1)
    maxima = kernel.log_softmax_(x, 64)
    assert maxima is not None and x[1, 5] == -math.inf
    torch.testing.assert_close(x, want, rtol=0, atol=1e-5)
    nan = torch.randn(2, 100, generator=torch.Generator().manual_seed(3))
    nan[0, 70] = math.nan
    nan_maxima = kernel.log_softmax_(nan, 64)
    assert nan_maxima is not None
    assert nan[0].isnan().all() and nan_maxima[0].isnan().all()  # as PyTorch: the row is NaN
    assert torch.isfinite(nan[1]).all() and torch.isfinite(nan_maxima[1]).all()
    for refused in (x.double(), x.t(), x.bfloat16(), torch.empty(2, 0)):
        before = refused.clone()
        assert kernel.log_softmax_(refused, 64) is None
        assert torch.equal(refused, before)


@needs_cc
def test_built_once_then_reused(tmp_path: Path) -> None:
    first = build_native_kernels(tmp_path)
    stamp = first.path.stat().st_mtime_ns
    again = build_native_kernels(tmp_path)
    assert again.path == first.path and again.path.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.path.name]  # no temporary left


@needs_cc
def test_a_changed_source_gets_its_own_library(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = build_native_kernels(tmp_path).path
    changed = tmp_path / "decoding.c"
    changed.write_text(na.KERNEL_SOURCE.read_text() + "\n/* changed */\n")
    monkeypatch.setattr(na, "KERNEL_SOURCE", changed)
    assert build_native_kernels(tmp_path).path != original


@needs_cc
def test_a_wrong_kernel_is_never_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = na.KERNEL_SOURCE.read_text()
    wrong = tmp_path / "decoding.c"
    monkeypatch.setattr(na, "KERNEL_SOURCE", wrong)
    for mistake, message in [
        (("float inv = 1.0f", "float inv = 2.0f"), "differs from PyTorch"),  # attention
        (("float lse = logf(total);", "float lse = logf(total) + 1e-3f;"), "differs from PyTorch"),
        (("m[c] = (m[c] - top) - lse;", "m[c] = m[c] - top;"), "chunk maxima are wrong"),
    ]:
        assert mistake[0] in source
        wrong.write_text(source.replace(*mistake))
        with pytest.raises(KernelError, match=message):
            build_native_kernels(tmp_path / "cache")


def test_compiler_errors_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", "no-such-compiler-here")
    with pytest.raises(KernelError, match=r"^no C compiler \(no-such-compiler-here\) found"):
        build_native_kernels(tmp_path)
    monkeypatch.setenv("CC", "false")  # a "compiler" that fails
    with pytest.raises(KernelError, match=r"^false failed on decoding\.c") as failed:
        build_native_kernels(tmp_path)
    assert "\n" not in str(failed.value)
    assert list(tmp_path.iterdir()) == []  # nothing half-written left behind


@needs_cc
def test_choice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    caplog.set_level(logging.INFO, logger=na.__name__)
    assert isinstance(resolve_native_kernels("auto", cpu), na.NativeKernels)
    assert isinstance(resolve_native_kernels("native", cpu), na.NativeKernels)
    assert resolve_native_kernels("auto", cuda) is None
    with pytest.raises(UsageError, match="attention_kernel: native runs on CPU"):
        resolve_native_kernels("native", cuda)


def test_without_a_compiler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("CC", "no-such-compiler-here")
    caplog.set_level(logging.INFO, logger=na.__name__)
    assert resolve_native_kernels("torch", cpu) is None  # never builds
    assert resolve_native_kernels("auto", cpu) is None  # falls back, and says why
    assert "attention kernel auto -> torch: no C compiler" in caplog.text
    with pytest.raises(MtkitError, match="no C compiler"):
        resolve_native_kernels("native", cpu)


@needs_cc
@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_translations_match_pytorch_attention(tmp_path: Path, quantize: str) -> None:
    from dataclasses import replace

    from mtkit.translation.quantize import quantize_model
    from tests.tiny_translator import DATA, head, make_translator

    translator = make_translator(tmp_path)
    quantize_model(translator.model, quantize)
    lines = [line for line in head(DATA / "test.en", 40) if line]
    for beam in (1, 4):
        dec = replace(translator.config.decoding, beam_size=beam, nbest=min(beam, 2))
        native = translator.translate_full(lines, replace(dec, attention_kernel="native"))
        assert translator.kernels["native"] is not None  # it did run the native kernels
        assert translator.model.log_softmax_kernel is not None
        torch_ = translator.translate_full(lines, replace(dec, attention_kernel="torch"))
        assert translator.model.log_softmax_kernel is None  # switched back for this call
        assert [[c.text for c in t.nbest] for t in native] == [
            [c.text for c in t.nbest] for t in torch_
        ]
        for a, b in zip(native, torch_, strict=True):
            for x, y in zip(a.nbest, b.nbest, strict=True):
                assert x.score == pytest.approx(y.score, abs=1e-4)


@needs_cc
@pytest.mark.parametrize("beam", [1, 3])
def test_back_pointer_cache_decodes_as_the_copying_cache(
    kernel: na.NativeKernels, beam: int
) -> None:
    """With the kernel the cache never copies keys on a beam reorder, a join or a finished
    sentence (buffers grow instead); every hypothesis must stay what the copying cache gives."""
    from mtkit.config.schema import DecodingConfig
    from mtkit.model.masks import pad_mask
    from mtkit.model.transformer import set_attention_kernel
    from mtkit.search.greedy import greedy_search
    from tests.unit.test_beam_join import assert_same, run_joining, sources
    from tests.unit.test_search import IDS, PAD, tiny_model

    copying, pointing = tiny_model(), tiny_model()
    set_attention_kernel(pointing, kernel.attention)
    srcs = sources(9)
    src = torch.nn.utils.rnn.pad_sequence(srcs, batch_first=True, padding_value=PAD)
    with torch.inference_mode():
        assert (
            pointing.init_cache(pointing.encode(src, pad_mask(src, PAD)), pad_mask(src, PAD)).origin
            is not None
        )
    dec = DecodingConfig(beam_size=beam, max_len_a=2.0, max_len_b=6, nbest=min(beam, 2))
    arrivals = [0, 0, 1, 2, 2, 3, 5, 8, 13]  # joins, reorders, finished sentences, column drops
    got, want = (
        run_joining(pointing, srcs, dec, arrivals),
        run_joining(copying, srcs, dec, arrivals),
    )
    for i in range(len(srcs)):
        assert_same(got[i], want[i])
    if beam == 1:
        with torch.inference_mode():
            hyps = greedy_search(pointing, src, pad_mask(src, PAD), dec, **IDS)
            want_hyps = greedy_search(copying, src, pad_mask(src, PAD), dec, **IDS)
        assert [h.tokens for h in hyps] == [h.tokens for h in want_hyps]


@needs_cc
def test_sentences_joining_a_search_start_with_one_row(kernel: na.NativeKernels) -> None:
    """With the pooled memories a sentence that joins a running search is fed one row at its
    first step (its beams are one prefix), not `beam`, and decodes as alone."""
    from mtkit.config.schema import DecodingConfig
    from mtkit.model.transformer import set_attention_kernel
    from tests.unit.test_beam_join import alone, assert_same, run_joining, sources
    from tests.unit.test_search import RowCounter, tiny_model

    model = tiny_model()
    set_attention_kernel(model, kernel.attention)
    counter = RowCounter(model)
    dec = DecodingConfig(beam_size=3, max_len_a=2.0, max_len_b=6, nbest=2)
    srcs = sources(6, seed=12)
    arrivals = [0, 0, 1, 1, 1, 3]
    got = run_joining(counter, srcs, dec, arrivals)
    assert counter.rows[:2] == [2, 2 * 3 + 3]  # a new batch's two, then three joiners
    assert counter.rows[3] % 3 == 1  # the sixth joins at step 3 with one row among beams
    for i, src in enumerate(srcs):
        assert_same(got[i], alone(model, src, dec))


@needs_cc
def test_finished_sentences_leave_the_cross_memory_in_place(kernel: na.NativeKernels) -> None:
    """With back-pointers, dropping sentences moves only `cross_rows`: every later step (also
    after a join) must give the logits the copying cache gives."""
    from mtkit.model.transformer import set_attention_kernel
    from tests.unit.test_beam_join import padded, sources
    from tests.unit.test_search import tiny_model

    copying, pointing = tiny_model(), tiny_model()
    set_attention_kernel(pointing, kernel.attention)
    src, mask = padded(sources(5))
    fresh_src, fresh_mask = padded(sources(2, seed=9))
    with torch.inference_mode():
        caches = [m.init_cache(m.encode(src, mask), mask) for m in (copying, pointing)]
        assert caches[0].cross_rows is None and caches[1].cross_rows is not None
        tokens = torch.full((5,), 4)
        for keep in ([0, 1, 2, 3, 4], [1, 3, 4], [2], "join", [0, 2]):
            for i, m in enumerate((copying, pointing)):
                if keep == "join":
                    new = m.init_cache(m.encode(fresh_src, fresh_mask), fresh_mask)
                    caches[i] = caches[i].join(new)
                else:
                    caches[i] = caches[i].select(torch.tensor(keep))
            rows = caches[0].rows
            want = copying.decode_step(tokens[:rows], caches[0])
            got = pointing.decode_step(tokens[:rows], caches[1])
            torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
        assert caches[1].cross_rows is not None  # still in place after the join


@needs_cc
def test_joins_write_into_a_pool_of_cross_memories(kernel: na.NativeKernels) -> None:
    """Sentences keep joining and leaving: the pool of cross-attention memories grows, widens
    for a longer source and is compacted, and every step's logits stay the copying cache's."""
    from mtkit.model.transformer import set_attention_kernel
    from tests.unit.test_beam_join import padded, sources
    from tests.unit.test_search import tiny_model

    copying, pointing = tiny_model(), tiny_model()
    set_attention_kernel(pointing, kernel.attention)
    longer = torch.arange(3, 17) % 9 + 3  # 14 tokens: longer than any of `sources`
    grew = widened = compacted = False
    with torch.inference_mode():
        src, mask = padded(sources(3))
        caches = [m.init_cache(m.encode(src, mask), mask) for m in (copying, pointing)]
        for turn in range(12):
            fresh = sources(2, seed=20 + turn) if turn != 6 else [longer, *sources(1, seed=7)]
            fresh_src, fresh_mask = padded(fresh)
            before = caches[1]
            for i, m in enumerate((copying, pointing)):
                new = m.init_cache(m.encode(fresh_src, fresh_mask), fresh_mask)
                caches[i] = caches[i].join(new)
                tokens = torch.full((caches[i].rows,), 4 + turn % 3)
                logits = m.decode_step(tokens, caches[i])
                if i == 0:
                    want = logits
                caches[i] = caches[i].select(torch.arange(caches[i].rows)[1::2])  # keep half
            torch.testing.assert_close(logits, want, rtol=0, atol=1e-5)
            after = caches[1]
            assert after.cross_rows is not None and before.cross_rows is not None
            used = int(before.cross_rows.max()) + 1  # rows up to the last one read
            pool, old = after.cross_kv[0][0], before.cross_kv[0][0]
            grew |= pool.size(0) > int(after.cross_rows.max()) + 1
            widened |= pool.size(2) > old.size(2)
            moved = pool.data_ptr() != old.data_ptr()
            compacted |= moved and pool.size(0) < 2 * (used + len(fresh))  # only read rows
    assert grew and widened and compacted


def test_pytorch_attention_reads_a_back_pointer_cache_too() -> None:
    """A call the kernel refuses falls back to PyTorch's attention over the gathered rows."""
    from mtkit.model.layers import MultiHeadAttention, gather_rows

    gen = torch.Generator().manual_seed(0)
    buffer = torch.randn(5, 2, 4, 8, generator=gen)  # (buffer_rows, heads, columns, head_dim)
    rows = torch.tensor([[0, 3, 3, 1], [2, 2, 4, 0], [1, 0, 0, 0]])  # (batch, columns)
    want = torch.stack([torch.stack([buffer[r, :, j] for j, r in enumerate(row)], dim=1)
                        for row in rows.tolist()])  # fmt: skip
    assert torch.equal(gather_rows(buffer, rows), want)
    attn = MultiHeadAttention(d_model=16, n_heads=2, dropout=0.0).eval()
    q = torch.randn(3, 2, 1, 8, generator=gen)
    expected = attn.attend_projected(q, want, want, None)
    attn.kernel = lambda *args: None  # a kernel that takes no call
    torch.testing.assert_close(attn.attend_projected(q, buffer, buffer, None, rows), expected)


@needs_cc
def test_each_call_runs_the_kernels_its_options_name(tmp_path: Path) -> None:
    """The translator installs kernels only when a call names other ones than the last call:
    native, torch, native again must each find the model holding what they asked for."""
    from dataclasses import replace

    from mtkit.model.layers import MultiHeadAttention
    from tests.tiny_translator import make_translator

    translator = make_translator(tmp_path)
    dec = translator.config.decoding
    for choice in ("native", "torch", "native", "native", "torch"):
        translator.translate_full(["a dog runs ."], replace(dec, attention_kernel=choice))
        kernels = [
            m.kernel for m in translator.model.modules() if isinstance(m, MultiHeadAttention)
        ]
        want_native = choice == "native"
        assert all((k is not None) == want_native for k in kernels), choice
        assert (translator.model.log_softmax_kernel is not None) == want_native, choice


@needs_cc
@pytest.mark.parametrize("isa", [["-mavx2", "-mfma"], ["-mavx512f", "-mavx512vl"]])
def test_source_compiles_cleanly_for_either_vector_width(tmp_path: Path, isa: list[str]) -> None:
    """The log-softmax's vector width follows the CPU (16 lanes with AVX-512, else 8): both
    branches compile without warnings on any x86 build machine, whichever this one runs."""
    import platform
    import subprocess

    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("x86 instruction sets")
    flags = [f for f in na.FLAGS if f != "-march=native"]
    done = subprocess.run(
        [*na._compiler(), *flags, *isa, "-Wall", "-Wextra", "-Werror", "-o", str(tmp_path / "k.so"),
         str(na.KERNEL_SOURCE)], capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "k.so").stat().st_size > 0
