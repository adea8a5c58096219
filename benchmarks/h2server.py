"""The HTTP/2 benchmark server: ``GET /paced`` over HTTP/2 (TLS, ALPN ``h2``), its own uvloop process.

``GET /paced?n=N&interval_us=U`` answers 200 ``text/event-stream`` with N token events, one every U µs
(absolute deadlines), each data starting with the server's ``time.monotonic_ns()`` at the write, as
``benchmarks.server`` does over HTTP/1.1; each event is one DATA frame, and the stream ends after the
last. Any number of streams per connection (``SETTINGS_MAX_CONCURRENT_STREAMS`` is not limited), and
flow control is honoured: a stream whose window is spent waits for the client's WINDOW_UPDATE.

Started by ``benchmarks.concurrency --http2``; prints ``READY <port>`` when listening. Alone:
``python -m benchmarks.h2server --certfile server.pem`` (a key + certificate chain, see
``benchmarks.server.tls_files``).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import ssl
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

from .server import pin_cpu, raise_fd_limit, server_process
from .workloads import PACED_WIDTH, token_data

MAX_STREAMS = 1 << 20
#: Connections and streams served, reported on exit (whether a client multiplexes).
SERVED = {"connections": 0, "streams": 0}


def paced_event(ts_ns: int, i: int) -> bytes:
    """One paced event (no chunked framing: HTTP/2 frames it)."""
    return f"data: {ts_ns:0{PACED_WIDTH}d} {token_data(i)}\n\n".encode()


class _H2Conn(asyncio.Protocol):
    """One client connection: any number of paced streams."""

    def __init__(self) -> None:
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        self._h2 = h2.connection.H2Connection(config=config)
        self._h2.local_settings = h2.settings.Settings(
            client=False, initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_STREAMS}
        )
        self._transport: asyncio.Transport | None = None
        self._window: asyncio.Future[None] | None = None  # wakes senders when a window opens
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        SERVED["connections"] += 1
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._h2.initiate_connection()
        self._flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self._flush()
            self._abort()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                headers = dict(cast(Any, event.headers))
                sid = event.stream_id
                SERVED["streams"] += 1
                self._tasks[sid] = asyncio.get_running_loop().create_task(self._serve(sid, headers[":path"]))
            elif isinstance(event, h2.events.DataReceived):
                self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
                self._wake()
            elif isinstance(event, h2.events.StreamReset):
                task = self._tasks.pop(event.stream_id, None)
                if task is not None:
                    task.cancel()
            elif isinstance(event, h2.events.ConnectionTerminated):
                self._abort()
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        for task in self._tasks.values():
            task.cancel()
        self._wake()

    def _flush(self) -> None:
        data = self._h2.data_to_send()
        if data and self._transport is not None and not self._closed:
            self._transport.write(data)

    def _abort(self) -> None:
        self._closed = True
        if self._transport is not None:
            self._transport.abort()

    def _wake(self) -> None:
        if self._window is not None and not self._window.done():
            self._window.set_result(None)
        self._window = None

    async def _send(self, sid: int, data: bytes) -> None:
        while self._h2.local_flow_control_window(sid) < len(data):
            if self._closed:
                raise ConnectionError("closed")
            if self._window is None:
                self._window = asyncio.get_running_loop().create_future()
            await self._window
        self._h2.send_data(sid, data)
        self._flush()

    async def _serve(self, sid: int, path: str) -> None:
        try:
            url = urlsplit(path)
            if url.path != "/paced":
                self._h2.send_headers(sid, [(":status", "404"), ("content-length", "0")], end_stream=True)
                self._flush()
                return
            query = parse_qs(url.query)
            n, interval = int(query["n"][0]), int(query["interval_us"][0]) / 1e6
            self._h2.send_headers(
                sid,
                [(":status", "200"), ("content-type", "text/event-stream"), ("cache-control", "no-cache")],
            )
            self._flush()
            loop = asyncio.get_running_loop()
            start = loop.time()
            for i in range(n):
                delay = start + i * interval - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                if self._closed:
                    return
                await self._send(sid, paced_event(time.monotonic_ns(), i))
            self._h2.end_stream(sid)
            self._flush()
        except (asyncio.CancelledError, ConnectionError, h2.exceptions.ProtocolError):
            pass
        finally:
            self._tasks.pop(sid, None)


async def serve(port: int, tls: ssl.SSLContext) -> None:
    """Listen on 127.0.0.1 until stdin closes (the parent is gone)."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_H2Conn, "127.0.0.1", port, backlog=4096, ssl=tls)
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await reader.read()
    server.close()
    print(f"h2server: {SERVED['connections']} connections, {SERVED['streams']} streams", file=sys.stderr)


@contextmanager
def running_h2_server(certfile: str, pin: bool) -> Iterator[int]:
    """Start the HTTP/2 server in its own process; yields its port; always stops it."""
    cmd = [sys.executable, "-m", "benchmarks.h2server", "--certfile", certfile]
    if not pin:
        cmd.append("--no-pin")
    with server_process(cmd) as port:
        yield port


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, pin, and serve."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--certfile", required=True, help="the server's key + certificate chain PEM")
    parser.add_argument("--no-pin", action="store_true")
    args = parser.parse_args(argv)
    raise_fd_limit()
    if not args.no_pin:
        pin_cpu("server")
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(args.certfile)
    tls.set_alpn_protocols(["h2"])
    try:
        import uvloop

        uvloop.run(serve(args.port, tls))
    except ImportError:
        asyncio.run(serve(args.port, tls))


if __name__ == "__main__":
    main()
