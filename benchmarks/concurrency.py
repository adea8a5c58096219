"""Concurrency benchmark: many paced streams through one client.

    python -m benchmarks.concurrency --streams 1000            # 20 events/s per stream for 10 s
    python -m benchmarks.concurrency --streams 50 --duration 2 --loops asyncio   # quick

Every stream is ``GET /paced`` on the benchmark server (its own uvloop process, pinned to the last
CPU); every event's data starts with the server's ``monotonic_ns()`` at the write. Each client runs in
a fresh process pinned to the first CPU and opens all streams at once: sonicsse through **one**
``SSEClient``, aiosonic through one ``SSEClient`` with its default pool and with a 1,000-connection
pool, the raw-socket floor (read, count events, discard), the task floor (the same, with a task woken
per read) and the aiosonic floor (the task floor, each stream opened by aiosonic). Reported: streams
completed, events lost, client CPU % of one core over the run, p50/p99/max latency from server send to
user code, how long it took until every stream had received its first event, and the latency of the
events sent after that (steady state, without the connect storm).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .clients import _preimport, percentile
from .e2e import ROOT, machine, running_server
from .server import pin_cpu, raise_fd_limit
from .workloads import PACED_WIDTH

CLIENTS = ("sonicsse", "raw-floor", "task-floor", "aiosonic-floor", "aiosonic", "aiosonic-pool1000")


@dataclass
class StreamStats:
    """What all streams of one run received."""

    expected: int
    completed: int = 0
    events: int = 0
    errors: int = 0
    first_error: str | None = None
    latencies_ns: list[int] = field(default_factory=list)
    sent_ns: list[int] = field(default_factory=list)  # the server's send time of each latency sample
    first_sent_ns: list[int] = field(default_factory=list)  # per stream: send time of its first event

    def record(self, now: int, sent: int) -> None:
        """One latency sample."""
        self.latencies_ns.append(now - sent)
        self.sent_ns.append(sent)

    def read(self, data: bytes | bytearray, now: int, first: bool) -> int:
        """A floor's raw read: count its events, sample the latency of the first; returns the count."""
        n = data.count(b"data: ")
        if n:
            i = data.find(b"data: ")
            sent = int(data[i + 6 : i + 6 + PACED_WIDTH])
            if first:
                self.first_sent_ns.append(sent)
            self.record(now, sent)
        return n

    def steady(self) -> list[int]:
        """Latencies of events sent after every stream had started (the connect storm excluded)."""
        if len(self.first_sent_ns) == 0:
            return []
        start = max(self.first_sent_ns)
        return [lat for lat, sent in zip(self.latencies_ns, self.sent_ns, strict=True) if sent > start]

    def fail(self, exc: BaseException) -> None:
        """Record one failed stream."""
        self.errors += 1
        if self.first_error is None:
            self.first_error = f"{type(exc).__name__}: {exc}"[:200]


async def _sonicsse_stream(client: Any, url: str, st: StreamStats) -> None:
    n = 0
    record = st.record
    now = time.monotonic_ns
    try:
        async with client.connect(url, reconnect=False) as conn:
            async for ev in conn:
                t = now()
                sent = int(ev["data"][:PACED_WIDTH])
                if n == 0:
                    st.first_sent_ns.append(sent)
                n += 1
                record(t, sent)
    except Exception as exc:
        st.fail(exc)
    finally:  # also when the run's deadline cancels this stream: count what it got
        st.events += n
        st.completed += n == st.expected


async def run_sonicsse(urls: list[str], st: StreamStats) -> None:
    """All streams through one sonicsse.SSEClient."""
    from sonicsse import SSEClient

    async with SSEClient() as client:
        await asyncio.gather(*(_sonicsse_stream(client, u, st) for u in urls))


async def run_aiosonic(urls: list[str], st: StreamStats, pool: int | None) -> None:
    """All streams through one aiosonic.SSEClient (default pool, or a pool of ``pool`` connections)."""
    from aiosonic import HTTPClient, SSEClient
    from aiosonic.connectors import TCPConnector
    from aiosonic.pools import PoolConfig

    connector = TCPConnector(pool_configs={":default": PoolConfig(size=pool)}) if pool else None
    http = HTTPClient(connector=connector)
    client = SSEClient(http)
    try:
        await asyncio.gather(*(_sonicsse_stream(client, u, st) for u in urls))
    finally:
        await http.aclose()


