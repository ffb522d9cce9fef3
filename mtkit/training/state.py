"""One training run's state: its counters, data and parts, built fresh, from a parent run's
weights (`training.init_from`), or restored from its own checkpoint to resume."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mtkit.checkpoint import CheckpointError, find_resume_checkpoint
from mtkit.config.load import dump_config
from mtkit.config.schema import ExperimentConfig, TrainingConfig
from mtkit.data.batching import (
    Batch,
    TokenBatchSampler,
    collate_columns,
    lengths,
    load_prepared,
    load_prepared_text,
)
from mtkit.data.sampling import SampledEpoch, SubwordSampler
from mtkit.data.tokenizer import PAD_ID, TokenizerPair
from mtkit.distributed import Dist
from mtkit.errors import MtkitError, plural
from mtkit.files import atomic_write_bytes, atomic_write_text
from mtkit.model.transformer import build_model
from mtkit.runtime import seed_everything, set_rng_state
from mtkit.training.interrupt import Interrupt
from mtkit.training.metrics_log import MetricsSink
from mtkit.training.parent import (
    Parent,
    check_agrees,
    check_options,
    load_parent,
    start_from_parent,
)
from mtkit.training.update import BadSteps, Stepper, make_optimizer, wrap_model

logger = logging.getLogger(__name__)


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


@dataclass
class Data:
    """The training shard's sampler plus the dev split (encoded and text)."""

    sampler: TokenBatchSampler
    train_columns: Any
    valid: Any
    valid_text: Any
    n_train: int
    resample: SubwordSampler | None = None  # tokenizer.sampling_alpha > 0: batches from text
    sampled: SampledEpoch | None = None  # the epoch `resample` segmented last

    def epoch_plan(self, epoch: int) -> tuple[TokenBatchSampler, Callable[[list[int]], Batch]]:
        """This rank's batch plan for `epoch` and how to build a batch from its indices.

        Without subword sampling: the one fixed plan over the prepared ids. With it: the
        epoch's rows segmented anew and planned on their sampled lengths (kept for the epoch).
        """
        if self.resample is None:
            self.sampler.set_epoch(epoch)
            return self.sampler, self.collate
        if self.sampled is None or self.sampled.epoch != epoch:
            self.sampled = None  # free the last epoch's ids before segmenting the next
            self.sampled = self.resample.epoch(epoch, like=self.sampler)
        return self.sampled.sampler, self.sampled.batch

    def batches_in_epoch(self, epoch: int) -> int:
        """How many batches this rank takes in `epoch` (fixed without subword sampling)."""
        if self.resample is None:
            return len(self.sampler)
        return len(self.epoch_plan(epoch)[0])

    def collate(self, indices: list[int]) -> Batch:
        """The padded batch of prepared rows `indices`."""
        rows = self.train_columns[indices]
        return collate_columns(rows["src_ids"], rows["tgt_ids"], PAD_ID)


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
    parent: dict[str, Any] | None = None  # Parent.record() of the run it started from, if any

    @property
    def dist(self) -> Dist:
        return self.stepper.dist


@dataclass
class Origin:
    """Where a run's weights start: its own newest checkpoint, a parent run's, or fresh ones."""

    resumed: tuple[Path, dict[str, Any]] | None = None  # (checkpoint, its contents)
    parent: Parent | None = None

    def tokenizers(self, cfg: ExperimentConfig) -> TokenizerPair | None:
        """The tokenizer(s) prepare must use as they are (None: tokenizer.model or train one).

        A resumed run that took its tokenizer from elsewhere (a parent, tokenizer.model) keeps
        encoding with its own copy, even where the original has gone.
        """
        if self.resumed is not None:
            if cfg.training.init_from is None and cfg.tokenizer.model is None:
                return None
            return TokenizerPair.from_model_files(self.resumed[1]["tokenizer"])
        return self.parent.tokenizers if self.parent is not None else None


def find_origin(cfg: ExperimentConfig, resume: bool) -> Origin:
    """The newest checkpoint when resuming (if any), else the parent of training.init_from."""
    found = find_resume_checkpoint(cfg.run_path) if resume else None
    if found is not None:
        return Origin(resumed=found)
    t = cfg.training
    if resume:
        start = "its parent" if t.init_from else "scratch"
        logger.info("--resume: %s holds no checkpoint yet; starting from %s", cfg.run_path, start)
    if t.init_from is None:
        return Origin()
    parent = load_parent(t.init_from)
    check_agrees(cfg, parent)
    check_options(t, parent)
    return Origin(parent=parent)


