"""`mtkit train`: the optimisation loop, validation, checkpoints and metrics of one run.

Reads like a table of contents: `train` sets up (run directory + lock, data, model, optimizer,
resume), `loop` runs updates until a stopping rule fires, `update` is one optimizer step over
`training.accumulate` micro-batches, `validate` scores the dev set, `save` writes checkpoints.

Under `torchrun` every rank runs this same code on its own shard of the batches; only rank 0
writes files or logs (see mtkit/distributed.py).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from torch import Tensor, nn

from mtkit import distributed
from mtkit.checkpoint import (
    CheckpointError,
    find_resume_checkpoint,
    save_run_checkpoint,
)
from mtkit.config.schema import (
    DecodingConfig,
    ExperimentConfig,
    TrainingConfig,
    config_to_dict,
    dump_config,
)
from mtkit.data.batching import Batch, TokenBatchSampler, collate_columns, lengths, load_prepared
from mtkit.data.prepare import prepare
from mtkit.data.tokenizer import PAD_ID, TokenizerPair
from mtkit.distributed import Dist
from mtkit.errors import MtkitError
from mtkit.evaluation.metrics import corpus_scores
from mtkit.files import atomic_write_bytes
from mtkit.model.transformer import Transformer
from mtkit.runtime import (
    autocast_context,
    check_precision,
    keep_freed_memory,
    preserved_rng,
    resolve_device,
    rng_state,
    seed_everything,
    set_rng_state,
    set_threads,
)
from mtkit.training.loss import label_smoothed_cross_entropy
from mtkit.training.run_dir import RunDirError, RunLock, prepare_run_dir
from mtkit.training.schedule import learning_rate
from mtkit.translation.translator import build_model, translate_ids

logger = logging.getLogger(__name__)

__all__ = ["RunDirError", "TrainState", "TrainingDiverged", "train"]


class TrainingDiverged(MtkitError):
    """Too many updates in a row had a NaN/inf loss or gradient."""


@dataclass
class TrainState:
    """Counters that a checkpoint must carry for the run to continue exactly."""

    step: int = 0  # updates done (skipped NaN/inf updates included)
    epoch: int = 0  # current epoch, 0-based
    batch_in_epoch: int = 0  # micro-batches of this epoch this rank has consumed
    best_score: float | None = None  # best value of training.best_metric so far
    best_step: int = 0
    stale_validations: int = 0  # validations since the last improvement (for patience)
    bad_steps: int = 0  # updates skipped because of a NaN/inf loss or gradient, in total
    bad_in_a_row: int = 0
    elapsed: float = 0.0  # seconds of training before this process started


# --------------------------------------------------------------------------- one update


@dataclass
class Stepper:
    """What one update needs: the model(s), optimizer, precision and process group."""

    model: nn.Module  # what forward runs through: raw, DDP-wrapped and/or compiled
    raw: Transformer  # the plain module: state_dict, validation
    optimizer: torch.optim.Optimizer
    cfg: TrainingConfig
    device: torch.device
    dist: Dist = field(default_factory=Dist)
    ddp: Any = None  # the DistributedDataParallel wrapper (for no_sync), if any
    scaler: Any = None  # torch.amp.GradScaler for float16


@dataclass
class UpdateResult:
    """Sums over one update's micro-batches; tensors stay on the device until logging."""

    loss: Tensor  # summed label-smoothed loss (this rank)
    nll: Tensor  # summed NLL (this rank)
    tokens: int  # target tokens (this rank)
    src_tokens: int  # source tokens (this rank)
    padded: int  # src + tgt positions including padding (this rank)
    bad: Tensor  # 0-d float on the device: 1.0 if NaN/inf made the update a no-op, else 0.0
    stop: bool  # some rank asked to stop (signal or time limit): all ranks agree


def compute_loss(logits: Tensor, target: Tensor, smoothing: float) -> tuple[Tensor, Tensor]:
    """Summed smoothed loss and summed NLL (a seam the fault tests patch to inject NaN)."""
    return label_smoothed_cross_entropy(logits, target, smoothing, PAD_ID)


def _device_scalar(value: float, device: torch.device) -> Tensor:
    """A 0-d float tensor on `device`, copied without blocking the host."""
    t = torch.tensor(value, dtype=torch.float32)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t


