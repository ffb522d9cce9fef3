"""What every `make bench` section shares: the fixed model and data, the benchmark config and
batches, run metadata, and the measurements (summary, RSS, matmul peak, bf16 probe).

Also used by compare_joeynmt.py and compare_joeynmt_cli.py, so their figures are made the
same way as bench.py's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.flops import Arch

if TYPE_CHECKING:
    import torch

    from mtkit.config.schema import ExperimentConfig

REPO = Path(__file__).resolve().parents[1]
MODEL = {"d_model": 256, "n_heads": 4, "encoder_layers": 3, "decoder_layers": 3, "d_ff": 1024}
VOCAB = 8000
MAX_TOKENS = 4096  # the fixed token budget per training batch (source + target, padded)
MB = 1024 * 1024


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


# --------------------------------------------------------------------------- model and data


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


def model_path(args: argparse.Namespace) -> Path:
    """Cached decode model: keyed by architecture, steps and the benchmark data."""
    key = json.dumps(
        [MODEL, VOCAB, args.max_tokens, args.model_steps, str(args.data_dir.resolve())],
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return Path(args.cache_dir) / f"decode_model-{args.model_steps}steps-{digest}.pt"


# --------------------------------------------------------------------------- run metadata


def cpu_fields(text: str | None = None) -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (or of `text`); {} where unreadable."""
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # the end of the first processor's block
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_model(fields: dict[str, str] | None = None) -> str:
    """The CPU's model name with its family and model numbers, which tell apart the CPUs
    a VM names alike ("Intel(R) Xeon(R) Processor (family 6, model 207)"); else what
    `platform` knows."""
    fields = cpu_fields() if fields is None else fields
    name = fields.get("model name") or platform.processor() or "unknown"
    if "cpu family" in fields and "model" in fields:
        return f"{name} (family {fields['cpu family']}, model {fields['model']})"
    return name


def cpu_flags(fields: dict[str, str] | None = None) -> set[str]:
    """The CPU's instruction-set flags (avx2, avx512_bf16, amx_bf16, ...); empty if unknown."""
    fields = cpu_fields() if fields is None else fields
    return set(fields.get("flags", "").split())


def meta(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    info: dict[str, Any] = {
        "torch": torch.__version__, "python": platform.python_version(),
        "threads": args.threads or os.cpu_count(), "cpu_model": cpu_model(),
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


# --------------------------------------------------------------------------- decoding benchmarks


def run_source_parser(doc: str, lines: int, lines_help: str) -> argparse.ArgumentParser:
    """A parser with what every decoding benchmark takes: RUN, SOURCE and --lines."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("run", type=Path, help="run directory or checkpoint")
    parser.add_argument("source", type=Path, help="source text, one sentence per line")
    parser.add_argument("--lines", type=int, default=lines, help=lines_help)
    return parser


def report_or_error(
    build: Callable[[], dict[str, Any]], table: Callable[[dict[str, Any]], str], path: Path
) -> int:
    """`build()` the report, then `write_report` it (0); an MtkitError or ValueError (a bad run,
    source or option) is one `error:` line on stderr instead (1), and nothing is written."""
    from mtkit.errors import MtkitError

    try:
        report = build()
    except (MtkitError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return write_report(table(report), report, path)


def write_report(table: str, report: dict[str, Any], path: Path) -> int:
    """Print `table` and write `report` to `path` as JSON; returns 0 (the exit status)."""
    print(table)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}")
    return 0
