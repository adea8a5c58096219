"""Loopback test servers: real sockets on 127.0.0.1, port 0.

``ScriptServer`` serves scripted exact bytes with faults (write, sleep, stall, drop, close) and
records every request (method, path, headers, body) and each client socket going away.
``HandlerServer`` runs a test's own ``handle(reader, writer)``; ``H2Server`` speaks HTTP/2 and
``TunnelProxy`` is an HTTP proxy. All four share one base (``_Loopback``) that ends their connections on
exit. ``aiohttp_server`` runs an aiohttp application for real HTTP features (redirects, gzip).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

__all__ = [
    "CLOSE",
    "DROP",
    "LAST_CHUNK",
    "STALL",
    "HandlerServer",
    "Request",
    "ScriptServer",
    "TunnelProxy",
    "aiohttp_server",
    "chunk",
    "free_port",
    "gzip_chunks",
    "has_ipv6_loopback",
    "head",
    "sse_chunked",
    "sse_close",
    "sse_length",
]

#: Script steps besides bytes (written and drained) and numbers (seconds to sleep).
STALL = "stall"  # send nothing more; wait until the client goes away
CLOSE = "close"  # close the socket gracefully (FIN)
DROP = "drop"  # abort the socket (RST)
LAST_CHUNK = b"0\r\n\r\n"

Step = bytes | float | int | str
Script = Callable[[int, "Request"], Sequence[Step]]


@dataclass
class Request:
    """One request as the server read it."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    conn_id: int  # index of the TCP connection it came on


@dataclass
class _Conn:
    index: int
    gone: asyncio.Event = field(default_factory=asyncio.Event)


