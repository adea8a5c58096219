"""Client CPU and memory against the number of streams: ``benchmarks.concurrency`` at several counts.

    python -m benchmarks.scaling --out scaling.json        # 1000,5000,10000,19900 streams × 2/s × 10 s
    python -m benchmarks.scaling --from-json scaling.json  # re-draw and re-print a saved run, run nothing
    python -m benchmarks.scaling --counts 200,500 --duration 3 --clients sonicsse,raw-floor   # quick

Each stream count is one ``python -m benchmarks.concurrency ... --out FILE`` subprocess (its own server,
a fresh client process per client, loop and rep, every run with its deadline); this script collects
their JSON, draws ``benchmarks/scaling.svg`` (client CPU seconds and peak RSS per stream against the
stream count, one line per client) and prints a markdown table. A count that needs more open files than
the machine allows is reported and skipped, not run. ``--from-json`` also takes ``benchmarks.concurrency``
``--out`` files, one count each.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .concurrency import CLIENTS, SPARE_FDS, parse_rate
from .e2e import HERE, ROOT, machine
from .server import raise_fd_limit

DEFAULT_COUNTS = "1000,5000,10000,19900"
DEFAULT_CLIENTS = "sonicsse,raw-floor,task-floor,aiosonic-floor,launchdarkly"
SVG = HERE / "scaling.svg"
#: Seconds a concurrency subprocess gets besides its client runs' own deadlines (server start, imports).
SLACK = 120.0

Run = dict[str, Any]  # one stream count: {"count", and "skipped" | "error" | "concurrency"}
Point = dict[str, Any]  # one (count, loop, client): the concurrency summary row, with "count"


# ----------------------------------------------------------------------------- running


def fd_problem(count: int, fd_limit: int) -> str | None:
    """Why ``count`` streams cannot run here (the client needs a descriptor per stream), or None."""
    need = count + SPARE_FDS
    if need > fd_limit:
        return f"needs {need:,} open files, this machine allows {fd_limit:,}"
    return None


def run_limit(args: argparse.Namespace) -> float:
    """The most one concurrency subprocess may take: each of its client runs is killed by concurrency
    itself after duration + grace + 30 s."""
    runs = args.reps * len(args.loops) * len(args.clients)
    return float(runs * (args.duration + args.grace + 30) + SLACK)


def run_count(args: argparse.Namespace, count: int, tmp: str) -> Run:
    """Run benchmarks.concurrency at ``count`` streams; returns its --out JSON (or why it did not finish).
    Its tables and progress go to stderr; it runs in its own session so that a timeout kills all of it."""
    out = os.path.join(tmp, f"concurrency-{count}.json")
    cmd = [sys.executable, "-m", "benchmarks.concurrency", "--streams", str(count), "--rate", args.rate_text,
           "--duration", f"{args.duration:g}", "--grace", f"{args.grace:g}",
           "--clients", ",".join(args.clients), "--loops", ",".join(args.loops), "--reps", str(args.reps),
           "--out", out]  # fmt: skip
    if args.no_pin:
        cmd.append("--no-pin")
    limit = run_limit(args)
    print(f"[{count:,} streams] {' '.join(cmd[1:])}  (at most {limit:.0f} s)", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=sys.stderr, start_new_session=True)
    try:
        code = proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the session we started: concurrency, its server, its client
        proc.wait()
        return {"count": count, "error": f"killed after {limit:.0f} s"}
    took = time.monotonic() - t0
    try:
        with open(out) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError):
        return {"count": count, "error": f"benchmarks.concurrency exited {code} without results"}
    print(f"[{count:,} streams] done in {took:.0f} s", file=sys.stderr, flush=True)
    return {"count": count, "seconds": took, "exit": code, "concurrency": data}


def run_all(args: argparse.Namespace) -> tuple[list[Run], int]:
    """Every count in turn (those the open-files limit does not allow are skipped); returns the runs and
    the limit."""
    fd_limit = raise_fd_limit()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory() as tmp:
        for count in args.counts:
            problem = fd_problem(count, fd_limit)
            if problem:
                print(f"[{count:,} streams] skipped: {problem}", file=sys.stderr, flush=True)
                runs.append({"count": count, "skipped": problem})
                continue
            runs.append(run_count(args, count, tmp))
    return runs, fd_limit


def load(paths: list[str]) -> tuple[list[Run], dict[str, Any]]:
    """Runs from saved files: this script's --out, or benchmarks.concurrency's --out (one count each).
    A count found twice keeps the later file's run. Returns the runs and the first file's header."""
    by_count: dict[int, Run] = {}
    header: dict[str, Any] = {}
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        if "runs" in data:
            runs = data["runs"]
            header = header or {k: v for k, v in data.items() if k != "runs"}
        else:  # a concurrency --out file
            runs = [{"count": data["args"]["streams"], "concurrency": data}]
            header = header or {"machine": data.get("machine"), "args": data["args"]}
        for run in runs:
            by_count[int(run["count"])] = run
    return [by_count[c] for c in sorted(by_count)], header


# ----------------------------------------------------------------------------- summarising


def points(runs: list[Run]) -> list[Point]:
    """One row per (count, loop, client) that was attempted: concurrency's summary (medians over reps)."""
    out = []
    for run in runs:
        for s in run.get("concurrency", {}).get("summary", []):
            out.append({**s, "count": run["count"]})
    return out


