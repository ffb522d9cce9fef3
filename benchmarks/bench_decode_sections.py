"""`make bench`'s decoding section (bench.py `--section decode`): greedy and beam-5 speed,
model FLOPs and MFU on test2016 per precision, and the KV cache's speed-up.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.bench_common import (
    MB,
    VOCAB,
    arch,
    bench_config,
    matmul_peak,
    model_path,
    peak_rss_mb,
    prepared_data,
    setup_torch,
    summary,
    sync,
)
from benchmarks.flops import Arch

if TYPE_CHECKING:
    import torch

    from mtkit.model.cache import DecoderCache
    from mtkit.model.transformer import Transformer

FORCED_LEN = 20  # output length of every sentence when decoding with random weights


# --------------------------------------------------------------------------- section: decode


class CountingModel:
    """Delegates to a Transformer and adds up the model FLOPs of what search asks it to do."""

    def __init__(self, model: Transformer, a: Arch) -> None:
        self.model, self.arch, self.flops = model, a, 0
        self.pad_id, self.max_positions = model.pad_id, model.max_positions
        self.log_softmax_kernel = model.log_softmax_kernel  # the searches read it (Seq2Seq)

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        return self.model.encode(src, src_mask)

    def decode(self, tgt_in: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor) -> Any:
        return self.model.decode(tgt_in, memory, src_mask)

    def init_cache(self, memory: torch.Tensor, src_mask: torch.Tensor) -> DecoderCache:
        self.flops += sum(self.arch.start_flops(n) for n in src_mask.sum(dim=1).tolist())
        return self.model.init_cache(memory, src_mask)

    def decode_step(self, tokens: torch.Tensor, cache: DecoderCache) -> torch.Tensor:
        rows = tokens.size(0)
        src_lens = cache.src_mask.sum(dim=1).tolist()  # per sentence (or per row)
        per_row = rows // len(src_lens)
        position = cache.position + 1
        self.flops += sum(per_row * self.arch.step_flops(position, n) for n in src_lens)
        return self.model.decode_step(tokens, cache)


def decode_run(
    model: Any,
    src_ids: list[list[int]],
    *,
    beam: int,
    use_cache: bool,
    max_tokens: int,
    device: torch.device,
    forced: int | None,
) -> list[list[int]]:
    """Translate `src_ids` in token-budget batches; returns the best output ids."""
    from mtkit.config.schema import DecodingConfig
    from mtkit.data.batching import pad, token_batches
    from mtkit.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
    from mtkit.model.masks import pad_mask
    from mtkit.search.beam import beam_search
    from mtkit.search.greedy import greedy_search

    # a forced length: min_len = max length = `forced`; else the default a * src_len + b
    a, b, min_len = (0.0, forced, forced) if forced is not None else (1.5, 10, 0)
    dec = DecodingConfig(beam_size=beam, max_len_a=a, max_len_b=b, min_len=min_len)
    ids: dict[str, Any] = {"bos_id": BOS_ID, "eos_id": EOS_ID, "use_cache": use_cache}
    out: list[list[int]] = [[] for _ in src_ids]
    for index in token_batches([len(s) for s in src_ids], max_tokens):
        src = pad([src_ids[i] for i in index]).to(device)  # (batch, src_len)
        mask = pad_mask(src, PAD_ID)
        if beam == 1:
            best = [h.tokens for h in greedy_search(model, src, mask, dec, **ids)]
        else:
            best = [hs[0].tokens for hs in beam_search(model, src, mask, dec, **ids)]
        for i, tokens in zip(index, best, strict=True):
            out[i] = tokens
    sync(device)
    return out


def load_decode_model(args: argparse.Namespace, device: torch.device) -> tuple[Any, str]:
    """The benchmark model (trained or random) in eval mode, and how it was made."""
    import torch

    from mtkit.model.transformer import build_model

    cfg = bench_config(args)
    torch.manual_seed(0)
    model = build_model(cfg, VOCAB, VOCAB)
    if args.decode_model == "trained":
        path = model_path(args)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        how = f"trained {args.model_steps} updates on Multi30k ({path.name})"
    else:
        how = f"random weights, every output forced to {FORCED_LEN} tokens"
    return model.to(device).eval(), how


def section_decode(args: argparse.Namespace) -> dict[str, Any]:
    """Greedy and beam-5 speed (cached) on test2016 per precision, alternating repetitions;
    cached vs uncached (first precision) on a subset."""
    from mtkit.data.tokenizer import TokenizerPair
    from mtkit.runtime import autocast_context

    device = setup_torch(args)
    encoded, cfg = prepared_data(args)
    model, how = load_decode_model(args, device)
    tokenizers = TokenizerPair.load(Path(cfg.data.prepared_dir))
    src_all = [list(s) for s in encoded["test"]["src_ids"]]
    refs_all = (args.data_dir / "multi30k" / "test2016.de").read_text("utf-8").splitlines()
    forced = FORCED_LEN if args.decode_model == "random" else None
    n = min(args.decode_sentences, len(src_all))
    out: dict[str, Any] = {"model": how, "max_tokens": args.decode_max_tokens, "sentences": n}

    def runner(precision: str) -> Callable[[Any, list[list[int]], int, bool], list[list[int]]]:
        def run(m: Any, src: list[list[int]], beam: int, cache: bool) -> list[list[int]]:
            with autocast_context(device, precision):
                return decode_run(
                    m, src, beam=beam, use_cache=cache, max_tokens=args.decode_max_tokens,
                    device=device, forced=forced,
                )  # fmt: skip

        return run

    runs = {p: runner(p) for p in args.precisions}
    for p in runs:
        out[p] = {}
    for name, beam in (("greedy", 1), ("beam5", 5)):
        timed = _decode_timings(args, runs, model, src_all[:n], beam)
        for p, entry in timed.items():
            entry["bleu"] = _bleu(tokenizers.tgt.decode(entry.pop("hyps")), refs_all[:n])
            out[p][name] = entry
    first = args.precisions[0]
    out["cache_speedup"] = {"precision": first, **_cache_speedup(args, runs[first], model, src_all)}
    out["peak_rss_mb"] = peak_rss_mb()
    if device.type == "cuda":
        import torch

        out["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated(device) / MB
    return out


def _bleu(hyps: list[str], refs: list[str]) -> float:
    import sacrebleu

    return float(sacrebleu.corpus_bleu(hyps, [refs]).score)


def _decode_timings(
    args: argparse.Namespace,
    runs: dict[str, Callable[[Any, list[list[int]], int, bool], list[list[int]]]],
    model: Any,
    src: list[list[int]],
    beam: int,
) -> dict[str, dict[str, Any]]:
    """Per precision: an untimed run counting FLOPs (its outputs kept), then `repeats` timed
    runs, the precisions alternating."""
    device = next(model.parameters()).device
    first: dict[str, tuple[list[list[int]], int]] = {}
    for p, run in runs.items():
        counter = CountingModel(model, arch())
        first[p] = (run(counter, src, beam, True), counter.flops)
    reps: dict[str, list[dict[str, float]]] = {p: [] for p in runs}
    for _ in range(args.repeats):
        for p, run in runs.items():
            hyps, flops = first[p]
            tokens = sum(len(h) + 1 for h in hyps)  # EOS included
            peak = matmul_peak(device, p)
            t = time.perf_counter()
            run(model, src, beam, True)
            dt = time.perf_counter() - t
            reps[p].append({
                "sentences_per_s": len(src) / dt, "tokens_per_s": tokens / dt,
                "flops_per_s": flops / dt, "peak_flops_per_s": peak,
                "mfu": flops / dt / peak, "seconds": dt,
            })  # fmt: skip
    out: dict[str, dict[str, Any]] = {}
    for p in runs:
        hyps, flops = first[p]
        tokens = sum(len(h) + 1 for h in hyps)
        out[p] = {k: summary([r[k] for r in reps[p]]) for k in reps[p][0]}
        out[p].update({
            "sentences": len(src), "output_tokens": tokens, "model_flops": flops,
            "mean_output_len": tokens / len(src) - 1, "hyps": hyps,
        })  # fmt: skip
    return out


def _cache_speedup(
    args: argparse.Namespace,
    run: Callable[[Any, list[list[int]], int, bool], list[list[int]]],
    model: Any,
    src_all: list[list[int]],
) -> dict[str, Any]:
    """uncached time / cached time on the same subset, measured back to back."""
    src = src_all[: args.uncached_sentences]
    out: dict[str, Any] = {"sentences": len(src)}
    for name, beam in (("greedy", 1), ("beam5", 5)):
        ratios, cached_s, uncached_s = [], [], []
        same = run(model, src, beam, True) == run(model, src, beam, False)
        for _ in range(args.repeats):
            t = time.perf_counter()
            run(model, src, beam, True)
            t1 = time.perf_counter()
            run(model, src, beam, False)
            t2 = time.perf_counter()
            cached_s.append(t1 - t)
            uncached_s.append(t2 - t1)
            ratios.append((t2 - t1) / (t1 - t))
        out[name] = {
            "speedup": summary(ratios), "cached_s": summary(cached_s),
            "uncached_s": summary(uncached_s), "same_output": same,
        }  # fmt: skip
    return out
