"""Run checkpoints: keep-last-K, last/best links, resume choice, disk full, the run lock."""

from __future__ import annotations

import errno
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from mtkit import checkpoint, files
from mtkit.checkpoint import (
    CheckpointError,
    find_resume_checkpoint,
    load_checkpoint,
    save_run_checkpoint,
    step_checkpoints,
)
from mtkit.training.run_dir import RunDirError, RunLock, prepare_run_dir, process_start


def state(step: int) -> dict[str, Any]:
    return {
        "config": {}, "model": {"w": torch.full((3,), float(step))}, "vocab": {},
        "tokenizer": {}, "train_state": {"step": step},
    }  # fmt: skip


def saved_step(path: Path) -> int:
    return int(load_checkpoint(path)["train_state"]["step"])


def test_keeps_last_k_and_points_last_and_best(tmp_path: Path) -> None:
    for step in (1, 2, 3, 4, 5):
        save_run_checkpoint(tmp_path, state(step), step, best=step == 2, keep_last=2)
    assert [s for s, _ in step_checkpoints(tmp_path)] == [4, 5]
    assert saved_step(tmp_path / "last.pt") == 5
    assert saved_step(tmp_path / "best.pt") == 2  # still there after step_000002.pt was pruned
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "best.pt", "last.pt", "step_000004.pt", "step_000005.pt"
    ]  # fmt: skip


def test_keep_last_zero_keeps_only_last_and_best(tmp_path: Path) -> None:
    for step in (1, 2):
        save_run_checkpoint(tmp_path, state(step), step, best=True, keep_last=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]
    assert saved_step(tmp_path / "last.pt") == 2


def test_resume_prefers_a_newer_step_file_and_skips_unreadable(tmp_path: Path) -> None:
    save_run_checkpoint(tmp_path, state(3), 3, best=False, keep_last=5)
    # A crash after step_000004.pt was written but before last.pt was swapped:
    checkpoint.save_checkpoint(tmp_path / "step_000004.pt", state(4))
    found = find_resume_checkpoint(tmp_path)
    assert found is not None and found[0].name == "step_000004.pt"
    (tmp_path / "step_000005.pt").write_bytes(b"truncated")
    found = find_resume_checkpoint(tmp_path)
    assert found is not None and found[1]["train_state"]["step"] == 4
    assert find_resume_checkpoint(tmp_path / "nothing-here") is None


def test_disk_full_is_one_line_and_leaves_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_run_checkpoint(tmp_path, state(1), 1, best=True, keep_last=5)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def full_disk(f: Any, data: bytes, path: Path) -> None:
        f.write(data[:100])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files, "write_payload", full_disk)
    with pytest.raises(CheckpointError) as info:
        save_run_checkpoint(tmp_path, state(2), 2, best=True, keep_last=5)
    message = str(info.value)
    assert "No space left on device" in message and "previous checkpoint is intact" in message
    assert "\n" not in message
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no temp files
    assert saved_step(tmp_path / "last.pt") == 1


def test_lock_refuses_a_live_owner_and_takes_over_a_dead_one(tmp_path: Path) -> None:
    first = RunLock(tmp_path)
    first.acquire()
    with pytest.raises(RunDirError, match=f"another training \\(PID {os.getpid()}\\)"):
        RunLock(tmp_path).acquire()  # the owner (this process) is alive
    first.release()
    assert not (tmp_path / "train.lock").exists()

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    (tmp_path / "train.lock").write_text(f"{dead.stdout.strip()} {os.uname().nodename}\n")
    lock = RunLock(tmp_path)
    lock.acquire()  # stale: its process is gone
    assert (tmp_path / "train.lock").read_text().split()[0] == str(os.getpid())
    lock.release()


def test_a_lock_whose_pid_was_reused_is_taken_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A process killed during start-up left its lock, and its PID now belongs to another
    process (here: this one, started at another time): the lock is stale, with a message."""
    if process_start(os.getpid()) is None:
        pytest.skip("no /proc: start times unknown")
    (tmp_path / "train.lock").write_text(f"{os.getpid()} {socket.gethostname()} 1\n")
    lock = RunLock(tmp_path)
    with caplog.at_level(logging.WARNING):
        lock.acquire()
    assert "a new process has its PID" in caplog.text
    assert (tmp_path / "train.lock").read_text().split()[2] == process_start(os.getpid())
    lock.release()


def test_run_dir_needs_resume_or_overwrite_and_cleans_temp_files(tmp_path: Path) -> None:
    run = tmp_path / "run"
    prepare_run_dir(run, resume=False, overwrite=False).release()
    save_run_checkpoint(run, state(1), 1, best=True, keep_last=5)
    (run / ".step_000002.pt.abc.tmp").write_bytes(b"half a checkpoint")
    with pytest.raises(RunDirError, match="--resume"):
        prepare_run_dir(run, resume=False, overwrite=False)
    assert not (run / "train.lock").exists()  # a refused start releases the lock
    prepare_run_dir(run, resume=True, overwrite=False).release()
    assert not list(run.glob(".*.tmp"))
    prepare_run_dir(run, resume=False, overwrite=True).release()
    assert not list(run.glob("*.pt"))