def update(
    s: Stepper, micro: list[Batch], lr: float, stop_requested: Callable[[], bool]
) -> UpdateResult:
    """One optimizer update over `micro` (this rank's micro-batches).

    Loss normalisation: every micro-batch's summed loss is multiplied by
    world_size / (target tokens of the whole update over all ranks). DDP averages gradients
    over ranks, so the gradient is that of the summed loss of the union of all micro-batches
    of all ranks divided by its token count: K accumulated batches on N ranks give the same
    update as one batch K*N times larger. Non-final micro-batches skip DDP's all-reduce.
    """
    s.model.train()
    for group in s.optimizer.param_groups:
        group["lr"] = lr
    local_tokens = sum(b.n_tgt_tokens for b in micro)
    if s.dist.active:
        total = distributed.all_reduce(s.dist, _device_scalar(local_tokens, s.device))
        scale: Tensor | float = s.dist.world_size / total.clamp(min=1.0)
    else:
        scale = 1.0 / max(local_tokens, 1)
    loss_sum = torch.zeros((), device=s.device)
    nll_sum = torch.zeros((), device=s.device)
    for i, batch in enumerate(micro):
        last = i == len(micro) - 1
        sync = s.ddp.no_sync() if s.ddp is not None and not last else contextlib.nullcontext()
        with sync:
            if s.device.type == "cuda":  # pinned: the copy does not wait for the GPU
                batch = batch.pin_memory()
            batch = batch.to(s.device)
            with autocast_context(s.device, s.cfg.precision):
                logits = s.model(batch.src, batch.src_mask, batch.tgt_in)  # (batch, tgt_len, V)
                loss, nll = compute_loss(logits, batch.tgt_out, s.cfg.label_smoothing)
            scaled = loss * scale
            (s.scaler.scale(scaled) if s.scaler is not None else scaled).backward()
        loss_sum += loss.detach()
        nll_sum += nll
    bad, stop = _step(s, loss_sum, stop_requested)
    return UpdateResult(
        loss_sum, nll_sum, local_tokens, sum(b.n_src_tokens for b in micro),
        sum(b.src.numel() + b.tgt_in.numel() for b in micro), bad, stop,
    )  # fmt: skip


def _step(s: Stepper, loss_sum: Tensor, stop_requested: Callable[[], bool]) -> tuple[Tensor, bool]:
    """Clip, check for NaN/inf, step or skip; returns (bad, stop), the same on all ranks.

    A single process with a fused Adam skips a bad update on the device (the optimizer's
    `found_inf`, as GradScaler uses it), so the host never waits for the device here. Other
    set-ups read a flag back once per update: under torchrun it also carries the ranks' stop
    requests, which must agree; float16's GradScaler syncs per step anyway.
    """
    if s.scaler is not None:
        s.scaler.unscale_(s.optimizer)
    max_norm = s.cfg.clip_norm if s.cfg.clip_norm > 0 else math.inf
    norm = torch.nn.utils.clip_grad_norm_(s.raw.parameters(), max_norm)
    bad = ~torch.isfinite(loss_sum)
    if s.scaler is None:  # float16: the scaler handles overflowing gradients itself
        bad = bad | ~torch.isfinite(norm)
    bad_f = bad.float()  # 0-d
    if not s.dist.active and s.scaler is None and _skips_on_device(s.optimizer):
        s.optimizer.found_inf = bad_f  # type: ignore[attr-defined]
        s.optimizer.step()
        s.optimizer.zero_grad(set_to_none=True)
        return bad_f, stop_requested()
    flags = torch.zeros(2, device=s.device)  # (bad, stop)
    flags[0] = bad_f
    flags[1] = float(stop_requested())
    skipped, stop = (v > 0 for v in distributed.all_reduce(s.dist, flags, "max").tolist())
    if s.scaler is not None:
        if not skipped:
            s.scaler.step(s.optimizer)
        s.scaler.update()
    elif not skipped:
        s.optimizer.step()
    s.optimizer.zero_grad(set_to_none=True)
    return flags[0], stop


