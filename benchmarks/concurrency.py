"""Concurrency benchmark: many paced streams through one client, in one process.

    python -m benchmarks.concurrency --streams 1000                  # 20 events/s per stream for 10 s
    python -m benchmarks.concurrency --streams 10000 --rate 2 --loops uvloop --reps 3
    python -m benchmarks.concurrency --streams 19900 --rate 1/60 --duration 65 --loops uvloop  # idle
    python -m benchmarks.concurrency --streams 1000 --tls            # the same over https (trustme)
    python -m benchmarks.concurrency --streams 1000 --http2          # HTTP/2 over TLS (h2 server)
    python -m benchmarks.concurrency --streams 50 --duration 2 --loops asyncio   # quick

Every stream is ``GET /paced`` on the benchmark server (its own uvloop process, pinned to the last
CPU); every event's data starts with the server's ``monotonic_ns()`` at the write. A stream carries
``round(rate × duration)`` events, the first at once, then one every ``1 / rate`` s. Each client runs
in a fresh process pinned to the first CPU and opens all streams at once, through **one** client
object: sonicsse through one ``SSEClient`` (its pool as large as the stream count), aiosonic through one
``SSEClient`` with its default pool and with a pool as large as the stream count, httpx-sse through one
``httpx.AsyncClient`` without connection limits, launchdarkly-eventsource with one shared
``aiohttp.ClientSession`` without connection limits; and three floors: the raw socket (read, count
events, discard, into one buffer shared by every stream), the task floor (the same, with a task woken
per read) and the aiosonic floor (the task floor, each stream opened by aiosonic).

Reported, per client and loop (medians over ``--reps`` interleaved reps): streams completed, events lost
(every event is counted), client CPU % of one core over the run, peak RSS per stream (the client
process's peak RSS over the run minus its RSS before the first stream was opened, divided by the
stream count), p50/p99/max latency from the server's write to user code, the ramp (how long from the
start until every stream had received its first event), and the latency of the events sent after that
(steady state, without the connect storm). The open-files limit is raised to the hard limit in every
process; the largest stream count is a little under that limit (the client needs one descriptor per
stream).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import resource
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Awaitable, Callable, Iterator
from fractions import Fraction
from typing import Any
from urllib.parse import urlsplit

from .clients import _preimport, _reset_peak_rss, _rss_kib, percentile
from .e2e import ROOT, machine, running_server
from .server import pin_cpu, raise_fd_limit, tls_files
from .workloads import PACED_WIDTH

CLIENTS = (
    "sonicsse", "raw-floor", "task-floor", "aiosonic-floor", "aiosonic", "aiosonic-pool", "httpx-sse",
    "launchdarkly",
)  # fmt: skip
#: Run unless --clients says otherwise: aiosonic's default pool (30 connections) makes the other streams
#: queue, so it only ever runs into the deadline; name it in --clients to see that.
DEFAULT_CLIENTS = tuple(c for c in CLIENTS if c != "aiosonic")
#: The clients that can speak HTTP/2 (--http2): each through its own HTTP/2 support (the raw floor: one
#: connection per stream, its preface and request written as bytes, the response discarded).
H2_CLIENTS = ("sonicsse", "raw-floor", "httpx-sse", "aiosonic-pool")
#: Descriptors a client process needs besides its streams (stdio, the event loop, imports).
SPARE_FDS = 64

#: The SSLContext (trusting the run's CA) every client uses with --tls / --http2; None over http.
TLS: ssl.SSLContext | None = None
#: --http2: ask for HTTP/2 (ALPN) where the client can.
HTTP2 = False
#: --connect-timeout: how long a client may take to connect a stream (and, for the HTTP clients, to get
#: its response head), so that the connect storm of thousands of streams does not count as lost streams.
CONNECT_TIMEOUT = 60.0
#: --max-opening: SSEClient(max_opening=...) for sonicsse ("default": the library's own default).
MAX_OPENING = "default"


def aiosonic_timeouts() -> Any:
    """aiosonic's Timeouts for sonicsse and aiosonic: its defaults (a 5 s connect timeout, 30 s to read)
    with the connect timeout and the time to the response head raised to --connect-timeout, and 300 s to
    read (as sonicsse's read_timeout), so that idle streams are not cut."""
    from aiosonic.timeout import Timeouts

    return Timeouts(sock_connect=CONNECT_TIMEOUT, sock_read=300, request_timeout=CONNECT_TIMEOUT)


class StreamStats:
    """What all streams of one run received. The sample arrays are made before the baseline RSS is
    taken, so that the samples do not count as per-stream memory."""

    def __init__(self, expected: int, streams: int) -> None:
        self.expected = expected
        self.completed = 0
        self.events = 0
        self.errors = 0
        self.first_error: str | None = None
        size = expected * streams
        self.latencies_ns = array("q", bytes(8 * size))
        self.sent_ns = array("q", bytes(8 * size))  # the server's send time of each latency sample
        self.samples = 0
        self.first_sent_ns = array("q", bytes(8 * streams))  # per stream: send time of its first event
        self.first_recv_ns = array("q", bytes(8 * streams))  # per stream: when it reached user code
        self.started = 0

    def record(self, now: int, sent: int) -> None:
        """One latency sample."""
        k = self.samples
        if k < len(self.latencies_ns):
            self.latencies_ns[k] = now - sent
            self.sent_ns[k] = sent
            self.samples = k + 1

    def first(self, now: int, sent: int) -> None:
        """A stream's first event."""
        k = self.started
        if k < len(self.first_sent_ns):
            self.first_sent_ns[k] = sent
            self.first_recv_ns[k] = now
            self.started = k + 1

    def read(self, data: bytes | bytearray | memoryview, now: int, first: bool) -> int:
        """A floor's raw read: count its events, sample the latency of the first; returns the count."""
        data = bytes(data)
        n = data.count(b"data: ")
        if n:
            i = data.find(b"data: ")
            sent = int(data[i + 6 : i + 6 + PACED_WIDTH])
            if first:
                self.first(now, sent)
            self.record(now, sent)
        return n

    def lat(self) -> list[int]:
        """Every latency sample."""
        return self.latencies_ns[: self.samples].tolist()

    def steady(self) -> list[int]:
        """Latencies of events sent after every stream had started (the connect storm excluded)."""
        if self.started == 0:
            return []
        start = max(self.first_sent_ns[: self.started])
        sent = self.sent_ns
        return [lat for k, lat in enumerate(self.latencies_ns[: self.samples]) if sent[k] > start]

    def fail(self, exc: BaseException) -> None:
        """Record one failed stream."""
        self.errors += 1
        if self.first_error is None:
            self.first_error = f"{type(exc).__name__}: {exc}"[:200]

    def end(self, events: int) -> None:
        """A stream ended (or was cut off) with ``events`` events."""
        self.events += events
        self.completed += events == self.expected


# ----------------------------------------------------------------------------- clients


async def _dict_stream(connect: Callable[[], Any], st: StreamStats) -> None:
    """One stream of a client whose events are dicts (sonicsse, aiosonic): ``async for`` over them."""
    n = 0
    record = st.record
    now = time.monotonic_ns
    try:
        async with connect() as conn:
            async for ev in conn:
                t = now()
                sent = int(ev["data"][:PACED_WIDTH])
                if n == 0:
                    st.first(t, sent)
                n += 1
                record(t, sent)
    except Exception as exc:
        st.fail(exc)
    finally:  # also when the run's deadline cancels this stream: count what it got
        st.end(n)


async def _object_stream(events: Any, st: StreamStats) -> int:
    """``async for`` over events with a ``.data`` attribute (httpx-sse, launchdarkly); returns the count."""
    n = 0
    record = st.record
    now = time.monotonic_ns
    try:
        async for ev in events:
            t = now()
            sent = int(ev.data[:PACED_WIDTH])
            if n == 0:
                st.first(t, sent)
            n += 1
            record(t, sent)
    finally:
        st.end(n)
    return n


async def run_sonicsse(urls: list[str], st: StreamStats) -> None:
    """All streams through one sonicsse.SSEClient, its pool as large as the stream count."""
    from sonicsse import SSEClient

    timeouts = aiosonic_timeouts()
    options: dict[str, Any] = {}
    if MAX_OPENING != "default":
        options["max_opening"] = None if MAX_OPENING == "none" else int(MAX_OPENING)
    async with SSEClient(pool_size=max(1024, len(urls)), **options) as client:

        def connect(url: str) -> Callable[[], Any]:
            return lambda: client.connect(
                url, reconnect=False, ssl=TLS, http2=HTTP2, timeouts=timeouts, read_timeout=300
            )

        await asyncio.gather(*(_dict_stream(connect(u), st) for u in urls))


async def run_aiosonic(urls: list[str], st: StreamStats, pool: int | None) -> None:
    """All streams through one aiosonic.SSEClient (default pool, or a pool of ``pool`` connections)."""
    from aiosonic import HTTPClient, SSEClient
    from aiosonic.connectors import TCPConnector
    from aiosonic.pools import PoolConfig

    timeouts = aiosonic_timeouts()
    connector = TCPConnector(
        pool_configs={":default": PoolConfig(size=pool or 30)}, http2=HTTP2, timeouts=timeouts
    )
    http = HTTPClient(connector=connector)
    client = SSEClient(http)

    def connect(url: str) -> Callable[[], Any]:
        if HTTP2:
            return lambda: client.connect(url, reconnect=False, ssl=TLS, http2=True, timeouts=timeouts)
        return lambda: client.connect(url, reconnect=False, ssl=TLS, timeouts=timeouts)

    try:
        await asyncio.gather(*(_dict_stream(connect(u), st) for u in urls))
    finally:
        await http.aclose()


async def run_httpx_sse(urls: list[str], st: StreamStats) -> None:
    """All streams through one httpx.AsyncClient (no connection limits) and httpx-sse's aiter_sse()."""
    import httpx
    from httpx_sse import aconnect_sse

    async def one(client: httpx.AsyncClient, url: str) -> None:
        try:
            async with aconnect_sse(client, "GET", url) as source:
                await _object_stream(source.aiter_sse(), st)
        except Exception as exc:
            st.fail(exc)

    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    # verify=False over http: it skips loading the CA bundle, no TLS is used.
    async with httpx.AsyncClient(timeout=None, verify=TLS or False, limits=limits, http2=HTTP2) as client:
        await asyncio.gather(*(one(client, u) for u in urls))


async def run_launchdarkly(urls: list[str], st: StreamStats) -> None:
    """One ld_eventsource.AsyncSSEClient per stream, sharing one aiohttp session without a
    connection limit; its default error strategy ends each stream at its end."""
    import aiohttp
    from ld_eventsource.async_client import AsyncSSEClient
    from ld_eventsource.config.async_connect_strategy import AsyncConnectStrategy

    options = {"ssl": TLS} if TLS else None

    async def one(session: aiohttp.ClientSession, url: str) -> None:
        try:
            connect = AsyncConnectStrategy.http(url, session=session, aiohttp_request_options=options)
            async with AsyncSSEClient(connect) as client:
                await _object_stream(client.events, st)
        except Exception as exc:
            st.fail(exc)

    timeout = aiohttp.ClientTimeout(total=None)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:
        await asyncio.gather(*(one(session, u) for u in urls))


#: The raw floor's read buffer, shared by every stream: it counts and discards each read at once.
_SHARED = bytearray(1 << 16)
_SHARED_VIEW = memoryview(_SHARED)


class _RawStream(asyncio.BufferedProtocol):
    """Raw floor: count events, take the send timestamp of the first event of each read, discard.

    Reads go into one preallocated buffer shared by every stream (see ``_Discard`` in
    ``benchmarks.clients`` for why a plain ``Protocol`` is not a stable floor): per stream, only the
    socket, the transport and this object remain.
    """

    def __init__(self, st: StreamStats, done: asyncio.Future[None]) -> None:
        self._st = st
        self._done = done
        self.events = 0

    def get_buffer(self, sizehint: int) -> memoryview:
        return _SHARED_VIEW

    def buffer_updated(self, nbytes: int) -> None:
        self.events += self._st.read(_SHARED_VIEW[:nbytes], time.monotonic_ns(), self.events == 0)
        if HTTP2 and self.events >= self._st.expected and not self._done.done():
            self._done.set_result(None)  # an HTTP/2 connection outlives its stream

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._done.done():
            self._done.set_result(None)


def _request(url: str) -> tuple[str, int, bytes]:
    """Host, port and the bytes that ask for ``url`` (with --http2: the connection preface, a window of
    1 GiB for the connection and the stream, and the request on stream 1)."""
    parts = urlsplit(url)
    target = f"{parts.path}?{parts.query}"
    if HTTP2:
        import h2.config
        import h2.connection

        h2conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        h2conn.initiate_connection()
        h2conn.increment_flow_control_window(1 << 30)
        headers = [(":method", "GET"), (":scheme", "https"), (":authority", parts.netloc), (":path", target)]
        h2conn.send_headers(1, headers, end_stream=True)
        h2conn.increment_flow_control_window(1 << 30, stream_id=1)
        return parts.hostname or "", parts.port or 0, h2conn.data_to_send()
    return (
        parts.hostname or "",
        parts.port or 0,
        f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode(),
    )


async def _raw_stream(url: str, st: StreamStats) -> None:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    proto = _RawStream(st, done)
    host, port, request = _request(url)
    try:
        transport, _ = await loop.create_connection(lambda: proto, host, port, ssl=TLS)
        transport.write(request)
        await done
        transport.close()
    except Exception as exc:
        st.fail(exc)
    finally:  # also when the run's deadline cancels this stream: count what it got
        st.end(proto.events)


class _TaskFloorStream(asyncio.BufferedProtocol):
    """Task floor: the raw floor's socket, but each read is handed to a waiting coroutine.

    This is the least any client that delivers events to ``async for`` code must add to the raw floor:
    a future per read, and a task woken to consume it. No HTTP, no parsing. The unread bytes wait in a
    per-stream buffer of 4 KiB (doubled when a read finds it full).
    """

    def __init__(self) -> None:
        self.buffer = bytearray(1 << 12)
        self.view = memoryview(self.buffer)
        self.end = 0
        self.closed = False
        self.waiter: asyncio.Future[None] | None = None
        self.owner: Any = None  # kept alive while the stream is read (aiosonic's response owns its socket)

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.end == len(self.buffer):  # the consumer is behind
            grown = bytearray(2 * len(self.buffer))
            grown[: self.end] = self.buffer
            self.buffer, self.view = grown, memoryview(grown)
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
            data = proto.view[: proto.end]
            events += st.read(data, now(), events == 0)
            proto.end = 0
        transport.close()
    except Exception as exc:
        st.fail(exc)
    finally:
        st.end(events)


async def _task_floor_stream(url: str, st: StreamStats) -> None:
    proto = _TaskFloorStream()
    host, port, request = _request(url)

    async def open_stream() -> asyncio.BaseTransport:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_connection(lambda: proto, host, port, ssl=TLS)
        transport.write(request)
        return transport

    await _consume_as_task(proto, open_stream, st)


async def _aiosonic_floor_stream(http: Any, url: str, st: StreamStats) -> None:
    proto = _TaskFloorStream()

    async def open_stream() -> asyncio.BaseTransport:
        # aiosonic sends the request, reads the head
        response = await http.request(url, ssl=TLS, timeouts=aiosonic_timeouts())
        proto.owner = response
        reader = response._connection.reader
        writer = response._connection.writer
        transport: asyncio.BaseTransport = writer.transport  # under TLS, the TLS transport
        initial = bytes(reader._buffer)
        reader._buffer.clear()
        if len(initial) > len(proto.buffer):
            proto.buffer = bytearray(initial)
            proto.view = memoryview(proto.buffer)
        proto.view[: len(initial)] = initial
        proto.end = len(initial)
        transport.set_protocol(proto)
        if not transport.is_reading():  # type: ignore[attr-defined]
            transport.resume_reading()  # type: ignore[attr-defined]
        return transport

    await _consume_as_task(proto, open_stream, st)


async def run_aiosonic_floor(urls: list[str], st: StreamStats) -> None:
    """The task floor, with each stream opened by aiosonic (as sonicsse opens them)."""
    from aiosonic import HTTPClient
    from aiosonic.connectors import TCPConnector
    from aiosonic.pools import PoolConfig

    http = HTTPClient(
        connector=TCPConnector(pool_configs={":default": PoolConfig(size=max(1024, len(urls)))})
    )
    try:
        await asyncio.gather(*(_aiosonic_floor_stream(http, u, st) for u in urls))
    finally:
        await http.aclose()


async def run_task_floor(urls: list[str], st: StreamStats) -> None:
    """All streams as raw asyncio sockets, each read consumed by a task."""
    await asyncio.gather(*(_task_floor_stream(u, st) for u in urls))


async def run_raw(urls: list[str], st: StreamStats) -> None:
    """All streams as raw asyncio sockets."""
    await asyncio.gather(*(_raw_stream(u, st) for u in urls))


RUNNERS: dict[str, Callable[[list[str], StreamStats], Awaitable[None]]] = {
    "sonicsse": run_sonicsse,
    "raw-floor": run_raw,
    "task-floor": run_task_floor,
    "aiosonic-floor": run_aiosonic_floor,
    "aiosonic": lambda urls, st: run_aiosonic(urls, st, None),
    "aiosonic-pool": lambda urls, st: run_aiosonic(urls, st, max(1000, len(urls))),
    "httpx-sse": run_httpx_sse,
    "launchdarkly": run_launchdarkly,
}
_LIBRARY = {"aiosonic-floor": "aiosonic", "aiosonic-pool": "aiosonic"}


# ----------------------------------------------------------------------------- the child process


class GCTimer:
    """The time the cyclic garbage collector takes over a run, per generation (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.counts = [0, 0, 0]
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            generation = info["generation"]
            self.seconds[generation] += time.perf_counter() - self._start
            self.counts[generation] += 1


def events_per_stream(rate: float, duration: float) -> int:
    """Events in one stream: the first at once, then one every 1/rate s (at least 1)."""
    return max(1, round(rate * duration))


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One client over all streams in this process; returns the measurement."""
    global TLS, HTTP2, CONNECT_TIMEOUT, MAX_OPENING
    fd_limit = raise_fd_limit()
    if not args.no_pin:
        pin_cpu("client")
    if args.streams + SPARE_FDS > fd_limit:
        need = args.streams + SPARE_FDS
        why = f"{args.streams} streams need {need} open files; this machine allows {fd_limit}"
        return {"client": args.client, "loop": args.loop, "first_error": why}
    per_stream = events_per_stream(args.rate, args.duration)
    scheme = "https" if args.cafile else "http"
    url = f"{scheme}://127.0.0.1:{args.port}/paced?n={per_stream}&interval_us={round(1e6 / args.rate)}"
    urls = [url] * args.streams
    if args.cafile:
        TLS = ssl.create_default_context(cafile=args.cafile)
        if args.http2:
            TLS.set_alpn_protocols(["h2", "http/1.1"])
    HTTP2 = args.http2
    CONNECT_TIMEOUT = args.connect_timeout
    MAX_OPENING = args.max_opening
    library = _LIBRARY.get(args.client, args.client)
    if library in ("sonicsse", "aiosonic", "httpx-sse", "launchdarkly"):
        _preimport(library)  # not timed, not counted as per-stream memory
    if library == "sonicsse":
        print(f"sonicsse from {sys.modules['sonicsse'].__file__}", file=sys.stderr)
    if args.loop == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    st = StreamStats(per_stream, args.streams)
    coro = RUNNERS[args.client](urls, st)
    deadline = args.duration + args.grace
    gc.collect()
    rss_base = _rss_kib("VmRSS")
    maxrss_base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _reset_peak_rss()
    gc_timer = GCTimer()
    gc.callbacks.append(gc_timer)
    r0, w0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter(), time.monotonic_ns()
    timed_out = False
    try:
        loop.run_until_complete(asyncio.wait_for(coro, deadline))
    except asyncio.TimeoutError:
        timed_out = True
    w1, r1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    gc.callbacks.remove(gc_timer)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    # VmHWM was reset at the baseline; without /proc, ru_maxrss (never reset) stands in.
    peak = _rss_kib("VmHWM") or r1.ru_maxrss
    lat = st.lat()
    steady = st.steady()
    started = st.first_recv_ns[: st.started]
    return {
        "client": args.client, "loop": args.loop, "streams": args.streams, "completed": st.completed,
        "events": st.events, "expected_events": per_stream * args.streams,
        "lost": per_stream * args.streams - st.events, "errors": st.errors, "first_error": st.first_error,
        "timed_out": timed_out, "wall_s": w1 - w0, "cpu_s": cpu, "cpu_pct": 100 * cpu / (w1 - w0),
        "rss_base_kib": rss_base, "rss_peak_kib": max(peak, rss_base), "maxrss_base_kib": maxrss_base,
        "maxrss_kib": r1.ru_maxrss, "rss_per_stream_kib": max(peak - rss_base, 0) / args.streams,
        "fd_limit": fd_limit, "gc_s": sum(gc_timer.seconds), "gc_full_s": gc_timer.seconds[2],
        "gc_full": gc_timer.counts[2],
        "lat_p50_ms": percentile(lat, 50) / 1e6, "lat_p99_ms": percentile(lat, 99) / 1e6,
        "lat_max_ms": (max(lat) / 1e6) if lat else float("nan"),
        "ramp_s": (max(started) - t0) / 1e9 if len(started) == args.streams else None,
        "all_started_s": (max(st.first_sent_ns[: st.started]) - min(st.first_sent_ns[: st.started])) / 1e9
        if st.started else None,
        "steady_p50_ms": percentile(steady, 50) / 1e6, "steady_p99_ms": percentile(steady, 99) / 1e6,
    }  # fmt: skip


# ----------------------------------------------------------------------------- the parent


def run_one(
    args: argparse.Namespace, client: str, loop: str, port: int, cafile: str | None
) -> dict[str, Any]:
    """Start one child process for a client and loop; returns its measurement (or the failure)."""
    env = dict(os.environ)
    name, _, variant = client.partition("@")
    if variant:  # sonicsse@NAME: sonicsse imported from the source tree given by --sonicsse NAME=DIR
        env["PYTHONPATH"] = os.pathsep.join([args.variants[variant], env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
    cmd = [sys.executable, "-m", "benchmarks.concurrency", "--child", "--client", name, "--loop", loop,
           "--port", str(port), "--streams", str(args.streams), "--rate", str(args.rate),
           "--duration", str(args.duration), "--grace", str(args.grace),
           "--connect-timeout", str(args.connect_timeout), "--max-opening", args.max_opening]  # fmt: skip
    if args.no_pin:
        cmd.append("--no-pin")
    if cafile:
        cmd += ["--cafile", cafile]
    if args.http2:
        cmd.append("--http2")
    if args.py_spy and name == "sonicsse":
        out = f"{args.py_spy}-{client}-{loop}.txt"
        cmd = ["py-spy", "record", "--native", "--rate", "250", "--format", "raw", "--output", out,
               "--", *cmd]  # fmt: skip
    limit = args.duration + args.grace + 30
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=limit)
        if variant:
            found = [x for x in proc.stderr.splitlines() if x.startswith("sonicsse from ")]
            if not found or not found[-1].endswith(args.variants[variant] + "/sonicsse/__init__.py"):
                return {"client": client, "loop": loop, "first_error": f"wrong sonicsse: {found}"}
        lines = [line for line in proc.stdout.strip().splitlines() if line.startswith("{")]
        row = dict(json.loads(lines[-1]))
        row["client"] = client
        return row
    except subprocess.TimeoutExpired:
        return {"client": client, "loop": loop, "first_error": f"killed after {limit:.0f} s"}
    except (json.JSONDecodeError, IndexError):
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"client": client, "loop": loop, "first_error": f"crashed: {tail}"[:200]}


def _rotated(items: list[str], k: int) -> list[str]:
    k %= max(1, len(items))
    return items[k:] + items[:k]


def _of(rows: list[dict[str, Any]], rep: int, loop: str, client: str) -> dict[str, Any] | None:
    """A client's measured row of one rep on a loop, if it ran."""
    return next(
        (x for x in rows if (x["rep"], x["loop"], x["client"]) == (rep, loop, client) and "cpu_s" in x), None
    )


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None and v == v]
    return statistics.median(present) if present else None


