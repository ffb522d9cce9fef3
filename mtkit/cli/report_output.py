"""How `mtkit evaluate` prints its scores: plain lines with signatures, or JSON."""

from __future__ import annotations

from typing import Any

import typer

from mtkit.errors import plural


def print_report(report: Any, json_out: bool) -> None:
    """Each metric's score and sacreBLEU signature (and where the hypotheses went)."""
    if json_out:
        typer.echo(report.to_json())
        return
    for result in report.scores:
        typer.echo(f"{result.text}")
        typer.echo(f"  signature: {result.signature}")
    if report.hypotheses_file and report.source_file:
        typer.echo(
            f"{plural(report.n_sentences, 'sentence')} in {report.seconds:.1f}s; "
            f"hypotheses in {report.hypotheses_file}"
        )


def print_comparison(comparison: Any, json_out: bool) -> None:
    """A paired bootstrap table: per metric, each system's score, interval and p-value."""
    if json_out:
        typer.echo(comparison.to_json())
        return
    typer.echo(
        f"paired bootstrap resampling: {plural(comparison.n_samples, 'resample')} of "
        f"{plural(comparison.n_sentences, 'sentence')}, seed {comparison.seed}; baseline: "
        f"{comparison.metrics[0].systems[0].name}"
    )
    width = max(len(s.name) for s in comparison.metrics[0].systems)
    for m in comparison.metrics:
        better = "higher" if m.higher_is_better else "lower"
        typer.echo(f"{m.metric} ({better} is better)  signature: {m.signature}")
        for s in m.systems:
            line = f"  {s.name:<{width}}  {s.score:6.2f}  (mean {s.mean:.2f} ± {s.ci:.2f})"
            if s.p_value is not None and s.delta_ci is not None:
                star = " *" if s.significant() else ""
                line += (
                    f"  delta {s.delta:+.2f} [{s.delta_ci[0]:+.2f}, {s.delta_ci[1]:+.2f}]"
                    f"  p = {s.p_value:.4f}{star}"
                )
            typer.echo(line)
    typer.echo("* p < 0.05: the difference from the baseline is unlikely to be chance")
