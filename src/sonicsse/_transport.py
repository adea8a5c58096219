"""aiosonic's responses, for sonicsse: open a streamed response, read raw body bytes, close it.

With ``_connector`` (how connections are made), the only modules that touch aiosonic. aiosonic sends
the request (pools, cookies, auth, HTTP/2) and parses the status line and headers. The HTTP/1.1 body is
read here: the connection's socket is handed from aiosonic's ``StreamReader`` to a
:class:`BodyReceiver`, which reads it into one reusable buffer, and chunked framing and gzip/deflate are
undone synchronously on the bytes of each socket read, whatever the framing (chunked,
``Content-Length`` or close-delimited). Where the handover cannot be proved exact
(``handover_refusal``), the receiver is fed from aiosonic's reader instead.

aiosonic and asyncio names used beyond their documented API (checked against the installed versions by
``tests/test_aiosonic_seam.py``): the response's ``_connection``, ``_owns_connection``, ``_remaining``,
``_h2_chunk_queue``, ``_h2_flow_cb``, ``_discard_h2_queue()``; ``StreamReader._buffer``, ``_eof``,
``_paused``, ``_transport``; ``StreamReaderProtocol._stream_reader``.
"""

from __future__ import annotations

import asyncio
import inspect
import zlib
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import h2.errors  # aiosonic's HTTP/2 engine, one of its dependencies
from aiosonic import HTTPClient
from aiosonic.connection import Connection

from ._connector import DEFAULT_POOL_SIZE, HOLD, StreamConnector, make_http_client
from ._hooks import logger
from ._impl import BodyReceiver, ChunkedDecoder
from ._proxy import format_host

__all__ = [
    "DEFAULT_POOL_SIZE",
    "BodyReader",
    "TransportError",
    "is_bad_response",
    "make_http_client",
    "open_response",
]

#: Largest decompressed output handed over per read (the rest stays in zlib until the next read).
_MAX_INFLATE = 1 << 20


class TransportError(Exception):
    """The body could not be read: the connection dropped, or its framing or compression was broken."""


# aiosonic functions where a ValueError means the response could not be parsed (a bad Content-Length,
# a status line or header that is not UTF-8); anywhere else it means an invalid request argument.
_RESPONSE_PARSING = frozenset(
    {
        "_exchange",
        "_set_response_initial",
        "_set_response_headers",
        "_clear_line",
        "status_code",
        "readexactly",
    }
)


def is_bad_response(exc: BaseException) -> bool:
    """Whether a ``ValueError`` raised by ``HTTPClient.request`` came from parsing the server's response.

    aiosonic raises plain ``ValueError``s both for invalid arguments (a header value with a control
    character) and for malformed responses; the first is the caller's bug, the second the server's.
    """
    if isinstance(exc, UnicodeDecodeError):
        return True
    if not isinstance(exc, ValueError):
        return False
    tb = exc.__traceback__
    innermost = None
    while tb is not None:
        innermost = tb.tb_frame.f_code.co_name
        tb = tb.tb_next
    return innermost in _RESPONSE_PARSING


class _Inflater:
    """Incremental gzip/deflate decoding with bounded output per call."""

    __slots__ = ("_deflate", "_obj", "_started")

    def __init__(self, encoding: str) -> None:
        self._deflate = encoding == "deflate"
        # gzip: 16 + MAX_WBITS; deflate: zlib-wrapped, or raw deflate from some servers (tried on error).
        self._obj = zlib.decompressobj(zlib.MAX_WBITS | (16 if not self._deflate else 0))
        self._started = False

    @property
    def pending(self) -> bool:
        return bool(self._obj.unconsumed_tail)

    def feed(self, data: bytes | memoryview) -> bytes:
        try:
            out = self._obj.decompress(self._obj.unconsumed_tail + data, _MAX_INFLATE)
        except zlib.error:
            if not (self._deflate and not self._started):
                raise
            self._obj = zlib.decompressobj(-zlib.MAX_WBITS)
            out = self._obj.decompress(data, _MAX_INFLATE)
        self._started = True
        return out

    def more(self) -> bytes:
        return self._obj.decompress(self._obj.unconsumed_tail, _MAX_INFLATE)

    def flush(self) -> bytes:
        return self._obj.flush()


