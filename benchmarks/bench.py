"""`make bench`: training throughput and MFU, decoding speed, data preparation time and memory.

    .venv/bin/python benchmarks/bench.py            # full run (~15-20 min on 2 CPU cores)
    .venv/bin/python benchmarks/bench.py --quick    # smoke run (~1-2 min)
    .venv/bin/python benchmarks/bench.py --data-scale   # also prepare 1,000,000 pairs

One fixed setup: d_model 256, 3+3 layers, 4 heads, FFN 1024, joint BPE vocabulary of 8000 and
a token budget of 4096 per batch, on Multi30k en-de (`--data-dir`, default ../shared/data).
Prints a table and writes JSON (bench_results/bench.json by default).

How the figures are made (see README "Performance"):
- Every figure is the median (min-max) of `--repeats` repetitions. Each section runs in its
  own subprocess, so peak RSS is that section's alone.
- Precisions: `--precision float32,bfloat16` measures both side by side, alternating
  repetition by repetition in one process, from the same initial weights and batches. The
  default is float32, plus bfloat16 where `precision: auto` would pick it (CUDA with bf16; a
  CPU with AVX512-BF16/AMX whose bf16 matmul probes >= 1.5x fp32); the table's first line
  says what the CPU supports. Peak RSS comes from one more process per precision.
- Peak: the best of 3 large matmuls in the repetition's precision on the same threads,
  measured right before each repetition. MFU of a repetition = its model FLOP/s divided by
  the peak measured next to it: on a shared machine both see the same load.
- Model FLOPs come from the architecture (benchmarks/flops.py, checked against
  torch.utils.flop_counter in tests/unit/test_bench_flops.py); padding counts as waste.
- Training times mtkit.training.update.update (forward, loss, backward, clipping, optimizer
  step) plus building the batch from the prepared dataset, i.e. what `mtkit train` does per
  update. After the timed updates each precision's model is scored on the validation split
  (mean NLL per token, evaluated in float32): equal within noise means bf16 trains as well.
- Decoding times mtkit.search over test2016.en in token-budget batches (as translate does).
  Its model is the benchmark model trained for `--model-steps` updates (cached under
  bench_results/): decoding speed depends on output lengths, and a random model stops at
  random. `--decode-model random` uses random weights and forces every output to exactly
  FORCED_LEN tokens instead (also what `--quick` does when no trained model is cached).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make `benchmarks` and `mtkit` importable
    sys.path.insert(0, str(REPO))

from benchmarks.bench_table import format_table  # noqa: E402
from benchmarks.flops import Arch  # noqa: E402

if TYPE_CHECKING:
    import torch

    from mtkit.config.schema import ExperimentConfig
    from mtkit.model.cache import DecoderCache
    from mtkit.model.transformer import Transformer

logger = logging.getLogger("bench")

FORCED_LEN = 20  # output length of every sentence when decoding with random weights
MODEL = {"d_model": 256, "n_heads": 4, "encoder_layers": 3, "decoder_layers": 3, "d_ff": 1024}
VOCAB = 8000
MAX_TOKENS = 4096  # the fixed token budget per training batch (source + target, padded)
MB = 1024 * 1024


# --------------------------------------------------------------------------- arguments


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a ~1-2 minute smoke run")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument(
        "--precision", type=precision_list, default=None,
        help="comma-separated float32,bfloat16 (default: float32, and bfloat16 where `auto` "
        "picks it)",
    )  # fmt: skip
    p.add_argument("--compile", action="store_true", help="torch.compile the training model")
    p.add_argument("--threads", type=int, default=0, help="torch threads; 0 = all cores")
    p.add_argument(
        "--system-malloc", action="store_true",
        help="skip mtkit.runtime.keep_freed_memory (what train/translate do), to measure it",
    )  # fmt: skip
    p.add_argument(
        "--onednn-caches", action="store_true",
        help="skip mtkit.runtime.limit_onednn_caches in training (what train does), to measure it",
    )  # fmt: skip
    p.add_argument("--max-tokens", type=int, default=MAX_TOKENS, help="training token budget")
    p.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--out", type=Path, default=REPO / "bench_results" / "bench.json")
    p.add_argument("--cache-dir", type=Path, default=REPO / "bench_results")
    p.add_argument("--sections", default="train,decode,data", help="comma-separated subset")
    p.add_argument("--repeats", type=int, help="repetitions per figure (default 5; quick 3)")
    p.add_argument("--train-steps", type=int, help="updates per repetition (default 20)")
    p.add_argument("--warmup-steps", type=int, help="untimed updates first (default 5)")
    p.add_argument("--rss-steps", type=int, help="extra updates watching RSS (default 150)")
    p.add_argument("--decode-sentences", type=int, help="test2016 sentences (default 1000)")
    p.add_argument("--uncached-sentences", type=int, help="subset for cached/uncached (200)")
    p.add_argument("--decode-max-tokens", type=int, default=4000, help="source tokens/batch")
    p.add_argument("--decode-model", choices=["trained", "random"], default=None)
    p.add_argument("--model-steps", type=int, default=300, help="updates of the decode model")
    p.add_argument("--data-scale", action="store_true", help="also prepare 1,000,000 pairs")
    p.add_argument("--scale-pairs", type=int, default=1_000_000)
    p.add_argument("--section", help=argparse.SUPPRESS)  # internal: run one section
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)  # internal: its JSON
    p.add_argument("--corpus", default="multi30k", help=argparse.SUPPRESS)  # internal
    args = p.parse_args(argv)
    quick = args.quick
    defaults = {
        "repeats": 3 if quick else 5,
        "train_steps": 3 if quick else 20,
        "warmup_steps": 2 if quick else 5,
        "rss_steps": 0 if quick else 150,
        "decode_sentences": 100 if quick else 1000,
        "uncached_sentences": 30 if quick else 200,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.precisions = args.precision or ["float32"]  # main() adds bf16 where auto picks it
    args.precision = ",".join(args.precisions)
    if args.decode_model is None:
        trained_cached = model_path(args).exists()
        args.decode_model = "random" if quick and not trained_cached else "trained"
    return args


def precision_list(text: str) -> list[str]:
    """'float32,bfloat16' -> ['float32', 'bfloat16'] (argparse type)."""
    names = list(dict.fromkeys(x.strip() for x in text.split(",") if x.strip()))
    bad = [x for x in names if x not in ("float32", "bfloat16")]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"expected float32 and/or bfloat16, got {text!r}")
    return names


def forwarded(argv: list[str]) -> list[str]:
    """The user's arguments, without the internal ones, for a section subprocess."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--section", "--result", "--corpus"):
            skip = True
            continue
        if a.split("=")[0] in ("--section", "--result", "--corpus"):
            continue
        out.append(a)
    return out


