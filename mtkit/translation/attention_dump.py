"""Cross-attention dumps (`mtkit translate --attention FILE`) and their heatmaps (`plot-attention`).

A dump holds one record per input line, in input order, each with the source pieces, the output
pieces and the (output, source) matrix of the last decoder layer's cross-attention averaged
over heads. Empty input lines get an empty record so record i is always input line i + 1.

- `.jsonl`: one JSON object per line: {"index", "source", "target", "weights"}.
- `.npz`: numpy arrays `weights_<i>`, `source_<i>`, `target_<i>` (no pickles), written entry
  by entry, so neither format holds more than one chunk in memory.

matplotlib is an optional dependency (`pip install 'mtkit[plot]'`), imported only to plot.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt

from mtkit.errors import MtkitError
from mtkit.translation.translator import Attention, Translation

PLOT_HINT = "pip install 'mtkit[plot]' (or: pip install matplotlib)"


class AttentionError(MtkitError):
    """An attention dump that cannot be written, read or plotted."""


class AttentionWriter:
    """Append translations' attention to a .jsonl or .npz file; use as a context manager."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.npz = self.path.suffix == ".npz"
        if not self.npz and self.path.suffix not in (".jsonl", ".json"):
            raise AttentionError(f"{path}: expected a .jsonl or .npz file name")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._zip = zipfile.ZipFile(self.path, "w") if self.npz else None
        self._text = None if self.npz else open(self.path, "w", encoding="utf-8", newline="\n")
        self.count = 0

    def write(self, translations: list[Translation]) -> None:
        """Records for these translations, numbered on from the previous ones."""
        for t in translations:
            att = t.attention or Attention([], [], np.zeros((0, 0), dtype=np.float32))
            if self._zip is not None:
                self._array(f"weights_{self.count}", att.weights.astype(np.float32))
                self._array(f"source_{self.count}", np.array(att.source, dtype=np.str_))
                self._array(f"target_{self.count}", np.array(att.target, dtype=np.str_))
            elif self._text is not None:
                record = {
                    "index": self.count,
                    "source": att.source,
                    "target": att.target,
                    "weights": np.round(att.weights, 5).tolist(),
                }
                self._text.write(json.dumps(record, ensure_ascii=False) + "\n")
            self.count += 1
        if self._text is not None:
            self._text.flush()

    def _array(self, name: str, array: npt.NDArray[Any]) -> None:
        assert self._zip is not None
        with self._zip.open(f"{name}.npy", "w") as f:
            np.lib.format.write_array(f, array, allow_pickle=False)

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
        if self._text is not None:
            self._text.close()

    def __enter__(self) -> AttentionWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def read_attention(path: Path, index: int) -> Attention:
    """Record `index` (0-based) of a dump written by AttentionWriter."""
    path = Path(path)
    if not path.is_file():
        raise AttentionError(f"{path}: attention file not found")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as npz:
            n = sum(1 for k in npz.files if k.startswith("weights_"))
            if not 0 <= index < n:
                raise AttentionError(f"{path}: no sentence {index + 1} (it holds {n})")
            return Attention(
                [str(s) for s in npz[f"source_{index}"]],
                [str(s) for s in npz[f"target_{index}"]],
                npz[f"weights_{index}"].astype(np.float32),
            )
    n = 0
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if n == index + 1:
                return _record(path, n, line)
    raise AttentionError(f"{path}: no sentence {index + 1} (it holds {n})")


def _record(path: Path, line_no: int, line: str) -> Attention:
    try:
        rec = json.loads(line)
        weights = np.array(rec["weights"], dtype=np.float32)
        return Attention(list(rec["source"]), list(rec["target"]), weights)
    except (ValueError, KeyError, TypeError) as e:
        raise AttentionError(f"{path}: line {line_no}: not an attention record ({e})") from None


def plot_attention(att: Attention, out: Path, title: str | None = None) -> None:
    """Render the (output, source) attention matrix as a PNG heatmap."""
    if att.weights.size == 0:
        raise AttentionError("this sentence has no attention (it was an empty input line)")
    try:
        import matplotlib
    except ImportError:
        raise AttentionError(f"plotting needs matplotlib: {PLOT_HINT}") from None
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    rows, cols = att.weights.shape
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * cols + 2), max(3.0, 0.4 * rows + 1.5)))
    image = ax.imshow(att.weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(cols), att.source, rotation=60, ha="right")
    ax.set_yticks(range(rows), att.target)
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    if title:
        ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.04)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
