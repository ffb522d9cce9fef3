"""Options and arguments that several commands share, declared once, and their checks.

`SearchFlags` gathers the search/sampling flags of `translate` and `evaluate` and applies the
ones that were given to a run's `DecodingConfig`, which is then validated once. `output_guard`
is where a command's outputs are checked against what it reads (files.OutputGuard).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from mtkit.config.schema import ConfigError, DecodingConfig
from mtkit.config.validate import validate_decoding
from mtkit.files import OutputGuard

SEARCH = "Search"
SAMPLING = "Sampling"
SAMPLING_ONLY = ("temperature", "top_k", "top_p", "seed")  # DecodingConfig keys used only to sample

ConfigArg = Annotated[
    Path, typer.Argument(help="Experiment YAML file, e.g. configs/demo.yaml", show_default=False)
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        help="Override a config key: --set model.d_model=512 (repeatable)",
        metavar="KEY=VALUE",
    ),
]
RunArg = Annotated[
    Path, typer.Argument(help="A run directory (uses its best.pt) or a checkpoint file")
]
RunsArg = Annotated[
    list[Path],
    typer.Argument(
        help="A run directory (uses its best.pt) or a checkpoint file; several: an ensemble",
        show_default=False,
    ),
]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu or cuda")]
ProgressOpt = Annotated[
    bool | None,
    typer.Option(
        "--progress/--no-progress",
        help="Show progress (count, rate, ETA) on stderr [default: when stderr is a terminal]",
        show_default=False,
    ),
]
EngineOpt = Annotated[
    str,
    typer.Option(
        help="auto (an export folder runs on CTranslate2, a run on PyTorch), pytorch, or "
        "ctranslate2: the run's CTranslate2 export in RUN/ctranslate2-float32/, made when "
        "missing or older than the checkpoint (needs the ctranslate2 package)"
    ),
]
QuantizeOpt = Annotated[
    str,
    typer.Option(
        help="none, or int8: int8 weights and products (PyTorch: dynamic quantization of the "
        "Linear layers, CPU only; CTranslate2: compute type int8)"
    ),
]
DecodePrecisionOpt = Annotated[
    str | None,
    typer.Option(
        "--precision",
        help="auto (bf16 where the hardware runs it natively fast, else float32), float32, "
        "bfloat16 or float16 (CUDA); PyTorch engine, and int8 (--quantize) stays float32 "
        "[default: the run's decoding.precision]",
        show_default=False,
    ),
]
AttentionKernelOpt = Annotated[
    str | None,
    typer.Option(
        "--attention-kernel",
        help="auto (mtkit's native C kernels where they build, else PyTorch's), native or "
        "torch: the attention and log-softmax of decoding steps on CPU; outputs agree to float "
        "rounding [default: the run's decoding.attention_kernel]",
        show_default=False,
    ),
]
OverwriteOpt = Annotated[
    bool, typer.Option(help="Replace output files that exist (never inputs or a run's files)")
]

BeamOpt = Annotated[
    int | None, typer.Option(help="Beam size (default: the run's)", rich_help_panel=SEARCH)
]
GreedyOpt = Annotated[
    bool, typer.Option(help="Greedy search (same as --beam 1)", rich_help_panel=SEARCH)
]
NbestOpt = Annotated[
    int | None,
    typer.Option(help="Output the N best hypotheses with scores", rich_help_panel=SEARCH),
]
LengthPenaltyOpt = Annotated[
    float | None, typer.Option(help="GNMT length penalty alpha", rich_help_panel=SEARCH)
]
EarlyStoppingOpt = Annotated[
    str | None,
    typer.Option(
        help="When beam search stops a sentence: exact (no live hypothesis could still win; "
        "the default) or heuristic (the best live one, ended now, would not win: faster, a few "
        "outputs differ)",
        rich_help_panel=SEARCH,
    ),
]
LengthNormOpt = Annotated[
    str | None,
    typer.Option(
        help="Rank beam hypotheses by gnmt (log-prob / GNMT penalty), average (per token) "
        "or none (raw log-prob)",
        rich_help_panel=SEARCH,
    ),
]
MaxLenAOpt = Annotated[
    float | None, typer.Option(help="Max length = a * src_len + b", rich_help_panel=SEARCH)
]
MaxLenBOpt = Annotated[
    int | None, typer.Option(help="Max length = a * src_len + b", rich_help_panel=SEARCH)
]
MinLenOpt = Annotated[
    int | None, typer.Option(help="No EOS before this many tokens", rich_help_panel=SEARCH)
]
NoRepeatOpt = Annotated[
    int | None,
    typer.Option(help="Never repeat an n-gram of this size (beam)", rich_help_panel=SEARCH),
]
BatchTokensOpt = Annotated[
    int | None, typer.Option(help="Source tokens per batch", rich_help_panel=SEARCH)
]
SampleOpt = Annotated[
    bool,
    typer.Option("--sample", help="Sample instead of searching", rich_help_panel=SAMPLING),
]
TemperatureOpt = Annotated[
    float | None,
    typer.Option(
        help="Divide the logits by this: < 1 sharpens, > 1 flattens", rich_help_panel=SAMPLING
    ),
]
TopKOpt = Annotated[
    int | None, typer.Option(help="Sample from the k best tokens", rich_help_panel=SAMPLING)
]
TopPOpt = Annotated[
    float | None, typer.Option(help="Nucleus sampling mass", rich_help_panel=SAMPLING)
]
SeedOpt = Annotated[int | None, typer.Option(help="Sampling seed", rich_help_panel=SAMPLING)]


@dataclass(kw_only=True)
class SearchFlags:
    """The search and sampling flags as given on the command line; None: not given, so the
    run's `decoding` value stays."""

    beam_size: int | None = None
    greedy: bool = False  # beam_size 1
    nbest: int | None = None
    length_penalty: float | None = None
    length_norm: str | None = None
    early_stopping: str | None = None
    max_len_a: float | None = None
    max_len_b: int | None = None
    min_len: int | None = None
    no_repeat_ngram: int | None = None
    max_tokens: int | None = None
    sampling: bool | None = None  # --sample; None keeps the run's
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    precision: str | None = None
    attention_kernel: str | None = None

    def apply(self, run_decoding: DecodingConfig) -> DecodingConfig:
        """The run's decoding config with the given flags applied, checked once by the config
        validator (messages name the keys, as the flags stand for them); a bad value exits 2."""
        given = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name != "greedy" and getattr(self, f.name) is not None
        }
        if self.greedy:
            given["beam_size"] = 1
        dec = dataclasses.replace(run_decoding, **given)
        if not dec.sampling:  # a sampling flag without sampling would be silently ignored
            for name in SAMPLING_ONLY:
                if name in given:
                    flag = "--" + name.replace("_", "-")
                    raise ConfigError(f"{flag} only applies when sampling: add --sample")
        validate_decoding(dec, prefix="")
        return dec


def check_positive(name: str, value: int) -> None:
    """A count option (--chunk-size, --line, ...) must be 1 or more; else exit 2."""
    if value < 1:
        raise ConfigError(f"{name}: expected a positive number, got {value}")


def output_guard(
    runs: Sequence[Path], reads: Sequence[Path | None], overwrite: bool
) -> OutputGuard:
    """The guard of a command that reads `runs` (run directories, checkpoints or exports) and
    the files `reads` (None: not given): its outputs never replace any of them."""
    files = [p for p in reads if p is not None]
    run_dirs = [p for p in runs if p.is_dir()]
    for run in run_dirs:  # a run directory is read through its best.pt (or last.pt)
        files += [run / name for name in ("best.pt", "last.pt") if (run / name).is_file()]
    files += [p for p in runs if p.is_file()]
    return OutputGuard(reads=files, run_dirs=run_dirs, overwrite=overwrite)
