"""One request and its response across the seam: checked, sent, its connection taken out of aiosonic's
response for the transport, and given back."""

from __future__ import annotations

import asyncio
import inspect
from dataclasses import dataclass
from typing import Any

import h2.errors
from aiosonic import HTTPClient
from aiosonic.http_parser import validate_header

from .._logging import logger
from ._connections import _HOLD
from ._connector import StreamConnector
from ._h2 import H2Stream


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
