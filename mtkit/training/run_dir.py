"""The run directory: creating it, and a lock so that two trainings never share one."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

from mtkit.errors import MtkitError
from mtkit.files import pid_alive, remove_temp_files

logger = logging.getLogger(__name__)

LOCK_NAME = "train.lock"


class RunDirError(MtkitError):
    """The run directory is in a state that this training request would damage."""


class RunLock:
    """`run_dir/train.lock` holding "PID HOST START" while a training writes to the run directory.

    A second training refuses to start while the owner lives; a lock left by a dead process
    (kill -9, power loss) on this host is taken over with a warning. START (the owner's start
    time, where /proc has it) tells a live owner from a new process that got the dead one's PID.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_NAME
        self.owned = False

    def acquire(self) -> None:
        me = f"{os.getpid()} {socket.gethostname()} {process_start(os.getpid()) or '-'}\n"
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(fd, "w") as f:
                f.write(me)
            self.owned = True
            return
        raise RunDirError(f"{self.path}: could not take the run lock")

    def _take_over_if_stale(self) -> None:
        try:
            text = self.path.read_text(encoding="utf-8").split()
        except FileNotFoundError:
            return  # released meanwhile: try again
        pid = int(text[0]) if text and text[0].isdigit() else -1
        host = text[1] if len(text) > 1 else socket.gethostname()
        started = text[2] if len(text) > 2 and text[2] != "-" else None
        if host != socket.gethostname():
            raise RunDirError(
                f"{self.path.parent}: in use by PID {pid} on {host}; if that training is gone, "
                f"delete {self.path}"
            )
        alive = pid > 0 and pid_alive(pid)
        if alive and (started is None or process_start(pid) in (None, started)):
            raise RunDirError(
                f"{self.path.parent}: another training (PID {pid}) is using this run directory; "
                "wait for it to finish or stop it first"
            )
        why = "a new process has its PID" if alive else "no such process"
        logger.warning("taking over the stale lock of PID %d (%s): %s", pid, why, self.path)
        self.path.unlink(missing_ok=True)

    def release(self) -> None:
        if self.owned:
            self.path.unlink(missing_ok=True)
            self.owned = False


def process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, from /proc), or None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # after "PID (command) "
    return fields[19] if len(fields) > 19 else None


def has_run(run_dir: Path) -> bool:
    """The directory holds checkpoints of a training run."""
    return (run_dir / "last.pt").exists() or any(run_dir.glob("step_*.pt"))


def check_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse, before anything is written, to start a new run over a run's checkpoints."""
    if has_run(run_dir) and not (resume or overwrite):
        raise RunDirError(
            f"{run_dir}: already holds a training run (last.pt); pass --resume to continue "
            "it or --overwrite to start again"
        )


def prepare_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> RunLock:
    """Lock the run directory, check it may be (re)used and clean crash leftovers.

    Returns the held lock; the caller releases it when training ends. The run's config.yaml
    is written later, once the run is known to start (state.build_run).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = RunLock(run_dir)
    lock.acquire()
    try:
        check_run_dir(run_dir, resume=resume, overwrite=overwrite)
        if overwrite and not resume:
            for path in [*run_dir.glob("step_*.pt"), *run_dir.glob("*.pt")]:
                path.unlink(missing_ok=True)
            (run_dir / "metrics.jsonl").unlink(missing_ok=True)
        for stray in remove_temp_files(run_dir):
            logger.warning("removed %s, left by an interrupted write", stray.name)
    except BaseException:
        lock.release()
        raise
    return lock
