"""End-to-end benchmark: every client against the same pre-framed streams, each run in a fresh process.

    python -m benchmarks.e2e                       # everything, --reps 3, scale 1
    python -m benchmarks.e2e --scale 0.01 --reps 1 # smoke mode (CI): exits 1 if a sonicsse run is not exact
    python -m benchmarks.e2e --workloads bulk,large --clients sonicsse,aiosonic,raw-floor --loops uvloop
    python -m benchmarks.e2e --tls --workloads bulk,tokens   # the same over https (needs trustme)

The server (``benchmarks.server``) runs in its own process on uvloop, pinned to the last CPU; each
measurement is a fresh ``benchmarks.clients`` process pinned to the first CPU. Reps are interleaved
(the client order rotates every rep); ratios are computed inside each rep, and the tables show medians.
A run counts only if it received exactly the expected number of events and total data length (the
raw floor: exactly the response's bytes); otherwise the table says FAIL and why.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .clients import CLIENTS, PURE
from .server import server_process, tls_files
from .workloads import PACED_WIDTH, WORKLOADS, build, token_data

ALL_CLIENTS = [*CLIENTS, "dict-floor"]
LATENCY = "tokens-latency"  # the paced tokens stream used for write -> user-code latency
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
Row = dict[str, Any]


@dataclass(frozen=True)
class Expected:
    """What a valid run of a workload receives."""

    events: int
    data_len: int
    response_bytes: int
    body_bytes: int


# ----------------------------------------------------------------------------- server


@contextmanager
def running_server(
    scale: float, workloads: list[str], pin: bool, certfile: str | None = None
) -> Iterator[int]:
    """Start the benchmark server in its own process (https with ``certfile``); yields its port; always
    stops it."""
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.server",
        "--scale",
        str(scale),
        "--watch-stdin",
        "--workloads",
        ",".join(w for w in workloads if w in WORKLOADS),
    ]
    if not pin:
        cmd.append("--no-pin")
    if certfile:
        cmd += ["--certfile", certfile]
    with server_process(cmd) as port:
        yield port


# ----------------------------------------------------------------------------- expectations


def expectations(workloads: list[str], scale: float, latency_events: int) -> dict[str, Expected]:
    """The exact counts every workload must deliver at this scale."""
    out = {}
    for name in workloads:
        if name == LATENCY:
            data_len = sum(PACED_WIDTH + 1 + len(token_data(i)) for i in range(latency_events))
            out[name] = Expected(latency_events, data_len, 0, 0)
            continue
        wl = build(name, scale)
        body = sum(len(w) for w in wl.writes)
        out[name] = Expected(wl.events, wl.data_len, wl.response_bytes, body)
    build.cache_clear()
    return out


# ----------------------------------------------------------------------------- one measurement


def run_child(
    client: str,
    loop: str,
    url: str,
    workload: str,
    scale: float,
    timeout: float,
    pin: bool,
    cafile: str | None = None,
) -> Row:
    """One measurement in a fresh client process; a crash or timeout becomes an error row."""
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.clients",
        "--client",
        client,
        "--loop",
        loop,
        "--url",
        url,
        "--workload",
        workload,
        "--scale",
        str(scale),
        "--timeout",
        str(timeout),
    ]
    if not pin:
        cmd.append("--no-pin")
    if cafile:
        cmd += ["--cafile", cafile]
    env = dict(os.environ)
    env.pop("SONICSSE_NO_EXTENSIONS", None)
    if client in PURE:
        env["SONICSSE_NO_EXTENSIONS"] = "1"
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout + 30)
        row: Row = json.loads(proc.stdout.strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        row = {"client": client, "loop": loop, "error": f"killed after {timeout + 30:.0f} s"}
    except (json.JSONDecodeError, IndexError):
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        row = {"client": client, "loop": loop, "error": f"crashed: {tail}"[:300]}
    return row


def judge(row: Row, exp: Expected) -> Row:
    """Add validity and derived metrics (events/s, MB/s, CPU µs/event, MiB) to a raw measurement."""
    row.setdefault("events", 0)
    row.setdefault("data_len", 0)
    if row.get("error"):
        row["valid"], row["why"] = False, str(row["error"])
    elif row["client"] == "raw-floor" and exp.response_bytes:
        ok = row.get("bytes") == exp.response_bytes
        row["valid"] = ok
        row["why"] = None if ok else f"got {row.get('bytes')} of {exp.response_bytes} bytes"
    elif row["events"] != exp.events or (row["client"] != "raw-floor" and row["data_len"] != exp.data_len):
        row["valid"] = False
        row["why"] = (
            f"got {row['events']}/{exp.events} events, {row['data_len']}/{exp.data_len} chars of data"
        )
    else:
        row["valid"], row["why"] = True, None
    wall, cpu = row.get("wall_s") or 0.0, row.get("cpu_s") or 0.0
    if row["valid"] and wall > 0:
        row["events_per_s"] = exp.events / wall
        row["mb_per_s"] = exp.body_bytes / wall / 1e6
        row["cpu_us_per_event"] = cpu / exp.events * 1e6
        row["rss_peak_mib"] = row["rss_peak_kib"] / 1024
        row["rss_growth_mib"] = (row["rss_peak_kib"] - row["rss_base_kib"]) / 1024
    return row


# ----------------------------------------------------------------------------- the schedule


def schedule(
    workloads: list[str], clients: list[str], loops: list[str], rep: int
) -> list[tuple[str, str, str]]:
    """(workload, loop, client) for one rep: the client order rotates by one every rep."""
    k = rep % max(1, len(clients))
    rotated = clients[k:] + clients[:k]
    out = []
    for wl in workloads:
        for loop in loops:
            for client in rotated:
                if client == "dict-floor" and (loop != loops[0] or wl == LATENCY):
                    continue  # no I/O, no loop: once per workload
                out.append((wl, loop, client))
    return out


def url_for(
    port: int, workload: str, latency_events: int, latency_interval_us: int, tls: bool = False
) -> str:
    """The stream URL of a workload on the local server."""
    base = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    if workload == LATENCY:
        return f"{base}/paced?n={latency_events}&interval_us={latency_interval_us}"
    return f"{base}/w/{workload}"


def run_all(args: argparse.Namespace) -> list[Row]:
    """Every rep of every (workload, loop, client), interleaved; returns the judged rows."""
    exp = expectations(args.workloads, args.scale, args.latency_events)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        cafile, certfile = tls_files(tmp) if args.tls else (None, None)
        with running_server(args.scale, args.workloads, not args.no_pin, certfile) as port:
            for rep in range(args.reps):
                plan = schedule(args.workloads, args.clients, args.loops, rep)
                for i, (wl, loop, client) in enumerate(plan):
                    url = url_for(port, wl, args.latency_events, args.latency_interval_us, args.tls)
                    row = run_child(client, loop, url, wl, args.scale, args.timeout, not args.no_pin, cafile)
                    row.update(rep=rep, workload=wl, loop=loop if client != "dict-floor" else "-")
                    rows.append(judge(row, exp[wl]))
                    _progress(rep, i, len(plan), rows[-1])
                    if args.out:  # keep what is measured even if the run is cut short
                        save(args, rows, [], [])
    return rows


def save(args: argparse.Namespace, rows: list[Row], summary: list[Row], checks: list[Target]) -> None:
    """Write the measurements (and, once known, the summary and targets) to ``--out``."""
    doc = {
        "args": dict(vars(args)),
        "machine": machine(),
        "rows": rows,
        "summary": summary,
        "targets": [{"target": t, "measured": m, "holds": ok} for t, m, ok in checks],
    }
    Path(args.out).write_text(json.dumps(doc, indent=1))


def _progress(rep: int, i: int, n: int, row: Row) -> None:
    state = "ok" if row["valid"] else f"FAIL ({row['why']})"[:100]
    print(
        f"[rep {rep + 1} {i + 1}/{n}] {row['workload']:<15} {row['loop']:<7} {row['client']:<20} "
        f"{row.get('wall_s') or 0:7.3f} s  {state}",
        file=sys.stderr,
        flush=True,
    )


# ----------------------------------------------------------------------------- aggregation


def _median(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def _in_rep_ratio(rows: list[Row], wl: str, loop: str, client: str, other: str, key: str) -> float | None:
    """Median over reps of client[key] / other[key], both measured in the same rep."""
    ratios = []
    for rep in {r["rep"] for r in rows}:
        a = _pick(rows, rep, wl, loop, client)
        b = _pick(rows, rep, wl, loop, other)
        if a and b and a.get(key) and b.get(key):
            ratios.append(a[key] / b[key])
    return _median(ratios)


def _pick(rows: list[Row], rep: int, wl: str, loop: str, client: str) -> Row | None:
    for r in rows:
        if r["rep"] == rep and r["workload"] == wl and r["client"] == client and r["loop"] in (loop, "-"):
            return r
    return None


def summarise(rows: list[Row]) -> list[Row]:
    """One line per (workload, loop, client): medians over valid reps, in-rep ratios, FAIL reasons."""
    groups: dict[tuple[str, str, str], list[Row]] = defaultdict(list)
    for r in rows:
        groups[(r["workload"], r["loop"], r["client"])].append(r)
    out = []
    for (wl, loop, client), reps in groups.items():
        valid = [r for r in reps if r["valid"]]
        ref_loop = loop if loop != "-" else next((r["loop"] for r in rows if r["loop"] != "-"), "-")
        line: Row = {
            "workload": wl,
            "loop": loop,
            "client": client,
            "valid": f"{len(valid)}/{len(reps)}",
            "why": next((r["why"] for r in reps if not r["valid"]), None),
        }
        for key in (
            "events_per_s",
            "mb_per_s",
            "cpu_us_per_event",
            "rss_peak_mib",
            "rss_growth_mib",
            "lat_p50_us",
            "lat_p99_us",
            "lat_max_us",
        ):
            line[key] = _median(r.get(key) for r in valid)
        line["x_aiosonic"] = _in_rep_ratio(rows, wl, ref_loop, client, "aiosonic", "events_per_s")
        line["x_launchdarkly"] = _in_rep_ratio(rows, wl, ref_loop, client, "launchdarkly", "events_per_s")
        line["of_raw"] = _in_rep_ratio(rows, wl, ref_loop, client, "raw-floor", "mb_per_s")
        line["cpu_x_raw"] = _in_rep_ratio(rows, wl, ref_loop, client, "raw-floor", "cpu_us_per_event")
        out.append(line)
    return out


# ----------------------------------------------------------------------------- report


def _f(v: float | None, fmt: str = "{:,.0f}") -> str:
    return "–" if v is None else fmt.format(v)


def tables(summary: list[Row], clients: list[str]) -> str:
    """Markdown: one throughput table per workload and loop, then the latency table."""
    order = {c: i for i, c in enumerate(clients)}
    parts = []
    keyed = sorted(summary, key=lambda s: (s["workload"], s["loop"], order.get(s["client"], 99)))
    for wl in dict.fromkeys(s["workload"] for s in keyed):
        for loop in dict.fromkeys(s["loop"] for s in keyed if s["workload"] == wl and s["loop"] != "-"):
            lines = [s for s in keyed if s["workload"] == wl and s["loop"] in (loop, "-")]
            parts.append(
                _latency_table(wl, loop, lines) if wl == LATENCY else _throughput_table(wl, loop, lines)
            )
    return "\n\n".join(parts)


def _throughput_table(wl: str, loop: str, lines: list[Row]) -> str:
    head = (
        f"### {wl} — {loop}\n\n| client | valid | events/s | MB/s | CPU µs/event | CPU × raw | × aiosonic | "
        "× launchdarkly | % of raw MB/s | peak RSS MiB | RSS growth MiB |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    body = []
    for s in lines:
        if s["events_per_s"] is None:
            body.append(f"| {s['client']} | FAIL {s['valid']}: {_cell(s['why'])} |" + " |" * 9)
            continue
        fail = f" (FAIL: {_cell(s['why'])})" if s["why"] else ""
        body.append(
            f"| {s['client']} | {s['valid']}{fail} | {_f(s['events_per_s'])} | "
            f"{_f(s['mb_per_s'], '{:,.1f}')} | "
            f"{_f(s['cpu_us_per_event'], '{:.3f}')} | {_f(s['cpu_x_raw'], '{:.1f}×')} | "
            f"{_f(s['x_aiosonic'], '{:.2f}×')} | "
            f"{_f(s['x_launchdarkly'], '{:.2f}×')} | {_f(_pct(s['of_raw']), '{:.0f} %')} | "
            f"{_f(s['rss_peak_mib'], '{:.1f}')} | {_f(s['rss_growth_mib'], '{:.1f}')} |"
        )
    return head + "\n" + "\n".join(body)


def _latency_table(wl: str, loop: str, lines: list[Row]) -> str:
    head = (
        f"### {wl} (paced; server write → user code) — {loop}\n\n| client | valid | p50 µs | p99 µs | "
        "max µs | CPU µs/event |\n|---|---|---:|---:|---:|---:|"
    )
    body = []
    for s in lines:
        if s["lat_p50_us"] is None:
            body.append(f"| {s['client']} | FAIL {s['valid']}: {_cell(s['why'])} | | | | |")
            continue
        body.append(
            f"| {s['client']} | {s['valid']} | {_f(s['lat_p50_us'])} | {_f(s['lat_p99_us'])} | "
            f"{_f(s['lat_max_us'])} | {_f(s['cpu_us_per_event'], '{:.2f}')} |"
        )
    return head + "\n" + "\n".join(body)


def _pct(v: float | None) -> float | None:
    return None if v is None else v * 100


def _cell(text: str | None) -> str:
    return (text or "").replace("|", "/").replace("\n", " ")[:90]


# ----------------------------------------------------------------------------- targets


def _get(summary: list[Row], wl: str, loop: str, client: str) -> Row | None:
    return next(
        (s for s in summary if s["workload"] == wl and s["loop"] == loop and s["client"] == client), None
    )


Target = tuple[str, str, "bool | None"]  # (target, measured, holds; None = not measured)


def targets(summary: list[Row], rows: list[Row], loops: list[str]) -> list[Target]:
    """The performance targets for sonicsse (compiled, plain ``async for``): (target, measured, holds)."""
    out: list[tuple[str, str, bool | None]] = []
    for loop in loops:
        bulk = _get(summary, "bulk", loop, "sonicsse")
        if bulk:
            xa, xl = bulk["x_aiosonic"], bulk["x_launchdarkly"]
            out.append((f"bulk events/s ≥ 10× aiosonic ({loop})", _f(xa, "{:.2f}×"), _ge(xa, 10)))
            out.append((f"bulk events/s ≥ 8× launchdarkly ({loop})", _f(xl, "{:.2f}×"), _ge(xl, 8)))
            out.append(
                (
                    f"bulk RSS growth ≤ 5 MiB, dedup on ({loop})",
                    _f(bulk["rss_growth_mib"], "{:.1f} MiB"),
                    _le(bulk["rss_growth_mib"], 5),
                )
            )
        if loop == "asyncio" and bulk:
            cpu = bulk["cpu_us_per_event"]
            out.append(("bulk CPU ≤ 0.35 µs/event (asyncio)", _f(cpu, "{:.3f} µs"), _le(cpu, 0.35)))
        large = _get(summary, "large", loop, "sonicsse")
        if large:
            out.append(
                (
                    f"large MB/s ≥ 60 % of raw floor ({loop})",
                    _f(_pct(large["of_raw"]), "{:.0f} %"),
                    _ge(large["of_raw"], 0.6),
                )
            )
        lat = _get(summary, LATENCY, loop, "sonicsse")
        if lat:
            out.append(
                (
                    f"tokens p99 write→user ≤ 1 ms ({loop})",
                    _f(lat["lat_p99_us"], "{:,.0f} µs"),
                    _le(lat["lat_p99_us"], 1000),
                )
            )
        for wl in ("crlf", "cr"):
            ratio = _cross_ratio(rows, wl, "bulk", loop, "sonicsse")
            if ratio is not None:
                label = f"{wl} ≥ 0.9× bulk events/s ({loop})"
                out.append((label, _f(ratio, "{:.2f}× bulk"), _ge(ratio, 0.9)))
        for wl in ("close-delimited", "content-length", "repeats"):
            s = _get(summary, wl, loop, "sonicsse")
            if s:
                out.append(
                    (
                        f"{wl}: every event delivered ({loop})",
                        s["valid"],
                        s["valid"].split("/")[0] == s["valid"].split("/")[1],
                    )
                )
        pure = _get(summary, "bulk", loop, "sonicsse-py")
        if pure:
            out.append(
                (
                    f"pure twin bulk ≥ 1.5× launchdarkly ({loop})",
                    _f(pure["x_launchdarkly"], "{:.2f}×"),
                    _ge(pure["x_launchdarkly"], 1.5),
                )
            )
    return out


def _cross_ratio(rows: list[Row], wl: str, base: str, loop: str, client: str) -> float | None:
    """Median over reps of client's events/s on ``wl`` ÷ on ``base`` in the same rep."""
    ratios = []
    for rep in {r["rep"] for r in rows}:
        a, b = _pick(rows, rep, wl, loop, client), _pick(rows, rep, base, loop, client)
        if a and b and a.get("events_per_s") and b.get("events_per_s"):
            ratios.append(a["events_per_s"] / b["events_per_s"])
    return _median(ratios)


