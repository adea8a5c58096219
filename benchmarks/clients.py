"""The clients under test, and the per-measurement child process that runs one of them.

Every client reads one stream to its end and does the same user work per event: count it and add
``len(data)``. In latency mode (paced streams) it also records ``monotonic_ns() - send_ts`` per event.

``python -m benchmarks.clients --client NAME --loop asyncio|uvloop --url URL`` runs one measurement
in this (fresh) process and prints one JSON line; ``benchmarks.e2e`` starts it. For an https URL,
``--cafile`` names the CA to trust: every client gets the same ``SSLContext``, made before timing.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import ssl
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .server import pin_cpu, raise_fd_limit
from .workloads import PACED_WIDTH, WORKLOADS, event_count, make_events

#: The raw floor's read size: the most asyncio's selector loop and uvloop read per call.
RAW_READ_SIZE = 1 << 18

#: The SSLContext (trusting ``--cafile``) every client uses for https URLs; None for http.
TLS: ssl.SSLContext | None = None

__all__ = ["CLIENTS", "FLOORS", "Measurement", "percentile"]


class StreamEnd(Exception):
    """Raised from a client's end-of-stream hook where the library would otherwise reconnect forever."""


@dataclass
class Tally:
    """What one run received (kept up to date even when the run fails half-way)."""

    events: int = 0
    data_len: int = 0
    bytes: int = 0
    latencies_ns: list[int] = field(default_factory=list)


@dataclass
class Measurement:
    """One child run, as printed on stdout."""

    client: str
    loop: str
    events: int
    data_len: int
    bytes: int
    wall_s: float
    cpu_s: float
    rss_base_kib: int
    rss_peak_kib: int
    rss_end_kib: int
    lat_p50_us: float | None = None
    lat_p99_us: float | None = None
    lat_max_us: float | None = None
    error: str | None = None
    implementation: str | None = None


