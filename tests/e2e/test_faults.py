"""A training that is killed (SIGKILL, even mid-write) or stopped (SIGTERM) loses nothing.

Each phase starts `python -m mtkit train` as a subprocess, waits for a specific log line
(never a sleep), then kills it; afterwards every checkpoint file must load, and the next
`--resume` must continue from the newest complete checkpoint. The pieced-together run must
end with the same weights as one never interrupted.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from mtkit.checkpoint import load_checkpoint
from mtkit.config.load import load_config
from mtkit.training.loop import train
from mtkit.training.run_dir import RunDirError, prepare_run_dir
from tests.conftest import mtkit_module, write_tiny_config

pytestmark = pytest.mark.slow

WAIT_S = 180.0  # per awaited log line; generous for a loaded 2-core machine


class Training:
    """`python -m mtkit train CONFIG [--resume]` with its merged output read line by line."""

    def __init__(
        self, config: Path, *, resume: bool, crash_in_write: bool = False, crash_at: str = "write"
    ) -> None:
        """`crash_in_write`: SIGKILL itself at `crash_at` (tests/crash_in_checkpoint_write.py)."""
        mtkit = [sys.executable, *mtkit_module(crash_in_write)]
        args = [*mtkit, "train", str(config)] + ["--resume"] * resume
        env = {**os.environ, "MTKIT_CRASH_AT": crash_at}
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )  # fmt: skip
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, pattern: str) -> re.Match[str]:
        """Block until a line matches `pattern` (fails if the process ends first)."""
        while True:
            try:
                line = self._queue.get(timeout=WAIT_S)
            except queue.Empty:
                self.proc.kill()
                raise AssertionError(f"no line matching {pattern!r}:\n{self.output}") from None
            if line is None:
                raise AssertionError(f"exited before {pattern!r}:\n{self.output}")
            self.lines.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def finish(self) -> int:
        """Wait for exit; collect the rest of the output; return the exit code."""
        code = self.proc.wait(timeout=WAIT_S)
        while (line := self._queue.get(timeout=WAIT_S)) is not None:
            self.lines.append(line)
        return code

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        assert self.finish() == -signal.SIGKILL

    @property
    def output(self) -> str:
        return "".join(self.lines)


def checkpoints_readable(run: Path) -> int:
    """Every *.pt in the run loads; returns the newest step among them."""
    steps = [load_checkpoint(p)["train_state"]["step"] for p in sorted(run.glob("*.pt"))]
    return max(steps, default=0)


def resumes_at(
    config: Path, step: int, crash_in_write: bool = False, crash_at: str = "write"
) -> Training:
    t = Training(config, resume=True, crash_in_write=crash_in_write, crash_at=crash_at)
    found = t.wait_for(r"resumed from \S+ at step (\d+)")
    assert int(found.group(1)) == step, t.output
    return t


def test_killed_and_interrupted_training_resumes_exactly(tmp_path: Path, tiny_corpus: Path) -> None:
    """Kills land a little after the awaited line, so the steps are read back, not assumed."""
    config = write_tiny_config(
        tmp_path, tiny_corpus,
        model={"dropout": 0.1},
        training={"max_steps": 40, "log_every": 1, "save_every": 2, "valid_every": 6,
                  "keep_last": 3, "max_tokens": 600, "valid_bleu_sentences": 3},
    )  # fmt: skip
    run = tmp_path / "run"

    # 1) SIGKILL right after a checkpoint was written.
    t = Training(config, resume=False)
    t.wait_for(r"saved checkpoint step_000002\.pt")
    t.kill()
    newest = checkpoints_readable(run)
    assert newest >= 2

    # 2) SIGKILL in the middle of writing the next checkpoint (tests/crash_in_checkpoint_write.py).
    t = resumes_at(config, newest, crash_in_write=True)
    assert t.finish() == -signal.SIGKILL
    half_written = list(run.glob(".step_*.pt.*.tmp"))
    assert half_written
    assert checkpoints_readable(run) == newest

    # 3) SIGKILL during start-up, before any update.
    t = resumes_at(config, newest)
    t.kill()
    newest = checkpoints_readable(run)

    # 4) SIGKILL between checkpoints; meanwhile a second training is refused by the lock.
    t = resumes_at(config, newest)
    t.wait_for(rf"step {newest + 1}/40")
    assert not any(p.exists() for p in half_written)  # cleaned on start
    with pytest.raises(RunDirError, match=r"another training \(PID \d+\)"):
        prepare_run_dir(run, resume=True, overwrite=False)
    t.kill()
    newest = checkpoints_readable(run)

    # 5) SIGKILL during a validation.
    t = resumes_at(config, newest)
    t.wait_for(rf"validation at step {(newest // 6 + 1) * 6}")
    t.kill()
    newest = checkpoints_readable(run)

    # 6) SIGTERM: finish the update, save, say how to resume, exit 0.
    t = resumes_at(config, newest)
    t.wait_for(rf"step {newest + 1}/40")
    t.proc.send_signal(signal.SIGTERM)
    assert t.finish() == 0, t.output
    stopped = re.search(r"interrupted \(SIGTERM\) at step (\d+).*Resume with: mtkit train .*"
                        r"--resume", t.output)  # fmt: skip
    assert stopped, t.output
    assert load_checkpoint(run / "last.pt")["train_state"]["step"] == int(stopped.group(1))
    assert int(stopped.group(1)) > newest

    # 7) Resume to the end (the locks of the killed processes were stale; this one is released).
    t = resumes_at(config, int(stopped.group(1)))
    assert t.finish() == 0, t.output
    assert not (run / "train.lock").exists()
    final = load_checkpoint(run / "last.pt")
    assert final["train_state"]["step"] == 40

    reference = train(load_config(config, [f"run_dir={tmp_path / 'reference'}"]))
    expected = load_checkpoint(reference / "last.pt")["model"]
    for name, value in expected.items():
        torch.testing.assert_close(final["model"][name], value, rtol=1e-5, atol=1e-6, msg=name)


def test_kills_while_linking_and_pruning_checkpoints_lose_nothing(
    tmp_path: Path, tiny_corpus: Path
) -> None:
    """SIGKILL between the hard link of last.pt/best.pt and its rename, and in the middle of
    deleting old step files: every checkpoint left loads, the next --resume starts from the
    newest one (removing the stray link), and the pieced-together run ends where an
    uninterrupted one does."""
    config = write_tiny_config(
        tmp_path, tiny_corpus,
        training={"max_steps": 12, "log_every": 1, "save_every": 2, "valid_every": 2,
                  "keep_last": 2, "max_tokens": 600, "valid_bleu_sentences": 3,
                  "best_metric": "loss"},
    )  # fmt: skip
    run = tmp_path / "run"

    # 1) killed after step_000002.pt is written, before last.pt points at it
    t = Training(config, resume=False, crash_in_write=True, crash_at="link-last")
    assert t.finish() == -signal.SIGKILL, t.output
    assert list(run.glob(".last.pt.*.link.tmp")) and not (run / "last.pt").exists()
    newest = checkpoints_readable(run)
    assert newest == 2

    # 2) killed when best.pt is about to point at a new best step (last.pt already does)
    t = resumes_at(config, newest, crash_in_write=True, crash_at="link-best")
    assert t.finish() == -signal.SIGKILL, t.output
    assert list(run.glob(".best.pt.*.link.tmp"))
    newest = checkpoints_readable(run)
    assert load_checkpoint(run / "last.pt")["train_state"]["step"] == newest > 2

    # 3) killed right after the first old step file was deleted (keep_last: 2)
    t = resumes_at(config, newest, crash_in_write=True, crash_at="prune")
    assert t.finish() == -signal.SIGKILL, t.output
    newest = checkpoints_readable(run)

    # 4) resume to the end: the stray links are gone and the lock released
    t = resumes_at(config, newest)
    assert t.finish() == 0, t.output
    assert not list(run.glob(".*.tmp")) and not (run / "train.lock").exists()
    assert len(list(run.glob("step_*.pt"))) == 2
    final = load_checkpoint(run / "last.pt")
    assert final["train_state"]["step"] == 12

    reference = train(load_config(config, [f"run_dir={tmp_path / 'reference'}"]))
    expected = load_checkpoint(reference / "last.pt")["model"]
    for name, value in expected.items():
        torch.testing.assert_close(final["model"][name], value, rtol=1e-5, atol=1e-6, msg=name)
