"""Data-parallel training on CPU with gloo: two ranks behave like one process on the union batch.

- spawned ranks call `update` directly: after every update both ranks hold identical weights,
  equal to a single process stepping on the union of both ranks' micro-batches;
- `torchrun --nproc_per_node=2 -m mtkit train`: a resumed 2-process run equals an
  uninterrupted one, its checkpoint translates in one process, a user error on rank 0 is
  printed once while every rank exits, and when rank 0 dies the other rank stops too.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp

from mtkit import distributed
from mtkit.checkpoint import load_checkpoint
from mtkit.config.load import load_config
from mtkit.config.schema import TrainingConfig
from mtkit.data.batching import Batch, collate_columns
from mtkit.data.prepare import prepare
from mtkit.training.update import Stepper, update, wrap_model
from mtkit.translation.translator import Translator
from tests.conftest import mtkit_module, write_tiny_config
from tests.unit.test_train_step import random_pairs, tiny_model

pytestmark = pytest.mark.slow

WORLD = 2
UPDATES = 3
ACCUMULATE = 2
TRAINING = TrainingConfig(
    clip_norm=0.5, label_smoothing=0.1, accumulate=ACCUMULATE, precision="float32"
)


def shard(update_index: int, rank: int) -> list[Batch]:
    """Rank `rank`'s micro-batches for one update (sizes differ across ranks and batches)."""
    out = []
    for k in range(ACCUMULATE):
        seed = 100 * update_index + 10 * rank + k
        src, tgt = random_pairs(2 + (seed % 4), seed=seed)
        out.append(collate_columns(src, tgt))
    return out


def union(update_index: int) -> Batch:
    """All micro-batches of all ranks for one update, as one batch."""
    src, tgt = [], []
    for rank in range(WORLD):
        for k in range(ACCUMULATE):
            seed = 100 * update_index + 10 * rank + k
            s, t = random_pairs(2 + (seed % 4), seed=seed)
            src += s
            tgt += t
    return collate_columns(src, tgt)


def sgd_stepper(model: torch.nn.Module, d: distributed.Dist) -> Stepper:
    sgd = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    return wrap_model(model, sgd, TRAINING, torch.device("cpu"), d)  # type: ignore[arg-type]


def _rank_main(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))  # fmt: skip
    os.environ["MTKIT_DIST_TIMEOUT"] = "120"  # a stuck peer fails the test instead of hanging
    torch.set_num_threads(1)
    d, _ = distributed.init_from_env(torch.device("cpu"))
    model = tiny_model(seed=0)
    stepper = sgd_stepper(model, d)
    for u in range(UPDATES):
        update(stepper, shard(u, rank), lr=1.0, stop_requested=lambda: False)
        flat = torch.cat([p.detach().flatten() for p in model.parameters()])
        every = [torch.empty_like(flat) for _ in range(WORLD)]
        torch_dist.all_gather(every, flat)
        assert torch.equal(every[0], every[1]), f"ranks differ after update {u + 1}"
    if rank == 0:
        torch.save(model.state_dict(), out)
    distributed.close(d, wait_for_peers=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_ranks_equal_one_process_on_the_union_batch(tmp_path: Path) -> None:
    out = tmp_path / "ddp.pt"
    mp.spawn(  # type: ignore[attr-defined,no-untyped-call]
        _rank_main,
        args=(free_port(), str(out)),
        nprocs=WORLD,
        join=True,
    )
    single = tiny_model(seed=0)
    stepper = sgd_stepper(single, distributed.Dist())
    for u in range(UPDATES):
        update(stepper, [union(u)], lr=1.0, stop_requested=lambda: False)
    ddp = torch.load(out, weights_only=True)
    for name, value in single.state_dict().items():
        torch.testing.assert_close(ddp[name], value, rtol=1e-5, atol=1e-6, msg=name)


def torchrun(*args: str, crash_in_write: bool = False) -> subprocess.CompletedProcess[str]:
    """`torchrun -m mtkit train ARGS`; with crash_in_write, the script that dies mid-checkpoint."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={WORLD}", *mtkit_module(crash_in_write),
               "train", *args]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def test_torchrun_resume_translate_and_errors(tmp_path: Path, tiny_corpus: Path) -> None:
    config = write_tiny_config(
        tmp_path, tiny_corpus,
        model={"dropout": 0.1},
        training={"max_steps": 6, "save_every": 3, "valid_every": 6, "log_every": 2,
                  "max_tokens": 500, "accumulate": 2, "valid_bleu_sentences": 3},
    )  # fmt: skip
    prepare(load_config(config))
    full = tmp_path / "run"
    result = torchrun(str(config))
    assert result.returncode == 0, result.stderr
    assert "x 2 ranks x 2 accumulated" in result.stderr
    assert result.stderr.count("validation at step 6") == 1  # only rank 0 logs

    # Resume a copy of the run from its step-3 checkpoint with 2 ranks again.
    part = tmp_path / "part"
    part.mkdir()
    shutil.copy(full / "config.yaml", part / "config.yaml")
    shutil.copy(full / "step_000003.pt", part / "last.pt")
    result = torchrun(str(part), "--resume")
    assert result.returncode == 0, result.stderr
    assert "resumed from" in result.stderr
    a = load_checkpoint(full / "last.pt")
    b = load_checkpoint(part / "last.pt")
    assert a["world_size"] == 2 and len(a["rng"]) == 2
    for name, value in a["model"].items():
        torch.testing.assert_close(b["model"][name], value, rtol=1e-5, atol=1e-6, msg=name)

    # The distributed checkpoint translates in one process.
    translator = Translator.load(full / "best.pt", device="cpu")
    beam2 = replace(translator.config.decoding, beam_size=2)
    assert len(translator.translate(["Call a policeman.", "Hi."], beam2)) == 2

    # A user error on rank 0 (the run exists, no --resume): shown once; all ranks exit.
    result = torchrun(str(config))
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "already holds a training run" in errors[0], result.stderr

    # Rank 0 dies (SIGKILL while writing a checkpoint): rank 1 stops too, without a traceback.
    result = torchrun(str(part), "--resume", "--set", "training.max_steps=9", crash_in_write=True)
    assert result.returncode != 0
    assert "[rank1]" not in result.stderr and "exitcode: -9" in result.stderr, result.stderr