def head(
    status: int = 200,
    content_type: str | None = "text/event-stream",
    headers: Sequence[tuple[str, str]] = (),
    *,
    framing: str = "chunked",
    length: int | None = None,
    reason: str = "",
) -> bytes:
    """A response head: status line and headers. ``framing``: "chunked", "length" or "close"."""
    lines = [f"HTTP/1.1 {status} {reason or _REASONS.get(status, 'Status')}"]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    if framing == "chunked":
        lines.append("Transfer-Encoding: chunked")
    elif framing == "length":
        lines.append(f"Content-Length: {length or 0}")
    elif framing == "close":
        lines.append("Connection: close")
    lines.extend(f"{k}: {v}" for k, v in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


_REASONS = {
    200: "OK",
    204: "No Content",
    302: "Found",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def has_ipv6_loopback() -> bool:
    """True when a socket can listen on ``[::1]``."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the OS's pick for port 0, released): connecting to it is refused
    until a server takes it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def sse_chunked(*pieces: bytes, end: bool = True) -> list[Step]:
    """A 200 event stream, one chunk per piece, ended with the last chunk when ``end``."""
    steps: list[Step] = [head(), *(chunk(p) for p in pieces)]
    if end:
        steps.append(LAST_CHUNK)
    return steps


def sse_close(*pieces: bytes) -> list[Step]:
    """A 200 close-delimited event stream: no length, no chunking, ended by closing the socket."""
    return [head(framing="close"), *pieces, CLOSE]


def sse_length(*pieces: bytes) -> list[Step]:
    """A 200 event stream with a ``Content-Length`` body."""
    body = b"".join(pieces)
    return [head(framing="length", length=len(body)), *pieces]


def gzip_chunks(pieces: Sequence[bytes], wbits: int = 31) -> list[bytes]:
    """Compress pieces as one gzip (``wbits=31``) or zlib-deflate (15) stream, flushed after each piece."""
    comp = zlib.compressobj(9, zlib.DEFLATED, wbits)
    out = [comp.compress(p) + comp.flush(zlib.Z_SYNC_FLUSH) for p in pieces]
    out[-1] += comp.flush()
    return out


_L = TypeVar("_L", bound="_Loopback")


class _Loopback:
    """A server on loopback (``host``, 127.0.0.1 by default), on ``port`` (0: the OS picks one), that keeps
    its handlers' tasks and sockets and ends them on exit.

    Subclasses write ``_handle(reader, writer)`` and call ``_track(writer)`` first in it; ``_listen_ssl``
    makes it a TLS server.
    """

    _listen_ssl: Any = None
    host = "127.0.0.1"

    def __init__(self, port: int = 0) -> None:
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = port

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def __aenter__(self: _L) -> _L:
        self._server = await asyncio.start_server(self._handle, self.host, self.port, ssl=self._listen_ssl)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()  # ends the handlers' reads (cancelling them would log noise)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2)
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2)

    def _track(self, writer: asyncio.StreamWriter) -> asyncio.Task[Any]:
        """Keep the running handler and its socket until the server exits; gives the handler's task."""
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        return task


class ScriptServer(_Loopback):
    """Serves scripted bytes: ``script(n, request)`` gives the steps for the n-th request (from 0).

    Use as ``async with ScriptServer(script) as srv:``; ``srv.url(path)``, ``srv.requests``.
    A keep-alive connection can carry several requests: after a script ends without CLOSE/DROP/STALL
    the server reads the next request from the same socket. ``port``: listen on that one (a server
    that comes back where an earlier one was), not on one the OS picks.
    """

    def __init__(
        self,
        script: Script | Sequence[Sequence[Step]],
        *,
        ssl: Any = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(port)
        self._listen_ssl = ssl
        self.host = host
        if callable(script):
            self._script: Script = script
        else:
            scripts = list(script)
            self._script = lambda n, _req: scripts[min(n, len(scripts) - 1)]
        self.requests: list[Request] = []
        self.conns: list[_Conn] = []
        self.new_request = asyncio.Condition()

    def url(self, path: str = "/sse") -> str:
        scheme = "https" if self._listen_ssl is not None else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}{path}"

    async def wait_requests(self, count: int, timeout: float = 5.0) -> None:
        """Wait until ``count`` requests were received."""
        async with self.new_request:
            await asyncio.wait_for(self.new_request.wait_for(lambda: len(self.requests) >= count), timeout)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = self._track(writer)
        conn = _Conn(len(self.conns))
        self.conns.append(conn)
        try:
            while True:
                req = await self._read_request(reader, conn.index)
                if req is None:
                    break
                n = len(self.requests)
                self.requests.append(req)
                async with self.new_request:
                    self.new_request.notify_all()
                ended = await self._play(self._script(n, req), reader, writer)
                if ended:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        except OSError:  # a TLS client that went away (or refused our certificate)
            pass
        finally:
            conn.gone.set()
            writer.transport.abort()
            self._writers.discard(writer)
            self._tasks.discard(task)

    async def _play(
        self, steps: Sequence[Step], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        for step in steps:
            if isinstance(step, (bytes, bytearray)):
                writer.write(step)
                await writer.drain()
            elif isinstance(step, (int, float)):
                await asyncio.sleep(step)
            elif step == STALL:
                while await reader.read(65536):
                    pass
                return True
            elif step == CLOSE:
                writer.close()
                return True
            elif step == DROP:
                writer.transport.abort()
                return True
            else:
                raise ValueError(f"unknown step {step!r}")
        return False

    @staticmethod
    async def _read_request(reader: asyncio.StreamReader, conn_id: int) -> Request | None:
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        lines = raw.decode("utf-8").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
        body = b""
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await reader.readline()).strip().split(b";")[0], 16)
                if size == 0:
                    await reader.readline()
                    break
                body += await reader.readexactly(size)
                await reader.readline()
        return Request(method, path, headers, body, conn_id)


@contextlib.asynccontextmanager
async def aiohttp_server(app: Any) -> AsyncIterator[str]:
    """Run an aiohttp ``web.Application`` on 127.0.0.1 (port 0); yields its base URL."""
    from aiohttp import web

    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class HandlerServer(_Loopback):
    """Runs ``handle(reader, writer)`` for each connection: for a server a script cannot say (one that
    waits for the test, or sets socket options). ``connections`` counts the connections it accepted.

    Use as ``async with HandlerServer(handle) as srv:``; ``srv.url(path)``. A handler that returns
    leaves its socket closed (gracefully); on exit the base aborts the sockets of those still running.
    A client going away (a reset, an early end) ends the handler quietly.
    """

    def __init__(self, handle: Handler) -> None:
        super().__init__()
        self._handler = handle
        self.connections = 0

    def url(self, path: str = "/sse") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = self._track(writer)
        self.connections += 1
        try:
            await self._handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self._writers.discard(writer)
            self._tasks.discard(task)


class H2Server(_Loopback):
    """A minimal HTTP/2 server over TLS (ALPN "h2"): every request gets a 200 event stream of ``pieces``.

    Use as ``async with H2Server(pieces) as srv:``; ``srv.url(path)``, ``srv.client_ssl`` (trusts the
    test CA), ``srv.requests`` (the request headers), ``srv.resets`` (the streams the client reset).
    """

    def __init__(self, pieces: Sequence[bytes], *, end: bool = True) -> None:
        import trustme

        self.pieces = list(pieces)
        self.end = end
        self.requests: list[dict[str, str]] = []
        self.resets: list[int] = []  # ids of the streams the client reset (RST_STREAM)
        ca = trustme.CA()
        import ssl

        super().__init__()
        self._listen_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(self._listen_ssl)
        self._listen_ssl.set_alpn_protocols(["h2"])
        self.client_ssl = ssl.create_default_context()
        ca.configure_trust(self.client_ssl)

    def url(self, path: str = "/sse") -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        import h2.config
        import h2.connection
        import h2.events

        task = self._track(writer)
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        self.requests.append(dict(event.headers))
                        sid = event.stream_id
                        conn.send_headers(sid, [(":status", "200"), ("content-type", "text/event-stream")])
                        for piece in self.pieces:
                            conn.send_data(sid, piece)
                        if self.end:
                            conn.end_stream(sid)
                    elif isinstance(event, h2.events.DataReceived):
                        conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, h2.events.StreamReset):
                        self.resets.append(event.stream_id)
                writer.write(conn.data_to_send())
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        except Exception:  # h2 protocol errors after the client went away
            pass
        finally:
            writer.transport.abort()
            self._writers.discard(writer)
            self._tasks.discard(task)


