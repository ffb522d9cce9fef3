"""`mtkit train` (one process, or several through torchrun) and `mtkit average`."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from mtkit.cli.app import app, handle_errors, setup_logging
from mtkit.cli.options import DeviceOpt, OverwriteOpt, ProgressOpt, SetOpt, output_guard
from mtkit.config.schema import ConfigError
from mtkit.errors import MtkitError

TrainConfigArg = Annotated[
    Path,
    typer.Argument(
        help="Experiment YAML file, or a run directory (reads its config.yaml)",
        show_default=False,
    ),
]
ResumeOpt = Annotated[bool, typer.Option(help="Continue the run from its newest checkpoint")]
StartAgainOpt = Annotated[
    bool, typer.Option(help="Start again even if the run directory holds a run")
]
NprocOpt = Annotated[
    int, typer.Option(help="Processes (GPUs) on this machine: hands over to torchrun")
]
TrainDeviceOpt = Annotated[
    str | None, typer.Option(help="auto, cpu or cuda (short for --set training.device=...)")
]
InitFromOpt = Annotated[
    Path | None,
    typer.Option(
        help="Start from this run's (or checkpoint's) weights and tokenizer", metavar="RUN"
    ),
]
KeepOptimizerOpt = Annotated[bool, typer.Option(help="With --init-from: keep its Adam moments")]
KeepScheduleOpt = Annotated[
    bool, typer.Option(help="With --init-from: continue its step count and lr schedule")
]
PrecisionOpt = Annotated[
    str | None,
    typer.Option(
        help="auto, float32, bfloat16 or float16 (short for --set training.precision=...)"
    ),
]


@app.command()
@handle_errors
def train(
    config: TrainConfigArg,
    overrides: SetOpt = None,
    resume: ResumeOpt = False,
    overwrite: StartAgainOpt = False,
    nproc: NprocOpt = 1,
    device: TrainDeviceOpt = None,
    precision: PrecisionOpt = None,
    init_from: InitFromOpt = None,
    keep_optimizer: KeepOptimizerOpt = False,
    keep_schedule: KeepScheduleOpt = False,
    progress: ProgressOpt = None,
) -> None:
    """Train a model (preparing the data first if needed); writes runs/<name>/.

    Ctrl-C (or SIGTERM) finishes the current update, saves a checkpoint and exits 0.

    Examples:
      mtkit train configs/demo.yaml --set model.encoder_layers=4 --set training.lr=7e-4
      mtkit train runs/demo --resume
      mtkit train configs/demo.yaml --device cuda --precision bfloat16
      mtkit train configs/indomain.yaml --init-from runs/demo
      torchrun --nproc_per_node=4 -m mtkit train configs/demo.yaml
    """
    from mtkit.distributed import env_rank, is_peer_failure

    rank = env_rank()
    overrides = list(overrides or []) + _init_overrides(init_from, keep_optimizer, keep_schedule)
    overrides += [
        f"training.{k}={v}" for k, v in [("device", device), ("precision", precision)] if v
    ]
    if config.is_dir():  # a run directory: its resolved config, and it stays the run directory
        overrides.insert(0, f"run_dir={config}")
        config = config / "config.yaml"
    try:
        run_dir = _train(config, overrides, resume, overwrite, nproc, rank, progress)
    except (MtkitError, KeyboardInterrupt):
        if rank != 0:  # rank 0 shows the error once; the other ranks just exit
            raise typer.Exit(1) from None
        raise
    except Exception as e:
        if not is_peer_failure(e):
            raise
        if rank == 0:  # the failed rank printed its own error; say once why the rest stop
            typer.echo("error: training stopped: another rank failed (see its error)", err=True)
        raise typer.Exit(1) from None
    if rank == 0:
        best = run_dir / "best.pt"
        typer.echo(
            f"run directory: {run_dir}" + (f" (best checkpoint: {best})" if best.exists() else "")
        )


def _train(
    config: Path,
    overrides: list[str],
    resume: bool,
    overwrite: bool,
    nproc: int,
    rank: int,
    progress: bool | None,
) -> Path:
    """Load the config, hand over to torchrun if asked, set up logging and train (`progress`:
    of preparing the data)."""
    from mtkit.training.parent import load_train_config

    cfg = load_train_config(config, overrides, resume=resume)
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        _exec_torchrun(nproc, config, overrides, resume, overwrite)
    # Only rank 0 logs (and writes train.log, once the run is checked); other ranks report
    # warnings only.
    setup_logging()
    if rank != 0:
        logging.getLogger().setLevel(logging.ERROR)
    from mtkit.progress import Progress
    from mtkit.training.loop import train as run_train

    shown = Progress.on_stderr(progress if rank == 0 else False)

    def start_log() -> None:
        setup_logging(log_file=cfg.run_path / "train.log")

    return run_train(cfg, resume=resume, overwrite=overwrite, progress=shown, start_log=start_log)


def _init_overrides(init_from: Path | None, keep_optimizer: bool, keep_schedule: bool) -> list[str]:
    """--init-from, --keep-optimizer and --keep-schedule as `training.*` overrides."""
    out = [f"training.init_from={json.dumps(str(init_from))}"] if init_from is not None else []
    out += ["training.init_keep_optimizer=true"] * keep_optimizer
    return out + ["training.init_keep_schedule=true"] * keep_schedule


def _exec_torchrun(
    nproc: int, config: Path, overrides: list[str], resume: bool, overwrite: bool
) -> None:
    """Replace this process with `torchrun --standalone --nproc_per_node=N -m mtkit train ...`."""
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={nproc}", "-m", "mtkit", "train", str(config)]  # fmt: skip
    args += [f"--set={o}" for o in overrides]
    args += ["--resume"] * resume + ["--overwrite"] * overwrite
    typer.echo("starting: " + " ".join(args[1:]), err=True)
    os.execv(sys.executable, args)


AverageRunArg = Annotated[
    Path, typer.Argument(help="A run directory with step_NNNNNN.pt checkpoints")
]
LastOpt = Annotated[
    list[int] | None,
    typer.Option(
        help="Average the newest N step checkpoints; repeat for several averages", metavar="N"
    ),
]
SelectOnOpt = Annotated[
    str | None,
    typer.Option(
        help="valid: translate the valid split with each average (the run's decoding "
        "settings) and rank them by BLEU (the run's evaluation.tokenize)"
    ),
]
AverageOutputOpt = Annotated[
    Path | None,
    typer.Option(
        "--output",
        "-o",
        help="Default: RUN/average_last<N>.pt; with --select-on, a copy of the best average",
    ),
]


@app.command()
@handle_errors
def average(
    run: AverageRunArg,
    last: LastOpt = None,
    select_on: SelectOnOpt = None,
    output: AverageOutputOpt = None,
    device: DeviceOpt = "auto",
    progress: ProgressOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Average the model weights of a run's last N checkpoints into one checkpoint.

    The result translates like any checkpoint (often a little better than each one).

    Examples:
      mtkit average runs/demo --last 5 -o runs/demo/avg5.pt
      mtkit average runs/demo --last 5 --last 10 --select-on valid -o runs/demo/chosen.pt
    """
    setup_logging()
    from mtkit.progress import Progress
    from mtkit.training.average import average_run, select_average

    lasts, shown = last or [5], Progress.on_stderr(progress)
    _check_average_outputs(run, lasts, select_on, output, overwrite)
    if select_on is None:
        for n in lasts:
            typer.echo(f"wrote {average_run(run, n, output, shown)}")
        return
    ranked = select_average(run, lasts, select_on, device, shown)
    for c in ranked:
        typer.echo(f"{c.path}: {select_on} {c.bleu.text}\n  signature: {c.bleu.signature}")
    if output is not None:
        from mtkit.files import atomic_write_bytes

        atomic_write_bytes(output, ranked[0].path.read_bytes())
    typer.echo(
        f"best on {select_on}: {ranked[0].path}" + (f" (copied to {output})" if output else "")
    )


def _check_average_outputs(
    run: Path, lasts: list[int], select_on: str | None, output: Path | None, overwrite: bool
) -> None:
    """Before averaging: every file `average` will write may be written (files.OutputGuard)."""
    from mtkit.checkpoint import step_checkpoints
    from mtkit.training.average import average_path, check_select_on, selection_hyp_path

    if select_on is None and output is not None and len(lasts) > 1:
        raise ConfigError("-o names one file: give one --last, or add --select-on valid")
    if select_on is not None:
        check_select_on(select_on)
    steps = [path for _, path in step_checkpoints(run)] if run.is_dir() else []
    guard = output_guard([run], steps, overwrite)
    if select_on is None and output is not None:
        guard.check(output)
        return
    for n in dict.fromkeys(lasts):
        average = guard.check(average_path(run, n), "the average")
        if select_on is not None:
            guard.check(selection_hyp_path(average, select_on), "its hypotheses")
    if output is not None:
        guard.check(output)
