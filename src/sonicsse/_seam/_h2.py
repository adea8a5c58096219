"""HTTP/2: streams to one origin share connections; each DATA frame goes straight into its stream's
receiver (see the package's docstring)."""

from __future__ import annotations

import asyncio
import contextvars
from typing import TYPE_CHECKING, Any

import h2.errors
from aiosonic.exceptions import (
    ConnectionDisconnected,
)
from aiosonic.http2 import Http2Handler

from .._buffered import feed
from .._logging import logger
from ._timeout import within

if TYPE_CHECKING:
    from ._connections import ConnectionSettings, HoldingConnection
    from ._connector import StreamConnector


# Set while a stream's request is sent over a shared HTTP/2 connection: the handler gives the stream it
# opens to this lease.
_LEASE: contextvars.ContextVar[H2Lease | None] = contextvars.ContextVar("sonicsse_h2_lease", default=None)


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
            await within(asyncio.shield(changed), timeout)
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
            feed(receiver, data)
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
            feed(receiver, data)
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
