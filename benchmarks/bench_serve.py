"""`mtkit serve` under load: 1, 8 and 64 concurrent clients, each sending single sentences.

    .venv/bin/python benchmarks/bench_serve.py runs/demo data/test.en
    .venv/bin/python benchmarks/bench_serve.py RUN test.en --lines 300 --clients 64,8,1 \\
        --engines pytorch,ctranslate2,ctranslate2-int8 --threads 2

For each engine a real server (`python -m mtkit serve RUN --engine E`) is started on a free
127.0.0.1 port; at each level C clients (keep-alive connections, a minimal asyncio HTTP/1.1
client) take the first `--lines` lines of the source one at a time until all are translated.
`pytorch` runs the server's default batching (auto), `pytorch-rounds`, `pytorch-continuous` and
`pytorch-auto` name it explicitly (`--batching rounds|continuous|auto`); name engines twice to
alternate them. One server serves every level, in the order given: by default 64 clients first,
right after the `translate` baseline they are held to, and 8 beside 1 (on a VM whose speed
drifts, figures compared with each other are best measured back to back). With `--passes N` the
baseline and the levels take turns N times (pass r sends lines r, r + N, ...; the baseline
translates every line each time) and the figures pool the passes: on a VM whose speed drifts
by a third within minutes, this keeps a slow minute from falling on one level only.
Reported: sentences/s, p50/p95/p99 latency per request, the mean batch size (GET /info; for
continuous batching the mean number of sentences in a search step), the server's peak RSS
(VmHWM so far, summed over its HTTP process and its model process), and how many answers equal
sequential translation's. Next to it: sequential `mtkit translate` throughput of the same lines
in this process (the engine's batched path, chunks of 500, like the CLI) with the same thread
count. The clients run on the same machine,
so on few cores they compete with the server: CPU milliseconds per sentence of the server's
processes (/proc utime + stime: model, batching and HTTP) and of the clients are reported beside
`translate`'s, which tells work the server does from time it waits for a core. Prints a table
and writes JSON. Not a test: traffic goes to 127.0.0.1 only, a bounded number of requests, and
it stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make `mtkit` importable
    sys.path.insert(0, str(REPO))

from benchmarks.bench_common import cpu_model, run_source_parser, write_report  # noqa: E402
from mtkit.errors import MtkitError  # noqa: E402

START_S = 300.0  # deadline for a server (and an export) to come up
ENGINES = {  # name -> serve options
    "pytorch": [],  # the server's default batching (auto)
    "pytorch-rounds": ["--batching", "rounds"],
    "pytorch-continuous": ["--batching", "continuous"],  # beam search joins the running search
    "pytorch-auto": ["--batching", "auto"],  # rounds, continuous while >= 16 sentences in flight
    "ctranslate2": ["--engine", "ctranslate2"],
    "ctranslate2-int8": ["--engine", "ctranslate2", "--quantize", "int8"],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(run: Path, engine: str, threads: int, max_wait_ms: float) -> tuple[Any, int]:
    """A `mtkit serve` process answering /health, and its port."""
    import httpx

    port = free_port()
    command = [sys.executable, "-m", "mtkit", "serve", str(run), "--port", str(port)]
    command += [*ENGINES[engine], "--max-wait-ms", str(max_wait_ms), "--device", "cpu"]
    command += ["--queue-sentences", "100000"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, port
        except httpx.TransportError:
            pass
        try:
            proc.wait(timeout=0.2)
            raise MtkitError(f"the {engine} server exited with {proc.returncode}")
        except subprocess.TimeoutExpired:
            continue
    proc.kill()
    raise MtkitError(f"the {engine} server did not answer /health within {START_S:g} s")


def stop_server(proc: Any) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (the server's model process), from Linux /proc."""
    pids, i = [pid], 0
    while i < len(pids):
        for task in Path(f"/proc/{pids[i]}/task").glob("*/children"):
            try:
                pids += [int(child) for child in task.read_text().split()]
            except OSError:
                continue
        i += 1
    return pids


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process and its children have used so far (Linux /proc;
    0.0 elsewhere)."""
    total = 0.0
    for each in process_tree(pid):
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return total


def peak_rss_mib(pid: int) -> float | None:
    """The sum of the peak resident set sizes (Linux /proc VmHWM) of the process and its
    children, in MiB: the server's HTTP process and its model process."""
    peaks = []
    for each in process_tree(pid):
        try:
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) / 1024)
        except OSError:
            continue
    return sum(peaks) if peaks else None


REQUEST_HEAD = b"POST /translate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"


