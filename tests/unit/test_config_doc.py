"""docs/config.md is generated from the config dataclasses' comments and kept up to date."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from mtkit.config import schema

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "config.md"


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    """scripts/gen_config_doc.py, imported as a module."""
    path = REPO / "scripts" / "gen_config_doc.py"
    spec = importlib.util.spec_from_file_location("gen_config_doc", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_docs_config_md_is_up_to_date(gen: ModuleType) -> None:
    current = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
    assert current == gen.render(), (
        "docs/config.md is out of date: run `python scripts/gen_config_doc.py`"
    )


def test_every_config_key_is_documented(gen: ModuleType) -> None:
    text = gen.render()
    root = schema.ExperimentConfig()
    for top in dataclasses.fields(root):
        assert f"| `{top.name}` |" in text
        section = getattr(root, top.name)
        if dataclasses.is_dataclass(section):
            assert f"## `{top.name}`" in text
            for f in dataclasses.fields(section):
                assert f"| `{f.name}` |" in text.split(f"## `{top.name}`", 1)[1]


def test_comment_above_and_at_end_of_line_both_count(gen: ModuleType) -> None:
    source = '''
@dataclass
class Demo:
    """A demo section."""

    # first part,
    # second part
    a: int = 1  # and the end
    b: Literal["x", "y"] | None = None  # one of two
'''
    docs = gen.class_docs(source)
    a, b = docs["Demo"].fields
    assert docs["Demo"].docstring == "A demo section."
    assert a == ("a", "int", "first part, second part and the end")
    assert b == ("b", '"x" or "y" or null', "one of two")


def test_a_field_without_a_comment_fails(gen: ModuleType) -> None:
    source = '''
@dataclass
class Demo:
    """A demo section."""

    a: int = 1  # documented

    b: int = 2
'''
    with pytest.raises(gen.MissingComment, match=r"<schema>:8: Demo\.b has no comment"):
        gen.class_docs(source)
