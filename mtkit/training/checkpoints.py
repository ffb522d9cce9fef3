"""Training checkpoints: what one holds, and saving it (step_N.pt, last.pt, best.pt)."""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

from mtkit import distributed
from mtkit.checkpoint import save_run_checkpoint
from mtkit.config.load import config_to_dict
from mtkit.runtime import rng_state
from mtkit.training.state import Run

logger = logging.getLogger(__name__)


def checkpoint_state(run: Run, rngs: list[dict[str, Any]]) -> dict[str, Any]:
    """Everything needed to translate with, or continue, this run."""
    s = run.stepper
    parent = {"parent": run.parent} if run.parent is not None else {}
    return {
        **parent,
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