def build_run(
    cfg: ExperimentConfig, d: Dist, device: torch.device, interrupt: Interrupt, origin: Origin
) -> Run:
    """Load data and tokenizers, build model/optimizer, then take the weights `origin` has."""
    t = cfg.training
    prepared = Path(cfg.data.prepared_dir)
    tokenizers = TokenizerPair.load(prepared)
    data = load_data(cfg, prepared, d, tokenizers)
    seed_everything(t.seed)  # identical initial weights on every rank
    raw = build_model(cfg, tokenizers.src.vocab_size, tokenizers.tgt.vocab_size).to(device)
    optimizer = make_optimizer(raw, t)
    seed_everything(t.seed + d.rank)  # per-rank dropout streams
    stepper = wrap_model(raw, optimizer, t, device, d)
    state, parent = TrainState(), None
    if origin.resumed is not None:
        path, ckpt = origin.resumed
        state = restore_state(path, ckpt, stepper, d)
        parent = ckpt.get("parent")
        logger.info("resumed from %s at step %d", path, state.step)
    elif origin.parent is not None:
        start_from_parent(raw, optimizer, origin.parent, t.init_keep_optimizer)
        state.step = origin.parent.step if t.init_keep_schedule else 0
        parent = origin.parent.record()
    bad = BadSteps(device, state.bad_in_a_row, state.bad_steps)
    run = Run(
        cfg, stepper, state, data, tokenizers, cfg.run_path, interrupt, MetricsSink(None), bad,
        parent=parent,
    )  # fmt: skip
    if d.is_main:  # the run starts: its config (a resume's, too) is known to fit the checkpoint
        atomic_write_text(cfg.run_path / "config.yaml", dump_config(cfg))
        for name, blob in tokenizers.model_files().items():
            path = cfg.run_path / name
            if not path.is_file() or path.read_bytes() != blob:
                atomic_write_bytes(path, blob)
        if origin.parent is not None:
            atomic_write_text(cfg.run_path / "parent.json", json.dumps(parent, indent=2) + "\n")
            log_parent(origin.parent, t)
        run.sink = MetricsSink(cfg.run_path)
        log_setup(run)
    return run


def log_parent(parent: Parent, t: TrainingConfig) -> None:
    """Say where the weights come from and what starts afresh."""
    optimizer = "its Adam moments" if t.init_keep_optimizer else "a fresh optimizer"
    schedule = f"its step count ({parent.step})" if t.init_keep_schedule else "step 0"
    logger.info(
        "initialised from %s (step %d, sha256 %s): its weights and tokenizer, %s, schedule "
        "from %s", parent.checkpoint, parent.step, parent.sha256[:16], optimizer, schedule,
    )  # fmt: skip


def load_data(cfg: ExperimentConfig, prepared: Path, d: Dist, tokenizers: TokenizerPair) -> Data:
    """This rank's token-budget sampler over train, and the dev split.

    With `tokenizer.sampling_alpha` > 0, training batches are segmented
    anew from `text/train` each time (data/sampling.py).
    """
    encoded = load_prepared(prepared)
    text = load_prepared_text(prepared)
    src_len, tgt_len = lengths(encoded["train"])
    sampler = TokenBatchSampler(
        src_len, tgt_len, cfg.training.max_tokens, shuffle=True, seed=cfg.training.seed,
        rank=d.rank, world_size=d.world_size,
    )  # fmt: skip
    if len(sampler) == 0:
        raise MtkitError(f"{prepared}: the training split is empty")
    columns = encoded["train"].select_columns(["src_ids", "tgt_ids"])
    alpha, resample = cfg.tokenizer.sampling_alpha, None
    if alpha > 0:
        resample = SubwordSampler(
            tokenizers, text["train"], alpha, cfg.data.max_len, cfg.training.seed
        )
    n_train = len(encoded["train"])
    return Data(sampler, columns, encoded["valid"], text["valid"], n_train, resample)


def restore_state(path: Path, ckpt: dict[str, Any], s: Stepper, d: Dist) -> TrainState:
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
            "resuming a %d-process run with %s: data order and dropout will differ from an "
            "uninterrupted run", saved_world, plural(d.world_size, "process", "processes"),
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
        "global batch: up to %d tokens per update = %d per batch x %s x %d accumulated"
        " | %d batches per epoch per rank | schedule %s, peak lr %.2e, warm-up %d",
        t.max_tokens * d.world_size * t.accumulate, t.max_tokens, plural(d.world_size, "rank"),
        t.accumulate,
        run.data.batches_in_epoch(run.state.epoch), t.schedule, t.lr, t.warmup_steps,
    )  # fmt: skip
    extras: list[str] = []
    if run.cfg.model.word_dropout > 0:
        extras.append(f"word dropout {run.cfg.model.word_dropout:g}")
    if t.rdrop_alpha > 0:
        extras.append(f"R-Drop alpha {t.rdrop_alpha:g}")
    if run.cfg.tokenizer.sampling_alpha > 0:
        extras.append(f"subword sampling alpha {run.cfg.tokenizer.sampling_alpha:g}")
    logger.info(
        "validation BLEU: sacreBLEU tok:%s | regularisation: dropout %g%s",
        run.cfg.evaluation.tokenize, run.cfg.model.dropout, "".join(", " + e for e in extras),
    )  # fmt: skip
