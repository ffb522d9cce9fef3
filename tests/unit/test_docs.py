"""The README is a front door (short, every command and page); docs/config.md has every key."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from typer.main import get_command

from mtkit.cli.main import app
from mtkit.config.schema import ExperimentConfig

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


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


def test_every_config_key_is_in_the_config_reference() -> None:
    reference = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    missing = [k for k in config_keys() if f"`{k.split('.')[-1]}`" not in reference]
    assert not missing, f"docs/config.md lacks: {missing}"


def test_every_command_is_in_the_readme() -> None:
    commands = sorted(get_command(app).commands)  # type: ignore[attr-defined]
    missing = [c for c in commands if f"mtkit {c}" not in README]
    assert not missing, f"README does not show: {missing}"


def test_readme_is_a_front_door() -> None:
    assert len(README.splitlines()) <= 300


def test_every_docs_page_is_linked_and_every_link_exists() -> None:
    links = set(re.findall(r"\]\((docs/[^)#]+)", README))
    pages = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    assert pages <= links, f"README does not link: {sorted(pages - links)}"
    assert all((ROOT / link).is_file() for link in links), sorted(links)
