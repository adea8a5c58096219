"""What binds ``large``: the raw floor, made to spend CPU on what it reads, as any client must.

    python -m benchmarks.coupling                        # burns 0-400 µs/MiB, both loops, 7 reps
    python -m benchmarks.coupling --burn 0,100,200 --reps 3 --loops asyncio

Each client reads the ``large`` workload (64 events of 1 MiB, chunked, 64 KiB writes) from the benchmark
server, pinned as the end-to-end runner pins it, into one preallocated buffer, exactly as the raw floor
does; after each read it spins on the clock for ``burn`` µs per MiB it read (user CPU, no memory
traffic). Burn 0 is the raw floor. The table gives MB/s as a share of burn 0, and the CPU, wall and idle
time (wall minus CPU) per run: the share a client can reach while spending that much CPU per MiB more
than the raw floor, through the same kernel and server. Reps are interleaved; medians are shown.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from .clients import Tally, _Discard, _new_loop, run_raw
from .e2e import running_server
from .workloads import build

DEFAULT_BURNS = "0,50,100,200,400"


class _BurningDiscard(_Discard):
    """The raw floor's reader, spinning ``burn_s_per_byte`` on the clock per byte it reads."""

    def __init__(
        self, burn_s_per_byte: float, tally: Tally, latency: bool, done: asyncio.Future[None]
    ) -> None:
        super().__init__(tally, latency, done)
        self._burn = burn_s_per_byte

    def buffer_updated(self, nbytes: int) -> None:
        super().buffer_updated(nbytes)
        if self._burn:
            until = time.perf_counter() + self._burn * nbytes
            while time.perf_counter() < until:
                pass


def measure(url: str, burn_us_per_mib: float, loop_kind: str) -> tuple[float, float, int]:
    """One run: (wall s, CPU s, bytes received)."""
    burn = burn_us_per_mib / 1e6 / (1 << 20)
    tally = Tally()
    loop = _new_loop(loop_kind)
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        loop.run_until_complete(
            run_raw(url, tally, False, lambda t, lat, done: _BurningDiscard(burn, t, lat, done))
        )
        return time.perf_counter() - wall, time.process_time() - cpu, tally.bytes
    finally:
        loop.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burn", default=DEFAULT_BURNS, help="µs of CPU per MiB read, comma list")
    parser.add_argument("--loops", default="asyncio,uvloop")
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args(argv)
    burns = [float(b) for b in args.burn.split(",")]
    if 0.0 not in burns:
        burns.insert(0, 0.0)
    expected = sum(len(w) for w in build("large", 1.0).writes) + len(build("large", 1.0).head)
    with running_server(1.0, ["large"], True) as port:
        url = f"http://127.0.0.1:{port}/w/large"
        if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2:
            os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        for loop_kind in args.loops.split(","):
            runs: dict[float, list[tuple[float, float]]] = {b: [] for b in burns}
            for rep in range(args.reps):
                order = burns[rep % len(burns) :] + burns[: rep % len(burns)]
                for burn in order:
                    wall, cpu, received = measure(url, burn, loop_kind)
                    if received != expected:
                        raise SystemExit(f"burn {burn:g}: received {received} bytes, expected {expected}")
                    runs[burn].append((wall, cpu))
            medians = {b: sorted(v)[len(v) // 2] for b, v in runs.items()}
            floor_wall = medians[0.0][0]
            print(f"\n### large, raw floor + burn — {loop_kind} (median of {args.reps})\n")
            print("| burn µs/MiB | MB/s | % of raw MB/s | CPU ms | wall ms | idle ms |")
            print("|---:|---:|---:|---:|---:|---:|")
            for burn, (wall, cpu) in medians.items():
                print(
                    f"| {burn:g} | {expected / wall / 1e6:,.0f} | {100 * floor_wall / wall:.0f} % "
                    f"| {cpu * 1e3:.1f} | {wall * 1e3:.1f} | {(wall - cpu) * 1e3:.1f} |"
                )


if __name__ == "__main__":
    main()