def _skips_on_device(optimizer: torch.optim.Optimizer) -> bool:
    """Fused Adam/AdamW honour `found_inf`: a flagged step changes neither weights nor state."""
    return isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW) and bool(
        optimizer.defaults.get("fused")
    )


class BadSteps:
    """Counts no-op (NaN/inf) updates on the device; read at logging, validation and saving.

    `tripped_at` latches the step at which `max_bad_steps` bad updates in a row were reached.
    """

    def __init__(self, device: torch.device, in_a_row: int = 0, total: int = 0) -> None:
        self.run = torch.tensor(float(in_a_row), device=device)
        self.total = torch.tensor(float(total), device=device)
        self.tripped_at = torch.zeros((), device=device)
        self.reported_total = total

    def add(self, bad: Tensor, step: int, limit: int) -> None:
        self.run = (self.run + bad) * bad
        self.total = self.total + bad
        hit = (self.run >= limit) & (self.tripped_at == 0)
        self.tripped_at = torch.where(hit, float(step), self.tripped_at)

    def read(self) -> tuple[int, int, int]:
        """(bad updates in a row now, in total, step where the limit was hit or 0)."""
        run, total, tripped = torch.stack([self.run, self.total, self.tripped_at]).tolist()
        return int(run), int(total), int(tripped)


# --------------------------------------------------------------------------- setup


def make_optimizer(model: nn.Module, t: TrainingConfig) -> torch.optim.Optimizer:
    """Adam (AdamW when weight decay is set) with the config's betas and epsilon.

    Fused where this torch and device support it: one kernel per step, and a NaN/inf update
    can be skipped on the device.
    """
    kind = torch.optim.AdamW if t.weight_decay > 0 else torch.optim.Adam
    options: dict[str, Any] = {"lr": t.lr, "betas": t.betas, "eps": t.adam_eps}
    if t.weight_decay > 0:
        options["weight_decay"] = t.weight_decay
    try:
        return kind(model.parameters(), fused=True, **options)
    except (RuntimeError, ValueError, TypeError):  # older torch, unsupported device or dtype
        return kind(model.parameters(), **options)


@dataclass
class Data:
    """The training shard's sampler plus the dev split (encoded and text)."""

    sampler: TokenBatchSampler
    train_columns: Any
    valid: Any
    valid_text: Any
    n_train: int


@dataclass
class Run:
    """One training run's pieces, passed to the loop's small functions."""

    cfg: ExperimentConfig
    stepper: Stepper
    state: TrainState
    data: Data
    tokenizers: TokenizerPair
    run_dir: Path
    interrupt: Interrupt
    sink: MetricsSink
    bad: BadSteps
    saved_step: int = -1  # step of the newest checkpoint written by this process

    @property
    def dist(self) -> Dist:
        return self.stepper.dist


class Interrupt:
    """SIGINT/SIGTERM handler: the first signal asks the loop to stop after this update and
    save; a second SIGINT gives up at once (KeyboardInterrupt)."""

    def __init__(self) -> None:
        self.signal_name: str | None = None

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    @contextlib.contextmanager
    def installed(self) -> Iterator[Interrupt]:
        """Handle SIGINT/SIGTERM inside the block (main thread only), then restore."""
        try:
            old = {sig: signal.signal(sig, self) for sig in (signal.SIGINT, signal.SIGTERM)}
        except ValueError:  # not the main thread: leave signals alone
            yield self
            return
        try:
            yield self
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)


def train(cfg: ExperimentConfig, *, resume: bool = False, overwrite: bool = False) -> Path:
    """Prepare data if needed, train, validate and checkpoint; return the run directory.

    Single process, or one rank of a `torchrun` job (see mtkit/distributed.py).
    """
    device = resolve_device(cfg.training.device)
    check_precision(cfg.training.precision, device)
    set_threads(cfg.training.threads)
    keep_freed_memory()  # large per-step tensors reuse the heap instead of fresh pages
    dist_info, device = distributed.init_from_env(device)
    try:
        run_dir = _train(cfg, dist_info, device, Interrupt(), resume, overwrite)
    except BaseException:
        distributed.close(dist_info)  # a failing rank must not wait for peers that may be gone
        raise
    distributed.close(dist_info, wait_for_peers=True)
    return run_dir


