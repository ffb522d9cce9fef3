"""Checkpoint averaging (fairseq's average_checkpoints): the mean of the last N models' weights.

`select_average` builds several such averages and scores each on the valid split, so N is
chosen on validation data (`mtkit average RUN --last 5 --last 10 --select-on valid`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mtkit.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, step_checkpoints
from mtkit.errors import plural
from mtkit.evaluation.metrics import MetricResult
from mtkit.progress import QUIET, Progress

logger = logging.getLogger(__name__)


def average_state_dicts(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Element-wise mean of floating-point tensors (summed in float64); others from the last."""
    if not states:
        raise ValueError("nothing to average")
    keys = list(states[-1])
    for i, state in enumerate(states):
        if list(state) != keys:
            raise CheckpointError(f"checkpoint {i + 1} has different parameters than the last one")
        for key in keys:  # another run's checkpoint (or an edited one) must not be averaged in
            value, ref = state[key], states[-1][key]
            if not (torch.is_tensor(value) and torch.is_tensor(ref)) or value.shape != ref.shape:
                shape = list(value.shape) if torch.is_tensor(value) else type(value).__name__
                raise CheckpointError(
                    f"checkpoint {i + 1} has {key} of shape {shape} but the last one "
                    f"{list(ref.shape) if torch.is_tensor(ref) else type(ref).__name__}; "
                    "only checkpoints of one run can be averaged"
                )
    out: dict[str, torch.Tensor] = {}
    for key in keys:
        last = states[-1][key]
        if not last.is_floating_point():
            out[key] = last.clone()
            continue
        total = torch.zeros_like(last, dtype=torch.float64)
        for state in states:
            total += state[key].to(torch.float64)
        out[key] = (total / len(states)).to(last.dtype)
    return out


def average_run(
    run_dir: Path, last: int, output: Path | None = None, progress: Progress = QUIET
) -> Path:
    """Average the newest `last` step_NNNNNN.pt of a run into a new, translatable checkpoint.

    The result keeps the newest checkpoint's config and tokenizer, drops optimizer and RNG
    state (it is for translating, not for resuming) and lists its sources. `progress` counts
    the checkpoints read.
    """
    if last < 1:
        raise CheckpointError(f"--last: expected a positive number, got {last}")
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: not a run directory")
    found = step_checkpoints(run_dir)
    if len(found) < last:
        raise CheckpointError(
            f"{run_dir}: asked to average {plural(last, 'checkpoint')} but only "
            f"{plural(len(found), 'step_*.pt file')} {'is' if len(found) == 1 else 'are'} kept "
            "(see training.keep_last)"
        )
    chosen = [path for _, path in found[-last:]]
    states: list[dict[str, Any]] = []
    with progress.task(f"reading {last} checkpoints", total=last, unit="checkpoints") as task:
        for path in chosen:
            states.append(load_checkpoint(path))
            logger.info("averaging %s", path.name)
            task.advance()
    newest = states[-1]
    for path, state in zip(chosen, states, strict=True):
        if state["tokenizer"] != newest["tokenizer"]:
            raise CheckpointError(
                f"{path} and {chosen[-1]} were trained with different tokenizers; only "
                "checkpoints of one run (one tokenizer) can be averaged"
            )
    averaged: dict[str, Any] = {
        key: newest[key] for key in ("config", "vocab", "tokenizer", "parent") if key in newest
    }
    averaged["model"] = average_state_dicts([s["model"] for s in states])
    averaged["averaged_from"] = [p.name for p in chosen]
    out = output or average_path(run_dir, last)
    save_checkpoint(out, averaged)
    return out


def check_select_on(split: str) -> None:
    """Averages are chosen on valid (test is for scoring the choice, once)."""
    if split != "valid":
        raise CheckpointError(
            f"--select-on: expected valid, got '{split}' (choose on validation data, then "
            "score the choice on test once with `mtkit evaluate`)"
        )


def average_path(run_dir: Path, last: int) -> Path:
    """Where the average of the last `last` checkpoints goes by default: RUN/average_lastN.pt."""
    return run_dir / f"average_last{last}.pt"


def selection_hyp_path(average: Path, split: str) -> Path:
    """The hypotheses `select_average` writes next to an average (average_lastN.<split>.hyp)."""
    return average.with_suffix(f".{split}.hyp")


@dataclass
class Candidate:
    """One average, scored on a split of the run's data."""

    path: Path
    last: int
    bleu: MetricResult


def select_average(
    run_dir: Path,
    lasts: list[int],
    split: str = "valid",
    device: str = "auto",
    progress: Progress = QUIET,
) -> list[Candidate]:
    """Average the last N step checkpoints for each N in `lasts`; score each on `split`.

    `split` must be valid (the run's data config; test is for the final choice only). Each
    average translates the split with the run's `decoding` settings (beam, length
    penalty) and is scored with BLEU using the run's `evaluation.tokenize`; the hypotheses go
    next to it (average_lastN.<split>.hyp). Returns the candidates, best BLEU first (ties:
    fewer checkpoints).
    """
    from mtkit.evaluation.evaluate import evaluate_model, split_set
    from mtkit.translation.translator import Translator

    check_select_on(split)
    candidates = []
    for last in dict.fromkeys(lasts):  # in order, without repeats
        path = average_run(run_dir, last, progress=progress)
        translator = Translator.load(path, device=device)
        inputs = split_set(translator, split)
        report = evaluate_model(
            translator, inputs, translator.config.decoding, ["bleu"],
            selection_hyp_path(path, split), tokenize=translator.config.evaluation.tokenize,
            progress=progress,
        )  # fmt: skip
        logger.info("%s: %s BLEU %.2f", path.name, split, report.scores[0].score)
        candidates.append(Candidate(path, last, report.scores[0]))
    return sorted(candidates, key=lambda c: (-c.bleu.score, c.last))
