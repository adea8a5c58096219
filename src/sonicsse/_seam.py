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
- HTTP/2: streams to one https origin with the same connection settings share connections
  (``StreamConnector.acquire``): up to the peer's ``SETTINGS_MAX_CONCURRENT_STREAMS``, at most aiosonic's
  ``Http2Config.max_streams``, per connection; more streams open another one. aiosonic's request code is
  given an ``H2Lease`` (one stream's share) in place of the connection, so what it does to "its"
  connection (close it after a failed request, release it) concerns that stream alone. The connection's
  reader is aiosonic's ``Http2Handler`` subclassed (``StreamH2Handler``): each DATA frame goes straight
  into the stream's ``BodyReceiver`` (``H2Stream``), with no queue and no task per chunk; a stream closed
  unfinished is reset (RST_STREAM CANCEL); the last stream gone, the connection goes back to the pool.

Private names relied on, verified at import by ``check_shape()`` (a mismatch is one ImportError naming
the installed aiosonic):

- ``HttpResponse._connection`` / ``_owns_connection``: the connection is taken from the response, so that
  aiosonic neither releases nor closes it under a body still being read; ``_remaining``: the bytes of a
  ``Content-Length`` body not read yet; ``_h2_chunk_queue``, ``_h2_flow_cb``, ``_discard_h2_queue()``:
  an HTTP/2 stream's queue (unused with sonicsse's handler; from a borrowed client's, read, and
  interrupted) and flow-control callback (sonicsse's handler makes it the ``H2Stream``; a borrowed
  client's closure holds the stream id: to send ``RST_STREAM`` for an abandoned stream, which aiosonic
  does not), and the stream's slot given back.
- ``Connection.reader`` / ``writer`` / ``keep`` / ``key`` / ``blocked`` / ``h2conn`` / ``h2handler`` /
  ``temp_key`` / ``reused`` / ``_verify`` / ``pool.http2_config`` and ``_connection_made()`` (HTTP/2 set
  up after ALPN, with sonicsse's handler, also over a tunnel we opened).
- ``Http2Handler.__init__(connection, http2_config)`` / ``connection`` / ``http2_config`` / ``requests``
  / ``request()`` and, overridden, ``_register_stream()`` / ``_make_flow_cb()`` / ``_on_data_received()``
  / ``_on_stream_ended()`` / ``_on_stream_reset()`` / ``_on_remote_settings_changed()`` /
  ``_on_disconnect()`` / ``_fail_all_pending()``; ``_make_sem_release()`` gives back the slot of a
  request cancelled while it waited for its head (aiosonic keeps it). What aiosonic's request code does
  with the connection it acquired (``_exchange``: ``h2conn``, ``http2_request()``, ``keep_alive()``,
  ``reused``, ``close()``, ``async with``) is what ``H2Lease`` answers.
- ``SmartPool._init_pool()`` / ``_new_connection()`` / ``_free_count`` / ``sem`` / ``pool``: connection
  objects made when first needed, not 1,024 up front.
- ``TCPConnector.acquire()`` / ``after_acquire()`` / ``resolver`` / ``cache`` / ``release()``: sonicsse's
  connect step (and, for HTTP/2, its shared connections).
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

import h2.config
import h2.connection
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
from aiosonic.http2 import Http2Handler
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
    "H2Lease",
    "H2Stream",
    "HTTPClient",
    "ReadTimeout",
    "RequestConfig",
    "RequestTimeout",
    "StreamConnector",
    "StreamH2Handler",
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
# Set while a stream's request is sent over a shared HTTP/2 connection: the handler gives the stream it
# opens to this lease.
_LEASE: contextvars.ContextVar[H2Lease | None] = contextvars.ContextVar("sonicsse_h2_lease", default=None)


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
            "h2handler",
            "key",
            "_connection_made",
            "release",
            "close",
            "reuse",
            "connect",
        ),
        "Connection",
    )
    need(SmartPool, ("_init_pool", "_new_connection", "acquire"), "SmartPool")
    need(TCPConnector(), ("resolver", "cache", "release", "acquire", "after_acquire"), "TCPConnector")
    need(
        Http2Handler,
        (
            "request",
            "_register_stream",
            "_make_flow_cb",
            "_make_sem_release",
            "_on_data_received",
            "_on_stream_ended",
            "_on_stream_reset",
            "_on_remote_settings_changed",
            "_on_disconnect",
            "_fail_all_pending",
        ),
        "Http2Handler",
    )
    handler_assigns = Http2Handler.__init__.__code__.co_names
    missing.extend(
        f"Http2Handler.{name}"
        for name in ("connection", "http2_config", "requests")
        if name not in handler_assigns
    )
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
        "TCPConnector.acquire": (
            TCPConnector.acquire,
            ["self", "urlparsed", "verify", "ssl", "timeouts", "http2", "proxy_target"],
        ),
        "Http2Handler.__init__": (Http2Handler.__init__, ["self", "connection", "http2_config"]),
        "Http2Handler._register_stream": (
            Http2Handler._register_stream,
            ["self", "stream_id", "headers", "body"],
        ),
        "Http2Handler._make_flow_cb": (Http2Handler._make_flow_cb, ["self", "stream_id"]),
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
    #: While shared by HTTP/2 streams: the origin's shared connections, and how many streams use it.
    h2origin: _H2Origin | None = None
    leases = 0

    async def _connection_made(self) -> None:
        """HTTP/2 when ALPN chose it, with sonicsse's handler (aiosonic's makes its own)."""
        tls = self.writer.get_extra_info("ssl_object") if self.writer is not None else None
        if tls is None or tls.selected_alpn_protocol() != "h2":
            return
        self.h2conn = h2.connection.H2Connection(config=h2.config.H2Configuration())
        self.h2handler = StreamH2Handler(self, self.pool.http2_config)

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


