"""What translating a line gives: its n-best candidates, timing, and optional cross-attention.

Plain data (numpy, no torch), so a process that only passes results on, such as the HTTP side
of `mtkit serve`, can import it without the model's dependencies.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt


@dataclass
class Candidate:
    """One hypothesis of an n-best list."""

    text: str
    score: float  # what search ranked by (length-normalised for beam search)
    log_prob: float | None  # total log-probability under the model, EOS included (None: unknown)


@dataclass
class Attention:
    """Cross-attention of one translation: rows are output pieces, columns source pieces."""

    source: list[str]  # source pieces + EOS
    target: list[str]  # output pieces + EOS
    weights: npt.NDArray[np.float32]  # (len(target), len(source)); rows sum to 1


@dataclass
class Translation:
    """The result for one input line."""

    source: str
    nbest: list[Candidate] = field(default_factory=list)  # best first; empty for an empty line
    seconds: float = 0.0  # this sentence's share of its batch's decoding time
    truncated: bool = False  # the source was cut to the model's maximum length
    attention: Attention | None = None

    @property
    def text(self) -> str:
        return self.nbest[0].text if self.nbest else ""