# --------------------------------------------------------------------------- measurement helpers


def summary(values: list[float]) -> dict[str, float]:
    """Median, min, max and count of repeated measurements."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def rss_mb() -> float:
    """Current resident set size of this process (Linux /proc; else the peak)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / MB
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def setup_torch(args: argparse.Namespace) -> torch.device:
    """Threads, quiet libraries, and the device (a clear error when CUDA is missing)."""
    import datasets
    import torch

    from mtkit.runtime import keep_freed_memory, limit_onednn_caches

    datasets.disable_progress_bars()
    training = getattr(args, "section", None) in ("train", "train_memory", "model")
    if training and not getattr(args, "onednn_caches", False):  # compare_joeynmt: no flag
        limit_onednn_caches()  # as mtkit train does (before any bf16 matmul)
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    if not args.system_malloc:
        keep_freed_memory()  # as mtkit train / translate do
    if args.device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit(
                "bench: --device cuda was asked for but torch.cuda.is_available() is False "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}); "
                "install a CUDA build of torch on a GPU machine, or drop --device cuda"
            )
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return torch.device(args.device)


def bf16_support(device: torch.device) -> dict[str, Any]:
    """What the device says about bf16 and what `precision: auto` picks (mtkit.runtime)."""
    from mtkit.runtime import choose_precision, probe_bf16

    probe = probe_bf16(device)
    choice = choose_precision(device, probe)
    return {
        "native": probe.native, "matmul_speedup": probe.speedup, "auto": choice.precision,
        "reason": choice.reason,
    }  # fmt: skip