# -- shared HTTP/2 connections ----------------------------------------------------------------------


def _shareable(conn: Any) -> bool:
    """Whether ``conn`` is an HTTP/2 connection that can take more streams' requests (not gone, no GOAWAY)."""
    handler = conn.h2handler
    return isinstance(handler, StreamH2Handler) and handler.usable()


class _H2Origin:
    """The HTTP/2 connections to one origin opened with one set of settings, which its streams share.

    A stream that finds no room opens a connection, while the streams that come meanwhile wait for it,
    unless the connections being opened cannot take them all (by the stream limit the last connection's
    peer set): then they open more at once, so that 1,000 streams do not open 10 connections in turn.
    """

    __slots__ = ("_connector", "changed", "conns", "h1", "key", "limit", "openings", "waiting")

    def __init__(self, connector: StreamConnector, key: tuple[str, ConnectionSettings]) -> None:
        self._connector = connector
        self.key = key
        self.conns: list[HoldingConnection] = []
        #: The connections being opened (each done when it can be shared, or was not, or failed).
        self.openings: list[asyncio.Future[None]] = []
        #: Done when one of them is: the waiting streams look again.
        self.changed: asyncio.Future[None] | None = None
        self.waiting = 0
        #: Streams a connection to this origin took the last time (unknown before the first SETTINGS).
        self.limit = 0
        #: The last connection opened to this origin spoke HTTP/1.1: streams do not wait for each other.
        self.h1 = False

    def with_room(self) -> HoldingConnection | None:
        """A shared connection with room for one more stream (a few connections per origin at most)."""
        for conn in self.conns:
            handler = conn.h2handler
            if isinstance(handler, StreamH2Handler) and handler.usable():
                limit = handler.stream_limit()
                if conn.leases < limit:
                    return conn
        return None

    def should_wait(self) -> bool:
        """Whether the connections being opened will take this stream too."""
        if not self.openings:
            return False
        # Unknown: whether the origin speaks HTTP/2 at all, and how many streams a connection takes.
        return self.limit == 0 or self.waiting < len(self.openings) * (self.limit - 1)

    async def wait(self, timeout: float | None) -> None:
        changed = self.changed
        if changed is None:
            changed = self.changed = asyncio.get_running_loop().create_future()
        self.waiting += 1
        try:
            await _within(asyncio.shield(changed), timeout)
        finally:
            self.waiting -= 1

    def opening(self) -> asyncio.Future[None]:
        opening: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.openings.append(opening)
        return opening

    def share(self, conn: HoldingConnection, opening: asyncio.Future[None] | None) -> H2Lease:
        """Make ``conn`` (acquired from the pool, HTTP/2) one of the shared connections; its first lease.
        The streams waiting for it share it once the peer's SETTINGS said how many streams it takes."""
        self.h1 = False
        conn.keep = True  # back to the pool, open, when its last stream is gone
        conn.h2origin = self
        self.conns.append(conn)
        handler = conn.h2handler
        if opening is not None:

            def seen(_: object) -> None:
                if handler.stream_limit() < (1 << 31):  # told, not h2's unbounded default
                    self.limit = handler.stream_limit()
                self.opened(opening)

            handler.settings_seen.add_done_callback(seen)
        return self.lease(conn, reused=bool(conn.reused))

    def lease(self, conn: HoldingConnection, reused: bool) -> H2Lease:
        conn.leases += 1
        return H2Lease(conn, reused)

    def opened(self, opening: asyncio.Future[None]) -> None:
        """A connection being opened is shared, or was not: the streams waiting look again."""
        if opening in self.openings:
            self.openings.remove(opening)
        if not opening.done():
            opening.set_result(None)
        changed, self.changed = self.changed, None
        if changed is not None and not changed.done():
            changed.set_result(None)

    def leave(self, conn: HoldingConnection) -> None:
        """One stream is done with ``conn``: with its last one, the connection goes back to the pool (closed
        when it is gone), where the next stream to this origin finds it."""
        conn.leases -= 1
        if conn.leases > 0:
            return
        self.conns.remove(conn)
        conn.h2origin = None
        if not self.conns and not self.openings and not self.h1:
            self._connector._h2.pop(self.key, None)
        if not _shareable(conn):
            conn.keep = False
        conn.key = conn.temp_key if conn.keep else None
        conn.release()


