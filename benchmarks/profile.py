"""Where the time goes: py-spy over one client reading one workload several times.

    pip install py-spy
    python -m benchmarks.profile --client sonicsse --workload bulk                # stdlib loop
    python -m benchmarks.profile --client sonicsse --workload large --loop uvloop --native

Starts the benchmark server, runs ``py-spy record`` on a child process that reads the stream
``--repeat`` times (imports and connection set-up are left out of the tally), and prints the frames
with the most samples: by self time, and inclusive for sonicsse's own frames. ``--folded`` keeps the
raw stacks (feed them to flamegraph.pl or speedscope).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from .clients import CLIENTS, PURE, Tally, _preimport
from .e2e import ROOT, running_server
from .workloads import WORKLOADS

_MARK = "_profiled_loop"  # every counted stack passes through it: the event loop, after the imports


async def _runs(client: str, url: str, repeat: int) -> None:
    for _ in range(repeat):
        await CLIENTS[client](url, Tally(), False)


def _profiled_loop(client: str, url: str, loop: str, repeat: int) -> None:
    if loop == "uvloop":
        import uvloop

        uvloop.run(_runs(client, url, repeat))
    else:
        asyncio.run(_runs(client, url, repeat))


def child(client: str, url: str, loop: str, repeat: int) -> None:
    """Import the client's modules, then run it ``repeat`` times (this is the process py-spy samples)."""
    _preimport(client)
    _profiled_loop(client, url, loop, repeat)


def tally(folded: Path, top: int) -> str:
    """Self and inclusive sample shares of the frames under the profiled runs."""
    self_c: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in folded.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not any(_MARK in f for f in frames):
            continue
        n = int(count)
        total += n
        self_c[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    if not total:
        return "no samples under the profiled runs"
    out = [f"{total} samples\n\nself time:"]
    out += [f"  {100 * n / total:5.1f} %  {f[:140]}" for f, n in self_c.most_common(top)]
    out.append("\ninclusive (sonicsse, decoder and transport frames):")
    own = [(f, n) for f, n in incl.most_common() if "sonicsse" in f or ".pyx" in f or "streams.py" in f]
    out += [f"  {100 * n / total:5.1f} %  {f[:140]}" for f, n in own[:top]]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments; as the parent, start the server and py-spy; print the tally."""
    p = argparse.ArgumentParser(description="py-spy profile of one client on one workload")
    p.add_argument("--client", default="sonicsse", choices=list(CLIENTS))
    p.add_argument("--workload", default="bulk", choices=list(WORKLOADS))
    p.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop"])
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--rate", type=int, default=1000, help="samples per second")
    p.add_argument("--native", action="store_true", help="include C/Cython frames (py-spy --native)")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--folded", default="profile.folded", help="where the raw stacks go")
    p.add_argument("--child-url", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child_url:
        child(args.client, args.child_url, args.loop, args.repeat)
        return 0
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        print("py-spy is not installed: pip install py-spy", file=sys.stderr)
        return 2
    env = None
    if args.client in PURE:
        import os

        env = {**os.environ, "SONICSSE_NO_EXTENSIONS": "1"}
    with running_server(args.scale, [args.workload], pin=True) as port:
        url = f"http://127.0.0.1:{port}/w/{args.workload}"
        cmd = [spy, "record", "-r", str(args.rate), "-f", "raw", "-o", args.folded]
        cmd += ["--native"] if args.native else []
        cmd += ["--", sys.executable, "-m", "benchmarks.profile", "--client", args.client,
                "--loop", args.loop, "--repeat", str(args.repeat), "--child-url", url]  # fmt: skip
        subprocess.run(cmd, cwd=ROOT, env=env, check=True, timeout=600, capture_output=True)
    print(f"{args.client} on {args.workload} ({args.loop}, scale {args.scale}, {args.repeat} runs)\n")
    print(
        tally(Path(ROOT, args.folded) if not Path(args.folded).is_absolute() else Path(args.folded), args.top)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
