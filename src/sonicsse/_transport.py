"""The only module that touches aiosonic: open a streamed response, read raw body bytes, close it.

aiosonic sends the request (TLS, proxies, pools, cookies, auth, HTTP/2) and parses the status line
and headers. The HTTP/1.1 body is read here: the connection's socket is handed from aiosonic's
``StreamReader`` to a :class:`BodyReceiver`, which reads it into one reusable buffer, and chunked
framing and gzip/deflate are undone synchronously on the bytes of each socket read, whatever the
framing (chunked, ``Content-Length`` or close-delimited).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import zlib
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import h2.errors  # aiosonic's HTTP/2 engine, one of its dependencies
from aiosonic import HTTPClient
from aiosonic.connection import Connection
from aiosonic.connectors import TCPConnector
from aiosonic.pools import PoolConfig, SmartPool

from ._hooks import logger
from ._impl import BodyReceiver, ChunkedDecoder
from ._resolver import SharedResolver

__all__ = [
    "DEFAULT_POOL_SIZE",
    "BodyReader",
    "HoldingConnection",
    "TransportError",
    "is_bad_response",
    "make_http_client",
    "open_response",
]

#: Connections per pool of the HTTPClient an SSEClient creates: 1,000 streams to one host never wait.
DEFAULT_POOL_SIZE = 1024
#: Largest decompressed output handed over per read (the rest stays in zlib until the next read).
_MAX_INFLATE = 1 << 20
# Set while sonicsse sends a request: HoldingConnection then keeps the connection for the response
# (even a close-delimited one) until the transport releases it.
_HOLD: contextvars.ContextVar[bool] = contextvars.ContextVar("sonicsse_hold", default=False)


class TransportError(Exception):
    """The body could not be read: the connection dropped, or its framing or compression was broken."""


class HoldingConnection(Connection):  # type: ignore[misc]
    """An aiosonic connection that stays with a sonicsse response until the body was read.

    aiosonic releases (and, with ``Connection: close``, closes) a connection whose response has
    no length and no chunked framing as soon as the headers were read, losing a close-delimited
    body. While sonicsse sends a request, this class keeps such a connection blocked instead; the
    transport releases it when the stream is closed.
    """

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc is not None:
            # The request failed or was cancelled half-way: the socket's state is unknown. aiosonic would
            # put a kept-alive connection back in the pool with its socket open; close it instead.
            self.keep = False
        elif _HOLD.get() and self.h2conn is None and self.reader is not None:
            self.blocked = True
        await super().__aexit__(exc_type, exc, tb)


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


def make_http_client(pool_size: int = DEFAULT_POOL_SIZE) -> HTTPClient:
    """An ``aiosonic.HTTPClient`` suited to many long-lived streams.

    Its pools hold ``pool_size`` connections (aiosonic's default is 30, which would make the 31st
    concurrent stream to a host wait), and close-delimited bodies are readable.
    """
    connector = TCPConnector(
        pool_configs={":default": PoolConfig(size=pool_size)},
        connection_cls=HoldingConnection,
        pool_cls=LazyPool,
        resolver=SharedResolver(),
    )
    return HTTPClient(connector=connector)


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


def _receive_body(reader: asyncio.StreamReader) -> BodyReceiver:
    """Hand the socket behind ``reader`` to a BodyReceiver, with the body bytes the reader already holds."""
    buffered: bytearray = reader._buffer  # type: ignore[attr-defined]
    initial = bytes(buffered)
    buffered.clear()
    transport = reader._transport  # type: ignore[attr-defined]
    exc = reader.exception()
    ended = reader._eof or exc is not None  # type: ignore[attr-defined]
    receiver = BodyReceiver(transport, transport.get_protocol(), initial, eof=ended)
    if exc is not None:
        receiver.lost = exc
    return receiver


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
        "_response",
        "_rx",
        "headers",
        "reason",
        "status",
    )

    def __init__(self, response: Any) -> None:
        self._response = response
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
            self._rx = rx = _receive_body(reader)
            if self._mode == "chunked":
                rx.set_framing(chunked=ChunkedDecoder())
            elif self._mode == "length":
                rx.set_framing(length=response._remaining)
        elif self._conn is None:
            # A stolen socket with nothing left to read: only this object knows it.
            reader._transport.abort()

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
        if conn is None:
            # A stolen socket: only this object knows it.
            if rx is not None:
                rx.abort()
            return
        reusable = (
            keep_connection
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
    """Send one request (no redirects followed) and give its response with the body unread."""
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
            **request_kwargs,
        )
    finally:
        _HOLD.reset(token)
    return BodyReader(response)