class H2Lease:
    """One stream's share of an HTTP/2 connection: what aiosonic's request code gets in place of the
    connection, so that what it does to "its" connection (closing it when the request failed, releasing
    it after the request) concerns this stream alone."""

    __slots__ = ("_done", "conn", "delivered", "keep", "reused", "stream")
    blocked = False
    proxy_connected = False
    proxy_target = None

    def __init__(self, conn: HoldingConnection, reused: bool) -> None:
        self.conn = conn
        self.reused = reused
        self.keep = False
        self.stream: H2Stream | None = None
        self.delivered = False  # the request's response was given to aiosonic
        self._done = False

    @property
    def h2conn(self) -> Any:
        return self.conn.h2conn

    @property
    def h2handler(self) -> Any:
        return self.conn.h2handler

    async def http2_request(self, headers: Any, body: Any) -> Any:
        handler = self.conn.h2handler
        if handler is None:
            raise ConnectionDisconnected()
        token = _LEASE.set(self)
        try:
            response = await handler.request(headers, body)
            self.delivered = True
            return response
        except BaseException:
            self.abandon()
            raise
        finally:
            _LEASE.reset(token)

    def keep_alive(self) -> None:
        self.keep = True

    def abandon(self) -> None:
        """The request failed or was cancelled: its stream is reset (when it was opened) and its share
        ends. aiosonic keeps the stream's slot when a request is cancelled while it waits for the head."""
        stream = self.stream
        if stream is not None:
            if not self.delivered:  # else the response gives the slot back when it is dropped
                stream.handler.forget(stream.stream_id)
            stream.close(completed=False)
        self.release()

    def close(self) -> None:
        self.release()

    def release(self) -> None:
        if not self._done:
            self._done = True
            stream = self.stream
            if stream is not None:
                stream.lease = None
                self.stream = None
            origin = self.conn.h2origin
            if origin is not None:
                origin.leave(self.conn)

    async def __aenter__(self) -> H2Lease:
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc is not None:
            self.abandon()


def _feed(receiver: Any, data: bytes) -> None:
    """Copy ``data`` into a BodyReceiver, as the event loop does with a socket's bytes."""
    view = memoryview(data)
    while view:
        room = receiver.get_buffer(len(view))
        n = min(len(room), len(view))
        room[:n] = view[:n]
        receiver.buffer_updated(n)
        view = view[n:]