#: The measurements summarised as medians over reps.
MEDIANS = (
    "cpu_pct", "cpu_s", "rss_per_stream_kib", "rss_peak_kib", "rss_base_kib", "lat_p50_ms", "lat_p99_ms",
    "lat_max_ms", "ramp_s", "steady_p50_ms", "steady_p99_ms", "wall_s", "gc_s",
)  # fmt: skip


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (loop, client): medians over reps, ratios to the raw floor taken inside each rep."""
    out = []
    keys = list(dict.fromkeys((r["loop"], r["client"]) for r in rows))
    for loop, client in keys:
        reps = [r for r in rows if (r["loop"], r["client"]) == (loop, client)]
        ran = [r for r in reps if "cpu_s" in r]
        s: dict[str, Any] = {"loop": loop, "client": client, "reps": len(reps), "ran": len(ran)}
        if not ran:
            s["first_error"] = reps[0].get("first_error")
            out.append(s)
            continue
        s["streams"] = ran[0]["streams"]
        s["completed"] = min(r["completed"] for r in ran)
        s["lost"] = sum(r["lost"] for r in reps if "lost" in r)
        s["lost_max"] = max(r["lost"] for r in ran)
        s["errors"] = sum(r["errors"] for r in ran)
        s["first_error"] = next((r["first_error"] for r in reps if r.get("first_error")), None)
        s["timed_out"] = sum(bool(r.get("timed_out")) for r in ran)
        for key in MEDIANS:
            s[key] = _median([r.get(key) for r in ran])
        cpu_x, rss_x = [], []
        for r in ran:
            raw = _of(rows, r["rep"], loop, "raw-floor")
            if raw and raw["cpu_s"]:
                cpu_x.append(r["cpu_s"] / raw["cpu_s"])
            if raw and raw["rss_per_stream_kib"]:
                rss_x.append(r["rss_per_stream_kib"] / raw["rss_per_stream_kib"])
        s["cpu_x_raw"] = _median(list(cpu_x))
        s["rss_x_raw"] = _median(list(rss_x))
        s["cpu_x_raw_reps"] = cpu_x
        out.append(s)
    return out


def _num(v: float | None, fmt: str = "{:.2f}") -> str:
    return "–" if v is None or v != v else fmt.format(v)


def title(args: argparse.Namespace) -> str:
    """What one run measured, in words."""
    over = " over HTTP/2 (TLS)" if args.http2 else " over TLS" if args.tls else ""
    rate = str(Fraction(args.rate).limit_denominator(1000)) if args.rate < 1 else f"{args.rate:g}"
    n = events_per_stream(args.rate, args.duration)
    return f"{args.streams:,} streams × {rate} events/s ({n} per stream) through one client{over}"


def table(summary: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """Markdown table of the medians, with CPU and RSS relative to the raw floor on the same loop."""
    reps = f", median of {args.reps} reps" if args.reps > 1 else ""
    lines = [
        f"### {title(args)}{reps}",
        "",
        "| loop | client | streams completed | events lost | errors | client CPU % of one core | "
        "CPU × raw floor | of which GC s | peak RSS KiB per stream | RSS × raw floor | p50 ms | p99 ms | "
        "max ms | ramp s | steady p99 ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summary:
        if not s["ran"]:
            lines.append(f"| {s['loop']} | {s['client']} | FAIL: {s['first_error']} |" + " |" * 12)
            continue
        err = f"{s['errors']}" + (f" ({s['first_error']})" if s["first_error"] else "")
        err += f" ({s['timed_out']} runs hit the deadline)" if s["timed_out"] else ""
        lines.append(
            f"| {s['loop']} | {s['client']} | {s['completed']}/{s['streams']} | {s['lost']:,} | {err} | "
            f"{_num(s['cpu_pct'], '{:.1f}')} | {_num(s['cpu_x_raw'], '{:.2f}×')} | {_num(s['gc_s'])} | "
            f"{_num(s['rss_per_stream_kib'], '{:.1f}')} | {_num(s['rss_x_raw'], '{:.2f}×')} | "
            f"{_num(s['lat_p50_ms'])} | {_num(s['lat_p99_ms'])} | {_num(s['lat_max_ms'])} | "
            f"{_num(s['ramp_s'])} | {_num(s['steady_p99_ms'])} |"
        )
    return "\n".join(lines)


def targets(summary: list[dict[str, Any]], args: argparse.Namespace) -> list[str]:
    """sonicsse against its targets, per loop: every event, CPU ≤ 1.3× and peak RSS per stream ≤ 1.5×
    the raw floor's (≤ 2× for idle streams, under one event a second), p99 ≤ 50 ms."""
    rss_bound = 2.0 if args.rate < 1 else 1.5
    out = []
    for s in summary:
        if s["client"].partition("@")[0] != "sonicsse" or not s["ran"]:
            continue
        cpu_x, rss_x = s["cpu_x_raw"], s["rss_x_raw"]
        ok = (
            s["completed"] == s["streams"] and s["lost"] == 0 and cpu_x is not None and cpu_x <= 1.3
            and rss_x is not None and rss_x <= rss_bound and s["lat_p99_ms"] is not None
            and s["lat_p99_ms"] <= 50
        )  # fmt: skip
        floors = []
        for name, what in (("task-floor", "task floor"), ("aiosonic-floor", "aiosonic floor")):
            floor = next(
                (f for f in summary if (f["loop"], f["client"]) == (s["loop"], name) and f["ran"]), None
            )
            if floor and floor["cpu_x_raw"]:
                floors.append(f"{what} {floor['cpu_x_raw']:.2f}×")
        binding = f" ({', '.join(floors)})" if floors else ""
        out.append(
            f"- {s['client']}, {s['loop']}: {s['completed']}/{s['streams']} complete, {s['lost']} lost, "
            f"CPU {_num(cpu_x, '{:.2f}×')} raw floor (≤ 1.3×){binding}, "
            f"RSS per stream {_num(rss_x, '{:.2f}×')} raw floor's (≤ {rss_bound:g}×), "
            f"p99 {_num(s['lat_p99_ms'], '{:.1f}')} ms (≤ 50 ms): " + ("holds" if ok else "MISSED")
        )
    return out


