"""A report as a list of blocks (headings, text, tables, code, images), rendered to Markdown or
to one self-contained HTML page (images inlined as base64 data URIs).

Building the content once and rendering it twice keeps the two formats saying the same thing.
Text is plain: no markup of ours is interpreted, and everything is escaped for its format.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass

MARKER = "<!-- mtkit report -->"  # first line of every report: `mtkit report` may replace it


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Text:
    """One paragraph of plain text (shown as it is: nothing in it is read as markup)."""

    text: str


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Code:
    text: str
    language: str = ""


@dataclass(frozen=True)
class Image:
    png: bytes
    alt: str


Block = Heading | Text | Table | Code | Image


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _md_text(text: str) -> str:
    """Escape what Markdown would read as markup (emphasis, links, tags, table bars)."""
    for char in "\\`*_[]<>|#":
        text = text.replace(char, "\\" + char)
    return text


def _md_cell(text: str) -> str:
    return _md_text(text).replace("\n", " ")


def to_markdown(blocks: list[Block]) -> str:
    """GitHub-flavoured Markdown; images as data URIs (shown by most viewers, not by GitHub)."""
    out = [MARKER, ""]
    for block in blocks:
        if isinstance(block, Heading):
            out += ["#" * block.level + " " + _md_text(block.text), ""]
        elif isinstance(block, Text):
            out += [_md_text(block.text), ""]
        elif isinstance(block, Table):
            out.append("| " + " | ".join(_md_cell(h) for h in block.header) + " |")
            out.append("|" + "---|" * len(block.header))
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
            out.append("")
        elif isinstance(block, Code):
            fence = "~~~~" if "```" in block.text else "```"
            out += [fence + block.language, block.text.rstrip("\n"), fence, ""]
        else:
            out += [f"![{_md_cell(block.alt)}]({data_uri(block.png)})", ""]
    return "\n".join(out)


STYLE = """body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;
line-height:1.45;color:#222}table{border-collapse:collapse;margin:.5rem 0 1rem}
th,td{border:1px solid #ccc;padding:.25rem .6rem;text-align:left;vertical-align:top}
th{background:#f3f3f3}pre{background:#f6f6f6;padding:.75rem;overflow-x:auto}
img{max-width:100%}"""


def to_html(blocks: list[Block], title: str) -> str:
    """One HTML page with its style and images inside: it can be mailed or attached alone."""
    esc = html.escape
    out = [
        "<!DOCTYPE html>",
        MARKER,
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>",
    ]
    for block in blocks:
        if isinstance(block, Heading):
            out.append(f"<h{block.level}>{esc(block.text)}</h{block.level}>")
        elif isinstance(block, Text):
            out.append(f"<p>{esc(block.text)}</p>")
        elif isinstance(block, Table):
            out.append("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in block.header))
            out += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) for row in block.rows]
            out.append("</table>")
        elif isinstance(block, Code):
            out.append(f"<pre><code>{esc(block.text)}</code></pre>")
        else:
            out.append(f'<p><img alt="{esc(block.alt)}" src="{data_uri(block.png)}"></p>')
    out.append("</body></html>")
    return "\n".join(out) + "\n"