def trouble(p: Point) -> str | None:
    """What went wrong with a client at a count ("did not run: ...", "lost N" ...), or None."""
    if not p.get("ran"):
        return f"did not run: {p.get('first_error') or 'no result'}"
    problems = []
    if p.get("lost"):
        problems.append(f"lost {p['lost']:,}")
    if p.get("completed") != p.get("streams"):
        problems.append(f"{p.get('completed')}/{p.get('streams')} complete")
    if p.get("timed_out"):
        problems.append("hit the deadline")
    return ", ".join(problems) or None


def _num(v: float | None, fmt: str = "{:.2f}") -> str:
    return "–" if v is None or v != v else fmt.format(v)


def table(runs: list[Run]) -> str:
    """Markdown: one line per count and client (and loop)."""
    lines = [
        "| streams | loop | client | streams completed | events lost | client CPU s | CPU % of one core | "
        "CPU × raw floor | peak RSS KiB per stream | RSS × raw floor | p99 ms |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        count = f"{run['count']:,}"
        if "skipped" in run or "error" in run:
            why = run.get("skipped") or f"did not finish: {run['error']}"
            lines.append(f"| {count} | {why} |" + " |" * 9)
            continue
        for p in points([run]):
            if not p.get("ran"):
                lines.append(
                    f"| {count} | {p['loop']} | {p['client']} | FAIL: {p.get('first_error')} |" + " |" * 7
                )
                continue
            lost = f"{p['lost']:,}" + (" (hit the deadline)" if p.get("timed_out") else "")
            lines.append(
                f"| {count} | {p['loop']} | {p['client']} | {p['completed']}/{p['streams']} | {lost} | "
                f"{_num(p.get('cpu_s'))} | {_num(p.get('cpu_pct'), '{:.1f}')} | "
                f"{_num(p.get('cpu_x_raw'), '{:.2f}×')} | {_num(p.get('rss_per_stream_kib'), '{:.1f}')} | "
                f"{_num(p.get('rss_x_raw'), '{:.2f}×')} | {_num(p.get('lat_p99_ms'), '{:,.1f}')} |"
            )
    return "\n".join(lines)


def describe(header: dict[str, Any], runs: list[Run]) -> str:
    """What was run, in words (from the first count's concurrency arguments)."""
    every = [r["concurrency"]["args"] for r in runs if "concurrency" in r]
    kinds = {(a.get("rate"), a.get("duration"), a.get("loops"), a.get("reps")) for a in every}
    if len(kinds) > 1:
        return "runs with different rates, durations, loops or reps (see each file)"
    args = every[0] if every else header.get("args") or {}
    rate, duration = args.get("rate"), args.get("duration")
    if rate is None or duration is None:
        return "streams through one client"
    rate_text = f"1/{1 / rate:.0f}" if rate < 1 else f"{rate:g}"
    reps = int(args.get("reps", 1))
    loops = args.get("loops", "")
    loops = ",".join(loops) if isinstance(loops, list) else loops
    return f"{rate_text} events/s × {duration:g} s per stream, {loops}" + (
        f", medians of {reps} reps" if reps > 1 else ", one run"
    )


# ----------------------------------------------------------------------------- the chart


def plot(runs: list[Run], header: dict[str, Any], path: Path) -> None:
    """Two panels against the stream count (log x): client CPU seconds (log y) and peak RSS per stream.
    One line per client (and loop); a count that did not run is a dotted line with the reason; a client
    that lost events is a red ring labelled with the loss; a client that did not run is a red × on the
    axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    pts = points(runs)
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    panels = [
        ("cpu_s", "client CPU seconds over the run", True),
        ("rss_per_stream_kib", "peak RSS per stream, KiB", False),
    ]
    series = list(dict.fromkeys((p["client"], p["loop"]) for p in pts))
    loops = list(dict.fromkeys(loop for _, loop in series))
    clients = list(dict.fromkeys(client for client, _ in series))
    colors = {c: f"C{i % 10}" for i, c in enumerate(clients)}
    styles = {loop: ("-", "--", ":", "-.")[i % 4] for i, loop in enumerate(loops)}
    counts = [r["count"] for r in runs]
    missing = [r for r in runs if "skipped" in r or "error" in r]
    for ax, (key, label, log_y) in zip(axes, panels, strict=True):
        for client, loop in series:
            mine = sorted(
                (p for p in pts if (p["client"], p["loop"]) == (client, loop)), key=lambda p: p["count"]
            )
            good = [p for p in mine if p.get("ran") and p.get(key) is not None]
            name = client if len(loops) == 1 else f"{client} ({loop})"
            ax.plot(
                [p["count"] for p in good], [p[key] for p in good], styles[loop], marker="o",
                color=colors[client], label=name,
            )  # fmt: skip
            for p in mine:
                what = trouble(p)
                if what is None:
                    continue
                if p.get("ran") and p.get(key) is not None:
                    ax.plot(p["count"], p[key], "o", ms=13, mfc="none", mec="red", mew=1.5)
                    ax.annotate(
                        f"{client}: {what}", (p["count"], p[key]), textcoords="offset points",
                        xytext=(8, -4), fontsize=7, color="red",
                    )  # fmt: skip
                else:
                    ax.plot(
                        p["count"], 0.02, "x", ms=10, mew=2, color="red", transform=ax.get_xaxis_transform()
                    )
                    ax.annotate(
                        f"{client}: {what}"[:60], (p["count"], 0.02), xycoords=ax.get_xaxis_transform(),
                        textcoords="offset points", xytext=(8, 2), fontsize=7, color="red",
                    )  # fmt: skip
        for r in missing:
            why = r.get("skipped") or f"did not finish: {r['error']}"
            ax.axvline(r["count"], ls=":", color="grey")
            ax.text(
                r["count"], 0.5, f"{r['count']:,} streams: {why}", transform=ax.get_xaxis_transform(),
                rotation=90, ha="right", va="center", fontsize=7, color="dimgrey",
            )  # fmt: skip
        ax.set_xscale("log")
        if counts:
            ax.set_xlim(min(counts) / 1.4, max(counts) * 1.4)
            ax.set_xticks(counts)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.tick_params(axis="x", labelsize=8)
        if log_y and any(p.get(key) for p in pts):
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        else:
            ax.set_ylim(bottom=0)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:,.3g}"))  # after set_yscale
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("streams open at once")
        ax.set_ylabel(label)
        ax.set_title(label + ", lower is better")
        ax.grid(True, which="major", alpha=0.3)
        if series:
            ax.legend(fontsize=8)
    fig.suptitle(f"Many streams through one client: {describe(header, runs)}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ----------------------------------------------------------------------------- main


def _ints(text: str) -> list[int]:
    return sorted({int(x.replace("_", "")) for x in text.split(",") if x.strip()})


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description="client CPU and RSS against the number of streams")
    p.add_argument("--counts", type=_ints, default=_ints(DEFAULT_COUNTS), help=f"default {DEFAULT_COUNTS}")
    p.add_argument("--rate", default="2", help="events per second per stream (1/60 works); default 2")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per stream; default 10")
    p.add_argument(
        "--grace", type=float, default=45.0, help="extra seconds before a client run is cut off; default 45"
    )
    p.add_argument("--clients", default=DEFAULT_CLIENTS, help=f"any of {','.join(CLIENTS)}")
    p.add_argument("--loops", default="uvloop")
    p.add_argument("--reps", type=int, default=1, help="interleaved reps per count; medians are plotted")
    p.add_argument("--no-pin", action="store_true", help="do not pin server and client to CPUs")
    p.add_argument("--out", default=None, help="write every count's concurrency results as JSON")
    p.add_argument("--svg", default=str(SVG), help=f"where the chart goes; default {SVG.relative_to(ROOT)}")
    p.add_argument(
        "--from-json", nargs="+", default=None, metavar="FILE",
        help="re-plot and re-print saved results (this script's or concurrency's --out), run nothing",
    )  # fmt: skip
    args = p.parse_args(argv)
    args.rate_text = args.rate
    args.rate = parse_rate(args.rate)
    args.clients = [c for c in args.clients.split(",") if c]
    args.loops = [x for x in args.loops.split(",") if x]
    unknown = [c for c in args.clients if c.partition("@")[0] not in CLIENTS]
    if unknown:
        p.error(f"unknown clients: {', '.join(unknown)} (any of {', '.join(CLIENTS)})")
    if not args.counts or min(args.counts) < 1:
        p.error("--counts: positive stream counts, e.g. 1000,5000")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run (or load) every count; draw the chart; print the table. Exit 1 if a count did not finish or
    sonicsse lost events."""
    args = parse_args(argv)
    if args.from_json:
        runs, header = load(args.from_json)
    else:
        t0 = time.monotonic()
        runs, fd_limit = run_all(args)
        header = {
            "kind": "benchmarks.scaling", "machine": machine(), "fd_limit": fd_limit,
            "seconds": time.monotonic() - t0,
            "args": {k: v for k, v in vars(args).items() if k not in ("from_json", "rate_text")}
            | {"rate_text": args.rate_text},
        }  # fmt: skip
        if args.out:
            with open(args.out, "w") as f:
                json.dump({**header, "runs": runs}, f, indent=1)
        print(f"all counts: {header['seconds']:.0f} s", file=sys.stderr)
    svg = Path(args.svg)
    plot(runs, header, svg)
    print(f"Machine: {header.get('machine')}; {describe(header, runs)}\n")
    print(table(runs))
    print(f"\nChart: {svg}")
    bad = [r for r in runs if "error" in r] + [
        p for p in points(runs) if p["client"].partition("@")[0] == "sonicsse" and trouble(p)
    ]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
