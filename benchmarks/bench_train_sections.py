"""`make bench`'s training sections, each run in its own process by bench.py `--section`:
`train` (throughput, MFU, validation loss per precision), `train_memory` (RSS of one
precision) and `model` (trains and caches the decode section's model).
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import TYPE_CHECKING, Any

from benchmarks.bench_common import (
    MB,
    VOCAB,
    arch,
    bench_config,
    endless_batches,
    matmul_peak,
    model_path,
    peak_rss_mb,
    prepared_data,
    rss_mb,
    sentence_lengths,
    setup_torch,
    summary,
    sync,
)

if TYPE_CHECKING:
    import torch

    from mtkit.config.schema import ExperimentConfig

logger = logging.getLogger("bench")  # one name for every section's log lines


# --------------------------------------------------------------------------- section: train


def make_stepper(args: argparse.Namespace, cfg: ExperimentConfig, device: torch.device) -> Any:
    from mtkit.distributed import Dist
    from mtkit.model.transformer import build_model
    from mtkit.training.update import make_optimizer, wrap_model

    model = build_model(cfg, VOCAB, VOCAB).to(device)
    optimizer = make_optimizer(model, cfg.training)
    return wrap_model(model, optimizer, cfg.training, device, Dist())


class TrainRun:
    """One precision's model, optimizer and batch stream: what `mtkit train` runs per update.

    Every TrainRun starts from the same initial weights and draws the same batches.
    """

    def __init__(
        self, args: argparse.Namespace, encoded: Any, device: torch.device, precision: str
    ) -> None:
        import torch

        self.cfg = bench_config(args, precision)
        torch.manual_seed(self.cfg.training.seed)
        self.stepper = make_stepper(args, self.cfg, device)
        self.batches = endless_batches(encoded["train"], args.max_tokens, self.cfg.training.seed)
        self.device, self.precision, self.arch = device, precision, arch()

    def step(self) -> dict[str, float]:
        """One update; its tokens, padded positions, model FLOPs, batch-building and total time."""
        from mtkit.training.update import update

        t0 = time.perf_counter()
        batch = next(self.batches)
        t1 = time.perf_counter()
        update(self.stepper, [batch], 5e-4, lambda: False)
        sync(self.device)
        t2 = time.perf_counter()
        src, tgt = sentence_lengths(batch)
        flops = sum(self.arch.train_flops(s, t) for s, t in zip(src, tgt, strict=True))
        return {
            "tokens": batch.n_src_tokens + batch.n_tgt_tokens,
            "padded": batch.src.numel() + batch.tgt_in.numel(),
            "flops": flops, "host": t1 - t0, "time": t2 - t0,
        }  # fmt: skip

    def repetition(self, steps: int) -> dict[str, float]:
        """The matmul peak, then `steps` timed updates: one repetition's figures."""
        peak = matmul_peak(self.device, self.precision)
        done = [self.step() for _ in range(steps)]
        tot = {k: sum(s[k] for s in done) for k in done[0]}
        flops_per_s = tot["flops"] / tot["time"]
        return {
            "tokens_per_s": tot["tokens"] / tot["time"], "flops_per_s": flops_per_s,
            "peak_flops_per_s": peak, "mfu": flops_per_s / peak,
            "padding_share": 1 - tot["tokens"] / tot["padded"],
            "host_share": tot["host"] / tot["time"], "step_s": tot["time"] / len(done),
            "flops_per_token": tot["flops"] / tot["tokens"],
        }  # fmt: skip

    def valid_loss(self, split: Any) -> float:
        """Mean NLL per target token on `split`, evaluated in float32 for every precision."""
        from dataclasses import replace

        from mtkit.training.validation import validation_loss

        t = replace(self.cfg.training, precision="float32")
        return validation_loss(self.stepper.raw, split, t, self.device)[0]


