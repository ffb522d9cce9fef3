"""What a run report says, section by section, as document blocks (document.py renders them).

Summary · Scores (validation BLEU, saved evaluations, hypothesis files scored again, all with
sacreBLEU signatures) · Learning curves (a PNG when one is given, and a table) · Timings ·
Data (the prepared stats.json) · Parent run · Configuration (the run's config.yaml).
"""

from __future__ import annotations

import datetime
from importlib import metadata
from typing import Any

import mtkit
from mtkit.progress import format_duration
from mtkit.reporting.document import Block, Code, Heading, Image, Table, Text
from mtkit.reporting.run_info import RunInfo
from mtkit.reporting.scores import Score, validation_signature

MAX_CURVE_ROWS = 25  # validation points in the curve table (first, last and best always kept)


def report_blocks(info: RunInfo, scores: list[Score], curves_png: bytes | None) -> list[Block]:
    """Every section of the report, in order."""
    name = info.config.name if info.config else info.run_dir.name
    blocks: list[Block] = [Heading(f"mtkit run report: {name}", 1), Text(_provenance(info))]
    blocks += [Heading("Summary"), Table(("item", "value"), tuple(_summary(info)))]
    blocks += _scores(info, scores)
    blocks += _curves(info, curves_png)
    blocks += _timings(info)
    blocks += _data(info)
    if info.parent:
        rows = tuple((str(k), str(v)) for k, v in info.parent.items())
        blocks += [
            Heading("Parent run"),
            Text("Training started from:"),
            Table(("item", "value"), rows),
        ]
    blocks += [Heading("Configuration"), Text("config.yaml:"), Code(info.config_text, "yaml")]
    return blocks


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


def _provenance(info: RunInfo) -> str:
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return (
        f"Run directory {info.run_dir}; report written {now} by mtkit {mtkit.__version__} "
        f"(torch {_version('torch')}, sacreBLEU {_version('sacrebleu')})."
    )


def best_validation(info: RunInfo) -> dict[str, Any] | None:
    """The validation record with the best `training.best_metric` (loss: lowest)."""
    metric = info.config.training.best_metric if info.config else "bleu"
    points = [r for r in info.valid if isinstance(r.get(metric), (int, float))]
    if not points:
        return None
    pick = min if metric == "loss" else max
    return pick(points, key=lambda r: float(r[metric]))


def _summary(info: RunInfo) -> list[tuple[str, str]]:
    rows = []
    if info.config:
        c = info.config
        rows.append(("languages", f"{c.data.src_lang} → {c.data.tgt_lang}"))
        m = c.model
        rows.append(
            (
                "model",
                f"Transformer {m.encoder_layers}+{m.decoder_layers} layers, "
                f"d_model {m.d_model}, {m.n_heads} heads, d_ff {m.d_ff}, {m.norm}-norm",
            )
        )
    last = (info.train or info.valid or [{}])[-1]
    if "step" in last:
        rows.append(
            ("updates", f"{last['step']} in {format_duration(float(last.get('elapsed_s', 0)))}")
        )
    best = best_validation(info)
    if best is not None:
        values = ", ".join(f"{k} {best[k]:.2f}" for k in ("bleu", "chrf", "loss") if k in best)
        rows.append(("best validation", f"step {best['step']}: {values}"))
    if info.stopped:
        rows.append(("stopped", info.stopped))
    if info.parent:
        p = info.parent
        rows.append(("parent run", f"{p.get('path')} (step {p.get('step')})"))
    rows.append(("checkpoints", ", ".join(info.checkpoints) or "none"))
    return rows