class H2Stream:
    """One HTTP/2 stream's response body, on a connection sonicsse's handler reads.

    DATA frames go straight into the stream's BodyReceiver (``attach()``), which sees this object as its
    transport. Flow-control credit goes back as the frames arrive; while the receiver is paused (its
    consumer is behind), the stream's own window is not credited, the connection's still is, so one slow
    stream does not stall the others. Also aiosonic's flow-control callback of the response (a no-op:
    the credit went back already).
    """

    __slots__ = (
        "_pending",
        "_reading",
        "_unacked",
        "closed",
        "ended",
        "handler",
        "lease",
        "lost",
        "receiver",
        "stream_id",
    )

    def __init__(self, handler: StreamH2Handler, stream_id: int) -> None:
        self.handler = handler
        self.stream_id = stream_id
        self.receiver: Any = None
        self.lease: H2Lease | None = None
        self._pending: list[bytes] | None = None  # what came before the receiver
        self.ended = False
        self.lost: BaseException | None = None
        self.closed = False
        self._reading = True
        self._unacked = 0

    def __call__(self, length: int) -> None:
        pass

    # -- from the connection's reader ---------------------------------------------------------------

    def data(self, data: bytes, flow_controlled: int) -> None:
        receiver = self.receiver
        if receiver is not None:
            _feed(receiver, data)
        elif data:
            if self._pending is None:
                self._pending = []
            self._pending.append(data)
        if not flow_controlled:  # an empty DATA frame (END_STREAM alone)
            return
        h2conn = self.handler.h2
        if self._reading:
            h2conn.acknowledge_received_data(flow_controlled, self.stream_id)
        else:
            self._unacked += flow_controlled
            h2conn.increment_flow_control_window(flow_controlled)

    def end(self) -> None:
        if self.ended or self.lost is not None:
            return
        self.ended = True
        if self.receiver is not None:
            self.receiver.eof_received()

    def fail(self, exc: BaseException) -> None:
        if self.ended or self.lost is not None:
            return
        self.lost = exc
        if self.receiver is not None:
            self.receiver.connection_lost(exc)

    # -- the consumer's side ------------------------------------------------------------------------

    def attach(self, receiver: Any) -> None:
        """Deliver the body to ``receiver`` from now on (what came before first)."""
        self.receiver = receiver
        pending, self._pending = self._pending, None
        for data in pending or ():
            _feed(receiver, data)
        if self.lost is not None:
            receiver.connection_lost(self.lost)
        elif self.ended:
            receiver.eof_received()

    def close(self, completed: bool) -> None:
        """The consumer is done: an unfinished stream is reset (RST_STREAM CANCEL), so the server stops
        producing it; what it sent meanwhile is credited back by h2 to the connection's window."""
        if self.closed:
            return
        self.closed = True
        self.receiver = self._pending = None
        handler = self.handler
        handler.streams.pop(self.stream_id, None)
        if not (completed or self.ended or self.lost is not None):
            handler.reset(self.stream_id)

    # -- what the receiver calls on its transport ---------------------------------------------------

    def set_protocol(self, protocol: Any) -> None:
        pass

    def is_reading(self) -> bool:
        return self._reading

    def pause_reading(self) -> None:
        self._reading = False

    def resume_reading(self) -> None:
        if self._reading:
            return
        self._reading = True
        unacked, self._unacked = self._unacked, 0
        if unacked and not (self.closed or self.ended or self.lost is not None):
            self.handler.credit(unacked, self.stream_id)

    def abort(self) -> None:
        self.close(completed=False)