def handover_refusal(reader: asyncio.StreamReader, writer: asyncio.StreamWriter | None) -> str | None:
    """Why the socket behind aiosonic's ``reader`` cannot be handed to a BodyReceiver, or None when it can.

    The receiver must take the transport that the connection really reads through (the writer's: the
    TLS one after ``start_tls``, where the reader still names the raw socket's), and every byte that
    aiosonic's reader already holds. Both hold when the writer's transport delivers to the reader's
    protocol and the reader's buffer is where asyncio keeps it.
    """
    if writer is None:
        return "no writer"
    if not isinstance(getattr(reader, "_buffer", None), bytearray):
        return "the reader keeps no buffer where asyncio keeps it"
    if getattr(reader, "_eof", False) or reader.exception() is not None:
        return None  # the connection is over: the reader holds all there is
    protocol = writer.transport.get_protocol()
    if getattr(protocol, "_stream_reader", None) is not reader:
        return "the writer's transport does not deliver to this reader"
    return None


def _receive_body(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter | None
) -> tuple[BodyReceiver, _StreamPump | None]:
    """Hand the socket behind ``reader`` to a BodyReceiver, with the body bytes the reader already holds;
    or, where that cannot be done exactly (``handover_refusal``), feed the receiver from the reader
    (the pump comes back too)."""
    refusal = handover_refusal(reader, writer)
    if refusal is not None:
        logger.debug("sonicsse: reading the body through aiosonic's reader: %s", refusal)
        pump = _StreamPump(reader, writer)
        return pump.receiver, pump
    assert writer is not None
    transport = writer.transport
    buffered: bytearray = reader._buffer  # type: ignore[attr-defined]
    initial = bytes(buffered)
    buffered.clear()
    exc = reader.exception()
    ended = reader._eof or exc is not None  # type: ignore[attr-defined]
    if reader._paused:  # type: ignore[attr-defined]
        # The reader paused the transport it knows (under TLS, the raw socket's): nothing would arrive.
        reader._paused = False  # type: ignore[attr-defined]
        reader._transport.resume_reading()  # type: ignore[attr-defined]
    receiver = BodyReceiver(transport, transport.get_protocol(), initial, eof=ended)
    if exc is not None:
        receiver.lost = exc
    return receiver, None


class _StreamPump:
    """Feeds a BodyReceiver from aiosonic's ``StreamReader`` (the fallback of ``_receive_body``): a task
    copies what ``read()`` gives into the receiver as the event loop would, and stands for the
    transport the receiver pauses, resumes and aborts."""

    __slots__ = ("_reader", "_running", "_task", "_writer", "receiver")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter | None) -> None:
        self._reader = reader
        self._writer = writer
        self._running = asyncio.Event()
        self._running.set()
        self.receiver = BodyReceiver(self, None)
        self._task = asyncio.get_running_loop().create_task(self._pump())

    async def _pump(self) -> None:
        receiver = self.receiver
        try:
            while True:
                await self._running.wait()
                data = await self._reader.read(1 << 16)
                if not data:
                    receiver.eof_received()
                    return
                view = memoryview(data)
                while view:
                    room = receiver.get_buffer(len(view))
                    n = min(len(room), len(view))
                    room[:n] = view[:n]
                    receiver.buffer_updated(n)
                    view = view[n:]
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            receiver.connection_lost(exc)

    # -- what the receiver calls on its transport --------------------------------------------------

    def set_protocol(self, protocol: Any) -> None:
        pass

    def is_reading(self) -> bool:
        return self._running.is_set()

    def pause_reading(self) -> None:
        self._running.clear()

    def resume_reading(self) -> None:
        self._running.set()

    def abort(self) -> None:
        self.stop()
        if self._writer is not None:
            self._writer.transport.abort()

    def stop(self) -> None:
        """Stop reading: what the reader holds and what the socket has not given yet stay there."""
        self._task.cancel()