def _train(
    cfg: ExperimentConfig,
    d: Dist,
    device: torch.device,
    interrupt: Interrupt,
    resume: bool,
    overwrite: bool,
) -> Path:
    run_dir = cfg.run_path
    lock: RunLock | None = None
    error: Exception | None = None
    if d.is_main:  # one writer: run directory, lock, prepared data
        try:
            lock = prepare_run_dir(run_dir, dump_config(cfg), resume=resume, overwrite=overwrite)
            prepare(cfg)
        except Exception as e:
            error = e
    try:
        distributed.check_peers(d, error)
        run = build_run(cfg, d, device, interrupt, resume)
        with interrupt.installed():  # from here on, a signal means "save and stop"
            loop(run)
    finally:
        if lock is not None:
            lock.release()
    return run_dir


def build_run(
    cfg: ExperimentConfig, d: Dist, device: torch.device, interrupt: Interrupt, resume: bool
) -> Run:
    """Load data and tokenizers, build model/optimizer, restore a checkpoint when resuming."""
    t = cfg.training
    prepared = Path(cfg.data.prepared_dir)
    tokenizers = TokenizerPair.load(prepared)
    data = load_data(cfg, prepared, d)
    seed_everything(t.seed)  # identical initial weights on every rank
    raw = build_model(cfg, tokenizers.src.vocab_size, tokenizers.tgt.vocab_size).to(device)
    optimizer = make_optimizer(raw, t)
    seed_everything(t.seed + d.rank)  # per-rank dropout streams
    stepper = wrap_model(raw, optimizer, t, device, d)
    state = TrainState()
    found = find_resume_checkpoint(cfg.run_path) if resume else None
    if found is not None:
        state = restore(found[0], found[1], stepper, d)
        logger.info("resumed from %s at step %d", found[0], state.step)
    elif resume:
        logger.info("--resume: %s holds no checkpoint yet; starting from scratch", cfg.run_path)
    bad = BadSteps(device, state.bad_in_a_row, state.bad_steps)
    run = Run(
        cfg, stepper, state, data, tokenizers, cfg.run_path, interrupt, MetricsSink(None), bad
    )
    if d.is_main:
        for name, blob in tokenizers.model_files().items():
            path = cfg.run_path / name
            if not path.is_file() or path.read_bytes() != blob:
                atomic_write_bytes(path, blob)
        run.sink = MetricsSink(cfg.run_path)
        log_setup(run)
    return run


def load_data(cfg: ExperimentConfig, prepared: Path, d: Dist) -> Data:
    """This rank's token-budget sampler over train, and the dev split."""
    from datasets import load_from_disk

    encoded = load_prepared(prepared)
    text = load_from_disk(str(prepared / "text"))
    src_len, tgt_len = lengths(encoded["train"])
    sampler = TokenBatchSampler(
        src_len, tgt_len, cfg.training.max_tokens, shuffle=True, seed=cfg.training.seed,
        rank=d.rank, world_size=d.world_size,
    )  # fmt: skip
    if len(sampler) == 0:
        raise MtkitError(f"{prepared}: the training split is empty")
    columns = encoded["train"].select_columns(["src_ids", "tgt_ids"])
    return Data(sampler, columns, encoded["valid"], text["valid"], len(encoded["train"]))


def wrap_model(
    raw: Transformer, optimizer: torch.optim.Optimizer, t: TrainingConfig, device: torch.device,
    d: Dist,
) -> Stepper:  # fmt: skip
    """DDP under torchrun, torch.compile when asked, a GradScaler for float16."""
    model: nn.Module = raw
    ddp = None
    if d.active:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        ddp = DistributedDataParallel(raw, device_ids=ids)
        model = ddp
    if t.compile:
        model = torch.compile(model)  # type: ignore[assignment]
    scaler = torch.amp.GradScaler("cuda") if t.precision == "float16" else None
    return Stepper(model, raw, optimizer, t, device, d, ddp, scaler)


