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

from .clients import _new_loop
from .e2e import running_server
from .workloads import build

READ_SIZE = 1 << 18  # as the raw floor
DEFAULT_BURNS = "0,50,100,200,400"


class _BurningReader(asyncio.BufferedProtocol):
    """Reads the response into one buffer and spins ``burn_s_per_byte`` per byte read."""

    def __init__(self, burn_s_per_byte: float, done: asyncio.Future[int]) -> None:
        self._buffer = memoryview(bytearray(READ_SIZE))
        self._burn = burn_s_per_byte
        self._done = done
        self.received = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(b"GET /w/large HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # type: ignore[attr-defined]

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.received += nbytes
        if self._burn:
            until = time.perf_counter() + self._burn * nbytes
            while time.perf_counter() < until:
                pass

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._done.done():
            self._done.set_result(self.received)


async def _read_once(port: int, burn_us_per_mib: float) -> int:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[int] = loop.create_future()
    burn = burn_us_per_mib / 1e6 / (1 << 20)
    await loop.create_connection(lambda: _BurningReader(burn, done), "127.0.0.1", port)
    return await done


def measure(port: int, burn_us_per_mib: float, loop_kind: str) -> tuple[float, float, int]:
    """One run: (wall s, CPU s, bytes received)."""
    loop = _new_loop(loop_kind)
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        received = loop.run_until_complete(_read_once(port, burn_us_per_mib))
        return time.perf_counter() - wall, time.process_time() - cpu, received
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
        if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2:
            os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        for loop_kind in args.loops.split(","):
            runs: dict[float, list[tuple[float, float]]] = {b: [] for b in burns}
            for rep in range(args.reps):
                order = burns[rep % len(burns) :] + burns[: rep % len(burns)]
                for burn in order:
                    wall, cpu, received = measure(port, burn, loop_kind)
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
