"""What `GET /info` tells: the model, its languages and size, the run's validation scores
(with the sacreBLEU signature they were computed with), decoding defaults and server limits."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path
from typing import Any

import torch

import mtkit
from mtkit.data.tokenizer import PAD_ID
from mtkit.errors import MtkitError
from mtkit.files import numbered_lines
from mtkit.model.transformer import build_model, num_parameters
from mtkit.serve.engines import LoadedEngine
from mtkit.serve.settings import ServeSettings

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


def parameter_count(loaded: LoadedEngine) -> int:
    """Parameters of the served model (all members of an ensemble; shared matrices once; not
    the stacked copies made for inference); for an export, those of the model its config
    describes."""
    model = getattr(loaded.translator, "model", None)
    if not isinstance(model, torch.nn.Module):
        tokenizers = loaded.translator.tokenizers
        with torch.device("meta"):  # shapes only, nothing allocated
            model = build_model(
                loaded.config, tokenizers.src.vocab_size, tokenizers.tgt.vocab_size, PAD_ID
            )
    return num_parameters(model)


def validation_records(metrics: Path) -> list[dict[str, Any]]:
    """The `kind: valid` lines of a run's metrics.jsonl (unreadable lines are skipped)."""
    records = []
    for _, text in numbered_lines(metrics):
        try:
            record = json.loads(text) if text else None
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("kind") == "valid":
            records.append(record)
    return records


def checkpoint_validation(checkpoint: Path) -> dict[str, Any] | None:
    """The validation record of this checkpoint: best.pt -> the last new best, step_N.pt ->
    step N, any other -> the last one; None when the run logged none."""
    metrics = checkpoint.parent / METRICS_FILE
    if not metrics.is_file():
        return None
    records = validation_records(metrics)
    step = re.fullmatch(r"step_0*(\d+)\.pt", checkpoint.name)
    if checkpoint.name == "best.pt":
        records = [r for r in records if r.get("best")]
    elif step:
        records = [r for r in records if r.get("step") == int(step.group(1))]
    return records[-1] if records else None


def bleu_signature(tokenize: str) -> str | None:
    """The sacreBLEU signature of validation BLEU (one reference, `evaluation.tokenize`)."""
    from mtkit.evaluation.metrics import corpus_scores

    try:
        return corpus_scores(["a"], [["a"]], ("bleu",), tokenize=tokenize)[0].signature
    except MtkitError:
        return None


def validation_info(loaded: LoadedEngine) -> dict[str, Any] | None:
    """Validation BLEU/chrF of the served checkpoint (greedy, first N dev sentences); for an
    ensemble, its first member's."""
    if not loaded.checkpoints:
        return None
    try:
        record = checkpoint_validation(loaded.checkpoints[0])
    except OSError as e:
        logger.warning("cannot read the run's %s: %s", METRICS_FILE, e)
        return None
    if record is None or "bleu" not in record:
        return None
    cfg = loaded.config
    return {
        "step": record.get("step"),
        "bleu": record["bleu"],
        "chrf": record.get("chrf"),
        "loss": record.get("loss"),
        "signature": bleu_signature(cfg.evaluation.tokenize),
        "sentences": cfg.training.valid_bleu_sentences,
        "search": "greedy",
    }


def describe(loaded: LoadedEngine, settings: ServeSettings) -> dict[str, Any]:
    """The static part of GET /info."""
    cfg = loaded.config
    tokenizers = loaded.translator.tokenizers
    sizes = (tokenizers.src.vocab_size, tokenizers.tgt.vocab_size)
    return {
        "mtkit_version": mtkit.__version__,
        "engine": loaded.name,
        "model": str(loaded.source),
        "checkpoints": [str(path) for path in loaded.checkpoints],
        "src_lang": cfg.data.src_lang,
        "tgt_lang": cfg.data.tgt_lang,
        "parameters": parameter_count(loaded),
        "vocab": {"src": sizes[0], "tgt": sizes[1]},
        "architecture": dataclasses.asdict(cfg.model),
        "validation": validation_info(loaded),
        "decoding": dataclasses.asdict(cfg.decoding),
        "limits": {
            "max_sentences": settings.max_sentences,
            "max_chars": settings.max_chars,
            "max_beam": settings.max_beam,
            "queue_sentences": settings.queue_sentences,
            "timeout_s": settings.timeout_s,
            "max_wait_ms": settings.max_wait_ms,
            "batching": settings.batching,
            "continuous_from": settings.continuous_from,
            "batch_wait": settings.batch_wait,
        },
    }