def restore(path: Path, ckpt: dict[str, Any], s: Stepper, d: Dist) -> TrainState:
    """Load model, optimizer, scaler, counters and this rank's RNG states from a checkpoint."""
    try:
        s.raw.load_state_dict(ckpt["model"])
        s.optimizer.load_state_dict(ckpt["optimizer"])
    except (KeyError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path}: cannot resume from it with this config ({first}); resume with the "
            "model settings the run was started with"
        ) from None
    if s.scaler is not None and ckpt.get("scaler"):
        s.scaler.load_state_dict(ckpt["scaler"])
    state = TrainState(**ckpt["train_state"])
    rngs = ckpt["rng"] if isinstance(ckpt["rng"], list) else [ckpt["rng"]]
    saved_world = int(ckpt.get("world_size", 1))
    if saved_world != d.world_size:
        logger.warning(
            "resuming a %d-process run with %d process(es): data order and dropout will differ "
            "from an uninterrupted run", saved_world, d.world_size,
        )  # fmt: skip
        state.batch_in_epoch = state.batch_in_epoch * saved_world // d.world_size
    set_rng_state(rngs[d.rank] if d.rank < len(rngs) else rngs[0])
    return state


def log_setup(run: Run) -> None:
    """One line on the model and one on the global batch."""
    t, d = run.cfg.training, run.dist
    n_params = sum(p.numel() for p in run.stepper.raw.parameters())
    logger.info(
        "model: %.2fM parameters | device %s | %d training pairs | run dir %s",
        n_params / 1e6, run.stepper.device, run.data.n_train, run.run_dir,
    )  # fmt: skip
    logger.info(
        "global batch: up to %d tokens per update = %d per batch x %d rank(s) x %d accumulated"
        " | %d batches per epoch per rank | schedule %s, peak lr %.2e, warm-up %d",
        t.max_tokens * d.world_size * t.accumulate, t.max_tokens, d.world_size, t.accumulate,
        len(run.data.sampler), t.schedule, t.lr, t.warmup_steps,
    )  # fmt: skip


# --------------------------------------------------------------------------- the loop


def micro_batches(run: Run) -> Iterator[Batch]:
    """This rank's batches, epoch after epoch, starting at the checkpointed position.

    The position (epoch, batch_in_epoch) in `run.state` advances as batches are handed out,
    so at every update boundary it says exactly where a resumed run must continue; skipping
    to it only slices the sampler's index lists (no batch is built).
    """
    state, sampler, columns = run.state, run.data.sampler, run.data.train_columns
    while True:
        sampler.set_epoch(state.epoch)
        for indices in itertools.islice(sampler, state.batch_in_epoch, None):
            state.batch_in_epoch += 1
            rows = columns[indices]
            yield collate_columns(rows["src_ids"], rows["tgt_ids"], PAD_ID)
        state.epoch += 1
        state.batch_in_epoch = 0


def epochs_done(run: Run) -> int:
    """Completed epochs (an epoch whose last batch was used counts as done)."""
    finished = run.state.batch_in_epoch >= len(run.data.sampler)
    return run.state.epoch + int(finished)


def stop_reason(run: Run) -> str | None:
    """The step/epoch limits (the same on every rank); time and signals go through `update`."""
    t = run.cfg.training
    if run.state.step >= t.max_steps:
        return f"reached training.max_steps={t.max_steps}"
    if t.max_epochs and epochs_done(run) >= t.max_epochs:
        return f"reached training.max_epochs={t.max_epochs}"
    return None


@dataclass
class Window:
    """Training statistics since the last progress line (loss sums stay on the device)."""

    loss: Tensor
    nll: Tensor
    tokens: int = 0
    src_tokens: int = 0
    padded: int = 0
    start: float = field(default_factory=time.monotonic)

    def add(self, r: UpdateResult) -> None:
        self.loss += r.loss
        self.nll += r.nll
        self.tokens += r.tokens
        self.src_tokens += r.src_tokens
        self.padded += r.padded


