"""Bidirectional training through the CLI (docs/training.md): a first run on every pair in both
directions (`data.bidirectional`), then a fine-tune on the one direction that continues its
optimizer and schedule."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest
import torch

from mtkit.data.prepare import load_stats
from tests.conftest import write_tiny_config
from tests.e2e.cli import SHORT, run
from tests.e2e.cli import succeed as invoke

pytestmark = pytest.mark.slow


def pairs(prepared: Path) -> list[tuple[str, str]]:
    train = datasets.load_from_disk(str(prepared / "text"))["train"]
    return list(zip(train["src"], train["tgt"], strict=True))


def test_bidirectional_run_then_one_direction_fine_tune(tmp_path: Path, tiny_corpus: Path) -> None:
    (tmp_path / "one").mkdir()
    one_way = write_tiny_config(tmp_path / "one", tiny_corpus)
    invoke("prepare", str(one_way))
    forward = pairs(tmp_path / "one" / "prepared")

    (tmp_path / "bi").mkdir()
    bi = write_tiny_config(tmp_path / "bi", tiny_corpus, data={"bidirectional": True},
                           training={**SHORT, "max_steps": 4})  # fmt: skip
    result = invoke("train", str(bi))
    prepared = tmp_path / "bi" / "prepared"
    both = pairs(prepared)
    assert set(forward) < set(both)
    assert {(tgt, src) for src, tgt in forward} <= set(both)  # every kept pair also reversed
    stats = load_stats(prepared)["splits"]["train"]
    assert len(both) == stats["kept"] == 2 * len(forward)  # the length filters are symmetric
    assert stats["read"] - sum(stats["dropped"].values()) + stats["reversed"] == stats["kept"]
    assert f"reversed +{stats['reversed']}" in result.output
    # the tokenizer is trained before the reversal: the one-direction run's, byte for byte
    one_spm = (tmp_path / "one" / "prepared" / "spm.model").read_bytes()
    assert (tmp_path / "bi" / "run" / "spm.model").read_bytes() == one_spm

    # stage 2: the one direction, from the bidirectional run's last checkpoint, schedule kept
    child = tmp_path / "child"
    invoke("train", str(one_way), "--init-from", str(tmp_path / "bi" / "run" / "last.pt"),
           "--keep-optimizer", "--keep-schedule", "--set", f"run_dir={child}",
           "--set", "training.max_steps=6")  # fmt: skip
    state = torch.load(child / "last.pt", weights_only=True)
    assert state["train_state"]["step"] == 6 and state["parent"]["step"] == 4
    assert (child / "spm.model").read_bytes() == one_spm
    assert "BLEU" in invoke("evaluate", str(child), "--split", "test").output


def test_bidirectional_needs_a_joint_vocabulary(tmp_path: Path, tiny_corpus: Path) -> None:
    config = write_tiny_config(tmp_path, tiny_corpus, data={"bidirectional": True},
                               tokenizer={"vocab_size": 200, "joint": False},
                               model={"share_embeddings": False, "tie_output": False})  # fmt: skip
    code, out, err = run("prepare", str(config))
    assert code == 2
    assert err.strip().splitlines() == [
        f"error: {config}: data.bidirectional: needs tokenizer.joint: true (reversed pairs put "
        "target-language sentences on the source side)"
    ]
    assert not (tmp_path / "prepared").exists()
