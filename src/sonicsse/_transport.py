"""The only module that touches aiosonic: open a streamed response, read raw body bytes, close it.

aiosonic sends the request (TLS, proxies, pools, cookies, auth, HTTP/2) and parses the status line
and headers. The body is read here, straight from the connection's ``StreamReader``: one ``await``
per socket read, whatever the framing (chunked, ``Content-Length`` or close-delimited), with
chunked framing and gzip/deflate undone synchronously on the bytes of that read.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import zlib
from collections.abc import Mapping
from typing import Any

import h2.errors  # aiosonic's HTTP/2 engine, one of its dependencies
from aiosonic import HTTPClient
from aiosonic.connection import Connection
from aiosonic.connectors import TCPConnector
from aiosonic.pools import PoolConfig

from ._hooks import logger

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
#: Largest read asked from the socket buffer. Not larger: with glibc, a buffer over 128 KiB is allocated
#: above the mmap threshold or grows and trims the heap with brk() on every read, while 64 KiB buffers
#: reuse freed heap chunks (bulk workload: 0.54 -> 0.43 µs of CPU per event end to end).
_READ_SIZE = 1 << 16
#: Largest decompressed output handed over per read (the rest stays in zlib until the next read).
_MAX_INFLATE = 1 << 20
#: Longest chunk-size, chunk-end or trailer line held while its end has not arrived.
_MAX_FRAMING_LINE = 4096

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


def make_http_client(pool_size: int = DEFAULT_POOL_SIZE) -> HTTPClient:
    """An ``aiosonic.HTTPClient`` suited to many long-lived streams.

    Its pools hold ``pool_size`` connections (aiosonic's default is 30, which would make the 31st
    concurrent stream to a host wait), and close-delimited bodies are readable.
    """
    connector = TCPConnector(
        pool_configs={":default": PoolConfig(size=pool_size)},
        connection_cls=HoldingConnection,
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

    def feed(self, data: bytes) -> bytes:
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


def _chunk_size(line: bytes) -> int:
    """The size of a chunk size line with extensions (``1a;name=value``)."""
    try:
        return int(line.split(b";", 1)[0].strip(), 16)
    except ValueError:
        raise TransportError(f"broken chunked framing: bad chunk size {line[:40]!r}") from None


class BodyReader:
    """One streamed HTTP response: status, headers, and the body read one socket read at a time."""

    __slots__ = (
        "_buf",
        "_chunk_left",
        "_closed",
        "_conn",
        "_failed",
        "_fast",
        "_h2_iter",
        "_inflater",
        "_interrupt_exc",
        "_leftover",
        "_mode",
        "_reader",
        "_remaining",
        "_response",
        "_state",
        "completed",
        "headers",
        "reason",
        "status",
    )

    def __init__(self, response: Any) -> None:
        self._response = response
        self.status: int = response.status_code
        self.reason: str = response.reason
        self.headers: Mapping[str, str] = response.headers
        self.completed = False
        self._closed = False
        self._leftover = False
        self._interrupt_exc: Exception | None = None
        self._failed: TransportError | None = None
        self._fast = False
        self._buf = b""
        self._chunk_left = 0
        self._state = 0  # chunked: 0 size line, 1 data, 2 CRLF after data, 3 trailers
        self._remaining: int | None = None
        self._h2_iter: Any = None
        self._reader: asyncio.StreamReader | None = None
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
        self._reader = conn.reader
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
            self._fast = self._inflater is None
        elif response._remaining is not None:
            self._mode = "length"
            self._remaining = response._remaining
        elif response.body or "content-length" in response.headers:
            self._mode = "body"  # aiosonic already read a (short) body
        else:
            self._mode = "close"

    @property
    def unframed_lost(self) -> bool:
        """True when the body is close-delimited but the connection was already closed by aiosonic."""
        return self._mode == "none" and self.status == 200

    def interrupt(self, exc: Exception) -> None:
        """Make the pending (or next) read raise ``exc`` (timers, and ``close()`` from another task)."""
        self._interrupt_exc = exc
        if self._reader is not None:
            self._reader.set_exception(exc)
        elif self._response._h2_chunk_queue is not None:
            self._response._h2_chunk_queue.put_nowait(exc)

    async def read(self) -> bytes:
        """The next decoded body bytes; ``b""`` at the end of the body. One socket read per call.

        Raises TransportError when the connection drops before the end of a framed body, or when
        its framing or compression is broken.
        """
        if self._closed:
            raise self._interrupt_exc or TransportError("the response was closed")
        if self._fast:  # uncompressed chunked body: the common case, without nested coroutines
            reader = self._reader
            assert reader is not None
            while True:
                try:
                    raw = await reader.read(_READ_SIZE)
                except OSError as exc:
                    raise TransportError(f"connection lost: {exc!r}") from exc
                if not raw:
                    raise TransportError("connection closed before the end of the chunked body")
                if self._buf:
                    raw = self._buf + raw
                    self._buf = b""
                out = self._dechunk(raw)
                if out or self.completed:
                    self._fast = not self.completed and self._failed is None
                    return out
        return await self._read_slow()

    async def _read_slow(self) -> bytes:
        inflater = self._inflater
        if inflater is not None and inflater.pending:
            out = inflater.more()
            if out:
                return out
        if self.completed:
            return inflater.flush() if inflater is not None else b""
        while True:
            data = await self._read_raw()
            if inflater is not None:
                try:
                    data = inflater.feed(data) if data else inflater.flush()
                except zlib.error as exc:
                    raise TransportError(
                        f"broken {self.headers.get('content-encoding')} body: {exc}"
                    ) from exc
                if not data and not self.completed:
                    continue
            if data or self.completed:
                return data

    async def _read_raw(self) -> bytes:
        mode = self._mode
        if mode == "chunked":
            return await self._read_chunked()
        if mode == "close":
            try:
                data = await self._reader.read(_READ_SIZE)  # type: ignore[union-attr]
            except (OSError, asyncio.IncompleteReadError) as exc:
                raise TransportError(f"connection lost: {exc!r}") from exc
            if not data:
                self.completed = True
            return data
        if mode == "length":
            remaining = self._remaining or 0
            if remaining <= 0:
                self.completed = True
                return b""
            try:
                data = await self._reader.read(min(remaining, _READ_SIZE))  # type: ignore[union-attr]
            except OSError as exc:
                raise TransportError(f"connection lost: {exc!r}") from exc
            if not data:
                raise TransportError(f"connection closed with {remaining} bytes of the body missing")
            remaining -= len(data)
            self._remaining = remaining
            if remaining == 0:
                self.completed = True
            return data
        if mode == "h2":
            try:
                return bytes(await self._h2_iter.__anext__())
            except StopAsyncIteration:
                self.completed = True
                return b""
            except (OSError, ConnectionError) as exc:
                raise TransportError(f"connection lost: {exc!r}") from exc
            except Exception as exc:
                if type(exc).__module__.startswith("aiosonic"):
                    raise TransportError(f"connection lost: {exc!r}") from exc
                raise
        if mode == "body":
            self._mode = "done"
            body = self._response.body
            if body:
                return bytes(body)
        self.completed = True
        return b""

    async def _read_chunked(self) -> bytes:
        """De-chunk one socket read (a read may hold many chunks, or only part of one)."""
        reader = self._reader
        assert reader is not None
        if self._failed is not None:
            raise self._failed
        while True:
            try:
                raw = await reader.read(_READ_SIZE)
            except OSError as exc:
                raise TransportError(f"connection lost: {exc!r}") from exc
            if not raw:
                raise TransportError("connection closed before the end of the chunked body")
            buf = self._buf + raw if self._buf else raw
            self._buf = b""
            out = self._dechunk(buf)
            if out or self.completed:
                return out

    def _dechunk(self, buf: bytes) -> bytes:
        pieces: list[bytes] = []
        try:
            self._dechunk_into(buf, pieces)
        except TransportError as exc:
            if not pieces:
                raise
            self._failed = exc  # hand over the good bytes before the break first
        if not pieces:
            return b""
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def _dechunk_into(self, buf: bytes, pieces: list[bytes]) -> None:
        """The payload of the chunked framing in ``buf``; a partial size line or CRLF is kept for later.

        The fast path takes a whole chunk (size line, data, CRLF) per iteration: SSE servers often
        write one small chunk per event, so this loop runs once per event.
        """
        append = pieces.append
        find = buf.find
        pos = 0
        end = len(buf)
        state = self._state
        left = self._chunk_left
        while pos < end:
            if state == 0:  # size line
                nl = find(b"\n", pos)
                if nl < 0:
                    if end - pos > _MAX_FRAMING_LINE:
                        raise TransportError("broken chunked framing: chunk size line too long")
                    self._buf = buf[pos:]
                    break
                try:
                    size = int(buf[pos:nl], 16)  # int() ignores the surrounding whitespace and CR
                except ValueError:
                    size = _chunk_size(buf[pos:nl])
                if size < 0:
                    raise TransportError(f"broken chunked framing: bad chunk size {buf[pos:nl][:40]!r}")
                pos = nl + 1
                if size == 0:
                    state = 3
                    continue
                stop = pos + size
                if stop + 2 <= end and buf[stop : stop + 2] == b"\r\n":  # the whole chunk is here
                    append(buf[pos:stop])
                    pos = stop + 2
                    continue
                left = size
                state = 1
            elif state == 1:  # chunk data
                take = min(left, end - pos)
                append(buf[pos : pos + take])
                pos += take
                left -= take
                if left == 0:
                    state = 2
            elif state == 2:  # CRLF after the data
                nl = find(b"\n", pos)
                if nl < 0:
                    rest = buf[pos:]
                    if rest.strip() or len(rest) > _MAX_FRAMING_LINE:
                        raise TransportError("broken chunked framing: no CRLF after chunk data")
                    self._buf = rest
                    break
                if buf[pos:nl].strip():
                    raise TransportError("broken chunked framing: no CRLF after chunk data")
                pos = nl + 1
                state = 0
            else:  # 3: trailer lines, up to the empty line ending the body
                nl = find(b"\n", pos)
                if nl < 0:
                    if end - pos > _MAX_FRAMING_LINE:
                        raise TransportError("broken chunked framing: trailer line too long")
                    self._buf = buf[pos:]
                    break
                line = buf[pos:nl]
                pos = nl + 1
                if not line.strip():
                    self.completed = True
                    self._leftover = pos < end
                    break
        self._state = state
        self._chunk_left = left

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
        reader = self._reader
        self._reader = None
        self._conn = None
        if conn is None:
            # A stolen socket: only this object knows it.
            if reader is not None:
                transport = getattr(reader, "_transport", None)
                if transport is not None:
                    transport.abort()
            return
        reusable = (
            keep_connection and self.completed and not self._leftover and conn.keep and self._mode != "close"
        )
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