def sync(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, precision: str) -> float:
    """FLOP/s of the best of 3 large square matmuls in the working precision."""
    import torch

    dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
    n, inner = (8192, 20) if device.type == "cuda" else (2048, 1)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm-up
    best = 0.0
    for _ in range(3):
        sync(device)
        t = time.perf_counter()
        for _ in range(inner):
            a @ b
        sync(device)
        best = max(best, 2 * n**3 * inner / (time.perf_counter() - t))
    return best


def arch() -> Arch:
    return Arch(
        MODEL["d_model"], MODEL["d_ff"], VOCAB, MODEL["encoder_layers"], MODEL["decoder_layers"]
    )


def bench_config(
    args: argparse.Namespace, precision: str = "float32", **training: Any
) -> ExperimentConfig:
    """The fixed benchmark experiment over Multi30k en-de."""
    from mtkit.config.load import config_from_dict

    m30k = args.data_dir / "multi30k"
    return config_from_dict({
        "name": "bench",
        "data": {
            "train": str(m30k / "train"), "valid": str(m30k / "val"),
            "test": str(m30k / "test2016"),
            "prepared_dir": str(args.cache_dir / "prepared" / "multi30k"),
        },
        "tokenizer": {"vocab_size": VOCAB, "joint": True},
        "model": dict(MODEL),
        "training": {
            "device": args.device, "precision": precision, "max_tokens": args.max_tokens,
            "compile": args.compile, **training,
        },
    })  # fmt: skip


def prepared_data(args: argparse.Namespace) -> tuple[Any, ExperimentConfig]:
    """The encoded Multi30k splits (prepared once, then reused from the cache)."""
    from mtkit.data.batching import load_prepared
    from mtkit.data.prepare import prepare

    cfg = bench_config(args)
    return load_prepared(prepare(cfg)), cfg


def endless_batches(split: Any, max_tokens: int, seed: int) -> Iterator[Any]:
    """Training batches epoch after epoch, as the training loop draws them."""
    from mtkit.data.batching import TokenBatchSampler, collate_columns, lengths

    sampler = TokenBatchSampler(*lengths(split), max_tokens, shuffle=True, seed=seed)
    columns = split.select_columns(["src_ids", "tgt_ids"])
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        for indices in sampler:
            rows = columns[indices]
            yield collate_columns(rows["src_ids"], rows["tgt_ids"])
        epoch += 1


def sentence_lengths(batch: Any) -> tuple[list[int], list[int]]:
    """Real (non-padding) source and target lengths per sentence of a Batch."""
    from mtkit.data.tokenizer import PAD_ID

    src = batch.src_mask.sum(dim=1).tolist()
    tgt = (batch.tgt_out != PAD_ID).sum(dim=1).tolist()
    return src, tgt


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


