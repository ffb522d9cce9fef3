"""The `mtkit` Typer app, the error handler every command wears, and logging set-up.

The commands live in one module per group (`*_commands.py`); importing them registers them
on `app`, which `mtkit.cli.main` does. Heavy imports (torch, datasets) happen inside the
command bodies so `mtkit --help` is fast. Help follows the usual conventions: `-h` or
`--help`, `RUN` (not `{run}`) in usage lines, no type column on flags.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption
from typer.models import CommandFunctionType

from mtkit.errors import MtkitError, UsageError

F = TypeVar("F", bound=Callable[..., Any])
HELP_OPTIONS = {"help_option_names": ["--help", "-h"]}


def _element_type(display_type: Callable[[Any], str]) -> Callable[[Any], str]:
    """`<list[Path]>` -> `<path>...` for arguments that take several values."""

    def show(ctx: Any) -> str:
        return re.sub(r"<list\[(\w+)\]>", lambda m: f"<{m.group(1).lower()}>...", display_type(ctx))

    return show


def _clean_metavars(params: list[Any]) -> list[Any]:
    """Arguments show as RUN, not run; flags (--help included) show no `<bool>` type."""
    for param in params:
        if isinstance(param, TyperArgument) and param.metavar is None:
            param.metavar = (param.name or "").upper()
        if isinstance(param, TyperArgument) and param.nargs != 1:
            setattr(param, "display_type", _element_type(param.display_type))  # noqa: B010
        elif isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""
    return params


class Command(TyperCommand):
    """A command whose help reads like a conventional CLI's (see `_clean_metavars`)."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _clean_metavars(super().get_params(ctx))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        """`[OPTIONS] RUN` rather than Typer's `[OPTIONS] {RUN}` for a required argument."""
        pieces = super().collect_usage_pieces(ctx)
        return [re.sub(r"^\{(.*)\}(\.\.\.)?$", r"\1\2", piece) for piece in pieces]


class Group(TyperGroup):
    """A command group with the same help conventions as `Command`."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _clean_metavars(super().get_params(ctx))


class Typer(typer.Typer):
    """`typer.Typer` whose commands are `Command`s unless told otherwise."""

    def command(
        self, *args: Any, **kwargs: Any
    ) -> Callable[[CommandFunctionType], CommandFunctionType]:
        kwargs.setdefault("cls", Command)
        return super().command(*args, **kwargs)


app = Typer(
    name="mtkit",
    help="Train machine-translation Transformers: raw parallel text → tokenizer → model → BLEU.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=Group,
    context_settings=HELP_OPTIONS,
)


def _show_version(value: bool) -> None:
    if value:
        from mtkit.cli.version import version_text

        typer.echo(version_text())
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            "-V",
            help="Show the versions of mtkit and torch, and the devices torch can use; exit",
            callback=_show_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    pass  # options of `mtkit` itself; --version acts in its callback


def handle_errors(func: F) -> F:
    """Turn user-facing errors into one `error: ...` line on stderr and a non-zero exit."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except UsageError as e:  # a config or command-line problem, refused before any work
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None
        except BrokenPipeError:
            raise typer.Exit(0) from None
        except OSError as e:  # unwritable output, a directory given as a file, disk full
            name = e.filename2 or e.filename  # a rename names its target second
            where = f"{name}: " if name else ""
            typer.echo(f"error: {where}{e.strerror or e}", err=True)
            raise typer.Exit(1) from None
        except Exception as e:
            if isinstance(e, MtkitError):
                typer.echo(f"error: {e}", err=True)
                raise typer.Exit(1) from None
            raise

    return wrapper  # type: ignore[return-value]


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to `sys.stderr` as it is at each record, so that while a progress bar is live
    (it stands in for sys.stderr then) log lines print above the bar instead of through it."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass  # always the current sys.stderr


def setup_logging(verbose: bool = False, log_file: Path | None = None) -> None:
    """Log lines to stderr (and a file); stdout stays clean for translations and scores."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    fmt = logging.Formatter("%(asctime)s | %(levelname)s | %(message)s", "%H:%M:%S")
    stream = _StderrHandler()
    stream.setFormatter(fmt)
    root.addHandler(stream)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_file, encoding="utf-8")
        file_handler.setFormatter(fmt)
        root.addHandler(file_handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("datasets", "filelock", "urllib3", "fsspec", "httpx", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
