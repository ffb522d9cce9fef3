"""`mtkit translate RUN1 RUN2 ...`: one Translator over several runs that share a tokenizer.

The models' next-token probabilities are averaged at every step (mtkit.search.ensemble), with
greedy search, beam search or sampling, each model keeping its own KV cache. The first run's
config gives the decoding defaults; the ensemble's length limit is its members' smallest.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from mtkit.search.ensemble import Ensemble
from mtkit.translation.compatibility import check_same_tokenizers
from mtkit.translation.translator import Translator

logger = logging.getLogger(__name__)


def load_ensemble(paths: list[Path], device: str = "auto", quantize: str = "none") -> Translator:
    """A Translator averaging the models of `paths` (run directories or checkpoint files),
    each loaded with `quantize` (see Translator.load).

    Runs whose tokenizers differ (compared byte for byte) are refused with one line.
    """
    members = [Translator.load(path, device=device, quantize=quantize) for path in paths]
    if len(members) == 1:
        return members[0]
    check_same_tokenizers([(t.checkpoint, t.tokenizers) for t in members])
    models = [t.model for t in members]
    ensemble = Ensemble([m for m in models if not isinstance(m, Ensemble)]).eval()
    first = members[0]
    limits = replace(first.config.model, max_positions=ensemble.max_positions)
    logger.info(
        "ensemble of %d models: %s", len(members), ", ".join(str(t.checkpoint) for t in members)
    )
    return Translator(
        ensemble, first.tokenizers, replace(first.config, model=limits), first.device,
        first.checkpoint,
    )  # fmt: skip
