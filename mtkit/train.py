"""`mtkit train`: the optimisation loop, validation, checkpoints and metrics of one run."""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from mtkit.checkpoint import atomic_write_bytes, load_checkpoint, save_checkpoint
from mtkit.config import ExperimentConfig, config_to_dict, dump_config
from mtkit.data import Batch, batches, load_prepared
from mtkit.errors import MtkitError
from mtkit.loss import label_smoothed_cross_entropy
from mtkit.metrics import corpus_bleu
from mtkit.model import Transformer
from mtkit.prepare import prepare
from mtkit.runtime import (
    autocast_context,
    check_precision,
    resolve_device,
    seed_everything,
    set_threads,
)
from mtkit.tokenizer import PAD_ID, TokenizerPair
from mtkit.translate import DecodeOptions, build_model, translate_ids

logger = logging.getLogger(__name__)


class RunDirError(MtkitError):
    """The run directory is in a state that this training request would damage."""


@dataclass
class TrainState:
    """Counters that a checkpoint must carry for the run to continue exactly."""

    step: int = 0  # optimizer updates done
    epoch: int = 0  # current epoch, 0-based
    batch_in_epoch: int = 0  # batches of the current epoch already consumed
    best_score: float | None = None  # best validation score so far (higher is better)
    best_step: int = 0
    elapsed: float = 0.0  # seconds of training before this process started


def inverse_sqrt_lr(step: int, peak_lr: float, warmup: int) -> float:
    """The Transformer paper's schedule, scaled to reach `peak_lr` at the end of warm-up.

    1) linear warm-up from 0 to peak over `warmup` updates; 2) decay as 1/sqrt(step).
    `step` counts updates from 1.
    """
    step = max(step, 1)
    if warmup == 0:
        return peak_lr
    return peak_lr * min(step / warmup, math.sqrt(warmup / step))


def prepare_run_dir(cfg: ExperimentConfig, resume: bool, overwrite: bool) -> Path:
    """Create the run directory; refuse to clobber an existing run unless told."""
    run_dir = cfg.run_path
    existing = run_dir / "last.pt"
    if existing.exists() and not (resume or overwrite):
        raise RunDirError(
            f"{run_dir}: already holds a training run (last.pt); pass --resume to continue it "
            "or --overwrite to start again"
        )
    if overwrite and not resume:
        for name in ("last.pt", "best.pt", "metrics.jsonl"):
            (run_dir / name).unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(run_dir / "config.yaml", dump_config(cfg).encode("utf-8"))
    return run_dir


def make_optimizer(model: torch.nn.Module, cfg: ExperimentConfig) -> torch.optim.Adam:
    """Adam (or AdamW when weight decay is set) with the config's betas and epsilon."""
    t = cfg.training
    if t.weight_decay > 0:
        return torch.optim.AdamW(
            model.parameters(), lr=t.lr, betas=t.betas, eps=t.adam_eps,
            weight_decay=t.weight_decay,
        )  # fmt: skip
    return torch.optim.Adam(model.parameters(), lr=t.lr, betas=t.betas, eps=t.adam_eps)


def train_step(
    model: Transformer,
    batch: Batch,
    optimizer: torch.optim.Optimizer,
    cfg: ExperimentConfig,
    device: torch.device,
) -> tuple[float, float, int]:
    """One update on one batch; returns (summed loss, summed nll, target tokens)."""
    model.train()
    with autocast_context(device, cfg.training.precision):
        logits = model(batch.src, batch.src_mask, batch.tgt_in)  # (batch, tgt_len, vocab)
        loss_sum, nll_sum = label_smoothed_cross_entropy(
            logits, batch.tgt_out, cfg.training.label_smoothing, PAD_ID
        )
    n_tokens = batch.n_tgt_tokens
    optimizer.zero_grad(set_to_none=True)
    (loss_sum / max(n_tokens, 1)).backward()  # type: ignore[no-untyped-call]
    if cfg.training.clip_norm > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.training.clip_norm)
    optimizer.step()
    return float(loss_sum.item()), float(nll_sum.item()), n_tokens


@torch.no_grad()
def validation_loss(
    model: Transformer, split: Any, cfg: ExperimentConfig, device: torch.device
) -> tuple[float, float]:
    """Mean per-token NLL and perplexity over a whole split (no label smoothing)."""
    model.eval()
    nll_total, tokens = 0.0, 0
    for batch in batches(split, cfg.training.max_tokens, shuffle=False, seed=0, epoch=0):
        batch = batch.to(device)
        with autocast_context(device, cfg.training.precision):
            logits = model(batch.src, batch.src_mask, batch.tgt_in)  # (batch, tgt_len, vocab)
            _, nll = label_smoothed_cross_entropy(logits, batch.tgt_out, 0.0, PAD_ID)
        nll_total += float(nll.item())
        tokens += batch.n_tgt_tokens
    mean = nll_total / max(tokens, 1)
    return mean, math.exp(min(mean, 50.0))


