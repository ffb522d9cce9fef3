"""Shared fixtures: tiny parallel corpora and a clean logging state per test."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"
CRASH_IN_WRITE = REPO / "tests" / "crash_in_checkpoint_write.py"  # mtkit, dying mid-checkpoint


def mtkit_module(crash_in_write: bool = False) -> list[str]:
    """What follows `python` (or torchrun) to run mtkit; crash_in_write: the one dying mid-write."""
    return [str(CRASH_IN_WRITE)] if crash_in_write else ["-m", "mtkit"]


@pytest.fixture(autouse=True, scope="session")
def _kernel_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Native kernels (mtkit/translation/native_kernels.py) are built into a cache of the
    session's own, also for the mtkit processes tests start, never into the user's."""
    import os

    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if before is None:
        del os.environ["XDG_CACHE_HOME"]
    else:
        os.environ["XDG_CACHE_HOME"] = before


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """One torch thread per test: tiny models gain nothing from more, and on a busy machine
    threads that wait for a descheduled sibling cost many times the CPU time."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """The CLI installs handlers on the root logger; drop them so tests stay independent."""
    yield
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()


def copy_head(src: Path, dst: Path, n: int, skip: int = 0) -> None:
    """Copy lines skip..skip+n of a bundled data file."""
    lines = src.read_text(encoding="utf-8").split("\n")[skip : skip + n]
    dst.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture
def tiny_corpus(tmp_path: Path) -> Path:
    """300 training, 40 valid and 30 test pairs from the bundled sample, under tmp_path/data."""
    out = tmp_path / "data"
    out.mkdir()
    for lang in ("en", "de"):
        copy_head(DATA / f"train.{lang}", out / f"train.{lang}", 300)
        copy_head(DATA / f"valid.{lang}", out / f"valid.{lang}", 40)
        copy_head(DATA / f"test.{lang}", out / f"test.{lang}", 30)
    return out


@pytest.fixture
def make_config(tmp_path: Path, tiny_corpus: Path) -> Callable[..., Path]:
    """A factory writing a tiny-model YAML config over `tiny_corpus`; kwargs override sections."""

    def make(**sections: dict[str, object]) -> Path:
        return write_tiny_config(tmp_path, tiny_corpus, **sections)

    return make


def write_tiny_config(tmp_path: Path, data_dir: Path, **sections: dict[str, object]) -> Path:
    """Write a YAML config for a tiny, fast model over `data_dir`; `sections` override keys."""
    import yaml

    cfg: dict[str, dict[str, object]] = {
        "data": {
            "train": str(data_dir / "train"),
            "valid": str(data_dir / "valid"),
            "test": str(data_dir / "test"),
            "prepared_dir": str(tmp_path / "prepared"),
            "max_len": 60,
        },
        "tokenizer": {"vocab_size": 200},
        "model": {
            "d_model": 32, "n_heads": 2, "encoder_layers": 1, "decoder_layers": 1, "d_ff": 64,
            "dropout": 0.0,
        },
        "training": {
            "max_steps": 20, "max_tokens": 1024, "lr": 3e-3, "warmup_steps": 5, "log_every": 5,
            "valid_every": 10, "valid_bleu_sentences": 10, "threads": 1, "device": "cpu",
        },
        "decoding": {"beam_size": 2, "max_len_b": 5, "max_len_a": 1.0},
    }  # fmt: skip
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    path = tmp_path / "config.yaml"
    raw = {"name": "tiny", "run_dir": str(tmp_path / "run"), **cfg}
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path