def _ge(v: float | None, bound: float) -> bool | None:
    return None if v is None else v >= bound


def _le(v: float | None, bound: float) -> bool | None:
    return None if v is None else v <= bound


def targets_table(items: list[tuple[str, str, bool | None]]) -> str:
    """Markdown table of the targets."""
    mark = {True: "holds", False: "**missed**", None: "not measured"}
    lines = [
        "### Targets, sonicsse compiled, `async for`",
        "",
        "| target | measured | |",
        "|---|---:|---|",
    ]
    lines += [f"| {t} | {m} | {mark[ok]} |" for t, m, ok in items]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- plot


def plot(summary: list[Row], clients: list[str], path: Path) -> None:
    """Bar chart of bulk events/s and large MB/s per client and loop (matplotlib); FAIL bars are labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    panels = [
        ("bulk", "events_per_s", "events/s (bulk, 500k small events)"),
        ("large", "mb_per_s", "MB/s (large, 1 MiB events)"),
    ]
    for ax, (wl, key, label) in zip(axes, panels, strict=True):
        loops = sorted({s["loop"] for s in summary if s["workload"] == wl and s["loop"] != "-"})
        names = [
            c
            for c in clients
            if c != "dict-floor" and any(s["client"] == c and s["workload"] == wl for s in summary)
        ]
        width = 0.8 / max(1, len(loops))
        for j, loop in enumerate(loops):
            xs = [i + j * width for i in range(len(names))]
            vals = [((_get(summary, wl, loop, c) or {}).get(key) or 0.0) for c in names]
            ax.bar(xs, vals, width, label=loop)
            for x, v in zip(xs, vals, strict=True):
                if not v:
                    ax.text(x, 0, "FAIL", rotation=90, ha="center", va="bottom", fontsize=7, color="red")
        ax.set_xticks([i + width * (len(loops) - 1) / 2 for i in range(len(names))])
        ax.set_xticklabels(names, rotation=35, ha="right", fontsize=8)
        ax.set_ylabel(label)
        ax.set_title(label + ", higher is better")
        if names and loops:
            ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ----------------------------------------------------------------------------- main


def machine() -> str:
    """A one-line description of this machine."""
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {sys.platform}, code {revision()}"


def revision() -> str:
    """The git commit of the code measured, with "-dirty" when the work tree has changes."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True,
                             text=True, timeout=10)  # fmt: skip
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(
        description="sonicsse end-to-end benchmark", formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--reps", type=int, default=3)
    p.add_argument(
        "--clients", default=",".join(ALL_CLIENTS), help="comma list of: " + ", ".join(ALL_CLIENTS)
    )
    p.add_argument(
        "--workloads",
        default=",".join([*WORKLOADS, LATENCY]),
        help="comma list of: " + ", ".join([*WORKLOADS, LATENCY]),
    )
    p.add_argument("--loops", default="asyncio,uvloop")
    p.add_argument("--scale", type=float, default=1.0, help="multiplies every workload's event count")
    p.add_argument("--latency-events", type=int, default=None, help="paced events per latency run")
    p.add_argument("--latency-interval-us", type=int, default=2000)
    p.add_argument("--timeout", type=float, default=None, help="seconds per run (default scales)")
    p.add_argument("--out", default=None, help="write every measurement and the summary as JSON")
    p.add_argument("--plot", action="store_true", help="save a bar chart to benchmarks/results.svg")
    p.add_argument("--no-pin", action="store_true", help="do not pin server and client to CPUs")
    p.add_argument("--tls", action="store_true", help="over https: a throw-away CA and cert (trustme)")
    p.add_argument("--from-json", default=None, help="print the tables of a saved --out file, run nothing")
    args = p.parse_args(argv)
    args.clients = [c for c in args.clients.split(",") if c]
    args.workloads = [w for w in args.workloads.split(",") if w]
    args.loops = [x for x in args.loops.split(",") if x]
    unknown = set(args.clients) - set(ALL_CLIENTS) | set(args.workloads) - {*WORKLOADS, LATENCY}
    if unknown:
        p.error(f"unknown client or workload: {', '.join(sorted(unknown))}")
    if args.latency_events is None:
        args.latency_events = max(50, min(1000, int(2000 * args.scale)))
    if args.timeout is None:
        args.timeout = 20 + 60 * args.scale
    return args


def main(argv: list[str] | None = None) -> int:
    """Run, print the tables, write JSON/plot; exit 1 if any sonicsse run was not exact."""
    args = parse_args(argv)
    t0 = time.time()
    if args.from_json:
        doc = json.loads(Path(args.from_json).read_text())
        rows, args.reps, args.tls = doc["rows"], doc["args"]["reps"], doc["args"].get("tls", False)
        args.scale, args.loops, args.clients = (
            doc["args"]["scale"],
            doc["args"]["loops"],
            doc["args"]["clients"],
        )
    else:
        rows = run_all(args)
    summary = summarise(rows)
    checks = targets(summary, rows, args.loops)
    reps_done = len({r["rep"] for r in rows})
    print(
        f"## sonicsse end-to-end benchmark{' over TLS (https)' if args.tls else ''}\n\n"
        f"Machine: {machine()}. Scale {args.scale}, {reps_done} rep(s), "
        f"loops {', '.join(args.loops)}; {time.time() - t0:.0f} s.\n"
    )
    print(tables(summary, args.clients) + "\n\n" + targets_table(checks))
    if args.out:
        save(args, rows, summary, checks)
    if args.plot:
        plot(summary, args.clients, HERE / "results.svg")
    bad = [r for r in rows if r["client"].startswith("sonicsse") and not r["valid"]]
    for r in bad:
        print(f"FAIL: {r['client']} {r['loop']} {r['workload']}: {r['why']}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