def loop(run: Run) -> None:
    """Run updates until a stopping rule fires, validating and checkpointing as configured."""
    t, state = run.cfg.training, run.state
    start = time.monotonic() - state.elapsed

    def stop_requested() -> bool:
        return run.interrupt.requested or bool(
            t.max_time and time.monotonic() - start >= t.max_time * 60
        )

    def new_window() -> Window:
        zero = torch.zeros((), device=run.stepper.device)
        return Window(zero.clone(), zero.clone())

    batches = micro_batches(run)
    window = new_window()
    reason = stop_reason(run)
    validated = False
    while reason is None:
        lr = learning_rate(
            state.step + 1, schedule=t.schedule, peak=t.lr, warmup=t.warmup_steps,
            total=t.max_steps, floor=t.min_lr,
        )  # fmt: skip
        result = update(run.stepper, [next(batches) for _ in range(t.accumulate)], lr,
                        stop_requested)  # fmt: skip
        state.step += 1
        state.elapsed = time.monotonic() - start
        run.bad.add(result.bad, state.step, t.max_bad_steps)
        window.add(result)
        at_log, at_valid = state.step % t.log_every == 0, state.step % t.valid_every == 0
        at_save = bool(t.save_every) and state.step % t.save_every == 0
        if at_log or at_valid or at_save or result.stop or stop_reason(run):
            reason = check_bad_steps(run)  # reads device counters: only at these points
        if at_log:
            report_progress(run, window, start, lr)
            window = new_window()
        validated = reason is None and at_valid
        if validated:
            reason = validate(run)
        if validated or at_save:
            save(run, best=state.best_step == state.step)
        if result.stop and reason is None:
            reason = "interrupted" if run.interrupt.requested else (
                f"reached training.max_time={t.max_time} minutes")  # fmt: skip
        reason = reason or stop_reason(run)
    finish(run, reason, validated)


def check_bad_steps(run: Run) -> str | None:
    """Bring the NaN/inf counters to the host, warn about new ones; a reason to stop or None.

    Bad updates changed nothing (weights and optimizer state stay as they were), so finding
    them a few updates late, at the next progress line, validation or checkpoint, costs nothing
    but time; the step range of the first run of `max_bad_steps` is exact.
    """
    state, limit = run.state, run.cfg.training.max_bad_steps
    in_a_row, total, tripped = run.bad.read()
    new = total - state.bad_steps
    state.bad_steps, state.bad_in_a_row = total, in_a_row
    if new:
        logger.warning(
            "%d update(s) up to step %d had a NaN/inf loss or gradient and were skipped "
            "(%d in a row now, %d in total)", new, state.step, in_a_row, total,
        )  # fmt: skip
    if tripped:
        return (
            f"diverged: {limit} updates in a row (steps {tripped - limit + 1}-{tripped}) had a "
            f"NaN/inf loss or gradient (training.max_bad_steps={limit})"
        )
    return None


def finish(run: Run, reason: str, validated: bool) -> None:
    """Final validation and checkpoint, then say why training stopped."""
    state, d = run.state, run.dist
    resume_hint = f"mtkit train {run.run_dir} --resume"
    if reason == "interrupted" or reason.startswith("diverged"):
        if run.saved_step != state.step:
            save(run, best=False)
        run.sink.close()
        if reason.startswith("diverged"):
            raise TrainingDiverged(
                f"training stopped: {reason[len('diverged: ') :]}; bad updates were skipped, so "
                f"last.pt holds usable weights (lower training.lr, or resume: {resume_hint})"
            )
        if d.is_main:
            logger.warning(
                "interrupted (%s) at step %d; checkpoint saved to %s. Resume with: %s",
                run.interrupt.signal_name, state.step, run.run_dir / "last.pt", resume_hint,
            )  # fmt: skip
        return
    if not validated:
        validate(run)
    if run.saved_step != state.step:
        save(run, best=state.best_step == state.step)
    run.sink.close()
    if d.is_main:
        best = "none" if state.best_score is None else f"{state.best_score:.3f}"
        logger.info(
            "training stopped: %s after %d steps in %s; best %s %s at step %d",
            reason, state.step, format_duration(state.elapsed), run.cfg.training.best_metric,
            best, state.best_step,
        )  # fmt: skip


# --------------------------------------------------------------------------- logging