def section_train(args: argparse.Namespace) -> dict[str, Any]:
    """Per precision: tokens/s, FLOP/s, MFU, padding and host shares, alternating repetitions
    in this one process; then each model's validation loss after the same updates."""
    device = setup_torch(args)
    encoded, _ = prepared_data(args)
    runs = {p: TrainRun(args, encoded, device, p) for p in args.precisions}
    out: dict[str, Any] = {}
    for p, run in runs.items():
        t = time.perf_counter()
        for _ in range(args.warmup_steps):
            run.step()
        out[p] = {"warmup_s": time.perf_counter() - t}
    reps: dict[str, list[dict[str, float]]] = {p: [] for p in runs}
    for _ in range(args.repeats):
        for p, run in runs.items():
            reps[p].append(run.repetition(args.train_steps))
    for p, run in runs.items():
        out[p].update({k: summary([r[k] for r in reps[p]]) for k in reps[p][0]})
        out[p].update({
            "steps_per_repeat": args.train_steps, "warmup_steps": args.warmup_steps,
            "batches_per_epoch": _batches_per_epoch(encoded["train"], args.max_tokens),
            "timed_steps": args.warmup_steps + args.repeats * args.train_steps,
            "valid_loss": run.valid_loss(encoded["valid"]),
        })  # fmt: skip
    return out


def section_train_memory(args: argparse.Namespace) -> dict[str, Any]:
    """RSS over warm-up + max(rss_steps, train_steps) updates of one precision, in a process
    of its own (so the peak RSS is that precision's alone)."""
    import torch

    device = setup_torch(args)
    encoded, _ = prepared_data(args)
    run = TrainRun(args, encoded, device, args.precisions[0])
    trace: list[float] = []
    for _ in range(args.warmup_steps + max(args.rss_steps, args.train_steps)):
        run.step()
        trace.append(rss_mb())
    after_warmup = trace[args.warmup_steps - 1] if args.warmup_steps else trace[0]
    out: dict[str, Any] = {
        "rss_steps": len(trace), "rss_after_warmup_mb": after_warmup,
        "rss_end_mb": trace[-1], "rss_max_mb": max(trace),
        "rss_trace_mb": [round(x, 1) for x in trace[:: max(1, len(trace) // 60)]],
        "rss_growth_mb": trace[-1] - after_warmup, "peak_rss_mb": peak_rss_mb(),
        "rss_growth_second_half_mb": trace[-1] - trace[len(trace) // 2],
    }  # fmt: skip
    if device.type == "cuda":
        out["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated(device) / MB
    return out


def _batches_per_epoch(split: Any, max_tokens: int) -> int:
    from mtkit.data.batching import TokenBatchSampler, lengths

    src, tgt = lengths(split)
    return len(TokenBatchSampler(src, tgt, max_tokens))


# --------------------------------------------------------------------------- section: model


def section_model(args: argparse.Namespace) -> dict[str, Any]:
    """Train the benchmark model for `--model-steps` updates and cache its weights."""
    import torch

    from mtkit.training.schedule import learning_rate
    from mtkit.training.update import update

    device = setup_torch(args)
    encoded, _ = prepared_data(args)
    cfg = bench_config(args, args.precisions[0])
    torch.manual_seed(cfg.training.seed)
    stepper = make_stepper(args, cfg, device)
    it = endless_batches(encoded["train"], args.max_tokens, cfg.training.seed)
    warmup = max(1, args.model_steps // 4)
    start = time.perf_counter()
    for i in range(1, args.model_steps + 1):
        lr = learning_rate(i, schedule="inverse_sqrt", peak=1e-3, warmup=warmup, total=0)
        result = update(stepper, [next(it)], lr, lambda: False)
        if i % 50 == 0 or i == args.model_steps:
            loss = float(result.loss) / max(result.tokens, 1)
            logger.info("decode model: update %d/%d, loss %.3f", i, args.model_steps, loss)
    path = model_path(args)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(stepper.raw.state_dict(), path)
    return {"path": str(path), "steps": args.model_steps, "seconds": time.perf_counter() - start}
