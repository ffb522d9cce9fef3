"""The benchmark's FLOP formulas (benchmarks/flops.py) against torch's own FLOP counter."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.bench_decode_sections import CountingModel
from benchmarks.flops import Arch
from mtkit.config.schema import DecodingConfig, ModelConfig
from mtkit.model.masks import pad_mask
from mtkit.model.transformer import Transformer, set_fast_attention
from mtkit.search.beam import beam_search

CFG = ModelConfig(d_model=32, n_heads=4, encoder_layers=2, decoder_layers=3, d_ff=48)
ARCH = Arch(d_model=32, d_ff=48, vocab=50, encoder_layers=2, decoder_layers=3)


def counted(fn: object) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()  # type: ignore[operator]
    return int(counter.get_total_flops())


def model() -> Transformer:
    torch.manual_seed(0)
    m = Transformer(CFG, 50, 50, pad_id=0)
    set_fast_attention(m, False)  # explicit matmuls: every product is visible to the counter
    return m


def test_forward_and_training_flops_match_the_counter() -> None:
    m = model()
    src, tgt = torch.randint(4, 50, (3, 11)), torch.randint(4, 50, (3, 7))
    mask = pad_mask(src, 0)
    assert counted(lambda: m(src, mask, tgt)) == 3 * ARCH.forward_flops(11, 7)
    assert counted(lambda: m(src, mask, tgt).sum().backward()) == 3 * ARCH.train_flops(11, 7)


def test_decoding_flops_match_the_counter() -> None:
    m = model().eval()
    src, tokens = torch.randint(4, 50, (2, 9)), torch.randint(4, 50, (6, 3))
    mask = pad_mask(src, 0)
    with torch.inference_mode():
        memory = m.encode(src, mask)
        start = counted(lambda: m.init_cache(memory, mask))
        cache = m.init_cache(memory, mask).repeat(3)  # 2 sentences x 3 beam rows
        for t in range(3):
            flops = counted(lambda t=t: m.decode_step(tokens[:, t], cache))
            assert flops == 6 * ARCH.step_flops(t + 1, 9)
    assert start + counted(lambda: m.encode(src, mask)) == 2 * ARCH.start_flops(9)


def test_the_counting_model_searches_as_the_model_does() -> None:
    m = model().eval()
    src = torch.randint(4, 50, (3, 9))
    mask = pad_mask(src, 0)
    dec = DecodingConfig(beam_size=3, max_len_a=0.0, max_len_b=6)
    counter = CountingModel(m, ARCH)
    got = beam_search(counter, src, mask, dec, bos_id=2, eos_id=3)
    assert [h[0].tokens for h in got] == [
        h[0].tokens for h in beam_search(m, src, mask, dec, bos_id=2, eos_id=3)
    ]
    assert counter.flops > 3 * ARCH.start_flops(9)  # the steps were counted too
