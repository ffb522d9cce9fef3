"""The `mtkit` Typer app, the error handler every command wears, and logging set-up.

The commands live in one module per group (`*_commands.py`); importing them registers them
on `app`, which `mtkit.cli.main` does. Heavy imports (torch, datasets) happen inside the
command bodies so `mtkit --help` is fast.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

from mtkit.config.schema import ConfigError
from mtkit.errors import MtkitError

app = typer.Typer(
    name="mtkit",
    help="Train machine-translation Transformers: raw parallel text → tokenizer → model → BLEU.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(func: F) -> F:
    """Turn user-facing errors into one `error: ...` line on stderr and a non-zero exit."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ConfigError as e:
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


def setup_logging(verbose: bool = False, log_file: Path | None = None) -> None:
    """Log lines to stderr (and a file); stdout stays clean for translations and scores."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    fmt = logging.Formatter("%(asctime)s | %(levelname)s | %(message)s", "%H:%M:%S")
    stream = logging.StreamHandler(sys.stderr)
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