class BodyReader:
    """One streamed HTTP response: status, headers, and the body as it arrives.

    An HTTP/1.1 body is received by a :class:`BodyReceiver` (no copy between the socket and the
    decoder); ``read()`` returns a view of its buffer, valid until the caller next awaits anything.
    """

    __slots__ = (
        "_closed",
        "_completed",
        "_conn",
        "_h2_iter",
        "_inflater",
        "_interrupt_exc",
        "_leftover",
        "_mode",
        "_pool_safe",
        "_pump",
        "_response",
        "_rx",
        "_streams",
        "headers",
        "reason",
        "status",
    )

    def __init__(self, response: Any, pool_safe: bool = True) -> None:
        self._response = response
        # Whether the connection may go back to the pool after the body (a borrowed HTTPClient's pool
        # does not know the TLS settings a socket was opened with).
        self._pool_safe = pool_safe
        # aiosonic's reader and writer of the socket, kept while this object owns the socket: the
        # writer's finalizer closes the socket, which would end a close-delimited body early.
        self._streams: tuple[Any, Any] | None = None
        self._pump: _StreamPump | None = None
        self.status: int = response.status_code
        self.reason: str = response.reason
        self.headers: Mapping[str, str] = response.headers
        self._completed = False  # HTTP/2 and unbuffered bodies, and close-delimited ones at EOF
        self._closed = False
        self._leftover = False
        self._interrupt_exc: Exception | None = None
        self._h2_iter: Any = None
        self._rx: BodyReceiver | None = None
        self._conn: Connection | None = None
        encoding = (response.headers.get("content-encoding") or "").strip().lower()
        self._inflater = _Inflater(encoding) if encoding in ("gzip", "deflate", "x-gzip") else None
        if response._h2_chunk_queue is not None:
            self._mode = "h2"
            self._h2_iter = response.read_chunks()
            return
        conn = response._connection
        # The transport owns the connection from here: the response must not release it again.
        response._connection = None
        response._owns_connection = False
        self._conn = conn
        if conn is None or conn.reader is None:
            self._mode = "none"
            return
        reader = conn.reader
        writer = conn.writer
        self._streams = (reader, writer)
        if not conn.blocked:
            # A shared HTTPClient without HoldingConnection already put this connection back in its
            # pool: take the socket out of it, so no other request is sent over it.
            conn.reader = None
            conn.writer = None
            conn.keep = False
            self._conn = None
        status = self.status
        if status in (204, 304) or 100 <= status < 200 or response.method.upper() == "HEAD":
            self._mode = "body"
        elif response.chunked:
            self._mode = "chunked"
        elif response._remaining is not None:
            self._mode = "length" if response._remaining > 0 else "body"
        elif response.body or "content-length" in response.headers:
            self._mode = "body"  # aiosonic already read a (short) body
        else:
            self._mode = "close"
        if self._mode != "body":
            self._rx, self._pump = _receive_body(reader, writer)
            rx = self._rx
            if self._mode == "chunked":
                rx.set_framing(chunked=ChunkedDecoder())
            elif self._mode == "length":
                rx.set_framing(length=response._remaining)
        elif self._conn is None:
            # A stolen socket with nothing left to read: only this object knows it.
            (writer.transport if writer is not None else reader._transport).abort()
            self._streams = None

    @property
    def unframed_lost(self) -> bool:
        """True when the body is close-delimited but the connection was already closed by aiosonic."""
        return self._mode == "none" and self.status == 200

    def interrupt(self, exc: Exception) -> None:
        """Make the pending (or next) read raise ``exc`` (timers, and ``close()`` from another task)."""
        self._interrupt_exc = exc
        if self._rx is not None:
            self._rx.interrupt(exc)
        elif self._response._h2_chunk_queue is not None:
            self._response._h2_chunk_queue.put_nowait(exc)

    @property
    def completed(self) -> bool:
        """The body was read to its end."""
        rx = self._rx
        return self._completed or (rx is not None and rx.completed)

    async def read(self) -> bytes | memoryview:
        """The next decoded body bytes; ``b""`` at the end of the body.

        A view into the receive buffer comes back when no decompression was needed: use it (or copy
        it) before awaiting anything else. Raises TransportError when the connection drops before the end
        of a framed body, or when its framing or compression is broken.
        """
        if self._closed:
            raise self._interrupt_exc or TransportError("the response was closed")
        rx = self._rx
        if rx is None:
            return await self._read_unbuffered()
        if rx.failed is not None:  # found by poll() or an earlier read()
            raise TransportError(str(rx.failed))
        inflater = self._inflater
        while True:
            rx.check()
            if inflater is not None and inflater.pending:
                out = inflater.more()
                if out:
                    return out
            if self.completed:
                return inflater.flush() if inflater is not None else b""
            if rx.start < rx.end:
                try:
                    data: bytes | memoryview = rx.take()
                except ValueError as exc:
                    raise TransportError(str(exc)) from None
                if data and inflater is not None:
                    data = self._inflate(inflater, data)
                if data:
                    return data
                if rx.completed:
                    continue
            if rx.eof:
                self._at_eof(rx)
                continue
            await rx.receive()

    def poller(self) -> Callable[[], memoryview | asyncio.Future[None] | None] | None:
        """What a consumer calls per read in the steady state of a stream, instead of awaiting
        ``read()``: the receiver's ``poll()``, which gives the next body bytes (a view, as ``read()``
        gives) when some are buffered, else a future that is done when more arrive, and None when
        ``read()`` must be used instead (at the end of the body, after an interrupt or an error). None
        for bodies that always need ``read()``: with decompression, HTTP/2, and bodies aiosonic already
        read."""
        rx = self._rx
        if rx is None or self._inflater is not None:
            return None
        return rx.poll

    def _at_eof(self, rx: BodyReceiver) -> None:
        """The peer ended the stream with everything received parsed: the end of the body, or an error."""
        if rx.lost is not None:
            raise TransportError(f"connection lost: {rx.lost!r}")
        if self._mode == "close":
            self._completed = True
        elif self._mode == "length":
            raise TransportError(f"connection closed with {rx.remaining} bytes of the body missing")
        else:
            raise TransportError("connection closed before the end of the chunked body")

    def _inflate(self, inflater: _Inflater, data: bytes | memoryview) -> bytes:
        try:
            return inflater.feed(data) if data else inflater.flush()
        except zlib.error as exc:
            raise TransportError(f"broken {self.headers.get('content-encoding')} body: {exc}") from exc

    async def _read_unbuffered(self) -> bytes:
        """HTTP/2 bodies, and bodies aiosonic already read."""
        inflater = self._inflater
        if inflater is not None and inflater.pending:
            out = inflater.more()
            if out:
                return out
        if self.completed:
            return inflater.flush() if inflater is not None else b""
        while True:
            data = await self._read_h2() if self._mode == "h2" else self._read_body()
            if inflater is not None:
                data = self._inflate(inflater, data)
                if not data and not self.completed:
                    continue
            if data or self.completed:
                return data

    async def _read_h2(self) -> bytes:
        try:
            return bytes(await self._h2_iter.__anext__())
        except StopAsyncIteration:
            self._completed = True
            return b""
        except (OSError, ConnectionError) as exc:
            raise TransportError(f"connection lost: {exc!r}") from exc
        except Exception as exc:
            if type(exc).__module__.startswith("aiosonic"):
                raise TransportError(f"connection lost: {exc!r}") from exc
            raise

    def _read_body(self) -> bytes:
        if self._mode == "body":
            self._mode = "done"
            body = self._response.body
            if body:
                return bytes(body)
        self._completed = True
        return b""

    def close(self, keep_connection: bool = False) -> None:
        """Close the response now: the socket is aborted unless the body was read to its end and
        ``keep_connection`` asks to return the connection to the pool. Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        if self._mode == "h2":
            self._h2_iter = None
            queue = self._response._h2_chunk_queue
            if queue is not None:
                if not self.completed:
                    _cancel_h2_stream(self._response, queue)
                self._response._discard_h2_queue()  # drops what is queued and frees the stream slot
            return
        conn = self._conn
        rx = self._rx
        if rx is not None:  # what the receiver knew of the body's end stays known
            self._completed = self._completed or rx.completed
            self._leftover = rx.leftover
        self._rx = None
        self._conn = None
        self._streams = None
        if self._pump is not None:
            self._pump.stop()
        if conn is None:
            # A stolen socket: only this object knows it.
            if rx is not None:
                rx.abort()
            return
        reusable = (
            keep_connection
            and self._pool_safe
            and self._completed
            and not self._leftover
            and conn.keep
            and self._mode != "close"
            and (rx is None or rx.start == rx.end)
        )
        if reusable and rx is not None:
            rx.restore()
        if not reusable:
            conn.keep = False
            conn.close()
        if conn.blocked:
            conn.release()
        elif not reusable:
            conn.close()


def _cancel_h2_stream(response: Any, queue: asyncio.Queue[Any]) -> None:
    """Reset an unfinished HTTP/2 stream (RST_STREAM CANCEL), so the server stops sending it.

    aiosonic only drops its local queue: the server would go on producing the stream (an LLM billing
    tokens nobody reads), and the bytes already queued would never be credited back to the
    connection's flow-control window, which in the end stalls every stream sharing the connection.
    aiosonic keeps the stream's handler and id only in the flow-control callback it gives the response.
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


