"""The default hypothesis file names that `mtkit evaluate` derives from the search options."""

from __future__ import annotations

from dataclasses import replace

from mtkit.config.schema import DecodingConfig
from mtkit.evaluation.inputs import search_label

RUN = DecodingConfig(beam_size=5, length_penalty=1.4)


def test_the_runs_own_search_has_a_short_label() -> None:
    assert search_label(RUN, RUN) == "beam5.lp1.4"
    assert search_label(replace(RUN, beam_size=1), RUN) == "greedy"


def test_every_option_that_differs_from_the_run_is_named() -> None:
    dec = replace(RUN, length_norm="average", early_stopping="heuristic", min_len=3)
    assert search_label(dec, RUN) == "beam5.lp1.4.norm-average.stop-heuristic.minlen3"
    # greedy search has no beam to rank or stop: those options leave its label alone
    assert search_label(replace(dec, beam_size=1, min_len=0), RUN) == "greedy"