class TunnelProxy(_Loopback):
    """A small HTTP proxy on 127.0.0.1: ``CONNECT host:port`` opens a tunnel (a byte relay), and a request
    with an absolute URL is relayed to its origin with the request line in origin form.

    ``auth``: the ``Proxy-Authorization`` value it insists on (407 without it). ``connect_port``: tunnel
    to this port whatever port ``CONNECT`` names. ``heads`` records the request head (first line and
    headers, lower-case names) of every request it received.
    """

    def __init__(self, auth: str | None = None, connect_port: int | None = None) -> None:
        super().__init__()
        self.auth = auth
        self.connect_port = connect_port
        self.heads: list[tuple[str, dict[str, str]]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = self._track(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
            lines = raw.decode("latin-1").split("\r\n")
            pairs = (line.partition(":") for line in lines[1:] if line)
            headers = {k.strip().lower(): v.strip() for k, _, v in pairs}
            self.heads.append((lines[0], headers))
            method, target, version = lines[0].split(" ", 2)
            if self.auth is not None and headers.get("proxy-authorization") != self.auth:
                writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
                return
            if method == "CONNECT":
                host, _, port = target.rpartition(":")
                port = str(self.connect_port or port)
                up_reader, upstream = await asyncio.open_connection(host.strip("[]"), int(port))
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                rest = b""
            else:
                parts = urlsplit(target)
                up_reader, upstream = await asyncio.open_connection(parts.hostname, parts.port or 80)
                path = parts.path + (f"?{parts.query}" if parts.query else "")
                kept = [line for line in lines[1:] if not line.lower().startswith("proxy-")]
                rest = (f"{method} {path} {version}\r\n" + "\r\n".join(kept)).encode("latin-1")
            upstream.write(rest)
            self._writers.add(upstream)
            await asyncio.gather(_relay(reader, upstream), _relay(up_reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError, OSError):
            pass
        finally:
            writer.transport.abort()
            if upstream is not None:
                upstream.transport.abort()
                self._writers.discard(upstream)
            self._writers.discard(writer)
            self._tasks.discard(task)


async def _relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        if writer.can_write_eof():
            with contextlib.suppress(OSError):
                writer.write_eof()