def model_path(args: argparse.Namespace) -> Path:
    """Cached decode model: keyed by architecture, steps and the benchmark data."""
    key = json.dumps(
        [MODEL, VOCAB, args.max_tokens, args.model_steps, str(args.data_dir.resolve())],
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return Path(args.cache_dir) / f"decode_model-{args.model_steps}steps-{digest}.pt"


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


# --------------------------------------------------------------------------- section: decode


class CountingModel:
    """Delegates to a Transformer and adds up the model FLOPs of what search asks it to do."""

    def __init__(self, model: Transformer, a: Arch) -> None:
        self.model, self.arch, self.flops = model, a, 0
        self.pad_id, self.max_positions = model.pad_id, model.max_positions

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


# --------------------------------------------------------------------------- section: prepare


def section_prepare(args: argparse.Namespace) -> dict[str, Any]:
    """One `mtkit.data.prepare.prepare` run from scratch: wall time and this process's peak RSS."""
    import datasets

    from mtkit.config.load import config_from_dict
    from mtkit.data.prepare import prepare

    datasets.disable_progress_bars()
    if args.corpus == "multi30k":
        base = args.data_dir / "multi30k"
        train, valid, test = base / "train", base / "val", base / "test2016"
        dedup = True
    else:
        base, tat = args.cache_dir / "scale", args.data_dir / "tatoeba_anki_en_de"
        train, valid, test, dedup = base / "train", tat / "val", tat / "test", False
    rss_before = rss_mb()
    with tempfile.TemporaryDirectory(dir=args.cache_dir) as tmp:
        cfg = config_from_dict({
            "data": {
                "train": str(train), "valid": str(valid), "test": str(test),
                "prepared_dir": str(Path(tmp) / "prepared"), "dedup": dedup,
            },
            "tokenizer": {"vocab_size": VOCAB, "joint": True},
        })  # fmt: skip
        t = time.perf_counter()
        prepare(cfg, force=True)
        seconds = time.perf_counter() - t
        stats = json.loads((Path(tmp) / "prepared" / "stats.json").read_text())
    pairs = _train_pairs(stats)
    return {
        "seconds": seconds, "peak_rss_mb": peak_rss_mb(), "rss_after_imports_mb": rss_before,
        "train_pairs_kept": pairs, "dedup": dedup,
    }  # fmt: skip


def _train_pairs(stats: dict[str, Any]) -> int | None:
    """Kept training pairs from prepare's stats.json, wherever its layout puts them."""
    train = stats.get("train", stats.get("splits", {}).get("train"))
    if isinstance(train, dict):
        for key in ("kept", "pairs", "rows"):
            if isinstance(train.get(key), int):
                return int(train[key])
    return None


def build_scale_corpus(args: argparse.Namespace) -> Path:
    """`--scale-pairs` pairs made by repeating the Tatoeba en-de training set (cached)."""
    tat = args.data_dir / "tatoeba_anki_en_de"
    out = Path(args.cache_dir) / "scale"
    done = out / f".done-{args.scale_pairs}"
    if done.exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    for lang in ("en", "de"):
        lines = (tat / f"train.{lang}").read_bytes().splitlines(keepends=True)
        with open(out / f"train.{lang}", "wb") as f:
            for i in range(args.scale_pairs):
                f.write(lines[i % len(lines)])
    done.touch()
    return out


# --------------------------------------------------------------------------- orchestration

SECTIONS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "train": section_train,
    "train_memory": section_train_memory,
    "model": section_model,
    "decode": section_decode,
    "prepare": section_prepare,
}


