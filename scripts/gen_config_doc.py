"""Write docs/config.md, the config reference, from the dataclasses in mtkit/config/schema.py.

A field's meaning is its comment in the schema source: the comment lines right above it, then
the comment at the end of its line. A section's introduction is its class docstring. Types are
read from the annotations, defaults from the dataclasses themselves. A field without a comment
is an error, so the reference can never leave a key out.

    python scripts/gen_config_doc.py      # or: make docs

tests/unit/test_config_doc.py fails while docs/config.md differs from what this writes.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import json
import re
import sys
import tokenize
from pathlib import Path
from typing import Any, NamedTuple

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make this checkout's `mtkit` importable
    sys.path.insert(0, str(REPO))

import mtkit.config.schema as schema  # noqa: E402
from mtkit.files import atomic_write_text  # noqa: E402

OUT = REPO / "docs" / "config.md"
ROOT = "ExperimentConfig"  # the class of the whole YAML file

INTRO = """\
An experiment is one YAML file with the sections below; omitted keys take the defaults shown.
`configs/demo.yaml` and `configs/multi30k_en_de.yaml` are commented examples. Any key can also
be set on the command line as `section.key=value`. Unknown keys (with a "did you mean"
suggestion), wrong types and impossible values are rejected with one line naming the key,
exit code 2. The resolved config is saved as `runs/<name>/config.yaml` and inside every
checkpoint, so `translate` and `evaluate` never need the original YAML."""


class MissingComment(ValueError):
    """A dataclass field has no comment to document it."""


class FieldDoc(NamedTuple):
    name: str
    type: str  # rendered from the annotation
    meaning: str  # the field's comments, joined


class ClassDoc(NamedTuple):
    docstring: str
    fields: list[FieldDoc]


def class_docs(source: str, filename: str = "<schema>") -> dict[str, ClassDoc]:
    """Docstring and documented fields of every dataclass in `source`, in source order."""
    above, trailing = _comments(source)
    docs: dict[str, ClassDoc] = {}
    body = ast.parse(source).body
    aliases = {  # module-level `Name = Literal[...]`: shown as their values
        stmt.targets[0].id: stmt.value
        for stmt in body
        if isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name)
        and isinstance(stmt.value, ast.Subscript) and ast.unparse(stmt.value.value) == "Literal"
    }  # fmt: skip
    for node in body:
        if not isinstance(node, ast.ClassDef) or not _is_dataclass(node):
            continue
        fields = []
        for stmt in node.body:
            if not isinstance(stmt, ast.AnnAssign) or not isinstance(stmt.target, ast.Name):
                continue
            name = stmt.target.id
            lead: list[str] = []
            row = stmt.lineno - 1
            while row in above:  # the comment block right above the field
                lead.insert(0, above[row])
                row -= 1
            end = stmt.end_lineno or stmt.lineno
            tail = [trailing[r] for r in range(stmt.lineno, end + 1) if r in trailing]
            meaning = " ".join(lead + tail)
            if not meaning:
                where = f"{filename}:{stmt.lineno}"
                raise MissingComment(f"{where}: {node.name}.{name} has no comment; add one")
            annotation = aliases.get(ast.unparse(stmt.annotation), stmt.annotation)
            fields.append(FieldDoc(name, _type(annotation), meaning))
        docs[node.name] = ClassDoc(ast.get_docstring(node) or "", fields)
    return docs


def _comments(source: str) -> tuple[dict[int, str], dict[int, str]]:
    """Comments by line number: those alone on their line, and those ending a line of code."""
    above: dict[int, str] = {}
    trailing: dict[int, str] = {}
    code_rows: set[int] = set()
    skip = {tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.COMMENT}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            text = tok.string.lstrip("#").strip()
            row = tok.start[0]
            (trailing if row in code_rows else above)[row] = text
        elif tok.type not in skip:
            code_rows.update(range(tok.start[0], tok.end[0] + 1))
    return above, trailing


def _is_dataclass(node: ast.ClassDef) -> bool:
    for deco in node.decorator_list:
        target = deco.func if isinstance(deco, ast.Call) else deco
        if ast.unparse(target) in ("dataclass", "dataclasses.dataclass"):
            return True
    return False


def _type(node: ast.expr) -> str:
    """An annotation in words a YAML author reads: `int or null`, `"bpe" or "unigram"`."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return f"{_type(node.left)} or {_type(node.right)}"
    if isinstance(node, ast.Constant) and node.value is None:
        return "null"
    if isinstance(node, ast.Subscript):
        base = ast.unparse(node.value)
        args = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        if base == "Literal":
            return " or ".join(_yaml(ast.literal_eval(a)) for a in args)
        if base == "tuple":
            return "[" + ", ".join(_type(a) for a in args) + "]"
        if base == "list":
            return f"list of {_type(args[0])}"
    return ast.unparse(node)


def _yaml(value: Any) -> str:
    """A default as it would be written in the YAML file."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    return repr(value)


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell (no column breaks, nothing read as an HTML tag)."""
    return re.sub(r"<(?=[A-Za-z/!?])", "&lt;", text.replace("|", "\\|"))


def _table(cls: type, fields: list[FieldDoc], sections: dict[str, str]) -> list[str]:
    default = cls()
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for f in fields:
        if f.name in sections:  # a nested section: a link instead of a default
            meaning = f"{f.meaning}; see [`{f.name}`](#{f.name})"
            rows.append(f"| `{f.name}` | section | | {_cell(meaning)} |")
            continue
        value = _cell(_yaml(getattr(default, f.name)))
        rows.append(f"| `{f.name}` | {_cell(f.type)} | `{value}` | {_cell(f.meaning)} |")
    return rows


def render() -> str:
    """The whole of docs/config.md, from the schema module's source and dataclasses."""
    source = inspect.getsource(schema)
    docs = class_docs(source, "mtkit/config/schema.py")
    root_cls = getattr(schema, ROOT)
    type_names = {f.name: str(f.type) for f in dataclasses.fields(root_cls)}  # "DataConfig"
    sections = {f.name: type_names[f.name] for f in docs[ROOT].fields if type_names[f.name] in docs}
    lines = [
        "# Config reference",
        "",
        "<!-- Generated by scripts/gen_config_doc.py from the field comments in",
        "     mtkit/config/schema.py. Do not edit: change the comments, then run",
        "     `python scripts/gen_config_doc.py` (or `make docs`). -->",
        "",
        INTRO,
        "",
        "## top level",
        "",
        docs[ROOT].docstring,
        "",
        *_table(root_cls, docs[ROOT].fields, sections),
    ]
    for key, cls_name in sections.items():
        doc = docs[cls_name]
        lines += ["", f"## `{key}`", "", doc.docstring, ""]
        lines += _table(getattr(schema, cls_name), doc.fields, {})
    return "\n".join(lines) + "\n"


def main() -> int:
    try:
        text = render()
    except MissingComment as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    OUT.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(OUT, text)
    print(f"wrote {OUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