async def post(reader: Any, writer: Any, body: bytes) -> tuple[int, bytes]:
    """One keep-alive HTTP/1.1 request; the server always answers with a Content-Length."""
    writer.write(REQUEST_HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def load(port: int, lines: Sequence[str], clients: int, options: dict[str, Any]) -> Any:
    """`clients` connections send one line per request until every line is translated.

    A minimal asyncio HTTP/1.1 client: at 64 connections httpx's pool costs more CPU than the
    server itself, and on a small machine that would be what is measured.
    """
    latencies: list[float] = []
    outputs: list[str] = [""] * len(lines)
    todo = iter(range(len(lines)))

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i in todo:  # shared iterator: each line is sent once
                body = json.dumps({"sentences": [lines[i]], **options}).encode()
                start = time.perf_counter()
                status, answer = await post(reader, writer, body)
                latencies.append(time.perf_counter() - start)
                if status != 200:
                    raise MtkitError(f"HTTP {status}: {answer[:200]!r}")
                outputs[i] = json.loads(answer)["translations"][0]["translation"]
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return time.perf_counter() - start, latencies, outputs


def batch_stats(url: str) -> tuple[int, int, int, float]:
    """(sentences, batches run in rounds, search steps, sentences in those steps) so far
    (GET /info)."""
    import httpx

    stats = httpx.get(f"{url}/info", timeout=60).json()["stats"]
    steps = int(stats["steps"])
    step_sentences = float(stats["sentences_per_step"]) * steps
    return int(stats["sentences"]), int(stats["batches"]), steps, step_sentences


def mean_batch(counts: Sequence[float]) -> float:
    """From a level's `batch_stats` deltas: sentences per search step where it ran searches
    (continuous batching; `auto` under load), else sentences per batch."""
    sentences, batches, steps, step_sentences = counts
    if steps:
        return step_sentences / steps
    return sentences / max(1, batches)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def open_translator(run: Path, engine: str) -> Any:
    """The engine `mtkit translate` would use for this bench engine (warmed up)."""
    from mtkit.cli.engine_choice import open_engine

    quantize = "int8" if engine.endswith("int8") else "none"
    kind = "pytorch" if engine.startswith("pytorch") else "ctranslate2"
    translator: Any = open_engine([run], "cpu", kind, quantize)
    return translator


def sequential(translator: Any, lines: list[str], beam: int | None) -> tuple[float, float, Any]:
    """Seconds and CPU s of `mtkit translate`'s path (batched, chunks of 500); its outputs."""
    from mtkit.translation.output import stream_translations

    dec = translator.config.decoding
    dec = replace(dec, beam_size=beam, nbest=1) if beam else dec
    translator.translate(lines[:10], dec)  # warm-up
    start, cpu = time.perf_counter(), time.process_time()
    chunks = list(stream_translations(translator, lines, dec, 500))
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return seconds, cpu, [t.text for chunk in chunks for t in chunk]


@dataclass
class Level:
    """One client count, summed over the passes."""

    clients: int
    wall: float = 0.0
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    latencies: list[float] = field(default_factory=list)
    same: int = 0
    counts: list[float] = field(default_factory=lambda: [0.0] * 4)  # batch_stats deltas


def bench_engine(
    run: Path, engine: str, lines: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    """The sequential baseline, then one server under each client count; `args.passes` times
    in turn, pass r sending every `passes`-th line from line r (the baseline: every line)."""
    import torch

    torch.set_num_threads(args.threads)
    translator = open_translator(run, engine)
    options = {"beam_size": args.beam} if args.beam else {}
    proc, port = start_server(run, engine, args.threads, args.max_wait_ms)
    url = f"http://127.0.0.1:{port}"
    levels = [Level(clients) for clients in args.clients]
    base_s = base_cpu = 0.0
    try:
        for r in range(args.passes):
            seconds, cpu, expected = sequential(translator, lines, args.beam)
            base_s, base_cpu = base_s + seconds, base_cpu + cpu
            part = list(range(r, len(lines), args.passes))
            for level in levels:
                run_level(level, port, url, [lines[i] for i in part], options, proc.pid,
                          [expected[i] for i in part])  # fmt: skip
                print(f"  {engine}: {level.clients} clients done", file=sys.stderr)
        return {
            "translate_sentences_per_s": len(lines) * args.passes / base_s,
            "translate_cpu_ms": base_cpu / (len(lines) * args.passes) * 1000,
            "levels": [level_report(level, len(lines), proc.pid) for level in levels],
        }
    finally:
        stop_server(proc)


def run_level(
    level: Level, port: int, url: str, lines: list[str], options: dict[str, Any], pid: int,
    expected: list[str],
) -> None:  # fmt: skip
    """`level.clients` clients send `lines`; the level's sums grow by what it took."""
    before = batch_stats(url)
    server_cpu, client_cpu = cpu_seconds(pid), time.process_time()
    wall, latencies, outputs = asyncio.run(load(port, lines, level.clients, options))
    level.server_cpu += cpu_seconds(pid) - server_cpu
    level.client_cpu += time.process_time() - client_cpu
    after = batch_stats(url)
    level.wall += wall
    level.latencies += latencies
    level.same += sum(a == b for a, b in zip(outputs, expected, strict=True))
    level.counts = [c + a - b for c, a, b in zip(level.counts, after, before, strict=True)]


def level_report(level: Level, n: int, pid: int) -> dict[str, Any]:
    """A level's figures over all its passes (`n` lines in all)."""
    return {
        "clients": level.clients,
        "sentences_per_s": n / level.wall,
        "p50_ms": percentile(level.latencies, 50) * 1000,
        "p95_ms": percentile(level.latencies, 95) * 1000,
        "p99_ms": percentile(level.latencies, 99) * 1000,
        "peak_rss_mib": peak_rss_mib(pid),
        "server_cpu_ms": level.server_cpu / n * 1000,
        "client_cpu_ms": level.client_cpu / n * 1000,
        "mean_batch": mean_batch(level.counts),
        "same_as_translate": level.same,
    }


def format_table(report: dict[str, Any]) -> str:
    """A Markdown table (docs-ready), then issue #19's goals checked per engine (`goals`)."""
    n = report["sentences"]
    rows = [
        "| engine | clients | sentences/s | vs 1 client | vs translate | p50 ms | p95 ms | "
        "p99 ms | mean batch | peak RSS MiB | same as translate | CPU ms/sentence: server, "
        "clients |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for engine, r in report["engines"].items():
        base = r["translate_sentences_per_s"]
        rows.append(
            f"| {engine} | `mtkit translate` | {base:.1f} | | 1.00x | | | | | | | "
            f"{r['translate_cpu_ms']:.1f} |"
        )
        ones = [level for level in r["levels"] if level["clients"] == 1] or r["levels"][:1]
        one = ones[0]["sentences_per_s"]  # "vs 1 client": the 1-client level (else the first)
        for level in r["levels"]:
            speed, rss = level["sentences_per_s"], level["peak_rss_mib"]
            rows.append(
                f"| {engine} | {level['clients']} | {speed:.1f} | {speed / one:.2f}x | "
                f"{speed / base:.2f}x | {level['p50_ms']:.0f} | {level['p95_ms']:.0f} | "
                f"{level['p99_ms']:.0f} | {level['mean_batch']:.1f} | {rss:.0f} | "
                f"{level['same_as_translate']}/{n} | {level['server_cpu_ms']:.1f}, "
                f"{level['client_cpu_ms']:.1f} |"
            )
    checks = [line for engine, r in report["engines"].items() if (line := goals(engine, r))]
    return "\n".join(rows + ([""] + checks if checks else []))


def goals(engine: str, r: dict[str, Any]) -> str:
    """Issue #19's goals for one engine, checked, where its levels include 1, 8 and 64 clients:
    64 clients >= 3x one client and >= 0.8x of `translate`, 8-client p99 < 2x the 1-client p99."""
    by = {level["clients"]: level for level in r["levels"]}
    if not {1, 8, 64} <= by.keys():
        return ""
    many = by[64]["sentences_per_s"]
    scale, share = many / by[1]["sentences_per_s"], many / r["translate_sentences_per_s"]
    tail = by[8]["p99_ms"] / by[1]["p99_ms"]
    marks = [
        f"64 vs 1 client {scale:.2f}x (>= 3x: {'yes' if scale >= 3 else 'no'})",
        f"64 clients vs translate {share:.2f}x (>= 0.8x: {'yes' if share >= 0.8 else 'no'})",
        f"8-client p99 / 1-client p99 {tail:.2f}x (< 2x: {'yes' if tail < 2 else 'no'})",
    ]
    return f"goals, {engine}: " + "; ".join(marks)


def main(argv: Sequence[str] | None = None) -> int:
    parser = run_source_parser(__doc__, 200, "first N non-empty lines")
    parser.add_argument("--clients", default="64,8,1", help="concurrent clients per level")
    parser.add_argument("--engines", default="pytorch,ctranslate2", help=", ".join(ENGINES))
    parser.add_argument("--beam", type=int, default=None, help="default: the run's")
    parser.add_argument("--threads", type=int, default=1, help="server and translate threads")
    parser.add_argument("--max-wait-ms", type=float, default=20.0)
    parser.add_argument(
        "--passes", type=int, default=1,
        help="alternate the baseline and the levels this many times (each level sends every "
        "N-th line per pass; figures pooled), so the machine's drift falls on all alike",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, default=Path("bench_results/bench_serve.json"))
    args = parser.parse_args(argv)
    args.clients = [int(c) for c in args.clients.split(",")]
    if args.passes < 1:
        parser.error(f"--passes: expected 1 or more, got {args.passes}")
    engines = args.engines.split(",")
    if unknown := set(engines) - set(ENGINES):
        parser.error(f"unknown engine(s): {', '.join(sorted(unknown))}")
    text = [line for line in args.source.read_text(encoding="utf-8").splitlines() if line]
    lines = text[: args.lines]
    report: dict[str, Any] = {
        "run": str(args.run), "source": str(args.source), "sentences": len(lines),
        "beam": args.beam, "threads": args.threads, "max_wait_ms": args.max_wait_ms,
        "passes": args.passes,
        "cpu": cpu_model(), "cpus": os.cpu_count(),
        "engines": {},
    }  # fmt: skip
    try:
        for k, engine in enumerate(engines):  # an engine named twice: alternated, both kept
            name = (
                engine
                if engine not in engines[:k]
                else f"{engine} ({engines[:k].count(engine) + 1})"
            )
            report["engines"][name] = bench_engine(args.run, engine, lines, args)
    except MtkitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return write_report(format_table(report), report, args.json)


if __name__ == "__main__":
    sys.exit(main())
