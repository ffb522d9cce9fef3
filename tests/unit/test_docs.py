"""The README documents every config key and every CLI command."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from typer.main import get_command

from mtkit.cli.app import app
from mtkit.config.schema import ExperimentConfig

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def config_keys() -> list[str]:
    keys = []
    for top in dataclasses.fields(ExperimentConfig):
        default = ExperimentConfig()
        value = getattr(default, top.name)
        if dataclasses.is_dataclass(value):
            keys += [f"{top.name}.{f.name}" for f in dataclasses.fields(value)]
        else:
            keys.append(top.name)
    return keys


def test_every_config_key_is_in_the_readme_reference() -> None:
    reference = README.split("## Config reference", 1)[1]
    missing = [k for k in config_keys() if f"`{k.split('.')[-1]}`" not in reference]
    assert not missing, f"README config reference lacks: {missing}"


def test_every_command_is_in_the_readme() -> None:
    commands = sorted(get_command(app).commands)  # type: ignore[attr-defined]
    missing = [c for c in commands if f"mtkit {c}" not in README]
    assert not missing, f"README does not show: {missing}"
