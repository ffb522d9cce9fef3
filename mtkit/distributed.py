"""Process-group setup for `torchrun` and the few collectives training needs.

`mtkit train` under `torchrun --nproc_per_node=N` finds RANK/WORLD_SIZE/LOCAL_RANK in its
environment and joins a process group (nccl on CUDA, gloo on CPU). Without them it is a single
process and every helper here is a no-op, so the training loop has one code path.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from mtkit.errors import MtkitError


class PeerFailed(MtkitError):
    """Another rank (rank 0) hit an error and reported it; this rank exits quietly."""


@dataclass(frozen=True)
class Dist:
    """This process's place in the job; world_size 1 means single-process training."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, logs, metrics and progress; the others only compute."""
        return self.rank == 0


def env_rank() -> int:
    """The rank torchrun gave this process (0 when not launched by torchrun)."""
    return int(os.environ.get("RANK", "0"))


def init_from_env(device: torch.device) -> tuple[Dist, torch.device]:
    """Join torchrun's process group if there is one; return it and this rank's device.

    On CUDA every rank uses GPU LOCAL_RANK; on CPU all ranks share the CPU.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Dist(), device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        timeout = datetime.timedelta(seconds=int(os.environ.get("MTKIT_DIST_TIMEOUT", "1800")))
        dist.init_process_group(backend=backend, timeout=timeout)
    return Dist(rank, world_size, local_rank), device


def close(d: Dist, *, wait_for_peers: bool = False) -> None:
    """Leave the process group (if this process joined one).

    `wait_for_peers` (the normal, error-free exit) first waits at a barrier, so that no rank
    tears down its connections while a peer is still using them; gloo aborts the peer's
    process ("terminate called without an active exception") when that happens.
    """
    if d.active and dist.is_initialized():
        if wait_for_peers:
            dist.barrier()
        dist.destroy_process_group()


def all_reduce(d: Dist, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In-place sum/max over ranks; returns `tensor` (unchanged in a single process)."""
    if d.active:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return tensor


def broadcast(d: Dist, tensor: torch.Tensor) -> torch.Tensor:
    """In place: every rank ends with rank 0's values."""
    if d.active:
        dist.broadcast(tensor, src=0)
    return tensor


def broadcast_object(d: Dist, obj: Any) -> Any:
    """Rank 0's picklable object, on every rank."""
    if not d.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(d: Dist, obj: Any) -> list[Any]:
    """Every rank's object, in rank order, on every rank."""
    if not d.active:
        return [obj]
    out: list[Any] = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out


def check_peers(d: Dist, error: BaseException | None) -> None:
    """Make all ranks agree after a rank-0-only setup step.

    Rank 0 passes the error it hit (or None): it re-raises it and prints it once; the other
    ranks raise PeerFailed, which the CLI turns into a silent non-zero exit.
    """
    failed = broadcast_object(d, error is not None)
    if error is not None:
        raise error
    if failed:
        raise PeerFailed("rank 0 failed during setup (its error is shown above)")


_PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "Broken pipe",
              "NCCL communicator was aborted", "connection refused")  # fmt: skip


def is_peer_failure(error: BaseException) -> bool:
    """Whether a collective failed because another rank went away (that rank shows why)."""
    if isinstance(error, getattr(dist, "DistError", ())):  # DistBackendError, DistNetworkError
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and any(s.lower() in text.lower() for s in _PEER_GONE)