class _RawStream(asyncio.BufferedProtocol):
    """Raw floor: count events, take the send timestamp of the first event of each read, discard.

    Reads go into one preallocated buffer, like the end-to-end runner's raw floor (see ``_Discard``
    there for why a plain ``Protocol`` is not a stable floor).
    """

    def __init__(self, st: StreamStats, done: asyncio.Future[None]) -> None:
        self._st = st
        self._done = done
        self._buffer = bytearray(1 << 16)
        self._view = memoryview(self._buffer)
        self.events = 0

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        self.events += self._st.read(self._buffer[:nbytes], time.monotonic_ns(), self.events == 0)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._done.done():
            self._done.set_result(None)


async def _raw_stream(url: str, port: int, st: StreamStats) -> None:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    proto = _RawStream(st, done)
    try:
        transport, _ = await loop.create_connection(lambda: proto, "127.0.0.1", port)
        target = url.split(str(port), 1)[1]
        transport.write(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        await done
    except Exception as exc:
        st.fail(exc)
    finally:  # also when the run's deadline cancels this stream: count what it got
        st.events += proto.events
        st.completed += proto.events == st.expected


class _TaskFloorStream(asyncio.BufferedProtocol):
    """Task floor: the raw floor's socket, but each read is handed to a waiting coroutine.

    This is the least any client that delivers events to ``async for`` code must add to the raw floor:
    a future per read, and a task woken to consume it. No HTTP, no parsing; reads go into one buffer.
    """

    def __init__(self) -> None:
        self.buffer = bytearray(1 << 16)
        self.view = memoryview(self.buffer)
        self.end = 0
        self.closed = False
        self.waiter: asyncio.Future[None] | None = None
        self.owner: Any = None  # kept alive while the stream is read (aiosonic's response owns its socket)

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.end == len(self.buffer):  # the consumer is behind: keep the newest bytes only
            self.end = 0
        return self.view[self.end :]

    def buffer_updated(self, nbytes: int) -> None:
        self.end += nbytes
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


async def _consume_as_task(
    proto: _TaskFloorStream, open_stream: Callable[[], Awaitable[asyncio.BaseTransport]], st: StreamStats
) -> None:
    """The task floors' consumer: open the stream, then count each read's events in this task."""
    loop = asyncio.get_running_loop()
    events = 0
    now = time.monotonic_ns
    try:
        transport = await open_stream()
        while True:
            if not proto.end:
                if proto.closed:
                    break
                proto.waiter = loop.create_future()
                await proto.waiter
                continue
            data = proto.buffer[: proto.end]
            proto.end = 0
            events += st.read(data, now(), events == 0)
        transport.close()
    except Exception as exc:
        st.fail(exc)
    finally:
        st.events += events
        st.completed += events == st.expected


async def _task_floor_stream(url: str, port: int, st: StreamStats) -> None:
    proto = _TaskFloorStream()

    async def open_stream() -> asyncio.BaseTransport:
        transport, _ = await asyncio.get_running_loop().create_connection(lambda: proto, "127.0.0.1", port)
        target = url.split(str(port), 1)[1]
        transport.write(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        return transport

    await _consume_as_task(proto, open_stream, st)


async def _aiosonic_floor_stream(http: Any, url: str, st: StreamStats) -> None:
    proto = _TaskFloorStream()

    async def open_stream() -> asyncio.BaseTransport:
        response = await http.request(url)  # aiosonic sends the request and reads the status and headers
        proto.owner = response
        reader = response._connection.reader
        transport: asyncio.BaseTransport = reader._transport
        initial = bytes(reader._buffer)
        reader._buffer.clear()
        proto.view[: len(initial)] = initial
        proto.end = len(initial)
        transport.set_protocol(proto)
        return transport

    await _consume_as_task(proto, open_stream, st)


async def run_aiosonic_floor(urls: list[str], st: StreamStats) -> None:
    """The task floor, with each stream opened by aiosonic (as sonicsse opens them)."""
    from aiosonic import HTTPClient
    from aiosonic.connectors import TCPConnector
    from aiosonic.pools import PoolConfig

    http = HTTPClient(connector=TCPConnector(pool_configs={":default": PoolConfig(size=1024)}))
    try:
        await asyncio.gather(*(_aiosonic_floor_stream(http, u, st) for u in urls))
    finally:
        await http.aclose()


async def run_task_floor(urls: list[str], st: StreamStats, port: int) -> None:
    """All streams as raw asyncio sockets, each read consumed by a task."""
    await asyncio.gather(*(_task_floor_stream(u, port, st) for u in urls))


async def run_raw(urls: list[str], st: StreamStats, port: int) -> None:
    """All streams as raw asyncio sockets."""
    await asyncio.gather(*(_raw_stream(u, port, st) for u in urls))


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One client over all streams in this process; returns the measurement."""
    raise_fd_limit()
    if not args.no_pin:
        pin_cpu("client")
    per_stream = int(args.rate * args.duration)
    url = f"http://127.0.0.1:{args.port}/paced?n={per_stream}&interval_us={int(1e6 / args.rate)}"
    urls = [url] * args.streams
    st = StreamStats(per_stream)
    coro: Any
    if args.client.startswith("aiosonic") or args.client == "sonicsse":
        _preimport("aiosonic" if args.client.startswith("aiosonic") else "sonicsse")  # not timed
    if args.client == "sonicsse":
        coro = run_sonicsse(urls, st)
    elif args.client == "raw-floor":
        coro = run_raw(urls, st, args.port)
    elif args.client == "task-floor":
        coro = run_task_floor(urls, st, args.port)
    elif args.client == "aiosonic-floor":
        coro = run_aiosonic_floor(urls, st)
    else:
        coro = run_aiosonic(urls, st, 1000 if args.client == "aiosonic-pool1000" else None)
    if args.loop == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    deadline = args.duration + args.grace
    r0, w0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    timed_out = False
    try:
        loop.run_until_complete(asyncio.wait_for(coro, deadline))
    except asyncio.TimeoutError:
        timed_out = True
    w1, r1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    lat = st.latencies_ns
    steady = st.steady()
    return {
        "client": args.client, "loop": args.loop, "streams": args.streams, "completed": st.completed,
        "events": st.events, "expected_events": per_stream * args.streams,
        "lost": per_stream * args.streams - st.events, "errors": st.errors, "first_error": st.first_error,
        "timed_out": timed_out, "wall_s": w1 - w0, "cpu_s": cpu, "cpu_pct": 100 * cpu / (w1 - w0),
        "lat_p50_ms": percentile(lat, 50) / 1e6, "lat_p99_ms": percentile(lat, 99) / 1e6,
        "lat_max_ms": (max(lat) / 1e6) if lat else float("nan"),
        "all_started_s": (max(st.first_sent_ns) - min(st.first_sent_ns)) / 1e9 if st.first_sent_ns else None,
        "steady_p50_ms": percentile(steady, 50) / 1e6, "steady_p99_ms": percentile(steady, 99) / 1e6,
    }  # fmt: skip


def run_one(args: argparse.Namespace, client: str, loop: str, port: int) -> dict[str, Any]:
    """Start one child process for a client and loop; returns its measurement (or the failure)."""
    cmd = [sys.executable, "-m", "benchmarks.concurrency", "--child", "--client", client, "--loop", loop,
           "--port", str(port), "--streams", str(args.streams), "--rate", str(args.rate),
           "--duration", str(args.duration), "--grace", str(args.grace)]  # fmt: skip
    if args.no_pin:
        cmd.append("--no-pin")
    limit = args.duration + args.grace + 30
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=limit)
        return dict(json.loads(proc.stdout.strip().splitlines()[-1]))
    except subprocess.TimeoutExpired:
        return {"client": client, "loop": loop, "first_error": f"killed after {limit:.0f} s"}
    except (json.JSONDecodeError, IndexError):
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"client": client, "loop": loop, "first_error": f"crashed: {tail}"[:200]}


def _raw_of(rows: list[dict[str, Any]], loop: str, client: str = "raw-floor") -> dict[str, Any] | None:
    """A floor's row on a loop, if it ran."""
    return next((x for x in rows if x["loop"] == loop and x["client"] == client and "cpu_s" in x), None)


def _num(v: float | None) -> str:
    return "–" if v is None or v != v else f"{v:.2f}"


def table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """Markdown table of all runs, with CPU relative to the raw floor on the same loop."""
    lines = [
        f"### {args.streams} streams × {args.rate:g} events/s × {args.duration:g} s through one client",
        "",
        "| loop | client | streams completed | events lost | errors | client CPU % of one core | "
        "CPU × raw floor | p50 ms | p99 ms | max ms | all streams started after s | "
        "steady p50 ms | steady p99 ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "completed" not in r:
            lines.append(f"| {r['loop']} | {r['client']} | FAIL: {r['first_error']} |" + " |" * 10)
            continue
        raw = _raw_of(rows, r["loop"])
        ratio = f"{r['cpu_s'] / raw['cpu_s']:.2f}×" if raw and raw["cpu_s"] else "–"
        err = f"{r['errors']}" + (f" ({r['first_error']})" if r["first_error"] else "")
        err += " (run hit the deadline)" if r["timed_out"] else ""
        lines.append(
            f"| {r['loop']} | {r['client']} | {r['completed']}/{r['streams']} | {r['lost']:,} | {err} | "
            f"{r['cpu_pct']:.1f} | {ratio} | {r['lat_p50_ms']:.2f} | {r['lat_p99_ms']:.2f} | "
            f"{r['lat_max_ms']:.2f} | {_num(r.get('all_started_s'))} | {_num(r.get('steady_p50_ms'))} | "
            f"{_num(r.get('steady_p99_ms'))} |"
        )
    return "\n".join(lines)


def targets(rows: list[dict[str, Any]]) -> list[str]:
    """Issue 6's 1,000-stream target for sonicsse, per loop."""
    out = []
    for r in rows:
        if r["client"] != "sonicsse" or "completed" not in r:
            continue
        raw = _raw_of(rows, r["loop"])
        cpu_x = r["cpu_s"] / raw["cpu_s"] if raw and raw["cpu_s"] else float("nan")
        ok = r["completed"] == r["streams"] and r["lost"] == 0 and cpu_x <= 1.3 and r["lat_p99_ms"] <= 50
        floors = []
        for name, what in (
            ("task-floor", "the task floor, a task woken per read and nothing else"),
            ("aiosonic-floor", "the same with each stream opened by aiosonic"),
        ):
            floor = _raw_of(rows, r["loop"], name)
            if floor and raw and raw["cpu_s"]:
                floors.append(f"{what}: {floor['cpu_s'] / raw['cpu_s']:.2f}×")
        binding = f" ({'; '.join(floors)})" if floors else ""
        out.append(
            f"- {r['loop']}: {r['completed']}/{r['streams']} complete, {r['lost']} lost, "
            f"CPU {cpu_x:.2f}× raw floor (≤ 1.3×){binding}, p99 {r['lat_p99_ms']:.1f} ms (≤ 50 ms): "
            + ("holds" if ok else "MISSED")
        )
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description="sonicsse concurrency benchmark")
    p.add_argument("--streams", type=int, default=1000)
    p.add_argument("--rate", type=float, default=20.0, help="events per second per stream")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per stream")
    p.add_argument("--grace", type=float, default=15.0, help="extra seconds before a run is cut off")
    p.add_argument("--clients", default=",".join(CLIENTS))
    p.add_argument("--loops", default="asyncio,uvloop")
    p.add_argument("--out", default=None, help="write the rows as JSON")
    p.add_argument("--no-pin", action="store_true")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--client", default="sonicsse", help=argparse.SUPPRESS)
    p.add_argument("--loop", default="asyncio", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run every client on every loop against one server; print the table; exit 1 if sonicsse lost events."""
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args)), flush=True)
        return 0
    raise_fd_limit()
    rows = []
    with running_server(1.0, [], not args.no_pin) as port:
        for loop in args.loops.split(","):
            for client in args.clients.split(","):
                print(f"[{loop} {client}] {args.streams} streams…", file=sys.stderr, flush=True)
                rows.append(run_one(args, client, loop, port))
    print(f"Machine: {machine()}\n")
    print(table(rows, args))
    print("\nTarget (issue 6), sonicsse:\n" + "\n".join(targets(rows)))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"machine": machine(), "args": vars(args), "rows": rows}, f, indent=1)
    bad = [
        r
        for r in rows
        if r["client"] == "sonicsse" and (r.get("lost") != 0 or r.get("completed") != args.streams)
    ]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
