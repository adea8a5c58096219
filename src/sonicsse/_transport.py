"""A streamed response's body, read straight from the socket: framing and compression undone per read.

The head comes from aiosonic (through ``_seam``); the body is read here. For HTTP/1.1 the connection's
socket is handed from aiosonic's ``StreamReader`` to a :class:`BodyReceiver`, which reads it into one
reusable buffer, and chunked framing and gzip/deflate are undone synchronously on the bytes of each
socket read, whatever the framing (chunked, ``Content-Length`` or close-delimited). Where the handover
cannot be proved exact (``_seam.handover``), the receiver is fed from aiosonic's reader instead.
An HTTP/2 body goes to a BodyReceiver too: the connection's reader (``_seam.StreamH2Handler``, one per
connection, which many streams share) copies each DATA frame of the stream into it. With a borrowed
aiosonic client, HTTP/2 bodies come from aiosonic's stream queue.
"""

from __future__ import annotations

import asyncio
import zlib
from typing import Any, Protocol
from urllib.parse import urlsplit

from . import _impl, _seam
from ._buffered import feed
from ._logging import logger
from ._proxy import format_host

__all__ = ["Interrupted", "Poller", "ResponseBody", "TransportError", "open_response"]


class Poller(Protocol):
    """A body's per-read step (see :meth:`ResponseBody.poller`)."""

    def poll(self) -> memoryview | asyncio.Future[None] | None: ...


#: Largest decompressed output handed over per read (the rest stays in zlib until the next read).
_MAX_INFLATE = 1 << 20


class TransportError(Exception):
    """The body could not be read: the connection dropped, or its framing or compression was broken."""


class Interrupted(Exception):
    """A read cut short by :meth:`ResponseBody.interrupt`: ``kind`` says why (``"closed"``,
    ``"restart"``, ``"timeout"``), ``reason`` says it to a person."""

    def __init__(self, kind: str, reason: str = "") -> None:
        super().__init__(reason or kind)
        self.kind = kind
        self.reason = reason or kind


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


def _receive_body(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter | None
) -> tuple[Any, _StreamPump | None]:
    """Hand the socket behind ``reader`` to a BodyReceiver, with the body bytes the reader already holds;
    or, where that cannot be done exactly, feed the receiver from the reader (the pump comes back too)."""
    taken = _seam.handover(reader, writer)
    if isinstance(taken, str):
        logger.debug("sonicsse: reading the body through aiosonic's reader: %s", taken)
        pump = _StreamPump(reader, writer)
        return pump.receiver, pump
    assert writer is not None
    initial, ended, exc = taken
    transport = writer.transport
    receiver = _impl.BodyReceiver(transport, transport.get_protocol(), initial, eof=ended)
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
        self.receiver = _impl.BodyReceiver(self, None)
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
                feed(receiver, data)
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