def validation_bleu(
    model: Transformer,
    encoded: Any,
    text: Any,
    tokenizers: TokenizerPair,
    cfg: ExperimentConfig,
    device: torch.device,
) -> tuple[float, list[tuple[str, str, str]]]:
    """Greedy-decode the first N dev sentences and score them with sacreBLEU."""
    n = min(cfg.training.valid_bleu_sentences, len(encoded))
    if n == 0:
        return 0.0, []
    src_ids = encoded.select(range(n))["src_ids"]
    options = DecodeOptions(
        beam_size=1, max_len_a=cfg.decoding.max_len_a, max_len_b=cfg.decoding.max_len_b,
        max_tokens=cfg.decoding.max_tokens,
    )  # fmt: skip
    hyps = tokenizers.tgt.decode(translate_ids(model, src_ids, options, device))
    rows = text.select(range(n))
    refs, srcs = list(rows["tgt"]), list(rows["src"])
    return corpus_bleu(hyps, refs), list(zip(srcs[:3], refs[:3], hyps[:3], strict=True))


def log_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    """Append one JSON line to the run's metrics file."""
    with (run_dir / "metrics.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def format_duration(seconds: float) -> str:
    """'1h02m', '4m10s' or '12s'."""
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def checkpoint_state(
    model: Transformer,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    cfg: ExperimentConfig,
    tokenizers: TokenizerPair,
) -> dict[str, Any]:
    """Everything needed to translate with, or continue, this run."""
    return {
        "config": config_to_dict(cfg),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "train_state": asdict(state),
        "vocab": {"src": tokenizers.src.vocab_size, "tgt": tokenizers.tgt.vocab_size},
        "tokenizer": tokenizers.model_files(),
        "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},
    }


def epoch_batches(split: Any, cfg: ExperimentConfig, state: TrainState) -> Iterator[Batch]:
    """Batches of the current epoch, skipping those a resumed run already consumed."""
    it = batches(
        split, cfg.training.max_tokens, shuffle=True, seed=cfg.training.seed, epoch=state.epoch
    )
    for i, batch in enumerate(it):
        if i >= state.batch_in_epoch:
            yield batch


def should_stop(cfg: ExperimentConfig, state: TrainState, elapsed: float) -> str | None:
    """The reason to stop now, or None to go on."""
    t = cfg.training
    if state.step >= t.max_steps:
        return f"reached training.max_steps={t.max_steps}"
    if t.max_epochs and state.epoch >= t.max_epochs:
        return f"reached training.max_epochs={t.max_epochs}"
    if t.max_time and elapsed >= t.max_time * 60:
        return f"reached training.max_time={t.max_time} minutes"
    return None


def train(cfg: ExperimentConfig, *, resume: bool = False, overwrite: bool = False) -> Path:
    """Prepare data if needed, train, validate and checkpoint; return the run directory."""
    run_dir = prepare_run_dir(cfg, resume, overwrite)
    device = resolve_device(cfg.training.device)
    check_precision(cfg.training.precision, device)
    set_threads(cfg.training.threads)
    prepared = prepare(cfg)
    tokenizers = TokenizerPair.load(prepared)
    tokenizers.save(run_dir)
    encoded = load_prepared(prepared)
    from datasets import load_from_disk

    text = load_from_disk(str(prepared / "text"))

    seed_everything(cfg.training.seed)
    model = build_model(cfg, tokenizers.src.vocab_size, tokenizers.tgt.vocab_size).to(device)
    optimizer = make_optimizer(model, cfg)
    state = TrainState()
    if resume and (run_dir / "last.pt").exists():
        state = restore(run_dir / "last.pt", model, optimizer)
        logger.info("resumed from %s at step %d", run_dir / "last.pt", state.step)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info(
        "model: %.2fM parameters | device %s | %d training pairs | run dir %s",
        n_params / 1e6, device, len(encoded["train"]), run_dir,
    )  # fmt: skip
    loop(cfg, model, optimizer, state, encoded, text, tokenizers, device, run_dir)
    return run_dir


def restore(path: Path, model: Transformer, optimizer: torch.optim.Optimizer) -> TrainState:
    """Load model, optimizer, counters and RNG states from a checkpoint."""
    ckpt = load_checkpoint(path)
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    torch.set_rng_state(ckpt["rng"]["torch"])
    random.setstate(_as_tuple(ckpt["rng"]["python"]))
    return TrainState(**ckpt["train_state"])


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def loop(
    cfg: ExperimentConfig,
    model: Transformer,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    encoded: Any,
    text: Any,
    tokenizers: TokenizerPair,
    device: torch.device,
    run_dir: Path,
) -> None:
    """Run updates until a stopping rule fires, validating and checkpointing as configured."""
    t = cfg.training
    start = time.monotonic() - state.elapsed
    window = {"loss": 0.0, "nll": 0.0, "tokens": 0, "src_tokens": 0, "time": time.monotonic()}
    reason = should_stop(cfg, state, state.elapsed)
    while reason is None:
        for batch in epoch_batches(encoded["train"], cfg, state):
            for group in optimizer.param_groups:
                group["lr"] = inverse_sqrt_lr(state.step + 1, t.lr, t.warmup_steps)
            loss, nll, n_tokens = train_step(model, batch.to(device), optimizer, cfg, device)
            state.step += 1
            state.batch_in_epoch += 1
            window["loss"] += loss
            window["nll"] += nll
            window["tokens"] += n_tokens
            window["src_tokens"] += batch.n_src_tokens
            if state.step % t.log_every == 0:
                report_progress(cfg, state, window, start, run_dir, optimizer)
            if state.step % t.valid_every == 0:
                state.elapsed = time.monotonic() - start
                validate(cfg, model, optimizer, state, encoded, text, tokenizers, device, run_dir)
            reason = should_stop(cfg, state, time.monotonic() - start)
            if reason:
                break
        else:
            state.epoch += 1
            state.batch_in_epoch = 0
            reason = should_stop(cfg, state, time.monotonic() - start)
    state.elapsed = time.monotonic() - start
    if state.step % t.valid_every != 0 or state.step == 0:
        validate(cfg, model, optimizer, state, encoded, text, tokenizers, device, run_dir)
    logger.info(
        "training stopped: %s after %d steps in %s; best validation score %.2f at step %d",
        reason, state.step, format_duration(state.elapsed), state.best_score or 0.0,
        state.best_step,
    )  # fmt: skip


def report_progress(
    cfg: ExperimentConfig,
    state: TrainState,
    window: dict[str, float],
    start: float,
    run_dir: Path,
    optimizer: torch.optim.Optimizer,
) -> None:
    """Log one progress line (loss, ppl, lr, tokens/s, ETA) and append it to metrics.jsonl."""
    now = time.monotonic()
    tokens = max(window["tokens"], 1)
    loss, ppl = window["loss"] / tokens, math.exp(min(window["nll"] / tokens, 50.0))
    rate = (window["tokens"] + window["src_tokens"]) / max(now - window["time"], 1e-9)
    elapsed = now - start
    remaining = (cfg.training.max_steps - state.step) * elapsed / max(state.step, 1)
    if cfg.training.max_time:
        remaining = min(remaining, cfg.training.max_time * 60 - elapsed)
    lr = optimizer.param_groups[0]["lr"]
    logger.info(
        "step %d/%d | epoch %d | loss %.3f | ppl %.1f | lr %.2e | %.0f tok/s | elapsed %s | "
        "eta %s", state.step, cfg.training.max_steps, state.epoch + 1, loss, ppl, lr, rate,
        format_duration(elapsed), format_duration(remaining),
    )  # fmt: skip
    log_metrics(run_dir, {
        "kind": "train", "step": state.step, "epoch": state.epoch, "loss": loss, "ppl": ppl,
        "lr": lr, "tokens_per_s": rate, "elapsed_s": elapsed,
    })  # fmt: skip
    window.update(loss=0.0, nll=0.0, tokens=0, src_tokens=0, time=now)


def validate(
    cfg: ExperimentConfig,
    model: Transformer,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    encoded: Any,
    text: Any,
    tokenizers: TokenizerPair,
    device: torch.device,
    run_dir: Path,
) -> None:
    """Dev loss and greedy BLEU; save last.pt, and best.pt when the score improves."""
    nll, ppl = validation_loss(model, encoded["valid"], cfg, device)
    bleu, examples = validation_bleu(
        model, encoded["valid"], text["valid"], tokenizers, cfg, device
    )
    score = bleu if cfg.training.valid_bleu_sentences > 0 else -nll
    improved = state.best_score is None or score > state.best_score
    if improved:
        state.best_score, state.best_step = score, state.step
    logger.info(
        "validation at step %d | loss %.3f | ppl %.2f | greedy BLEU %.2f%s",
        state.step, nll, ppl, bleu, " | new best" if improved else "",
    )  # fmt: skip
    for src, ref, hyp in examples:
        logger.info("  src: %s\n  ref: %s\n  hyp: %s", src, ref, hyp)
    log_metrics(run_dir, {
        "kind": "valid", "step": state.step, "loss": nll, "ppl": ppl, "bleu": bleu,
        "elapsed_s": state.elapsed, "best": improved,
    })  # fmt: skip
    ckpt = checkpoint_state(model, optimizer, state, cfg, tokenizers)
    save_checkpoint(run_dir / "last.pt", ckpt)
    if improved:
        save_checkpoint(run_dir / "best.pt", ckpt)
