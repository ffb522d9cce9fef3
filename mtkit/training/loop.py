"""`mtkit train`: set a run up, run updates until a stopping rule fires, then finish.

Reads like a table of contents: `train` sets up (run directory + lock, data, model, optimizer,
resume: state.py), `loop` runs updates until a stopping rule fires, `update` is one optimizer
step over `training.accumulate` micro-batches (update.py), `validate` scores the dev set
(validation.py), `save` writes checkpoints (checkpoints.py), `report_progress` logs
(progress.py).

Under `torchrun` every rank runs this same code on its own shard of the batches; only rank 0
writes files or logs (see mtkit/distributed.py).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from mtkit import distributed
from mtkit.config.paths import absolute_paths
from mtkit.config.schema import ExperimentConfig
from mtkit.data.batching import Batch
from mtkit.data.prepare import prepare
from mtkit.distributed import Dist
from mtkit.errors import MtkitError, plural
from mtkit.progress import QUIET, Progress, format_duration
from mtkit.runtime import (
    check_precision,
    keep_freed_memory,
    limit_onednn_caches,
    resolve_device,
    set_threads,
)  # fmt: skip
from mtkit.training.checkpoints import save
from mtkit.training.interrupt import Interrupt, stop_on_sigterm
from mtkit.training.progress import (
    Clock,
    Window,
    compile_finished,
    compile_started,
    report_progress,
)
from mtkit.training.resume_guard import check_resume
from mtkit.training.run_dir import RunDirError, RunLock, check_run_dir, prepare_run_dir
from mtkit.training.schedule import learning_rate
from mtkit.training.state import Origin, Run, TrainState, build_run, find_origin
from mtkit.training.tokenizer_guard import check_same_tokenizer
from mtkit.training.update import update
from mtkit.training.validation import check_bleu_tokenizer, validate

logger = logging.getLogger(__name__)

__all__ = ["RunDirError", "TrainState", "TrainingDiverged", "train"]


class TrainingDiverged(MtkitError):
    """Too many updates in a row had a NaN/inf loss or gradient."""


def train(
    cfg: ExperimentConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: Progress = QUIET,
    start_log: Callable[[], None] | None = None,
) -> Path:
    """Prepare data if needed, train, validate and checkpoint; return the run directory.

    Single process, or one rank of a `torchrun` job (see mtkit/distributed.py). The run's
    config (RUN/config.yaml, and in every checkpoint) holds absolute paths (config/paths.py).
    `progress` shows the stages of preparing the data (training logs its own progress lines).
    Nothing is written before the config, the run directory and (with `resume`) the checkpoint
    are checked; `start_log` (e.g. opening train.log) runs once they are. A SIGTERM before the
    first update stops at once, releasing the run lock.
    """
    given = cfg.run_path
    cfg = absolute_paths(cfg)
    with stop_on_sigterm():
        check_bleu_tokenizer(cfg)  # a typo fails now, not at the first validation
        device = resolve_device(cfg.training.device)
        check_precision(cfg.training.precision, device)
        set_threads(cfg.training.threads)
        keep_freed_memory()  # large per-step tensors reuse the heap instead of fresh pages
        limit_onednn_caches()  # bf16 on CPU: no compiled matmul kept per batch shape
        dist_info, device = distributed.init_from_env(device)
        try:
            _train(cfg, dist_info, device, Interrupt(), resume, overwrite, progress, start_log)
        except BaseException:
            distributed.close(dist_info)  # a failing rank must not wait for peers that are gone
            raise
    distributed.close(dist_info, wait_for_peers=True)
    return given


def _train(
    cfg: ExperimentConfig,
    d: Dist,
    device: torch.device,
    interrupt: Interrupt,
    resume: bool,
    overwrite: bool,
    progress: Progress,
    start_log: Callable[[], None] | None,
) -> Path:
    run_dir = cfg.run_path
    lock: RunLock | None = None
    error: Exception | None = None
    origin: Origin | None = None
    if d.is_main:  # one writer: run directory, lock, prepared data
        try:
            origin = find_origin(cfg, resume)
            check_run_dir(run_dir, resume=resume, overwrite=overwrite)
            if origin.resumed is not None:  # before anything is written
                check_resume(cfg, *origin.resumed)
            if start_log is not None:
                start_log()
            lock = prepare_run_dir(run_dir, resume=resume, overwrite=overwrite)
            prepared = prepare(cfg, tokenizers=origin.tokenizers(cfg), progress=progress)
            if origin.resumed is not None:
                check_same_tokenizer(cfg, prepared, origin.resumed[1])
        except Exception as e:
            error = e
    try:
        distributed.check_peers(d, error)
        run = build_run(cfg, d, device, interrupt, origin or find_origin(cfg, resume))
        origin = None  # the loaded checkpoint: its memory is not needed while training
        with interrupt.installed():  # from here on, a signal means "save and stop"
            loop(run)
    finally:
        if lock is not None:
            lock.release()
    return run_dir


def micro_batches(run: Run) -> Iterator[Batch]:
    """This rank's batches, epoch after epoch, starting at the checkpointed position.

    The position (epoch, batch_in_epoch) in `run.state` advances as batches are handed out,
    so at every update boundary it says exactly where a resumed run must continue; skipping
    to it only slices the epoch's index lists (no batch is built). With subword sampling the
    epoch is segmented and planned anew, seeded by its number (data/sampling.py).
    """
    state = run.state
    while True:
        sampler, make_batch = run.data.epoch_plan(state.epoch)
        for indices in itertools.islice(sampler, state.batch_in_epoch, None):
            state.batch_in_epoch += 1
            yield make_batch(indices)
        state.epoch += 1
        state.batch_in_epoch = 0


def epochs_done(run: Run) -> int:
    """Completed epochs (an epoch whose last batch was used counts as done)."""
    finished = run.state.batch_in_epoch >= run.data.batches_in_epoch(run.state.epoch)
    return run.state.epoch + int(finished)


def stop_reason(run: Run) -> str | None:
    """The step/epoch limits (the same on every rank); time and signals go through `update`."""
    t = run.cfg.training
    if run.state.step >= t.max_steps:
        return f"reached training.max_steps={t.max_steps}"
    if t.max_epochs and epochs_done(run) >= t.max_epochs:
        return f"reached training.max_epochs={t.max_epochs}"
    return None


def loop(run: Run) -> None:
    """Run updates until a stopping rule fires, validating and checkpointing as configured."""
    t, state = run.cfg.training, run.state
    clock = Clock.begin(state.elapsed, state.step)

    def stop_requested() -> bool:
        return run.interrupt.requested or bool(
            t.max_time and time.monotonic() - clock.start >= t.max_time * 60
        )

    batches = micro_batches(run)
    window = Window.on(run.stepper.device)
    reason = stop_reason(run)
    validated = False
    compiling = compile_started(run)
    while reason is None:
        lr = learning_rate(
            state.step + 1, schedule=t.schedule, peak=t.lr, warmup=t.warmup_steps,
            total=t.max_steps, floor=t.min_lr,
        )  # fmt: skip
        result = update(run.stepper, [next(batches) for _ in range(t.accumulate)], lr,
                        stop_requested)  # fmt: skip
        if compiling is not None:
            compile_finished(run, compiling)
            compiling = None
        state.step += 1
        state.elapsed = time.monotonic() - clock.start
        run.bad.add(result.bad, state.step, t.max_bad_steps)
        window.add(result)
        at_log, at_valid = state.step % t.log_every == 0, state.step % t.valid_every == 0
        at_save = bool(t.save_every) and state.step % t.save_every == 0
        if at_log or at_valid or at_save or result.stop or stop_reason(run):
            reason = check_bad_steps(run)  # reads device counters: only at these points
        if at_log:
            report_progress(run, window, clock, lr)
            window = Window.on(run.stepper.device)
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
            "%s up to step %d had a NaN/inf loss or gradient and %s skipped (%d in a row "
            "now, %d in total)", plural(new, "update"), state.step, "was" if new == 1 else "were",
            in_a_row, total,
        )  # fmt: skip
    if tripped:
        return (
            f"diverged: {plural(limit, 'update')} in a row (steps {tripped - limit + 1}-{tripped})"
            f" had a NaN/inf loss or gradient (training.max_bad_steps={limit})"
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
            "training stopped: %s after %s in %s; best %s %s at step %d",
            reason, plural(state.step, "step"), format_duration(state.elapsed),
            run.cfg.training.best_metric, best, state.best_step,
        )  # fmt: skip