class ResponseBody:
    """One streamed HTTP response: status, headers, and the body as it arrives.

    A body is received by a ``BodyReceiver`` (no copy between the socket and the decoder over HTTP/1.1);
    ``read()`` returns a view of its buffer, valid until the caller next awaits anything.
    """

    __slots__ = (
        "_closed",
        "_completed",
        "_h2_iter",
        "_inflater",
        "_interruption",
        "_leftover",
        "_pool_safe",
        "_pump",
        "_response",
        "_rx",
        "_taken",
        "headers",
        "reason",
        "status",
    )

    def __init__(self, response: Any, pool_safe: bool = True) -> None:
        self._response = response
        # Whether the connection may go back to the pool after the body (a borrowed HTTPClient's pool
        # does not know the TLS settings a socket was opened with).
        self._pool_safe = pool_safe
        # Holds aiosonic's reader and writer while this object owns the socket: the writer's finalizer
        # closes the socket, which would end a close-delimited body early.
        taken = self._taken = _seam.take_response(response)
        self.status: int = taken.status
        self.reason: str = taken.reason
        self.headers: Any = taken.headers
        self._completed = False  # HTTP/2 and unbuffered bodies, and close-delimited ones at EOF
        self._closed = False
        self._leftover = False
        self._interruption: Interrupted | None = None
        self._h2_iter: Any = taken.h2_chunks
        self._rx: Any = None
        self._pump: _StreamPump | None = None
        encoding = (taken.headers.get("content-encoding") or "").strip().lower()
        self._inflater = _Inflater(encoding) if encoding in ("gzip", "deflate", "x-gzip") else None
        framing = taken.framing
        if taken.h2_stream is not None:
            self._rx = _impl.BodyReceiver(taken.h2_stream, None)
            taken.h2_stream.attach(self._rx)
        elif framing in ("chunked", "length", "close"):
            assert taken.reader is not None
            rx, self._pump = _receive_body(taken.reader, taken.writer)
            self._rx = rx
            if framing == "chunked":
                rx.set_framing(chunked=_impl.ChunkedDecoder())
            elif framing == "length":
                rx.set_framing(length=taken.remaining)
        elif framing == "body" and taken.conn is None and taken.writer is not None:
            # A socket taken out of the pool with nothing left to read: only this object knows it.
            taken.writer.transport.abort()

    @property
    def unframed_lost(self) -> bool:
        """True when the body is close-delimited but the connection was already closed by aiosonic."""
        return self._taken.framing == "lost" and self.status == 200

    def interrupt(self, kind: str, reason: str = "") -> None:
        """Make the pending (or next) read raise :class:`Interrupted` (timers, and ``close()`` from another
        task)."""
        exc = self._interruption = Interrupted(kind, reason)
        if self._rx is not None:
            self._rx.interrupt(exc)
        elif self._taken.framing == "h2":
            _seam.h2_interrupt(self._response, exc)

    @property
    def completed(self) -> bool:
        """The body was read to its end."""
        rx = self._rx
        return self._completed or (rx is not None and rx.completed)

    async def read(self) -> bytes | memoryview:
        """The next decoded body bytes; ``b""`` at the end of the body.

        A view into the receive buffer comes back when no decompression was needed: use it (or copy it)
        before awaiting anything else. Raises TransportError when the connection drops before the end of
        a framed body, or when its framing or compression is broken; Interrupted after ``interrupt()``.
        """
        if self._closed:
            raise self._interruption or TransportError("the response was closed")
        rx = self._rx
        if rx is None:
            return await self._read_unbuffered()
        if rx.failed is not None:  # found by poll() or an earlier read()
            raise TransportError(str(rx.failed))
        inflater = self._inflater
        while True:
            rx.check()
            out = self._held_back(inflater)
            if out is not None:
                return out
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

    async def drain(self, limit: int, wait: float) -> bool:
        """Read the rest of the body, at most ``limit`` bytes within ``wait`` seconds, so that the
        connection may go back to the pool; whether the body ended."""
        if self.completed:
            return True
        handle = asyncio.get_running_loop().call_later(wait, self.interrupt, "timeout", "body did not end")
        drained = 0
        try:
            while not self.completed and drained <= limit:
                data = await self.read()
                if not data:
                    break
                drained += len(data)
        except (TransportError, Interrupted, OSError):
            return False
        finally:
            handle.cancel()
        return self.completed

    def poller(self) -> Poller | None:
        """What a consumer calls ``poll()`` on per read in the steady state of a stream, instead of
        awaiting ``read()``: the receiver, whose ``poll()`` gives the next body bytes (a view, as
        ``read()`` gives) when some are buffered, else a future that is done when more arrive, and None
        when ``read()`` must be used instead (at the end of the body, after an interrupt or an error).
        None for bodies that always need ``read()``: with decompression, HTTP/2 from a borrowed client,
        and bodies aiosonic already read. (The receiver itself, not its bound ``poll``: one object less
        per stream.)"""
        rx = self._rx
        if rx is None or self._inflater is not None:
            return None
        poller: Poller = rx
        return poller

    def _held_back(self, inflater: _Inflater | None) -> bytes | None:
        """What is due before reading more: output zlib held back (bounded per read), or the body's end
        (the inflater's last bytes, or b""); None when more must be read."""
        if inflater is not None and inflater.pending:
            out = inflater.more()
            if out:
                return out
        if self.completed:
            return inflater.flush() if inflater is not None else b""
        return None

    def _at_eof(self, rx: Any) -> None:
        """The peer ended the stream with everything received parsed: the end of the body, or an error."""
        if rx.lost is not None:
            raise TransportError(f"connection lost: {rx.lost!r}")
        framing = self._taken.framing
        if framing in ("close", "h2"):  # HTTP/2: the stream ended (END_STREAM)
            self._completed = True
        elif framing == "length":
            raise TransportError(f"connection closed with {rx.remaining} bytes of the body missing")
        else:
            raise TransportError("connection closed before the end of the chunked body")

    def _inflate(self, inflater: _Inflater, data: bytes | memoryview) -> bytes:
        try:
            return inflater.feed(data) if data else inflater.flush()
        except zlib.error as exc:
            raise TransportError(f"broken {self.headers.get('content-encoding')} body: {exc}") from exc

    async def _read_unbuffered(self) -> bytes:
        """HTTP/2 bodies from aiosonic's queue (a borrowed client), and bodies aiosonic already read."""
        inflater = self._inflater
        out = self._held_back(inflater)
        if out is not None:
            return out
        while True:
            data = await self._read_h2() if self._taken.framing == "h2" else self._read_body()
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
            if _seam.is_aiosonic_error(exc):
                raise TransportError(f"connection lost: {exc!r}") from exc
            raise

    def _read_body(self) -> bytes:
        taken = self._taken
        if taken.framing == "body":
            taken.framing = "done"
            if taken.body:
                return taken.body
        self._completed = True
        return b""

    def close(self, keep_connection: bool = False) -> None:
        """Close the response now: the socket is aborted unless the body was read to its end and
        ``keep_connection`` asks to return the connection to the pool. Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        taken = self._taken
        if taken.framing == "h2":
            self._completed = self.completed
            self._rx = self._h2_iter = None
            _seam.h2_close(self._response, self._completed)
            return
        conn = taken.conn
        rx = self._rx
        if rx is not None:  # what the receiver knew of the body's end stays known
            self._completed = self._completed or rx.completed
            self._leftover = rx.leftover
        self._rx = None
        taken.conn = taken.reader = taken.writer = None
        if self._pump is not None:
            self._pump.stop()
        if conn is None:
            # A socket taken out of the pool: only this object knows it.
            if rx is not None:
                rx.abort()
            return
        reusable = (
            keep_connection
            and self._pool_safe
            and self._completed
            and not self._leftover
            and conn.keep
            and taken.framing != "close"
            and (rx is None or rx.start == rx.end)
        )
        if reusable and rx is not None:
            rx.restore()
        _seam.give_back(conn, reusable)


async def open_response(
    client: Any,
    method: str,
    url: str,
    headers: dict[str, str],
    params: Any,
    data: Any,
    json: Any,
    request_kwargs: dict[str, Any],
) -> ResponseBody:
    """Send one request (no redirects followed) and give its response with the body unread.

    ``ssl`` applies to https only, and an IPv6 address gets the ``Host`` header aiosonic would write
    without brackets (and HTTP/1.1, where aiosonic's HTTP/2 cannot name it).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    port = parts.port or (443 if scheme == "https" else 80)
    kwargs = dict(request_kwargs)
    if scheme != "https":
        kwargs["ssl"] = None  # aiosonic would wrap a plain connection in it
    if ":" in host:
        if kwargs.get("http2"):
            # aiosonic cuts an IPv6 address at its first colon when it writes the HTTP/2 :authority (an
            # empty one, which servers refuse or never answer): HTTP/1.1 it is, with a correct Host.
            logger.debug("sonicsse: HTTP/1.1 for %s: aiosonic cannot name an IPv6 address in HTTP/2", host)
            kwargs["http2"] = False
        if not any(name.lower() == "host" for name in headers):
            default = port == (443 if scheme == "https" else 80)
            headers = {**headers, "Host": f"[{host}]" if default else format_host(host, port)}
    response, pool_safe = await _seam.send_request(
        client, method, url, headers, params, data, json, kwargs, scheme, host, port
    )
    return ResponseBody(response, pool_safe=pool_safe)