@contextlib.contextmanager
def serving(args: argparse.Namespace) -> Iterator[tuple[int, str | None]]:
    """The benchmark server for this run (https with --tls, the HTTP/2 server with --http2); yields its
    port and the CA file the clients trust (None over http)."""
    with tempfile.TemporaryDirectory() as tmp:
        if not (args.tls or args.http2):
            with running_server(1.0, [], not args.no_pin) as port:
                yield port, None
            return
        cafile, certfile = tls_files(tmp)
        if not args.http2:
            with running_server(1.0, [], not args.no_pin, certfile) as port:
                yield port, cafile
            return
        from .h2server import running_h2_server

        with running_h2_server(certfile, not args.no_pin) as port:
            yield port, cafile


def parse_rate(text: str) -> float:
    """Events per second: a number or a fraction (``1/60`` is one event a minute)."""
    return float(Fraction(text))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description="sonicsse concurrency benchmark")
    p.add_argument("--streams", type=int, default=1000)
    p.add_argument("--rate", type=parse_rate, default=20.0, help="events per second per stream (1/60 works)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per stream")
    p.add_argument("--grace", type=float, default=15.0, help="extra seconds before a run is cut off")
    p.add_argument("--clients", default=",".join(DEFAULT_CLIENTS), help=f"any of {','.join(CLIENTS)}")
    p.add_argument("--loops", default="asyncio,uvloop")
    p.add_argument(
        "--connect-timeout",
        type=float,
        default=CONNECT_TIMEOUT,
        help="seconds a client may take to open a stream (sonicsse and aiosonic default to 5 s)",
    )
    p.add_argument(
        "--max-opening",
        default=MAX_OPENING,
        help="sonicsse's SSEClient(max_opening=N): streams opened at once ('none': no limit; 'default')",
    )
    p.add_argument("--reps", type=int, default=1, help="interleaved reps; the tables show medians")
    p.add_argument("--tls", action="store_true", help="over https: a throw-away CA and certificate (trustme)")
    p.add_argument("--http2", action="store_true", help="HTTP/2 over TLS to an h2 server (implies --tls)")
    p.add_argument("--out", default=None, help="write every rep and the medians as JSON")
    p.add_argument(
        "--py-spy",
        default=None,
        metavar="PREFIX",
        help="record sonicsse's runs with py-spy (--native, raw stacks) to PREFIX-<client>-<loop>.txt",
    )
    p.add_argument(
        "--sonicsse",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="also run client sonicsse@NAME: sonicsse imported from DIR (a source tree's src), e.g. to "
        "compare two builds in one run (add sonicsse@NAME to --clients)",
    )
    p.add_argument("--no-pin", action="store_true")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--client", default="sonicsse", help=argparse.SUPPRESS)
    p.add_argument("--loop", default="asyncio", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--cafile", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.tls = args.tls or args.http2
    args.variants = {}
    for item in args.sonicsse:
        name, _, directory = item.partition("=")
        args.variants[name] = os.path.abspath(directory)
    return args


def main(argv: list[str] | None = None) -> int:
    """Run every client on every loop against one server; print the table; exit 1 if sonicsse lost events."""
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args)), flush=True)
        os._exit(0)  # skip tearing down thousands of objects (not part of any measurement)
    fd_limit = raise_fd_limit()
    clients = [c for c in args.clients.split(",") if c]
    if args.http2:
        skipped = [c for c in clients if c.partition("@")[0] not in H2_CLIENTS]
        if skipped:
            print(f"--http2: skipping {', '.join(skipped)} (no HTTP/2)", file=sys.stderr)
        clients = [c for c in clients if c not in skipped]
    rows: list[dict[str, Any]] = []
    with serving(args) as (port, cafile):
        for rep in range(args.reps):
            for loop in args.loops.split(","):
                for client in _rotated(clients, rep):
                    print(f"[rep {rep + 1}/{args.reps} {loop} {client}] {args.streams} streams…",
                          file=sys.stderr, flush=True)  # fmt: skip
                    row = run_one(args, client, loop, port, cafile)
                    row["rep"] = rep
                    rows.append(row)
                    if "cpu_s" in row:
                        done = (
                            f"    cpu {row['cpu_pct']:.1f} %, {row['rss_per_stream_kib']:.1f} KiB/stream, "
                            f"lost {row['lost']}, ramp {_num(row['ramp_s'])} s"
                        )
                        print(done, file=sys.stderr, flush=True)
                    else:
                        print(f"    {row.get('first_error')}", file=sys.stderr, flush=True)
    summary = summarise(rows)
    print(f"Machine: {machine()}; open files allowed: {fd_limit}\n")
    print(table(summary, args))
    print("\nTargets, sonicsse:\n" + "\n".join(targets(summary, args)))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(
                {"machine": machine(), "args": vars(args), "rows": rows, "summary": summary}, f, indent=1
            )
    bad = [
        s
        for s in summary
        if s["client"].partition("@")[0] == "sonicsse"
        and (s.get("lost") != 0 or s.get("completed") != args.streams)
    ]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
