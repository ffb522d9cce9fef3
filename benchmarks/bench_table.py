"""`make bench`'s table: median (min-max) of the repetitions, one column per precision and,
with two precisions, the ratio of the second to the first."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _fmt(s: dict[str, float], scale: float = 1.0, digits: int = 0, pct: bool = False) -> str:
    def f(v: float) -> str:
        return f"{100 * v:.{digits}f}%" if pct else f"{v * scale:,.{digits}f}"

    return f"{f(s['median'])} ({f(s['min'])}-{f(s['max'])})"


def _fmt_mfu(s: dict[str, float]) -> str:
    """MFU as a percentage, or why not: above 100% the matmul probe ran a slower kernel than the
    model did (bf16 on a CPU without native bf16), so it is no peak to divide by."""
    if s["median"] > 1.0:
        return "n/a (peak probe slower than the model)"
    return _fmt(s, digits=1, pct=True)


Row = tuple[str, list[str], str]  # label, one value per precision, ratio (last / first)


def _ratio(r: dict[str, Any], precisions: list[str], get: Callable[[Any], float]) -> str:
    """'1.9x': the last precision's median over the first's ('' with one precision)."""
    if len(precisions) < 2:
        return ""
    first, last = get(r[precisions[0]]), get(r[precisions[-1]])
    return f"{last / first:.2f}x" if first else ""


def _train_rows(t: dict[str, Any], ps: list[str]) -> list[Row]:
    def row(label: str, fmt: Callable[[Any], str], key: Callable[[Any], float] | None) -> Row:
        return label, [fmt(t[p]) for p in ps], _ratio(t, ps, key) if key else ""

    return [
        row("train tokens/s (src+tgt, no pad)", lambda e: _fmt(e["tokens_per_s"]),
            lambda e: e["tokens_per_s"]["median"]),
        row("train model GFLOP/s", lambda e: _fmt(e["flops_per_s"], 1e-9, 1), None),
        row("matmul peak GFLOP/s (same run)", lambda e: _fmt(e["peak_flops_per_s"], 1e-9, 1),
            lambda e: e["peak_flops_per_s"]["median"]),
        row("train MFU (of the same precision's peak)",
            lambda e: _fmt_mfu(e["mfu"]), None),
        row("train MFLOP/token", lambda e: _fmt(e["flops_per_token"], 1e-6, 1), None),
        row("train s/update", lambda e: _fmt(e["step_s"], 1, 3), None),
        row("padding share", lambda e: _fmt(e["padding_share"], digits=1, pct=True), None),
        row("batch building share", lambda e: _fmt(e["host_share"], digits=1, pct=True), None),
        row("train peak RSS MB", lambda e: f"{e['peak_rss_mb']:,.0f}",
            lambda e: e["peak_rss_mb"]),
        row(f"RSS growth over {t[ps[0]]['rss_steps']} updates (2nd half) MB",
            lambda e: f"{e['rss_growth_mb']:+,.1f} ({e['rss_growth_second_half_mb']:+,.1f})",
            None),
        row(f"valid loss after {t[ps[0]]['timed_steps']} updates (fp32 eval)",
            lambda e: f"{e['valid_loss']:.3f}", None),
    ]  # fmt: skip


def _decode_rows(d: dict[str, Any], ps: list[str]) -> list[Row]:
    rows: list[Row] = [("decode model", [d["model"]], "")]
    for name in ("greedy", "beam5"):
        per = {p: d[p][name] for p in ps}
        rows += [
            (f"{name} sentences/s ({d['sentences']})",
             [_fmt(per[p]["sentences_per_s"], 1, 1) for p in ps],
             _ratio(per, ps, lambda e: e["sentences_per_s"]["median"])),
            (f"{name} target tokens/s", [_fmt(per[p]["tokens_per_s"]) for p in ps], ""),
            (f"{name} MFU", [_fmt_mfu(per[p]["mfu"]) for p in ps], ""),
            (f"{name} BLEU / mean length",
             [f"{per[p]['bleu']:.1f} / {per[p]['mean_output_len']:.1f}" for p in ps], ""),
        ]  # fmt: skip
    c = d["cache_speedup"]
    for name in ("greedy", "beam5"):
        same = "" if c[name]["same_output"] else " DIFFER"
        label = f"{name} cached/uncached speed-up ({c['sentences']} sent., {c['precision']})"
        rows.append((label, [_fmt(c[name]["speedup"], 1, 2) + same], ""))
    rows.append(("decode peak RSS MB (all precisions, one process)",
                 [f"{d['peak_rss_mb']:,.0f}"], ""))  # fmt: skip
    return rows


def format_table(r: dict[str, Any]) -> str:
    """Human-readable summary: median (min-max) of the repetitions, a column per precision."""
    m = r["meta"]
    ps: list[str] = m.get("precisions", [m["precision"]])
    lines = [
        f"mtkit bench | torch {m['torch']} | {m['device']} | "
        f"{m['threads']} threads | {m['cpu_model']} | load avg {m['load_avg_start'][0]:.1f}"
        f"->{m['load_avg_end'][0]:.1f} | median (min-max) of {m['repeats']}",
    ]
    if "bf16" in m:
        b = m["bf16"]
        native = b["native"] or "no native bf16"
        lines.append(f"bf16 support: {native} | precision auto -> {b['auto']}: {b['reason']}")
    rows: list[Row] = []
    if "train" in r:
        rows += _train_rows(r["train"], ps)
    if "decode" in r:
        rows += _decode_rows(r["decode"], ps)
    if "data" in r:
        for corpus, e in r["data"].items():
            rows += [
                (f"prepare {corpus} seconds", [_fmt(e["seconds"], 1, 1)], ""),
                (f"prepare {corpus} peak RSS MB", [_fmt(e["peak_rss_mb"])], ""),
            ]
    width = max(len(k) for k, _, _ in rows)
    full = [v for _, v, _ in rows if len(v) == len(ps)]  # a value per precision
    cols = [max([len(p)] + [len(v[i]) for v in full]) for i, p in enumerate(ps)]
    head = "  ".join(f"{p:<{w}}" for p, w in zip(ps, cols, strict=True))
    ratio_head = f"  {ps[-1]}/{ps[0]}" if len(ps) > 1 else ""
    lines += ["", f"{'':<{width}}  {head}{ratio_head}"]
    for k, v, ratio in rows:
        cells = "  ".join(f"{x:<{w}}" for x, w in zip(v, cols, strict=False))
        lines.append(f"{k:<{width}}  {cells}" + (f"  {ratio}" if ratio else ""))
    return "\n".join(line.rstrip() for line in lines)