def run_section(name: str, argv: list[str], *extra: str) -> dict[str, Any]:
    """Run one section in a fresh Python process (its own peak RSS); returns its JSON."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        result = Path(f.name)
    try:
        cmd = [sys.executable, __file__, *forwarded(argv), "--section", name]
        cmd += ["--result", str(result), *extra]
        load = os.getloadavg()[0]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=REPO)
        data: dict[str, Any] = json.loads(result.read_text())
        data["wall_s"] = time.perf_counter() - start
        data["load_avg_1min_before"] = load
        data["load_avg_1min_after"] = os.getloadavg()[0]
        return data
    finally:
        result.unlink(missing_ok=True)


def data_section(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    """Prepare time and peak RSS, each repetition in its own process."""
    out: dict[str, Any] = {}
    corpora = ["multi30k"] + (["scale"] if args.data_scale else [])
    for corpus in corpora:
        if corpus == "scale":
            build_scale_corpus(args)
        runs = [run_section("prepare", argv, "--corpus", corpus) for _ in range(args.repeats)]
        out[corpus] = {
            "seconds": summary([r["seconds"] for r in runs]),
            "peak_rss_mb": summary([r["peak_rss_mb"] for r in runs]),
            "rss_after_imports_mb": summary([r["rss_after_imports_mb"] for r in runs]),
            "train_pairs_kept": runs[0]["train_pairs_kept"],
            "dedup": runs[0]["dedup"],
        }
        if corpus == "scale":
            out[corpus]["pairs_in"] = args.scale_pairs
    return out


def meta(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    info: dict[str, Any] = {
        "torch": torch.__version__, "python": platform.python_version(),
        "threads": args.threads or os.cpu_count(), "cpu_model": cpu,
        "cpu_count": os.cpu_count(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "device": args.device, "precision": args.precision, "compile": args.compile,
        "precisions": getattr(args, "precisions", [args.precision]),
        "keep_freed_memory": not args.system_malloc,
        "limit_onednn_caches": not getattr(args, "onednn_caches", False),
        "git_commit": commit, "quick": args.quick, "repeats": args.repeats,
        "config": {**MODEL, "vocab": VOCAB, "max_tokens": args.max_tokens},
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "load_avg_start": os.getloadavg(),
    }  # fmt: skip
    if args.device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def require_multi30k(data_dir: Path, prog: str) -> Path:
    """data_dir/multi30k, or one line naming the missing file and --data-dir."""
    m30k = data_dir / "multi30k"
    if not (m30k / "train.en").is_file():
        raise SystemExit(f"{prog}: {m30k}/train.en not found; pass --data-dir DIR (DIR/multi30k/)")
    return m30k


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.section:
        result = SECTIONS[args.section](args)
        args.result.write_text(json.dumps(result, indent=2))
        return 0
    device = setup_torch(args)  # fails early and clearly on --device cuda without CUDA
    require_multi30k(args.data_dir, "bench")
    bf16 = bf16_support(device)
    choose_precisions(args, argv, bf16)
    wanted = [s.strip() for s in args.sections.split(",") if s.strip()]
    results: dict[str, Any] = {"meta": {**meta(args), "bf16": bf16}}
    start = time.perf_counter()
    if "train" in wanted:
        results["train"] = train_sections(args, argv)
    if "decode" in wanted:
        if args.decode_model == "trained" and not model_path(args).exists():
            logger.info("training the decode model (%d updates, cached) ...", args.model_steps)
            results["decode_model"] = run_section("model", argv)
        logger.info("decoding (%s) ...", args.precision)
        results["decode"] = run_section("decode", argv)
    if "data" in wanted:
        logger.info("data preparation ...")
        results["data"] = data_section(args, argv)
    results["meta"]["total_s"] = time.perf_counter() - start
    results["meta"]["load_avg_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(format_table(results))
    print(f"\nwrote {args.out}")
    return 0


def choose_precisions(args: argparse.Namespace, argv: list[str], bf16: dict[str, Any]) -> None:
    """Without --precision: float32, plus bfloat16 where `auto` picks it. The choice is passed
    on to the section processes (appended to `argv`)."""
    if not any(a.split("=")[0] == "--precision" for a in argv):
        args.precisions = ["float32"] + (["bfloat16"] if bf16["auto"] == "bfloat16" else [])
        args.precision = ",".join(args.precisions)
        argv += ["--precision", args.precision]
    if "bfloat16" in args.precisions and bf16["auto"] != "bfloat16":
        logger.warning("bfloat16 here: %s; expect tiny numbers", bf16["reason"])
    logger.info("precisions: %s (precision auto -> %s: %s)", args.precision, bf16["auto"],
                bf16["reason"])  # fmt: skip


def train_sections(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    """Timing of all precisions in one process, then one memory process per precision."""
    logger.info("training throughput (%s) ...", args.precision)
    timing = run_section("train", argv)
    out: dict[str, Any] = {k: v for k, v in timing.items() if k not in args.precisions}
    for p in args.precisions:
        logger.info("training memory (%s) ...", p)
        memory = run_section("train_memory", argv, "--precision", p)
        out[p] = {**timing[p], **{k: memory[k] for k in memory if "rss" in k or "gpu" in k}}
    return out


if __name__ == "__main__":
    sys.exit(main())
