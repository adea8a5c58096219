"""The seam to aiosonic: the only module of sonicsse that imports aiosonic or touches its internals.

aiosonic sends each request (pools, cookies, auth, HTTP/2) and parses the status line and headers;
sonicsse reads the body itself. What crosses this seam:

- ``StreamConnector`` (an aiosonic ``TCPConnector``) makes sonicsse's connections: CONNECT tunnels for
  https through a proxy (``_tunnel``), a forwarding client per proxy for plain http (aiosonic's
  ``Proxy``), pooled sockets reused only with the same route and TLS settings, ``ssl=`` for https only,
  IPv4 and IPv6 addresses tried in the resolver's order.
- ``send_request()`` sends one request, redirects not followed, and ``take_response()`` takes its
  connection out of aiosonic's response: from then on ``_transport`` owns the socket (``handover()``
  says whether the socket can be read directly, exactly) and gives it back (``give_back()``).

Private names relied on, verified at import by ``check_shape()`` (a mismatch is one ImportError naming
the installed aiosonic):

- ``HttpResponse._connection`` / ``_owns_connection``: the connection is taken from the response, so that
  aiosonic neither releases nor closes it under a body still being read; ``_remaining``: the bytes of a
  ``Content-Length`` body not read yet; ``_h2_chunk_queue``, ``_h2_flow_cb``, ``_discard_h2_queue()``:
  an HTTP/2 stream's queue (to interrupt a read) and flow-control callback (whose closure holds the
  stream id: to send ``RST_STREAM`` for an abandoned stream, which aiosonic does not).
- ``Connection.reader`` / ``writer`` / ``keep`` / ``blocked`` / ``h2conn`` / ``temp_key`` / ``reused`` /
  ``_verify`` and ``_connection_made()`` (HTTP/2 set up after ALPN over a tunnel we opened).
- ``SmartPool._init_pool()`` / ``_new_connection()`` / ``_free_count`` / ``sem`` / ``pool``: connection
  objects made when first needed, not 1,024 up front.
- ``TCPConnector.after_acquire()`` / ``resolver`` / ``cache`` / ``release()``: sonicsse's connect step.
- asyncio's ``StreamReader._buffer`` / ``_eof`` / ``_paused`` / ``_transport`` and
  ``StreamReaderProtocol._stream_reader``: the bytes aiosonic's reader already holds, and proof that the
  writer's transport (TLS after ``start_tls``) delivers to that reader.

What aiosonic offers and sonicsse does not use, and why:

- Redirects (``follow=True``): aiosonic does not drop ``Authorization`` and cookies when a redirect leaves
  the origin, does not send the new ``Last-Event-ID`` on the next hop, and has no typed error for a
  ``Location`` that cannot be requested; the rules live in ``_policy`` and ``_core``.
- Decompression (``aiosonic.compression.BoundedDecompressor``): it bounds a whole body's output, while an
  event stream has no end; sonicsse bounds each read's output (1 MiB, the rest stays in zlib) and
  accepts the raw deflate some servers send as ``deflate`` (``_transport._Inflater``).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import ssl
import sys
from collections import deque
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import h2.errors
from aiosonic import HTTPClient
from aiosonic.client import HttpResponse
from aiosonic.connection import Connection, get_default_ssl_context
from aiosonic.connectors import TCPConnector
from aiosonic.exceptions import (
    AiosonicError,
    ConnectionDisconnected,
    ConnectTimeout,
    ReadTimeout,
    RequestTimeout,
)
from aiosonic.exceptions import SSEConnectionError as AiosonicSSEConnectionError
from aiosonic.exceptions import SSEParsingError as AiosonicSSEParsingError
from aiosonic.http_parser import validate_header
from aiosonic.pools import PoolConfig, SmartPool
from aiosonic.proxy import Proxy
from aiosonic.resolver import AbstractResolver, DefaultResolver
from aiosonic.sse_config import RequestConfig
from aiosonic.timeout import Timeouts
from aiosonic.utils import connection_key, default_port

from ._logging import logger
from ._proxy import ProxyRoutes, ProxyURL
from ._tunnel import open_tunnel

if sys.version_info >= (3, 11):

    async def _within(awaitable: Any, timeout: float | None) -> Any:
        """``asyncio.wait_for`` without the task it makes of a coroutine (one per stream opened)."""
        async with asyncio.timeout(timeout):
            return await awaitable

else:
    _within = asyncio.wait_for

__all__ = [
    "AIOSONIC_VERSION",
    "DEFAULT_POOL_SIZE",
    "AbstractResolver",
    "AiosonicError",
    "AiosonicSSEConnectionError",
    "AiosonicSSEParsingError",
    "ConnectTimeout",
    "ConnectionDisconnected",
    "DefaultResolver",
    "HTTPClient",
    "ReadTimeout",
    "RequestConfig",
    "RequestTimeout",
    "StreamConnector",
    "TakenResponse",
    "Timeouts",
    "check_request",
    "check_shape",
    "give_back",
    "handover",
    "make_http_client",
    "send_request",
    "take_response",
]

AIOSONIC_VERSION = version("aiosonic")
#: Connections per pool of the HTTPClient an SSEClient creates: 1,000 streams to one host never wait.
DEFAULT_POOL_SIZE = 1024
# Set while sonicsse sends a request: HoldingConnection then keeps the connection for the response
# (even a close-delimited one) until the transport gives it back.
_HOLD: contextvars.ContextVar[bool] = contextvars.ContextVar("sonicsse_hold", default=False)


def check_shape() -> None:
    """Verify that the private names listed in this module's docstring exist with the expected shape.

    Raises ImportError naming the installed aiosonic when one does not: sonicsse would otherwise fail
    somewhere in the middle of a stream.
    """
    missing: list[str] = []

    def need(owner: object, names: tuple[str, ...], label: str) -> None:
        missing.extend(f"{label}.{name}" for name in names if not hasattr(owner, name))

    need(
        HttpResponse(),
        (
            "_connection",
            "_owns_connection",
            "_remaining",
            "_h2_chunk_queue",
            "_h2_flow_cb",
            "_discard_h2_queue",
            "read_chunks",
            "chunked",
            "body",
        ),
        "HttpResponse",
    )
    conn = Connection(SmartPool(PoolConfig(size=1), Connection))
    need(
        conn,
        (
            "reader",
            "writer",
            "temp_key",
            "_verify",
            "reused",
            "blocked",
            "keep",
            "h2conn",
            "_connection_made",
            "release",
            "close",
            "reuse",
            "connect",
        ),
        "Connection",
    )
    need(SmartPool, ("_init_pool", "_new_connection", "acquire"), "SmartPool")
    need(TCPConnector(), ("resolver", "cache", "release", "after_acquire"), "TCPConnector")
    # Not made: a StreamReader made outside a running loop would make (and leak) an event loop.
    assigned = asyncio.StreamReader.__init__.__code__.co_names
    missing.extend(
        f"asyncio.StreamReader.{name}"
        for name in ("_buffer", "_eof", "_paused", "_transport")
        if name not in assigned
    )
    signatures = {
        "Connection.connect": (
            Connection.connect,
            ["self", "urlparsed", "dns_info", "verify", "ssl_context", "http2"],
        ),
        "TCPConnector.after_acquire": (
            TCPConnector.after_acquire,
            ["self", "urlparsed", "conn", "verify", "ssl", "timeouts", "http2"],
        ),
    }
    for label, (function, expected) in signatures.items():
        if list(inspect.signature(function).parameters) != expected:
            missing.append(f"{label}({', '.join(expected[1:])})")
    if missing:
        raise ImportError(
            f"sonicsse does not support the installed aiosonic {AIOSONIC_VERSION}: it lacks "
            f"{', '.join(missing)}. Install a version in sonicsse's supported range (see its metadata)."
        )


check_shape()


# -- connections ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConnectionSettings:
    """What a socket was opened with; a pooled socket serves only requests that ask for the same."""

    proxy: ProxyURL | None
    verify: bool
    context: ssl.SSLContext | None  # compared by identity (SSLContext has no value equality)
    http2: bool


class HoldingConnection(Connection):  # type: ignore[misc]
    """An aiosonic connection that stays with a sonicsse response until the body was read.

    aiosonic releases (and, with ``Connection: close``, closes) a connection whose response has no length
    and no chunked framing as soon as the headers were read, losing a close-delimited body. While
    sonicsse sends a request, this class keeps such a connection blocked instead; the transport gives it
    back when the stream is closed.
    """

    settings: ConnectionSettings | None = None

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc is not None:
            # The request failed or was cancelled half-way: the socket's state is unknown. aiosonic would
            # put a kept-alive connection back in the pool with its socket open; close it instead.
            self.keep = False
        elif _HOLD.get() and self.h2conn is None and self.reader is not None:
            self.blocked = True
        await super().__aexit__(exc_type, exc, tb)


class LazyPool(SmartPool):  # type: ignore[misc]
    """aiosonic's SmartPool, with its connection objects made when first needed.

    SmartPool makes all of them up front: 1,024 for an SSEClient's pool, 1.5 ms per client.
    """

    def _init_pool(self, connection_cls: type[Connection]) -> None:
        self._connection_cls = connection_cls
        self._made = 0
        self.pool: dict[Any, deque[Connection]] = {}
        self._free_count = self.pool_size
        self.sem = asyncio.Semaphore(self.pool_size)

    async def acquire(self, urlparsed: Any = None) -> Connection:
        if not self.pool and self._made < self.pool_size:
            # Every connection made is in use: make one more (SmartPool.acquire takes it at once).
            self._made += 1
            self.pool[None] = deque([self._new_connection(self._connection_cls)])
        return await super().acquire(urlparsed)


def _is_connect_failure(exc: BaseException) -> bool:
    """A failure to reach one address, after which the next address is worth trying."""
    return isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError)


async def _first_that_connects(addresses: list[dict[str, Any]], attempt: Any) -> Any:
    """``attempt(address)`` for each address in turn until one connects; the last failure otherwise."""
    failure: BaseException | None = None
    for address in addresses:
        try:
            return await attempt(address)
        except Exception as exc:
            if not _is_connect_failure(exc):
                raise
            failure = exc
    assert failure is not None, "the resolver gave no address"
    raise failure


class StreamConnector(TCPConnector):  # type: ignore[misc]
    """aiosonic's connector with sonicsse's connection step (see the module's docstring)."""

    def __init__(self, routes: ProxyRoutes, pool_size: int = DEFAULT_POOL_SIZE) -> None:
        from ._resolver import SharedResolver  # it builds on aiosonic's resolver, from this module

        super().__init__(
            pool_configs={":default": PoolConfig(size=pool_size)},
            connection_cls=HoldingConnection,
            pool_cls=LazyPool,
            resolver=SharedResolver(),
        )
        self.routes = routes
        self._forwarders: dict[ProxyURL, HTTPClient] = {}

    def forwarding_client(self, scheme: str, host: str, port: int) -> HTTPClient | None:
        """The client for a plain-http request that goes through a proxy (aiosonic sends the absolute URL
        to the proxy), sharing this connector; None when the request does not use a proxy."""
        if scheme != "http":
            return None
        proxy = self.routes.for_url(scheme, host, port)
        if proxy is None:
            return None
        client = self._forwarders.get(proxy)
        if client is None:
            client = HTTPClient(connector=self, proxy=Proxy(proxy.url, auth=proxy.credentials))
            self._forwarders[proxy] = client
        return client

    async def after_acquire(
        self,
        urlparsed: Any,
        conn: HoldingConnection,
        verify: bool,
        ssl_context: Any,
        timeouts: Any,
        http2: bool,
    ) -> HoldingConnection:
        secure = urlparsed.scheme in ("https", "wss")
        host = urlparsed.hostname
        port = default_port(urlparsed)
        proxy = self.routes.for_url(urlparsed.scheme, host, port) if secure else None
        settings = ConnectionSettings(
            proxy=proxy,
            verify=bool(verify) if secure else True,
            context=ssl_context if secure else None,
            http2=bool(http2) if secure else False,
        )
        if conn.settings != settings:
            conn.close()  # opened for other settings (or never): a new socket
        try:
            if (timeouts.sock_connect is None or timeouts.sock_connect > 0) and conn.reuse(urlparsed, verify):
                conn.reused = True
                return conn
            conn.reused = False
            connecting = self._connect(conn, urlparsed, settings, host, port)
            await _within(connecting, timeouts.sock_connect)
        except asyncio.TimeoutError:
            self.release(conn)
            raise ConnectTimeout() from None
        except BaseException:
            self.release(conn)
            raise
        conn.settings = settings
        return conn

    async def _connect(
        self, conn: HoldingConnection, urlparsed: Any, settings: ConnectionSettings, host: str, port: int
    ) -> None:
        proxy = settings.proxy
        if proxy is None:
            addresses = await self._resolve(host, port)
            await _first_that_connects(
                addresses,
                lambda address: conn.connect(
                    urlparsed, address, settings.verify, settings.context, settings.http2
                ),
            )
            return
        context = settings.context or get_default_ssl_context(settings.verify, settings.http2)
        if settings.http2 and settings.context is not None:
            context.set_alpn_protocols(["h2", "http/1.1"])
        conn.close()
        addresses = await self._resolve(proxy.host, proxy.port)
        streams = await _first_that_connects(
            addresses, lambda address: open_tunnel(proxy, address, host, port, context)
        )
        conn.reader, conn.writer = streams
        conn._verify = settings.verify
        conn.temp_key = connection_key(urlparsed)
        await conn._connection_made()  # HTTP/2 when ALPN chose it

    async def _resolve(self, host: str, port: int) -> list[dict[str, Any]]:
        key = f"{host}-{port}"
        cache = self.cache
        found = cache.get(key) if cache is not None else None
        if not found:
            found = await self.resolver.resolve(host, port)
            if cache is not None:
                cache.set(key, found)
        return list(found)


def make_http_client(
    pool_size: int = DEFAULT_POOL_SIZE, *, proxy: str | None = None, trust_env: bool = True
) -> HTTPClient:
    """An ``aiosonic.HTTPClient`` suited to many long-lived streams.

    Its pools hold ``pool_size`` connections (aiosonic's default is 30, which would make the 31st
    concurrent stream to a host wait), close-delimited bodies are readable, and connections go through
    ``proxy`` (an ``http://[user:password@]host:port`` URL) or, with ``trust_env``, through the
    environment's ``HTTP_PROXY`` / ``HTTPS_PROXY`` / ``ALL_PROXY``, except for ``NO_PROXY`` hosts.
    """
    return HTTPClient(connector=StreamConnector(ProxyRoutes(proxy, trust_env), pool_size))


# -- requests ---------------------------------------------------------------------------------------


def check_request(headers: dict[str, str], data: Any, multipart: bool) -> None:
    """Raise the ValueError aiosonic would raise for these request arguments, before anything is sent.

    Checked here so that a ValueError from ``send_request()`` always means a malformed response.
    """
    for name, value in headers.items():
        validate_header(name, value)
    if multipart and not isinstance(data, dict):
        raise ValueError("multipart=True needs data as a dict")


async def send_request(
    client: HTTPClient,
    method: str,
    url: str,
    headers: dict[str, str],
    params: Any,
    data: Any,
    json: Any,
    kwargs: dict[str, Any],
    scheme: str,
    host: str,
    port: int,
) -> tuple[Any, bool]:
    """Send one request (no redirect followed); its response, with the body unread, and whether its
    connection may go back to the client's pool after the body (``pool_safe``).

    With sonicsse's own HTTPClient a plain-http request through a proxy is sent by that proxy's forwarding
    client. A borrowed client's pool does not know the TLS settings a socket was opened with, so such a
    socket never goes back to it.
    """
    connector = client.connector
    ours = isinstance(connector, StreamConnector)
    if ours:
        client = connector.forwarding_client(scheme, host, port) or client
    pool_safe = ours or (kwargs.get("verify", True) and kwargs.get("ssl") is None)
    token = _HOLD.set(True)
    try:
        response = await client.request(
            url=url,
            method=method,
            headers=headers,
            params=params,
            data=data,
            json=json,
            follow=False,
            stream=True,
            **kwargs,
        )
    finally:
        _HOLD.reset(token)
    return response, bool(pool_safe)


@dataclass(slots=True)
class TakenResponse:
    """What ``take_response()`` took from aiosonic's response: the head, and the body's source.

    ``framing``: ``"h2"`` (read ``h2_chunks``), ``"chunked"``, ``"length"`` (``remaining`` bytes),
    ``"close"`` (until the peer closes), ``"body"`` (aiosonic already read it: ``body``), or ``"lost"``
    (the connection was already gone).
    """

    status: int
    reason: str
    headers: Any
    framing: str
    remaining: int = 0
    body: bytes = b""
    conn: Any = None  # the pooled connection to give back, None for a socket taken out of the pool
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    h2_chunks: Any = None


def take_response(response: Any) -> TakenResponse:
    """Take the body's connection out of aiosonic's response: the caller owns it from here."""
    taken = TakenResponse(response.status_code, response.reason, response.headers, "lost")
    if response._h2_chunk_queue is not None:
        taken.framing = "h2"
        taken.h2_chunks = response.read_chunks()
        return taken
    conn = taken.conn = response._connection
    response._connection = None
    response._owns_connection = False
    if conn is None or conn.reader is None:
        return taken
    taken.reader, taken.writer = conn.reader, conn.writer
    if not conn.blocked:
        # A shared HTTPClient without HoldingConnection already put this connection back in its pool:
        # take the socket out of it, so no other request is sent over it.
        conn.reader = conn.writer = None
        conn.keep = False
        taken.conn = None
    status = taken.status
    if status in (204, 304) or 100 <= status < 200 or response.method.upper() == "HEAD":
        taken.framing = "body"
    elif response.chunked:
        taken.framing = "chunked"
    elif response._remaining is not None:
        taken.framing = "length" if response._remaining > 0 else "body"
        taken.remaining = response._remaining
    elif response.body or "content-length" in response.headers:
        taken.framing = "body"  # aiosonic already read a (short) body
    else:
        taken.framing = "close"
    if taken.framing == "body":
        taken.body = bytes(response.body or b"")
    return taken


def give_back(conn: Any, reusable: bool) -> None:
    """Return a taken connection to its pool (``reusable``: its socket stays open for the next request)."""
    if not reusable:
        conn.keep = False
        conn.close()
    if conn.blocked:
        conn.release()
    elif not reusable:
        conn.close()


def reader_transport(reader: asyncio.StreamReader) -> asyncio.BaseTransport:
    """The transport aiosonic's reader reads from (the raw socket's, under TLS)."""
    transport: asyncio.BaseTransport = reader._transport  # type: ignore[attr-defined]
    return transport


def handover(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter | None
) -> tuple[bytes, bool, BaseException | None] | str:
    """Take the bytes aiosonic's reader holds, and make the socket deliver to a new protocol:
    ``(buffered, ended, error)``; or why that cannot be done exactly (a str), leaving the reader as it is.

    Exact when the writer's transport (the TLS one after ``start_tls``, where the reader still names the
    raw socket's) delivers to the reader's protocol and the reader's buffer is where asyncio keeps it.
    """
    if writer is None:
        return "no writer"
    buffered = getattr(reader, "_buffer", None)
    if not isinstance(buffered, bytearray):
        return "the reader keeps no buffer where asyncio keeps it"
    exc = reader.exception()
    ended = bool(reader._eof) or exc is not None  # type: ignore[attr-defined]
    if not ended and getattr(writer.transport.get_protocol(), "_stream_reader", None) is not reader:
        return "the writer's transport does not deliver to this reader"
    initial = bytes(buffered)
    buffered.clear()
    if reader._paused:  # type: ignore[attr-defined]
        # The reader paused the transport it knows (under TLS, the raw socket's): nothing would arrive.
        reader._paused = False  # type: ignore[attr-defined]
        reader_transport(reader).resume_reading()  # type: ignore[attr-defined]
    return initial, ended, exc


# -- HTTP/2 -----------------------------------------------------------------------------------------


def h2_interrupt(response: Any, exc: Exception) -> None:
    """Make the pending read of an HTTP/2 body raise ``exc``."""
    queue = response._h2_chunk_queue
    if queue is not None:
        queue.put_nowait(exc)


def h2_close(response: Any, completed: bool) -> None:
    """Drop an HTTP/2 stream's queue, resetting the stream first when its body did not end."""
    queue = response._h2_chunk_queue
    if queue is None:
        return
    if not completed:
        _cancel_h2_stream(response, queue)
    response._discard_h2_queue()  # drops what is queued and frees the stream slot


def _cancel_h2_stream(response: Any, queue: asyncio.Queue[Any]) -> None:
    """Reset an unfinished HTTP/2 stream (RST_STREAM CANCEL), so the server stops sending it.

    aiosonic only drops its local queue: the server would go on producing the stream (an LLM billing
    tokens nobody reads), and the bytes already queued would never be credited back to the connection's
    flow-control window, which in the end stalls every stream sharing the connection.
    """
    try:
        scope = inspect.getclosurevars(response._h2_flow_cb).nonlocals
        handler, stream_id = scope["self"], scope["stream_id"]
        h2conn = handler.h2conn
        items: list[Any] = list(queue._queue)  # type: ignore[attr-defined]
        queued = sum(len(item) for item in items if isinstance(item, (bytes, bytearray)))
        h2conn.reset_stream(stream_id, error_code=h2.errors.ErrorCodes.CANCEL)
        if queued:
            h2conn.increment_flow_control_window(queued)
        pending = h2conn.data_to_send()
        if pending:
            handler.writer.write(pending)
    except Exception as exc:  # the stream already ended or the connection is gone: nothing to cancel
        logger.debug("sonicsse: could not reset the HTTP/2 stream: %r", exc)


def is_aiosonic_error(exc: BaseException) -> bool:
    """Whether aiosonic raised ``exc`` for a broken connection (its own exception types)."""
    return type(exc).__module__.startswith("aiosonic")