class MetricsSink:
    """metrics.jsonl, plus TensorBoard event files when `tensorboard` is installed.

    Built with None on ranks other than 0: then it drops everything.
    """

    def __init__(self, run_dir: Path | None) -> None:
        self.run_dir = run_dir
        self.writer: Any = None
        if run_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:
                self.writer = None

    def write(self, record: dict[str, Any]) -> None:
        if self.run_dir is None:
            return
        with (self.run_dir / "metrics.jsonl").open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if key not in ("kind", "step", "best") and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"{record['kind']}/{key}", value, record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def format_duration(seconds: float) -> str:
    """'1h02m', '4m10s' or '12s'."""
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def report_progress(run: Run, window: Window, start: float, lr: float) -> None:
    """Log one progress line (loss, ppl, lr, tokens/s, padding, ETA); append to metrics.jsonl.

    Reads the device-side loss sums (the only sync besides the per-update flag); under
    torchrun the window is summed over ranks first, so the numbers describe the global batch.
    """
    t, state = run.cfg.training, run.state
    stats = torch.stack([
        window.loss, window.nll, *(torch.tensor(float(v), device=window.loss.device)
                                   for v in (window.tokens, window.src_tokens, window.padded))
    ])  # fmt: skip
    loss_sum, nll_sum, tokens, src_tokens, padded = distributed.all_reduce(run.dist, stats).tolist()
    if not run.dist.is_main:
        return
    now = time.monotonic()
    tokens = max(tokens, 1.0)
    loss, ppl = loss_sum / tokens, math.exp(min(nll_sum / tokens, 50.0))
    rate = (tokens + src_tokens) / max(now - window.start, 1e-9)
    pad = 1.0 - (tokens + src_tokens) / max(padded, 1.0)
    elapsed = now - start
    remaining = (t.max_steps - state.step) * elapsed / max(state.step, 1)
    if t.max_time:
        remaining = min(remaining, t.max_time * 60 - elapsed)
    logger.info(
        "step %d/%d | epoch %d | loss %.3f | ppl %.1f | lr %.2e | %.0f tok/s | pad %.0f%% | "
        "elapsed %s | eta %s", state.step, t.max_steps, state.epoch + 1, loss, ppl, lr, rate,
        100 * pad, format_duration(elapsed), format_duration(remaining),
    )  # fmt: skip
    run.sink.write({
        "kind": "train", "step": state.step, "epoch": state.epoch, "loss": loss, "ppl": ppl,
        "lr": lr, "tokens_per_s": rate, "pad_share": pad, "elapsed_s": elapsed,
        "bad_steps": state.bad_steps,
    })  # fmt: skip


# --------------------------------------------------------------------------- validation


@torch.no_grad()
def validation_loss(
    model: Transformer, split: Any, t: TrainingConfig, device: torch.device
) -> tuple[float, float]:
    """Mean per-token NLL and perplexity over a whole split (no label smoothing)."""
    model.eval()
    nll_total, tokens = torch.zeros((), device=device), 0
    src_len, tgt_len = lengths(split)
    sampler = TokenBatchSampler(src_len, tgt_len, t.max_tokens, shuffle=False)
    columns = split.select_columns(["src_ids", "tgt_ids"])
    for indices in sampler:
        rows = columns[indices]
        batch = collate_columns(rows["src_ids"], rows["tgt_ids"], PAD_ID).to(device)
        with autocast_context(device, t.precision):
            logits = model(batch.src, batch.src_mask, batch.tgt_in)  # (batch, tgt_len, vocab)
            _, nll = compute_loss(logits, batch.tgt_out, 0.0)
        nll_total += nll
        tokens += batch.n_tgt_tokens
    mean = float(nll_total.item()) / max(tokens, 1)
    return mean, math.exp(min(mean, 50.0)) if math.isfinite(mean) else math.inf


def validation_scores(run: Run) -> tuple[dict[str, float], list[tuple[str, str, str]]]:
    """Greedy-decode the first N dev sentences; BLEU and chrF with sacreBLEU."""
    cfg, device = run.cfg, run.stepper.device
    n = min(cfg.training.valid_bleu_sentences, len(run.data.valid))
    if n == 0:
        return {}, []
    src_ids = run.data.valid.select(range(n))["src_ids"]
    greedy = DecodingConfig(
        beam_size=1, max_len_a=cfg.decoding.max_len_a, max_len_b=cfg.decoding.max_len_b,
        max_tokens=cfg.decoding.max_tokens,
    )  # fmt: skip
    out = translate_ids(run.stepper.raw, src_ids, greedy, device)
    hyps = run.tokenizers.tgt.decode(out)
    rows = run.data.valid_text.select(range(n))
    refs, srcs = list(rows["tgt"]), list(rows["src"])
    scores = {r.name: r.score for r in corpus_scores(hyps, [refs], ("bleu", "chrf"))}
    return scores, list(zip(srcs[:3], refs[:3], hyps[:3], strict=True))