def percentile(values: list[int] | list[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return float(ordered[k])


# ----------------------------------------------------------------------------- consumption loops
# Inline per-event work (no helper call per event) so every client pays the same user cost.


async def consume_dicts(events: AsyncIterator[Any], tally: Tally, latency: bool) -> None:
    """Consume an async iterator of aiosonic-style event dicts."""
    n = size = 0
    lat = tally.latencies_ns
    now = time.monotonic_ns
    try:
        if latency:
            async for ev in events:
                t = now()
                d = ev["data"]
                n += 1
                size += len(d)
                lat.append(t - int(d[:PACED_WIDTH]))
        else:
            async for ev in events:
                n += 1
                size += len(ev["data"])
    except StreamEnd:
        pass
    finally:
        tally.events, tally.data_len = n, size


async def consume_objects(events: AsyncIterator[Any], tally: Tally, latency: bool) -> None:
    """Consume an async iterator of event objects with a ``.data`` attribute."""
    n = size = 0
    lat = tally.latencies_ns
    now = time.monotonic_ns
    try:
        if latency:
            async for ev in events:
                t = now()
                d = ev.data
                n += 1
                size += len(d)
                lat.append(t - int(d[:PACED_WIDTH]))
        else:
            async for ev in events:
                n += 1
                size += len(ev.data)
    except StreamEnd:
        pass
    finally:
        tally.events, tally.data_len = n, size


async def consume_batches(batches: AsyncIterator[list[Any]], tally: Tally, latency: bool) -> None:
    """Consume an async iterator of lists of event dicts (sonicsse ``iter_batches()``)."""
    n = size = 0
    lat = tally.latencies_ns
    now = time.monotonic_ns
    try:
        if latency:
            async for batch in batches:
                t = now()
                for ev in batch:
                    d = ev["data"]
                    n += 1
                    size += len(d)
                    lat.append(t - int(d[:PACED_WIDTH]))
        else:
            async for batch in batches:
                for ev in batch:
                    n += 1
                    size += len(ev["data"])
    finally:
        tally.events, tally.data_len = n, size


# ----------------------------------------------------------------------------- clients


async def run_sonicsse(url: str, tally: Tally, latency: bool) -> None:
    """sonicsse.SSEClient, plain ``async for``."""
    from sonicsse import SSEClient

    async with SSEClient() as client, client.connect(url, reconnect=False, ssl=TLS) as conn:
        await consume_dicts(conn, tally, latency)


async def run_sonicsse_batches(url: str, tally: Tally, latency: bool) -> None:
    """sonicsse.SSEClient, ``iter_batches()``."""
    from sonicsse import SSEClient

    async with SSEClient() as client, client.connect(url, reconnect=False, ssl=TLS) as conn:
        await consume_batches(conn.iter_batches(), tally, latency)


async def run_aiosonic(url: str, tally: Tally, latency: bool) -> None:
    """aiosonic.SSEClient with ``reconnect=False`` (otherwise it never ends)."""
    from aiosonic import HTTPClient, SSEClient

    http = HTTPClient()
    try:
        async with SSEClient(http).connect(url, reconnect=False, ssl=TLS) as conn:
            await consume_dicts(conn, tally, latency)
    finally:
        await http.aclose()


async def run_httpx_sse(url: str, tally: Tally, latency: bool) -> None:
    """httpx + httpx-sse ``aconnect_sse(...).aiter_sse()``."""
    import httpx
    from httpx_sse import aconnect_sse

    # verify=False for plain http: it skips loading the CA bundle (~60 ms) that would be charged to every
    # run although no TLS is used.
    async with (
        httpx.AsyncClient(timeout=None, verify=TLS or False) as client,
        aconnect_sse(client, "GET", url) as source,
    ):
        await consume_objects(source.aiter_sse(), tally, latency)


async def run_launchdarkly(url: str, tally: Tally, latency: bool) -> None:
    """launchdarkly-eventsource's AsyncSSEClient; its default error strategy ends at end of stream."""
    from ld_eventsource.async_client import AsyncSSEClient
    from ld_eventsource.config.async_connect_strategy import AsyncConnectStrategy

    connect = AsyncConnectStrategy.http(url, aiohttp_request_options={"ssl": TLS}) if TLS else url
    async with AsyncSSEClient(connect) as client:
        await consume_objects(client.events, tally, latency)


async def run_aiohttp_sse_client2(url: str, tally: Tally, latency: bool) -> None:
    """aiohttp-sse-client2 EventSource; it reconnects at end of stream, so its on_error hook ends it."""
    from datetime import timedelta

    from aiohttp_sse_client2.client import EventSource

    def end() -> None:
        raise StreamEnd

    tls = {"ssl": TLS} if TLS else {}  # passed on to aiohttp's request()
    async with EventSource(
        url, on_error=end, reconnection_time=timedelta(0), max_connect_retry=0, **tls
    ) as src:
        await consume_objects(src, tally, latency)


class _Discard(asyncio.BufferedProtocol):
    """The raw floor: counts and discards bytes (in latency mode, reads one send timestamp per read).

    Reads go into one preallocated buffer (``recv_into``). A plain ``Protocol`` is not a stable floor:
    asyncio (and uvloop) make a new bytes object of up to 256 KiB per read, which glibc serves either
    from ``mmap`` (page faults, then ``mremap``/``munmap``) or from the heap, depending on whether an
    earlier free raised its dynamic mmap threshold. The same run measured 16 or 45 ms per 64 MiB from
    one process to the next.
    """

    def __init__(self, tally: Tally, latency: bool, done: asyncio.Future[None]) -> None:
        self._tally = tally
        self._latency = latency
        self._done = done
        self._buffer = bytearray(RAW_READ_SIZE)
        self._view = memoryview(self._buffer)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        self._tally.bytes += nbytes
        if self._latency:
            t = time.monotonic_ns()
            data = self._buffer
            i = data.find(b"data: ", 0, nbytes)
            if i >= 0:
                self._tally.latencies_ns.append(t - int(data[i + 6 : i + 6 + PACED_WIDTH]))
            self._tally.events += data.count(b"data: ", 0, nbytes)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._done.done():
            self._done.set_result(None)


async def run_raw(
    url: str,
    tally: Tally,
    latency: bool,
    protocol: Callable[[Tally, bool, asyncio.Future[None]], _Discard] = _Discard,
) -> None:
    """Floor: a raw asyncio socket that sends the request and reads and discards the response
    (``protocol`` makes the reader: ``benchmarks.coupling`` gives one that also spends CPU)."""
    loop = asyncio.get_running_loop()
    parts = urlsplit(url)
    done: asyncio.Future[None] = loop.create_future()
    transport, _ = await loop.create_connection(
        lambda: protocol(tally, latency, done), parts.hostname, parts.port, ssl=TLS
    )
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    transport.write(f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode())
    await done


ClientFn = Callable[[str, Tally, bool], Awaitable[None]]

CLIENTS: dict[str, ClientFn] = {
    "sonicsse": run_sonicsse,
    "sonicsse-batches": run_sonicsse_batches,
    "sonicsse-py": run_sonicsse,
    "sonicsse-py-batches": run_sonicsse_batches,
    "aiosonic": run_aiosonic,
    "httpx-sse": run_httpx_sse,
    "launchdarkly": run_launchdarkly,
    "aiohttp-sse-client2": run_aiohttp_sse_client2,
    "raw-floor": run_raw,
}
FLOORS = ("raw-floor", "dict-floor")
PURE = ("sonicsse-py", "sonicsse-py-batches")

_IMPORTS = {
    "sonicsse": ("sonicsse", "sonicsse.client"),
    "aiosonic": ("aiosonic",),
    "httpx-sse": ("httpx", "httpx_sse"),
    "launchdarkly": ("ld_eventsource.async_client", "ld_eventsource.async_http", "aiohttp"),
    "aiohttp-sse-client2": ("aiohttp_sse_client2.client", "aiohttp"),
}


def dict_floor(events: list[tuple[str, str | None, str | None]], tally: Tally) -> tuple[float, float]:
    """Floor: build only the 4-key event dicts of a workload (no I/O); returns (wall, cpu) seconds."""
    n = size = 0
    w0, c0 = time.perf_counter(), time.process_time()
    for data, event, eid in events:
        ev = {"data": data, "event": event, "id": eid, "retry": None}
        n += 1
        size += len(ev["data"])
    w1, c1 = time.perf_counter(), time.process_time()
    tally.events, tally.data_len = n, size
    return w1 - w0, c1 - c0


# ----------------------------------------------------------------------------- the child process


def _rss_kib(key: str) -> int:
    """VmRSS or VmHWM of this process from /proc (0 where there is no /proc)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _reset_peak_rss() -> None:
    """Reset VmHWM so the peak measured covers the run only (Linux clear_refs "5")."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _preimport(client: str) -> str | None:
    """Import the client's modules before timing; returns sonicsse.IMPLEMENTATION where relevant."""
    import importlib

    key = "sonicsse" if client.startswith("sonicsse") else client
    for mod in _IMPORTS.get(key, ()):
        importlib.import_module(mod)
    if key == "sonicsse":
        import sonicsse

        want = "py" if client in PURE else "c"
        if want != sonicsse.IMPLEMENTATION:
            raise RuntimeError(f"sonicsse.IMPLEMENTATION is {sonicsse.IMPLEMENTATION!r}, expected {want!r}")
        return str(sonicsse.IMPLEMENTATION)
    return None


def _new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def _failed(client: str, loop_kind: str, error: str) -> Measurement:
    """A measurement that could not start."""
    return Measurement(client, loop_kind, 0, 0, 0, 0.0, 0.0, 0, 0, 0, error=error[:300])


def measure(
    client: str,
    loop_kind: str,
    url: str,
    workload: str,
    scale: float,
    timeout: float,
    cafile: str | None = None,
) -> Measurement:
    """Run one client over one stream in this process and measure it (over https: trusting ``cafile``)."""
    global TLS
    TLS = ssl.create_default_context(cafile=cafile) if url.startswith("https:") else None
    tally = Tally()
    error: str | None = None
    impl: str | None = None
    gc.collect()
    rss_base = _rss_kib("VmRSS")
    _reset_peak_rss()
    if client == "dict-floor":
        spec = WORKLOADS[workload]
        events = make_events(spec.kind, event_count(spec, scale))
        gc.collect()
        rss_base = _rss_kib("VmRSS")
        _reset_peak_rss()
        wall, cpu = dict_floor(events, tally)
    else:
        try:
            impl = _preimport(client)
        except Exception as exc:
            return _failed(client, loop_kind, f"{type(exc).__name__}: {exc}")
        loop = _new_loop(loop_kind)
        latency = "/paced" in url
        gc.collect()
        rss_base = _rss_kib("VmRSS")
        _reset_peak_rss()
        r0, w0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        try:
            loop.run_until_complete(asyncio.wait_for(CLIENTS[client](url, tally, latency), timeout))
        except BaseException as exc:  # a failing peer is reported, never dropped
            error = f"{type(exc).__name__}: {exc}"[:300]
        w1, r1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        wall = w1 - w0
        cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        loop.close()
    m = Measurement(
        client,
        loop_kind,
        tally.events,
        tally.data_len,
        tally.bytes,
        wall,
        cpu,
        rss_base,
        max(_rss_kib("VmHWM"), rss_base),
        _rss_kib("VmRSS"),
        error=error,
        implementation=impl,
    )
    if tally.latencies_ns:
        lat = tally.latencies_ns
        m.lat_p50_us = percentile(lat, 50) / 1e3
        m.lat_p99_us = percentile(lat, 99) / 1e3
        m.lat_max_us = max(lat) / 1e3
    return m


def main(argv: list[str] | None = None) -> None:
    """Child entry point: one measurement, one JSON line on stdout."""
    parser = argparse.ArgumentParser(description="one benchmark measurement (started by benchmarks.e2e)")
    parser.add_argument("--client", required=True, choices=[*CLIENTS, "dict-floor"])
    parser.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop"])
    parser.add_argument("--url", default="")
    parser.add_argument("--workload", default="bulk")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--cafile", default=None, help="the CA to trust for an https URL")
    args = parser.parse_args(argv)
    raise_fd_limit()
    if not args.no_pin:
        pin_cpu("client")
    m = measure(args.client, args.loop, args.url, args.workload, args.scale, args.timeout, args.cafile)
    sys.stdout.write(json.dumps(asdict(m)) + "\n")
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown (not part of any measurement)


if __name__ == "__main__":
    main()
