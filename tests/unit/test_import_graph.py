"""Imports go one way: cli -> commands -> core -> leaves (see README "Package map").

Each room of the package may import only the rooms listed for it in ALLOWED (and itself).
The graph is read from the source with `ast`, so an import inside a function counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "mtkit"

LEAVES = {"errors", "files", "runtime", "distributed", "checkpoint", "config", "progress"}
ALLOWED: dict[str, set[str]] = {
    # leaves: nothing of ours above them
    "errors": set(),
    "files": {"errors"},
    "runtime": {"errors"},
    "distributed": {"errors"},
    "checkpoint": {"errors", "files"},
    "config": {"errors", "files"},
    "progress": set(),
    # core
    "model": {"config", "errors"},
    "search": {"model", "config", "errors"},
    "data": {"config", "errors", "files", "runtime", "progress", "model"},
    "translation": LEAVES | {"model", "search", "data"},
    "evaluation": LEAVES | {"model", "search", "data", "translation"},
    # commands: none imports a sibling command
    "training": LEAVES | {"model", "search", "data", "translation", "evaluation"},
    "export": LEAVES | {"model", "search", "data", "translation", "evaluation"},
    "serve": LEAVES | {"model", "search", "data", "translation", "evaluation"},
    "reporting": LEAVES | {"data", "evaluation"},
    # the command line sits on top; nothing imports it
    "cli": LEAVES
    | {"model", "search", "data", "translation", "evaluation"}
    | {"training", "export", "serve", "reporting"},
    "__main__": {"cli"},
    "__init__": set(),
}
# third-party libraries that belong to one room each
OWNED = {
    "typer": {"cli"},
    "datasets": {"data"},
    "sentencepiece": {"data"},
    "rich": {"progress"},
}


def room_of(path: Path) -> str:
    """`mtkit/data/prepare.py` -> "data"; `mtkit/files.py` -> "files"."""
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else parts[0].removesuffix(".py")


def imported_modules(tree: ast.AST, module: str) -> list[str]:
    """Absolute names of every module an AST imports (relative imports resolved)."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".")[: -node.level]
                base = ".".join([*parent, base]) if base else ".".join(parent)
            names.append(base)
            if base == "mtkit":  # `from mtkit import files` names a room
                names += [f"mtkit.{alias.name}" for alias in node.names]
    return names


def wrong_arrows(path: Path, source: str) -> list[str]:
    """The imports in `source` (a file of room `room_of(path)`) that break the rules."""
    room = room_of(path)
    module = "mtkit." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    problems = []
    for name in imported_modules(ast.parse(source), module):
        top, _, rest = name.partition(".")
        if top == "mtkit" and rest:
            target = rest.split(".")[0]
            if target != room and target not in ALLOWED[room]:
                problems.append(f"{path.name} ({room}) imports {name}")
        elif top in OWNED and room not in OWNED[top]:
            problems.append(f"{path.name} ({room}) imports {top}, which only {OWNED[top]} may")
    return problems


def test_every_room_is_known() -> None:
    rooms = {room_of(p) for p in PACKAGE.rglob("*.py")}
    assert rooms <= set(ALLOWED), f"add the new room(s) to ALLOWED: {rooms - set(ALLOWED)}"


def test_imports_go_one_way() -> None:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        problems += wrong_arrows(path, path.read_text(encoding="utf-8"))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("file", "line"),
    [
        ("model/transformer.py", "from mtkit.cli.main import app"),
        ("model/transformer.py", "from mtkit.data.tokenizer import PAD_ID"),
        ("search/beam.py", "import sentencepiece"),
        ("files.py", "from mtkit.config.schema import ExperimentConfig"),
        ("training/loop.py", "from mtkit.export.ctranslate2 import export_ctranslate2"),
        ("evaluation/evaluate.py", "from ..training import loop"),
        ("translation/translator.py", "import typer"),
        ("data/prepare.py", "from mtkit import cli"),
    ],
)
def test_a_wrong_arrow_is_caught(file: str, line: str) -> None:
    assert wrong_arrows(PACKAGE / file, line + "\n")


def test_allowed_arrows_pass() -> None:
    assert not wrong_arrows(
        PACKAGE / "cli" / "app.py", "import typer\nfrom mtkit.training import loop\n"
    )
    assert not wrong_arrows(PACKAGE / "search" / "beam.py", "from mtkit.model.cache import KV\n")
