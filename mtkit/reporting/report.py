"""`mtkit report RUN`: one self-contained Markdown or HTML file about a run."""

from __future__ import annotations

from pathlib import Path

from mtkit.files import atomic_write_text
from mtkit.reporting.contents import report_blocks
from mtkit.reporting.document import MARKER, to_html, to_markdown
from mtkit.reporting.run_info import ReportError, read_run
from mtkit.reporting.scores import rescored, saved_reports

FORMATS = {"markdown": "md", "html": "html"}


def default_output(run_dir: Path, fmt: str) -> Path:
    """RUN/report.md or RUN/report.html."""
    return run_dir / f"report.{FORMATS[fmt]}"


def render_report(run_dir: Path, fmt: str = "markdown", curves_png: bytes | None = None) -> str:
    """The report on `run_dir` as Markdown or HTML text; `curves_png`: the learning curves."""
    if fmt not in FORMATS:
        raise ReportError(f"--format: expected markdown or html, got '{fmt}'")
    info = read_run(run_dir)
    scores = saved_reports(run_dir)
    if info.config is not None:
        scores += rescored(run_dir, info.config)
    blocks = report_blocks(info, scores, curves_png)
    if fmt == "html":
        name = info.config.name if info.config else run_dir.name
        return to_html(blocks, f"mtkit run report: {name}")
    return to_markdown(blocks)


def write_report(
    run_dir: Path,
    output: Path | None = None,
    fmt: str = "markdown",
    curves_png: bytes | None = None,
) -> Path:
    """Write the report (default RUN/report.md or .html) atomically; returns where.

    An existing file is replaced only if it is an earlier mtkit report.
    """
    text = render_report(run_dir, fmt, curves_png)
    out = output or default_output(run_dir, fmt)
    check_replaceable(out)
    atomic_write_text(out, text)
    return out


def check_replaceable(out: Path) -> None:
    """Refuse to overwrite a folder or a file that is not an earlier report."""
    if out.is_dir():
        raise ReportError(f"{out}: is a folder; give a file name with -o")
    if not out.exists():
        return
    with open(out, "rb") as f:
        head = f.read(256).decode("utf-8", errors="replace")
    if MARKER not in head:
        raise ReportError(f"{out}: exists and is not an mtkit report; not replacing it")