def _scores(info: RunInfo, scores: list[Score]) -> list[Block]:
    rows = []
    best, last = best_validation(info), info.valid[-1] if info.valid else None
    if info.config is not None:
        n = info.config.training.valid_bleu_sentences
        signature = validation_signature(info.config)
        for label, record in (("best", best), ("last", last if last is not best else None)):
            if record is not None and "bleu" in record:
                what = f"valid split, first {n} sentences, greedy"
                rows.append(
                    (
                        f"validation ({label}, step {record['step']})",
                        what,
                        "BLEU",
                        f"{record['bleu']:.2f}",
                        signature,
                    )
                )
    rows += [(s.source, s.what, s.metric, f"{s.value:.2f}", s.signature) for s in scores]
    if not rows:
        return [Heading("Scores"), Text("No validation scores or evaluations found yet.")]
    note = (
        "Validation BLEU was computed during training (signature as this sacreBLEU gives it). "
        "Other rows: evaluation reports saved in the run directory (mtkit evaluate --json) and "
        "hypothesis files there (mtkit evaluate, mtkit average --select-on valid), scored "
        "again now against their split's references."
    )
    header = ("source", "scored on", "metric", "score", "sacreBLEU signature")
    return [Heading("Scores"), Text(note), Table(header, tuple(rows))]


def _curve_points(valid: list[dict[str, Any]], best: dict[str, Any] | None) -> list[Any]:
    """At most MAX_CURVE_ROWS validation records, evenly spaced, first/last/best kept."""
    if len(valid) <= MAX_CURVE_ROWS:
        return valid
    step = (len(valid) - 1) / (MAX_CURVE_ROWS - 1)
    keep = {round(i * step) for i in range(MAX_CURVE_ROWS)}
    return [r for i, r in enumerate(valid) if i in keep or r is best]


def _curves(info: RunInfo, png: bytes | None) -> list[Block]:
    blocks: list[Block] = [Heading("Learning curves")]
    if png is not None:
        blocks.append(Image(png, "learning curves: loss and BLEU against updates and time"))
    if not info.valid:
        return [*blocks, Text("No validation records in metrics.jsonl yet.")]
    rows = []
    for r in _curve_points(info.valid, best_validation(info)):
        before = [t for t in info.train if t.get("step", 0) <= r["step"]]
        train_loss = f"{before[-1]['loss']:.3f}" if before and "loss" in before[-1] else ""
        rows.append(
            (
                str(r["step"]),
                format_duration(float(r.get("elapsed_s", 0))),
                train_loss,
                *(f"{r[k]:.3f}" if k in r else "" for k in ("loss", "bleu", "chrf")),
            )
        )
    header = ("step", "time", "train loss", "valid loss", "valid BLEU", "valid chrF")
    return [*blocks, Table(header, tuple(rows))]


def _timings(info: RunInfo) -> list[Block]:
    if not info.train:
        return []
    last = info.train[-1]
    elapsed = float(last.get("elapsed_s", 0))
    rates = [float(r["tokens_per_s"]) for r in info.train if "tokens_per_s" in r]
    rows = [("training time", format_duration(elapsed)), ("updates", str(last.get("step", "?")))]
    if elapsed > 0:
        rows.append(("updates per second", f"{float(last.get('step', 0)) / elapsed:.2f}"))
    if rates:
        rows.append(
            (
                "tokens per second",
                f"{sum(rates) / len(rates):,.0f} mean of "
                f"{len(rates)} logged intervals (last {rates[-1]:,.0f})",
            )
        )
    return [Heading("Timings"), Table(("item", "value"), tuple(rows))]


def _data(info: RunInfo) -> list[Block]:
    if info.stats is None:
        where = info.stats_path or "the prepared data (the config could not be read)"
        return [Heading("Data"), Text(f"No data statistics: {where} not found.")]
    rows = []
    for split, s in info.stats.get("splits", {}).items():
        dropped = ", ".join(f"{k} {v}" for k, v in s.get("dropped", {}).items()) or "-"
        sides = [s.get(side, {}) for side in ("src", "tgt")]
        rows.append(
            (
                split,
                str(s.get("read", "")),
                str(s.get("kept", "")),
                dropped,
                *(f"{x.get('tokens', '')}" for x in sides),
                *(f"{x.get('mean_len', '')}/{x.get('max_len', '')}" for x in sides),
            )
        )
    header = ("split", "read", "kept", "dropped", "src tokens", "tgt tokens", "src mean/max",
              "tgt mean/max")  # fmt: skip
    vocab = info.stats.get("vocab_size", {})
    text = f"From {info.stats_path}; vocabulary {vocab.get('src')}/{vocab.get('tgt')} pieces."
    return [Heading("Data"), Text(text), Table(header, tuple(rows))]
