"""The CLI run in process, as the end-to-end tests call it."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner, Result

from mtkit.cli.main import app


def run(*args: str | Path, input: str | None = None) -> tuple[int, str, str]:
    """`mtkit ARGS` in process: (exit code, stdout, stderr)."""
    result = CliRunner().invoke(app, [str(a) for a in args], input=input)
    return result.exit_code, result.stdout, result.stderr


# A training short enough for workflow tests: a few updates, one validation at the end.
SHORT: dict[str, object] = {"max_steps": 6, "valid_every": 6, "log_every": 3}


def succeed(*args: str) -> Result:
    """`mtkit ARGS` in process, asserting exit code 0 (the output in the failure message)."""
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result