def is_improvement(metric: str, value: float, best: float | None) -> bool:
    """Whether `value` beats `best` (loss: lower; BLEU/chrF: higher); NaN/inf never does."""
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    return value < best if metric == "loss" else value > best


def validate(run: Run) -> str | None:
    """Score the dev set on rank 0, share the verdict with all ranks; early-stopping reason.

    Runs under `preserved_rng` (and in eval mode), so validating never shifts the training
    RNG streams: a resumed run stays identical to an uninterrupted one.
    """
    state, t = run.state, run.cfg.training
    verdict = None
    if run.dist.is_main:
        with preserved_rng():
            nll, ppl = validation_loss(run.stepper.raw, run.data.valid, t, run.stepper.device)
            scores, examples = validation_scores(run)
        values = {"loss": nll, "ppl": ppl, **scores}
        if is_improvement(t.best_metric, values[t.best_metric], state.best_score):
            state.best_score, state.best_step, state.stale_validations = (
                values[t.best_metric], state.step, 0)  # fmt: skip
        else:
            state.stale_validations += 1
        log_validation(run, values, examples)
        verdict = (state.best_score, state.best_step, state.stale_validations)
    state.best_score, state.best_step, state.stale_validations = distributed.broadcast_object(
        run.dist, verdict
    )
    if t.patience and state.stale_validations >= t.patience:
        return (
            f"early stopping: {state.stale_validations} validations without a better "
            f"{t.best_metric} (training.patience={t.patience})"
        )
    return None


def log_validation(
    run: Run, values: dict[str, float], examples: list[tuple[str, str, str]]
) -> None:
    """The validation results as a small table, a few examples, and a metrics.jsonl line."""
    state, metric = run.state, run.cfg.training.best_metric
    improved = state.best_step == state.step
    rows = [f"  {'metric':<6} {'value':>9}"]
    rows += [f"  {name:<6} {value:>9.3f}" for name, value in values.items()]
    best = "none" if state.best_score is None else f"{state.best_score:.3f}"
    since = " (new best)" if improved else f" ({state.stale_validations} validations ago)"
    rows.append(f"  best {metric} {best} at step {state.best_step}{since}")
    logger.info("validation at step %d\n%s", state.step, "\n".join(rows))
    for src, ref, hyp in examples:
        logger.info("  src: %s\n  ref: %s\n  hyp: %s", src, ref, hyp)
    run.sink.write({
        "kind": "valid", "step": state.step, **values, "elapsed_s": state.elapsed,
        "best": improved,
    })  # fmt: skip


# --------------------------------------------------------------------------- checkpoints


def checkpoint_state(run: Run, rngs: list[dict[str, Any]]) -> dict[str, Any]:
    """Everything needed to translate with, or continue, this run."""
    s = run.stepper
    return {
        "config": config_to_dict(run.cfg),
        "model": s.raw.state_dict(),
        "optimizer": s.optimizer.state_dict(),
        "scaler": s.scaler.state_dict() if s.scaler is not None else None,
        "scheduler": {"name": run.cfg.training.schedule, "step": run.state.step},
        "train_state": asdict(run.state),
        "vocab": {"src": run.tokenizers.src.vocab_size, "tgt": run.tokenizers.tgt.vocab_size},
        "tokenizer": run.tokenizers.model_files(),
        "rng": rngs,  # one entry per rank, in rank order
        "world_size": run.dist.world_size,
    }


def save(run: Run, *, best: bool) -> None:
    """Collect every rank's RNG state; rank 0 writes step_N.pt, last.pt (and best.pt)."""
    rngs = distributed.gather_objects(run.dist, rng_state())
    run.saved_step = run.state.step
    if not run.dist.is_main:
        return
    path = save_run_checkpoint(
        run.run_dir, checkpoint_state(run, rngs), run.state.step, best=best,
        keep_last=run.cfg.training.keep_last,
    )  # fmt: skip
    logger.info("saved checkpoint %s%s", path.name, " (best)" if best else "")
