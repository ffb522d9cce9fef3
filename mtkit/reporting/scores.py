"""The scores a report lists: validation BLEU from metrics.jsonl, evaluation reports saved in the
run directory (`mtkit evaluate --json > RUN/x.json`), and hypothesis files found there (from
`mtkit evaluate` and `mtkit average --select-on valid`), scored again against their split.

Every score comes with the sacreBLEU signature that makes it reproducible.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtkit.config.schema import ExperimentConfig
from mtkit.errors import MtkitError
from mtkit.evaluation.evaluate import split_set
from mtkit.evaluation.metrics import corpus_scores
from mtkit.files import read_lines

logger = logging.getLogger(__name__)

SPLITS = ("test", "valid")


@dataclass(frozen=True)
class RunConfig:
    """What `split_set` reads from an engine, without loading a model: the run's config, and
    the file it came from (error messages name it as the origin of a path)."""

    config: ExperimentConfig
    checkpoint: Path  # RUN/config.yaml


@dataclass(frozen=True)
class Score:
    """One scored file (or validation point): where it came from and its metric results."""

    source: str  # a file name in the run directory, or "validation at step N"
    what: str  # what was scored, e.g. "test split, 3003 sentences"
    metric: str  # BLEU, chrF2, ...
    value: float
    signature: str


def validation_signature(config: ExperimentConfig) -> str:
    """The BLEU signature of validation scores (one reference, evaluation.tokenize, this
    sacreBLEU), read off a one-sentence score: sacreBLEU signs only what it has scored."""
    try:
        return corpus_scores(["."], [["."]], ("bleu",), config.evaluation.tokenize)[0].signature
    except MtkitError as e:  # a tokenizer that must be downloaded first, offline
        return f"tok:{config.evaluation.tokenize} (no full signature here: {e})"


def saved_reports(run_dir: Path) -> list[Score]:
    """The scores of `mtkit evaluate --json` reports saved as *.json in the run directory."""
    out = []
    for path in sorted(run_dir.glob("*.json")):
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not (isinstance(report, dict) and isinstance(report.get("scores"), list)):
            continue  # parent.json and other files
        what = _described(report)
        for s in report["scores"]:
            if isinstance(s, dict) and {"name", "score", "signature"} <= s.keys():
                out.append(Score(path.name, what, _name(s), float(s["score"]), s["signature"]))
    return out


def _described(report: dict[str, Any]) -> str:
    """'data/test.en, 3003 sentences, best.pt, beam 5' from an evaluation report."""
    parts = [str(report.get("source_file") or report.get("hypotheses_file") or "")]
    parts.append(f"{report.get('n_sentences', '?')} sentences")
    if report.get("checkpoint"):
        parts.append(Path(str(report["checkpoint"])).name)
    decoding = report.get("decoding") or {}
    if isinstance(decoding, dict) and "beam_size" in decoding:
        parts.append(f"beam {decoding['beam_size']}")
    return ", ".join(p for p in parts if p)


def _name(result: dict[str, Any]) -> str:
    """sacreBLEU's name of the metric ('BLEU', 'chrF2'), from its formatted line."""
    text = str(result.get("text", ""))
    return text.split(" = ")[0] if " = " in text else str(result["name"])


def split_references(run: RunConfig) -> dict[str, list[str]]:
    """The references of the run's test and valid splits that can be read from here, as
    `mtkit evaluate --split` reads them."""
    out = {}
    for split in SPLITS:
        try:
            out[split] = split_set(run, split).references[0]
        except MtkitError as e:
            logger.info("no %s references to score against: %s", split, e)
    return out


def hypothesis_files(run_dir: Path) -> list[tuple[Path, str]]:
    """(file, split) for each *.hyp* file whose name says which split it translates: it starts
    with `test.`/`valid.` or has `.test.`/`.valid.` in it (e.g. average_last5.valid.hyp)."""
    found = []
    for path in sorted(run_dir.glob("*.hyp*")):
        name = path.name
        for split in SPLITS:
            if name.startswith(f"{split}.") or f".{split}." in name:
                found.append((path, split))
                break
    return found


def rescored(run_dir: Path, config: ExperimentConfig) -> list[Score]:
    """BLEU and chrF of every hypothesis file of a split whose references can be read (and
    whose line count matches them), with the run's `evaluation.tokenize`."""
    found = hypothesis_files(run_dir)
    references = split_references(RunConfig(config, run_dir / "config.yaml")) if found else {}
    out = []
    for path, split in found:
        refs = references.get(split)
        if refs is None:
            continue
        try:
            hyps = list(read_lines(path))
            if len(hyps) != len(refs):
                logger.info("%s: %d lines, not the %d of %s; not scored", path, len(hyps),
                            len(refs), split)  # fmt: skip
                continue
            results = corpus_scores(hyps, [refs], ("bleu", "chrf"), config.evaluation.tokenize)
        except MtkitError as e:
            logger.warning("%s: not scored (%s)", path, e)
            continue
        what = f"{split} split, {len(refs)} sentences"
        out += [
            Score(path.name, what, r.text.split(" = ")[0], r.score, r.signature) for r in results
        ]
    return out