class StreamH2Handler(Http2Handler):  # type: ignore[misc]
    """aiosonic's HTTP/2 handler, with each stream's body delivered to its ``H2Stream`` rather than
    queued (aiosonic's per-stream ``asyncio.Queue``, and a task per chunk read to send its credit).

    Also: flow control is credited with h2's thresholds (``acknowledge_received_data``, padding included),
    a stream the server resets ends with an error (aiosonic only fails a request still waiting for its
    head), and ``settings_seen`` tells when the peer's first SETTINGS came (how many streams it takes).
    """

    def __init__(self, connection: Any, http2_config: Any = None) -> None:
        self.streams: dict[int, H2Stream] = {}
        self.dead = False
        self.h2 = connection.h2conn
        self.settings_seen: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        super().__init__(connection, http2_config)

    def stream_limit(self) -> int:
        """Streams this connection takes: the peer's MAX_CONCURRENT_STREAMS, at most ``max_streams``."""
        limit: int = min(self.http2_config.max_streams, self.h2.remote_settings.max_concurrent_streams)
        return limit

    def usable(self) -> bool:
        """Whether new streams may be opened on this connection."""
        conn = self.connection
        writer = conn.writer
        return not self.dead and conn.h2handler is self and writer is not None and not writer.is_closing()

    def credit(self, increment: int, stream_id: int) -> None:
        """Give a paused stream its withheld window back."""
        try:
            self.h2.increment_flow_control_window(increment, stream_id)
        except Exception as exc:  # the stream is closed meanwhile
            logger.debug("sonicsse: no credit for HTTP/2 stream %d: %r", stream_id, exc)
        self.flush()

    def reset(self, stream_id: int) -> None:
        """Send RST_STREAM CANCEL for an unfinished stream."""
        if self.dead:
            return
        try:
            self.h2.reset_stream(stream_id, error_code=h2.errors.ErrorCodes.CANCEL)
        except Exception as exc:  # already closed, or never sent
            logger.debug("sonicsse: could not reset HTTP/2 stream %d: %r", stream_id, exc)
        self.flush()

    def forget(self, stream_id: int) -> None:
        """Give back the slot of a request that failed or was cancelled, if aiosonic did not."""
        if stream_id in self.requests:
            self._make_sem_release(stream_id)()

    def flush(self) -> None:
        writer = self.connection.writer
        if writer is None or writer.is_closing():
            return
        pending = self.h2.data_to_send()
        if pending:
            writer.write(pending)

    # -- aiosonic's handler, overridden ------------------------------------------------------------

    def _register_stream(self, stream_id: int, headers: Any, body: Any) -> Any:
        future = super()._register_stream(stream_id, headers, body)
        stream = self.streams[stream_id] = H2Stream(self, stream_id)
        lease = _LEASE.get()
        if lease is not None:
            lease.stream = stream
            stream.lease = lease
        return future

    def _make_flow_cb(self, stream_id: int) -> Any:
        return self.streams.get(stream_id) or super()._make_flow_cb(stream_id)

    def _on_data_received(self, event: Any) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is not None:
            stream.data(event.data, event.flow_controlled_length)
        else:  # closed by sonicsse meanwhile: the connection's window gets the bytes back
            self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)

    def _on_stream_ended(self, event: Any) -> None:
        super()._on_stream_ended(event)
        stream = self.streams.get(event.stream_id)
        if stream is not None:
            stream.end()

    def _on_stream_reset(self, event: Any) -> None:
        super()._on_stream_reset(event)
        stream = self.streams.get(event.stream_id)
        if stream is not None:
            stream.fail(ConnectionResetError(f"the server reset the HTTP/2 stream ({event.error_code!r})"))

    def _on_remote_settings_changed(self, event: Any) -> None:
        super()._on_remote_settings_changed(event)
        if not self.settings_seen.done():
            self.settings_seen.set_result(None)

    def _on_disconnect(self) -> None:
        self.dead = True
        super()._on_disconnect()

    def _fail_all_pending(self, exc: Exception) -> None:
        # Called when the connection is gone: the peer closed it, GOAWAY, a protocol error, or cleanup().
        self.dead = True
        super()._fail_all_pending(exc)
        for stream in list(self.streams.values()):
            stream.fail(exc)
        if not self.settings_seen.done():
            self.settings_seen.set_result(None)


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
        # The HTTP/2 connections streams share, by origin and connection settings.
        self._h2: dict[tuple[str, ConnectionSettings], _H2Origin] = {}

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

    def _settings(self, urlparsed: Any, verify: bool, ssl_context: Any, http2: bool) -> ConnectionSettings:
        secure = urlparsed.scheme in ("https", "wss")
        proxy = (
            self.routes.for_url(urlparsed.scheme, urlparsed.hostname, default_port(urlparsed))
            if secure
            else None
        )
        return ConnectionSettings(
            proxy=proxy,
            verify=bool(verify) if secure else True,
            context=ssl_context if secure else None,
            http2=bool(http2) if secure else False,
        )

    async def acquire(
        self,
        urlparsed: Any,
        verify: bool,
        ssl: Any,
        timeouts: Any,
        http2: bool,
        proxy_target: Any = None,
    ) -> Any:
        """A connection for one request; with ``http2`` to an https origin, a share of an HTTP/2
        connection to it opened with the same settings (an ``H2Lease``) when ALPN gives h2.

        One stream opens a connection while the others to the origin wait for it: they share it once the
        peer's SETTINGS say how many streams it takes, or open their own when it speaks HTTP/1.1.
        """
        if not http2 or urlparsed.scheme != "https":
            return await super().acquire(urlparsed, verify, ssl, timeouts, http2, proxy_target)
        key = (connection_key(urlparsed), self._settings(urlparsed, verify, ssl, http2))
        origin = self._h2.get(key)
        if origin is None:
            origin = self._h2[key] = _H2Origin(self, key)
        while True:
            conn = origin.with_room()
            if conn is not None:
                return origin.lease(conn, reused=True)
            if origin.h1 or not origin.should_wait():
                break
            try:
                await origin.wait(timeouts.sock_connect)
            except asyncio.TimeoutError:
                raise ConnectTimeout() from None
        if origin.h1:  # HTTP/1.1 the last time: a connection of its own for each stream, at once
            conn = await super().acquire(urlparsed, verify, ssl, timeouts, http2, proxy_target)
            return origin.share(conn, None) if _shareable(conn) else conn
        opening = origin.opening()
        try:
            conn = await super().acquire(urlparsed, verify, ssl, timeouts, http2, proxy_target)
        except BaseException:
            origin.opened(opening)
            raise
        if not _shareable(conn):
            origin.h1 = True
            origin.opened(opening)
            return conn
        return origin.share(conn, opening)

    async def after_acquire(
        self,
        urlparsed: Any,
        conn: HoldingConnection,
        verify: bool,
        ssl_context: Any,
        timeouts: Any,
        http2: bool,
    ) -> HoldingConnection:
        host = urlparsed.hostname
        port = default_port(urlparsed)
        settings = self._settings(urlparsed, verify, ssl_context, http2)
        if conn.settings != settings or (conn.h2handler is not None and not _shareable(conn)):
            # Opened for other settings (or never), or an HTTP/2 connection now gone: a new socket.
            conn.close()
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

    ``framing``: ``"h2"`` (``h2_stream`` to attach a receiver to, or else ``h2_chunks`` to read),
    ``"chunked"``, ``"length"`` (``remaining`` bytes), ``"close"`` (until the peer closes), ``"body"``
    (aiosonic already read it: ``body``), or ``"lost"``
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
    h2_stream: H2Stream | None = None


def take_response(response: Any) -> TakenResponse:
    """Take the body's connection out of aiosonic's response: the caller owns it from here."""
    taken = TakenResponse(response.status_code, response.reason, response.headers, "lost")
    if response._h2_chunk_queue is not None:
        taken.framing = "h2"
        stream = response._h2_flow_cb
        if isinstance(stream, H2Stream):
            taken.h2_stream = stream  # sonicsse's handler: the body goes straight to a receiver
        else:
            taken.h2_chunks = response.read_chunks()  # a borrowed client's: aiosonic's queue
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
    """Close an HTTP/2 response: the stream is reset when its body did not end, its slot on the connection
    is given back, and a shared connection loses one stream (it goes back to the pool with its last)."""
    queue = response._h2_chunk_queue
    if queue is None:
        return
    stream = response._h2_flow_cb
    if isinstance(stream, H2Stream):
        stream.close(completed)
        response._discard_h2_queue()
        if stream.lease is not None:
            stream.lease.release()
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
