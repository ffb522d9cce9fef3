"""One optimizer update: the model and optimizer it runs on, the loss, NaN/inf accounting.

`wrap_model` builds the `Stepper` (DDP under torchrun, torch.compile, a float16 GradScaler),
`update` runs `training.accumulate` micro-batches through it and steps, and `BadSteps` counts
the updates that a NaN/inf loss or gradient turned into no-ops.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from mtkit import distributed
from mtkit.config.schema import TrainingConfig
from mtkit.data.batching import Batch
from mtkit.data.tokenizer import PAD_ID
from mtkit.distributed import Dist
from mtkit.model.transformer import Transformer
from mtkit.runtime import DTYPES, autocast_context, resolve_precision
from mtkit.training.loss import label_smoothed_cross_entropy, projected_cross_entropy
from mtkit.training.rdrop import doubled, rdrop_objective, symmetric_kl


@dataclass
class Stepper:
    """What one update needs: the model(s), optimizer, precision and process group."""

    model: nn.Module  # what forward runs through: raw, DDP-wrapped and/or compiled
    raw: Transformer  # the plain module: state_dict, validation
    optimizer: torch.optim.Optimizer
    cfg: TrainingConfig
    device: torch.device
    dist: Dist = field(default_factory=Dist)
    ddp: Any = None  # the DistributedDataParallel wrapper (for no_sync), if any
    scaler: Any = None  # torch.amp.GradScaler for float16


@dataclass
class UpdateResult:
    """Sums over one update's micro-batches; tensors stay on the device until logging."""

    loss: Tensor  # summed label-smoothed loss (this rank)
    nll: Tensor  # summed NLL (this rank)
    tokens: int  # target tokens (this rank)
    src_tokens: int  # source tokens (this rank)
    padded: int  # src + tgt positions including padding (this rank)
    bad: Tensor  # 0-d float on the device: 1.0 if NaN/inf made the update a no-op, else 0.0
    stop: bool  # some rank asked to stop (signal or time limit): all ranks agree
    grad_norm: Tensor  # 0-d on the device: the gradient's total norm before clipping


def compute_loss(
    states: Tensor, weight: Tensor, target: Tensor, smoothing: float, precision: str
) -> tuple[Tensor, Tensor]:
    """Summed smoothed loss and summed NLL of the decoder's output states projected by
    `weight`, in blocks (loss.py; a seam the fault tests patch to inject NaN)."""
    return projected_cross_entropy(states, weight, target, smoothing, PAD_ID, DTYPES[precision])


def forward_loss(s: Stepper, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
    """(objective to minimise, summed smoothed CE, summed NLL) of one batch on the device.

    With `training.rdrop_alpha` > 0 the batch runs twice in one forward (R-Drop, rdrop.py);
    the CE and NLL returned are then the means of the two passes, comparable with a run
    without R-Drop.
    """
    alpha, smoothing, weight = s.cfg.rdrop_alpha, s.cfg.label_smoothing, s.raw.out_proj.weight
    if alpha == 0:
        with autocast_context(s.device, s.cfg.precision):
            states = s.model(batch.src, batch.src_mask, batch.tgt_in, project=False)
        loss, nll = compute_loss(states, weight, batch.tgt_out, smoothing, s.cfg.precision)
        return loss, loss, nll
    inputs = doubled(batch)
    with autocast_context(s.device, s.cfg.precision):
        logits = s.model(inputs.src, inputs.src_mask, inputs.tgt_in)  # (2 * batch, tgt_len, V)
        loss, nll = label_smoothed_cross_entropy(logits, inputs.tgt_out, smoothing, PAD_ID)
        kl = symmetric_kl(logits, batch.tgt_out != PAD_ID)
    return rdrop_objective(loss, kl, alpha), loss / 2, nll / 2


def _device_scalar(value: float, device: torch.device) -> Tensor:
    """A 0-d float tensor on `device`, copied without blocking the host."""
    t = torch.tensor(value, dtype=torch.float32)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t


def update(
    s: Stepper, micro: list[Batch], lr: float, stop_requested: Callable[[], bool]
) -> UpdateResult:
    """One optimizer update over `micro` (this rank's micro-batches).

    Loss normalisation: every micro-batch's summed loss is multiplied by
    world_size / (target tokens of the whole update over all ranks). DDP averages gradients
    over ranks, so the gradient is that of the summed loss of the union of all micro-batches
    of all ranks divided by its token count: K accumulated batches on N ranks give the same
    update as one batch K*N times larger. Non-final micro-batches skip DDP's all-reduce.
    """
    s.model.train()
    for group in s.optimizer.param_groups:
        group["lr"] = lr
    local_tokens = sum(b.n_tgt_tokens for b in micro)
    if s.dist.active:
        total = distributed.all_reduce(s.dist, _device_scalar(local_tokens, s.device))
        scale: Tensor | float = s.dist.world_size / total.clamp(min=1.0)
    else:
        scale = 1.0 / max(local_tokens, 1)
    loss_sum = torch.zeros((), device=s.device)
    nll_sum = torch.zeros((), device=s.device)
    for i, batch in enumerate(micro):
        last = i == len(micro) - 1
        sync = s.ddp.no_sync() if s.ddp is not None and not last else contextlib.nullcontext()
        with sync:
            if s.device.type == "cuda":  # pinned: the copy does not wait for the GPU
                batch = batch.pin_memory()
            batch = batch.to(s.device)
            objective, loss, nll = forward_loss(s, batch)
            scaled = objective * scale
            (s.scaler.scale(scaled) if s.scaler is not None else scaled).backward()
        loss_sum += loss.detach()
        nll_sum += nll
    bad, stop, norm = _step(s, loss_sum, stop_requested)
    return UpdateResult(
        loss_sum, nll_sum, local_tokens, sum(b.n_src_tokens for b in micro),
        sum(b.src.numel() + b.tgt_in.numel() for b in micro), bad, stop, norm,
    )  # fmt: skip


def _step(
    s: Stepper, loss_sum: Tensor, stop_requested: Callable[[], bool]
) -> tuple[Tensor, bool, Tensor]:
    """Clip, check for NaN/inf, step or skip; returns (bad, stop, the pre-clip gradient norm),
    the same on all ranks. The norm is clipping's own result, left on the device.

    A single process with a fused Adam skips a bad update on the device (the optimizer's
    `found_inf`, as GradScaler uses it), so the host never waits for the device here. Other
    set-ups read a flag back once per update: under torchrun it also carries the ranks' stop
    requests, which must agree; float16's GradScaler syncs per step anyway.
    """
    if s.scaler is not None:
        s.scaler.unscale_(s.optimizer)
    max_norm = s.cfg.clip_norm if s.cfg.clip_norm > 0 else math.inf
    norm = torch.nn.utils.clip_grad_norm_(s.raw.parameters(), max_norm)
    bad = ~torch.isfinite(loss_sum)
    if s.scaler is None:  # float16: the scaler handles overflowing gradients itself
        bad = bad | ~torch.isfinite(norm)
    bad_f = bad.float()  # 0-d
    if not s.dist.active and s.scaler is None and _skips_on_device(s.optimizer):
        s.optimizer.found_inf = bad_f  # type: ignore[attr-defined]
        s.optimizer.step()
        s.optimizer.zero_grad(set_to_none=True)
        return bad_f, stop_requested(), norm.detach()
    flags = torch.zeros(2, device=s.device)  # (bad, stop)
    flags[0] = bad_f
    flags[1] = float(stop_requested())
    skipped, stop = (v > 0 for v in distributed.all_reduce(s.dist, flags, "max").tolist())
    if s.scaler is not None:
        if not skipped:
            s.scaler.step(s.optimizer)
        s.scaler.update()
    elif not skipped:
        s.optimizer.step()
    s.optimizer.zero_grad(set_to_none=True)
    return flags[0], stop, norm.detach()


def _skips_on_device(optimizer: torch.optim.Optimizer) -> bool:
    """Fused Adam/AdamW honour `found_inf`: a flagged step changes neither weights nor state."""
    return isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW) and bool(
        optimizer.defaults.get("fused")
    )


