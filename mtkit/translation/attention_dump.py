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

import contextlib
import json
import zipfile
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt

from mtkit.errors import MtkitError
from mtkit.files import atomic_writer
from mtkit.translation.results import Attention, Translation

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
        self._files = contextlib.ExitStack()  # the file is renamed into place once complete
        self._zip: zipfile.ZipFile | None = None
        self._text: TextIO | None = None
        if self.npz:
            raw = self._files.enter_context(atomic_writer(self.path, "wb"))
            self._zip = zipfile.ZipFile(raw, "w")
        else:
            self._text = self._files.enter_context(atomic_writer(self.path))
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

    def __enter__(self) -> AttentionWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Complete the file and rename it into place; after an error, remove it instead."""
        if self._zip is not None and exc is None:
            self._zip.close()  # writes the zip's directory
        self._files.__exit__(exc_type, exc, tb)


def read_attention(path: Path, index: int) -> Attention:
    """Record `index` (0-based) of a dump written by AttentionWriter."""
    path = Path(path)
    if not path.is_file():
        raise AttentionError(f"{path}: attention file not found")
    if path.suffix == ".npz":
        return _npz_record(path, index)
    n = 0
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            if n == index + 1:
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise _not_attention(path, f"line {n} is not UTF-8 text") from None
                return _record(path, n, line)
    raise AttentionError(f"{path}: no sentence {index + 1} (it holds {n})")


def _not_attention(path: Path, why: str) -> AttentionError:
    return AttentionError(
        f"{path}: not an attention file ({why}); expected the .jsonl or .npz that "
        "`mtkit translate --attention FILE` writes"
    )


def _npz_record(path: Path, index: int) -> Attention:
    try:
        with np.load(path, allow_pickle=False) as npz:
            n = sum(1 for k in npz.files if k.startswith("weights_"))
            if not 0 <= index < n:
                raise AttentionError(f"{path}: no sentence {index + 1} (it holds {n})")
            return Attention(
                [str(s) for s in npz[f"source_{index}"]],
                [str(s) for s in npz[f"target_{index}"]],
                npz[f"weights_{index}"].astype(np.float32),
            )
    except AttentionError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError, zipfile.BadZipFile) as e:
        raise _not_attention(path, type(e).__name__) from None


def _record(path: Path, line_no: int, line: str) -> Attention:
    try:
        rec = json.loads(line)
        weights = np.array(rec["weights"], dtype=np.float32)
        return Attention(list(rec["source"]), list(rec["target"]), weights)
    except (ValueError, KeyError, TypeError) as e:
        raise _not_attention(path, f"line {line_no}: {str(e)[:80]}") from None


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
    with atomic_writer(out, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)
