"""`precision: auto` (mtkit/runtime.py) and the bf16 attention path; tiny, so they run anywhere.

The probe is injected: these tests pass the same on CPUs with and without native bf16.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mtkit import runtime
from mtkit.config.schema import TrainingConfig
from mtkit.distributed import Dist
from mtkit.model.layers import fused_attention
from mtkit.runtime import (
    Bf16Probe,
    RuntimeConfigError,
    choose_precision,
    matmul_speedup,
    probe_bf16,
    resolve_precision,
)  # fmt: skip
from mtkit.training.update import wrap_model
from mtkit.translation.translator import Translator
from tests.tiny_translator import make_translator, save
from tests.unit.test_train_step import tiny_model

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize(
    ("device", "probe", "expected", "why"),
    [
        (CPU, Bf16Probe(""), "float32", "no AVX512_BF16 or AMX"),
        (CPU, Bf16Probe("AVX512_BF16", 1.1), "float32", "1.1x fp32 (< 1.5x)"),
        (CPU, Bf16Probe("AVX512_BF16", None), "float32", "not measured"),
        (CPU, Bf16Probe("AVX512_BF16", 2.6), "bfloat16", "AVX512_BF16, bf16 matmul 2.6x fp32"),
        (CPU, Bf16Probe("AMX", 9.0), "bfloat16", "AMX"),
        (CUDA, Bf16Probe("CUDA (A100)"), "bfloat16", "CUDA (A100) runs bf16 natively"),
        (CUDA, Bf16Probe(""), "float32", "no native bf16"),
    ],
)  # fmt: skip
def test_choose_precision(device: torch.device, probe: Bf16Probe, expected: str, why: str) -> None:
    choice = choose_precision(device, probe)
    assert choice.precision == expected
    assert why in choice.reason and str(choice).startswith(f"precision auto -> {expected}: ")


def test_auto_logs_its_choice_and_explicit_values_skip_the_probe(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(runtime, "probe_bf16", lambda device: Bf16Probe("AVX512_BF16", 1.2))
    with caplog.at_level(logging.INFO, logger="mtkit.runtime"):
        assert resolve_precision("auto", CPU) == "float32"
    assert "precision auto -> float32: CPU has AVX512_BF16 but bf16 matmul 1.2x" in caplog.text

    def no_probe(device: torch.device) -> Bf16Probe:
        raise AssertionError("explicit precisions must not probe")

    monkeypatch.setattr(runtime, "probe_bf16", no_probe)
    for value in ("float32", "bfloat16"):
        assert resolve_precision(value, CPU) == value


def test_a_cpu_without_native_bf16_is_not_timed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "cpu_bf16_features", lambda: "")

    def no_timing() -> float:
        raise AssertionError("bf16 is emulated here: timing it would take seconds")

    monkeypatch.setattr(runtime, "matmul_speedup", no_timing)
    assert probe_bf16(CPU) == Bf16Probe("")
    assert resolve_precision("auto", CPU) == "float32"


def test_matmul_probe_is_short_and_leaves_the_rng_alone() -> None:
    torch.manual_seed(3)
    expected = torch.rand(2)
    torch.manual_seed(3)
    speedup = matmul_speedup(shape=(16, 8, 16), budget_s=0.05)
    assert speedup > 0 and torch.equal(torch.rand(2), expected)


@pytest.mark.parametrize(("speedup", "expected"), [(1.0, "float32"), (3.0, "bfloat16")])
def test_training_resolves_auto_when_it_builds_the_stepper(
    monkeypatch: pytest.MonkeyPatch, speedup: float, expected: str
) -> None:
    monkeypatch.setattr(runtime, "probe_bf16", lambda device: Bf16Probe("AMX", speedup))
    model = tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    stepper = wrap_model(model, optimizer, TrainingConfig(precision="auto"), CPU, Dist())
    assert stepper.cfg.precision == expected


def test_translator_resolves_decoding_precision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save(make_translator(tmp_path))
    calls: list[torch.device] = []

    def slow(device: torch.device) -> Bf16Probe:
        calls.append(device)
        return Bf16Probe("", None)

    monkeypatch.setattr(runtime, "probe_bf16", slow)
    translator = Translator.load(path, device="cpu")
    dec = replace(translator.config.decoding, beam_size=2)  # the run's precision: auto
    assert translator.precision_for(dec) == "float32"
    assert translator.precision_for(dec) == "float32" and len(calls) == 1  # resolved once
    monkeypatch.setattr(runtime, "probe_bf16", lambda device: Bf16Probe("AMX", 4.0))
    fast = Translator.load(path, device="cpu")
    assert fast.precision_for(dec) == "bfloat16"
    assert len(fast.translate(["a tiny test", ""], dec)) == 2  # bf16 runs on any CPU
    assert fast.precision_for(replace(dec, precision="float32")) == "float32"
    with pytest.raises(RuntimeConfigError, match=r"decoding.precision: float16 needs a CUDA"):
        fast.translate(["a tiny test"], replace(dec, precision="float16"))
    int8 = Translator.load(path, device="cpu", quantize="int8")
    assert int8.precision_for(replace(dec, precision="bfloat16")) == "float32"


def test_bf16_attention_on_cpu_runs_in_float32_and_matches_it() -> None:
    """Forward and backward of the bf16 path agree with fp32 SDPA to bf16 precision."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 5, 8, generator=gen) for _ in range(3))
    mask = torch.tensor([True] * 4 + [False]).view(1, 1, 1, 5)
    ref = [t.clone().requires_grad_() for t in (q, k, v)]
    expected = F.scaled_dot_product_attention(ref[0], ref[1], ref[2], attn_mask=mask)
    expected.sum().backward()  # type: ignore[no-untyped-call]
    low = [t.bfloat16().requires_grad_() for t in (q, k, v)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fused_attention(low[0], low[1], low[2], mask)
    out.float().sum().backward()  # type: ignore[no-untyped-call]
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected, atol=3e-2, rtol=3e-2)
    for a, b in zip(low, ref, strict=True):
        assert a.grad is not None and b.grad is not None and a.grad.dtype == torch.bfloat16
        torch.testing.assert_close(a.grad.float(), b.grad, atol=5e-2, rtol=5e-2)


def test_loading_a_translator_limits_onednn_caches_unless_the_user_chose(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decoding's shrinking batches would otherwise keep a oneDNN primitive per shape."""
    path = save(make_translator(tmp_path))
    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    monkeypatch.delenv("LRU_CACHE_CAPACITY", raising=False)
    Translator.load(path, device="cpu")
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == runtime.ONEDNN_CACHE
    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "256")
    monkeypatch.delenv("LRU_CACHE_CAPACITY")
    Translator.load(path, device="cpu")
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "256"
    assert "LRU_CACHE_CAPACITY" not in os.environ