class BadSteps:
    """Counts no-op (NaN/inf) updates on the device; read at logging, validation and saving.

    `tripped_at` latches the step at which `max_bad_steps` bad updates in a row were reached.
    """

    def __init__(self, device: torch.device, in_a_row: int = 0, total: int = 0) -> None:
        self.run = torch.tensor(float(in_a_row), device=device)
        self.total = torch.tensor(float(total), device=device)
        self.tripped_at = torch.zeros((), device=device)
        self.reported_total = total

    def add(self, bad: Tensor, step: int, limit: int) -> None:
        self.run = (self.run + bad) * bad
        self.total = self.total + bad
        hit = (self.run >= limit) & (self.tripped_at == 0)
        self.tripped_at = torch.where(hit, float(step), self.tripped_at)

    def read(self) -> tuple[int, int, int]:
        """(bad updates in a row now, in total, step where the limit was hit or 0)."""
        run, total, tripped = torch.stack([self.run, self.total, self.tripped_at]).tolist()
        return int(run), int(total), int(tripped)


def make_optimizer(model: nn.Module, t: TrainingConfig) -> torch.optim.Optimizer:
    """Adam (AdamW when weight decay is set) with the config's betas and epsilon.

    Fused where this torch and device support it: one kernel per step, and a NaN/inf update
    can be skipped on the device.
    """
    kind = torch.optim.AdamW if t.weight_decay > 0 else torch.optim.Adam
    options: dict[str, Any] = {"lr": t.lr, "betas": t.betas, "eps": t.adam_eps}
    if t.weight_decay > 0:
        options["weight_decay"] = t.weight_decay
    try:
        return kind(model.parameters(), fused=True, **options)
    except (RuntimeError, ValueError, TypeError):  # older torch, unsupported device or dtype
        return kind(model.parameters(), **options)


def wrap_model(
    raw: Transformer, optimizer: torch.optim.Optimizer, t: TrainingConfig, device: torch.device,
    d: Dist,
) -> Stepper:  # fmt: skip
    """DDP under torchrun, torch.compile when asked, a GradScaler for float16.

    `precision: auto` is resolved here (rank 0 decides for all ranks); the Stepper's config
    holds the result.
    """
    choice = distributed.broadcast_object(d, resolve_precision(t.precision, device))
    t = replace(t, precision=choice)
    model: nn.Module = raw
    ddp = None
    if d.active:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        ddp = DistributedDataParallel(raw, device_ids=ids)
        model = ddp
    if t.compile:
        model = torch.compile(model)  # type: ignore[assignment]
    scaler = torch.amp.GradScaler("cuda") if t.precision == "float16" else None
    return Stepper(model, raw, optimizer, t, device, d, ddp, scaler)
