"""The CLI run in process, as the end-to-end tests call it."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from mtkit.cli.main import app


def run(*args: str | Path, input: str | None = None) -> tuple[int, str, str]:
    """`mtkit ARGS` in process: (exit code, stdout, stderr)."""
    result = CliRunner().invoke(app, [str(a) for a in args], input=input)
    return result.exit_code, result.stdout, result.stderr
