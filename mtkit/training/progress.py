"""Progress lines: training statistics since the last line, tokens/s, ETA, durations."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from mtkit import distributed
from mtkit.progress import format_duration
from mtkit.training.state import Run
from mtkit.training.update import UpdateResult

logger = logging.getLogger(__name__)


@dataclass
class Window:
    """Training statistics since the last progress line (sums stay on the device)."""

    loss: Tensor
    nll: Tensor
    grad_norm: Tensor  # sum of the finite pre-clip gradient norms
    normed: Tensor  # how many updates had a finite one
    tokens: int = 0
    src_tokens: int = 0
    padded: int = 0
    start: float = field(default_factory=time.monotonic)

    @classmethod
    def on(cls, device: torch.device) -> Window:
        """An empty window whose sums live on `device`."""
        zero = torch.zeros((), device=device)
        return cls(zero.clone(), zero.clone(), zero.clone(), zero.clone())

    def add(self, r: UpdateResult) -> None:
        self.loss += r.loss
        self.nll += r.nll
        finite = torch.isfinite(r.grad_norm)  # a skipped NaN/inf update counts in no mean
        self.grad_norm += torch.where(finite, r.grad_norm, 0.0)
        self.normed += finite.float()
        self.tokens += r.tokens
        self.src_tokens += r.src_tokens
        self.padded += r.padded


@dataclass(frozen=True)
class Clock:
    """A run's training time: `start` is when its elapsed time (which counts the time before a
    resume) was zero; `began` and `first_step` are when and at which step this process began.
    """

    start: float
    began: float
    first_step: int

    @classmethod
    def begin(cls, elapsed: float, step: int) -> Clock:
        """A clock for a process starting now, `elapsed` seconds and `step` steps into its run."""
        now = time.monotonic()
        return cls(start=now - elapsed, began=now, first_step=step)

    def remaining(self, now: float, step: int, max_steps: int) -> float:
        """Seconds until `max_steps` at this process's own rate: steps counted before it began
        (a resumed run's, a `--keep-schedule` parent's) took time it did not measure, or none."""
        done = max(step - self.first_step, 1)
        return (max_steps - step) * (now - self.began) / done


def report_progress(run: Run, window: Window, clock: Clock, lr: float) -> None:
    """Log one progress line (loss, ppl, lr, mean pre-clip gradient norm, tokens/s, padding,
    ETA); append to metrics.jsonl.

    Reads the device-side sums (the only sync besides the per-update flag); under torchrun
    the window is summed over ranks first, so the numbers describe the global batch (every rank
    has the same all-reduced gradient, so its norm's mean is unchanged).
    """
    t, state = run.cfg.training, run.state
    stats = torch.stack([
        window.loss, window.nll, window.grad_norm, window.normed,
        *(torch.tensor(float(v), device=window.loss.device)
          for v in (window.tokens, window.src_tokens, window.padded)),
    ])  # fmt: skip
    loss_sum, nll_sum, norm_sum, normed, tokens, src_tokens, padded = distributed.all_reduce(
        run.dist, stats
    ).tolist()
    if not run.dist.is_main:
        return
    now = time.monotonic()
    tokens = max(tokens, 1.0)
    loss, ppl = loss_sum / tokens, math.exp(min(nll_sum / tokens, 50.0))
    gnorm = norm_sum / normed if normed else None  # None: every update was NaN/inf
    rate = (tokens + src_tokens) / max(now - window.start, 1e-9)
    pad = 1.0 - (tokens + src_tokens) / max(padded, 1.0)
    elapsed = now - clock.start
    remaining = clock.remaining(now, state.step, t.max_steps)
    if t.max_time:
        remaining = min(remaining, t.max_time * 60 - elapsed)
    logger.info(
        "step %d/%d | epoch %d | loss %.3f | ppl %.1f | lr %.2e | gnorm %s | %.0f tok/s | "
        "pad %.0f%% | elapsed %s | eta %s", state.step, t.max_steps, state.epoch + 1, loss, ppl,
        lr, "-" if gnorm is None else f"{gnorm:.3g}", rate, 100 * pad, format_duration(elapsed),
        format_duration(remaining),
    )  # fmt: skip
    run.sink.write({
        "kind": "train", "step": state.step, "epoch": state.epoch, "loss": loss, "ppl": ppl,
        "lr": lr, "grad_norm": gnorm, "tokens_per_s": rate, "pad_share": pad,
        "elapsed_s": elapsed, "bad_steps": state.bad_steps,
    })  # fmt: skip


def compile_started(run: Run) -> float | None:
    """With `training.compile`, say that the first update compiles the model (it can take
    minutes, silently); returns when it started, or None without compile."""
    if not run.cfg.training.compile:
        return None
    if run.dist.is_main:
        logger.info("compiling the model (torch.compile); the first update waits for it...")
    return time.monotonic()


def compile_finished(run: Run, started: float) -> None:
    """Log how long the first (compiling) update took."""
    if run.dist.is_main:
        elapsed = format_duration(time.monotonic() - started)
        logger.info("compiled: the first update took %s", elapsed)