async def open_response(
    client: HTTPClient,
    method: str,
    url: str,
    headers: dict[str, str],
    params: Any,
    data: Any,
    json: Any,
    request_kwargs: Mapping[str, Any],
) -> BodyReader:
    """Send one request (no redirects followed) and give its response with the body unread.

    With sonicsse's own HTTPClient, a plain-http request that goes through a proxy is sent by that
    proxy's forwarding client. ``ssl`` applies to https only, and an IPv6 address gets the ``Host``
    header aiosonic would write without brackets (and HTTP/1.1, where aiosonic's HTTP/2 cannot name it).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    port = parts.port or (443 if scheme == "https" else 80)
    kwargs = dict(request_kwargs)
    if scheme != "https":
        kwargs["ssl"] = None  # aiosonic would wrap a plain connection in it
    connector = client.connector
    ours = isinstance(connector, StreamConnector)
    if ours:
        client = connector.forwarding_client(scheme, host, port) or client
    if ":" in host:
        if kwargs.get("http2"):
            # aiosonic cuts an IPv6 address at its first colon when it writes the HTTP/2 :authority (an
            # empty one, which servers refuse or never answer): HTTP/1.1 it is, with a correct Host.
            logger.debug("sonicsse: HTTP/1.1 for %s: aiosonic cannot name an IPv6 address in HTTP/2", host)
            kwargs["http2"] = False
        if not any(name.lower() == "host" for name in headers):
            default = port == (443 if scheme == "https" else 80)
            headers = {**headers, "Host": f"[{host}]" if default else format_host(host, port)}
    pool_safe = ours or (kwargs.get("verify", True) and kwargs.get("ssl") is None)
    token = HOLD.set(True)
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
        HOLD.reset(token)
    return BodyReader(response, pool_safe=bool(pool_safe))
