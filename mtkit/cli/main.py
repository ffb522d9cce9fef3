"""The `mtkit` entry point: the app with every command group registered on it.

Each `*_commands` module adds its commands to `mtkit.cli.app.app` when imported; the import
order below is the order `mtkit --help` lists them in.
"""

from __future__ import annotations

# isort: off
from mtkit.cli import data_commands as data_commands
from mtkit.cli import train_commands as train_commands
from mtkit.cli import translate_commands as translate_commands
from mtkit.cli import evaluate_commands as evaluate_commands
from mtkit.cli import plot_commands as plot_commands
from mtkit.cli import report_commands as report_commands
from mtkit.cli import export_commands as export_commands
from mtkit.cli import serve_commands as serve_commands

# isort: on
from mtkit.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    """Run the command line (`python -m mtkit`, the `mtkit` script)."""
    app()
