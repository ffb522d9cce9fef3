"""Validation: dev-set loss and greedy BLEU/chrF, the best-score bookkeeping, its log lines."""

from __future__ import annotations

import logging
import math
from typing import Any

import torch

from mtkit import distributed
from mtkit.config.schema import ConfigError, DecodingConfig, ExperimentConfig, TrainingConfig
from mtkit.data.batching import TokenBatchSampler, collate_columns, lengths
from mtkit.data.tokenizer import PAD_ID
from mtkit.errors import plural
from mtkit.evaluation.metrics import MetricError, corpus_scores, make_metric
from mtkit.model.transformer import Transformer
from mtkit.runtime import autocast_context, preserved_rng
from mtkit.training.state import Run
from mtkit.training.update import compute_loss
from mtkit.translation.translator import translate_ids

logger = logging.getLogger(__name__)


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
            states = model(batch.src, batch.src_mask, batch.tgt_in, project=False)
        _, nll = compute_loss(states, model.out_proj.weight, batch.tgt_out, 0.0, t.precision)
        nll_total += nll
        tokens += batch.n_tgt_tokens
    mean = float(nll_total.item()) / max(tokens, 1)
    return mean, math.exp(min(mean, 50.0)) if math.isfinite(mean) else math.inf


def validation_scores(run: Run) -> tuple[dict[str, float], list[tuple[str, str, str]]]:
    """Greedy-decode the first N dev sentences; BLEU (`evaluation.tokenize`) and chrF."""
    cfg, device = run.cfg, run.stepper.device
    n = min(cfg.training.valid_bleu_sentences, len(run.data.valid))
    if n == 0:
        return {}, []
    src_ids = run.data.valid.select(range(n))["src_ids"]
    greedy = DecodingConfig(
        beam_size=1, max_len_a=cfg.decoding.max_len_a, max_len_b=cfg.decoding.max_len_b,
        max_tokens=cfg.decoding.max_tokens,
    )  # fmt: skip
    with autocast_context(device, run.stepper.cfg.precision):  # as training runs
        out = translate_ids(run.stepper.raw, src_ids, greedy, device)
    hyps = run.tokenizers.tgt.decode(out)
    rows = run.data.valid_text.select(range(n))
    refs, srcs = list(rows["tgt"]), list(rows["src"])
    results = corpus_scores(hyps, [refs], ("bleu", "chrf"), tokenize=cfg.evaluation.tokenize)
    scores = {r.name: r.score for r in results}
    return scores, list(zip(srcs[:3], refs[:3], hyps[:3], strict=True))


def check_bleu_tokenizer(cfg: ExperimentConfig) -> None:
    """Fail before training when `evaluation.tokenize` is not a sacreBLEU tokenizer."""
    try:
        make_metric("bleu", cfg.evaluation.tokenize)
    except MetricError as e:
        raise ConfigError(f"evaluation.tokenize: {e}") from None


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
            nll, ppl = validation_loss(
                run.stepper.raw, run.data.valid, run.stepper.cfg, run.stepper.device
            )
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
            f"early stopping: {plural(state.stale_validations, 'validation')} without a better "
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
    since = " (new best)" if improved else f" ({plural(state.stale_validations, 'validation')} ago)"
    rows.append(f"  best {metric} {best} at step {state.best_step}{since}")
    logger.info("validation at step %d\n%s", state.step, "\n".join(rows))
    for src, ref, hyp in examples:
        logger.info("  src: %s\n  ref: %s\n  hyp: %s", src, ref, hyp)
    run.sink.write({
        "kind": "valid", "step": state.step, **values, "elapsed_s": state.elapsed,
        "best": improved,
    })  # fmt: skip
