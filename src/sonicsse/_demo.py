"""The embedded demo SSE server: a small HTTP/1.1 event-stream server on raw asyncio.

``sonicsse demo`` streams from it, ``sonicsse serve`` runs it in the foreground so the README's
examples (and your own experiments with ``sonicsse URL``) have something to connect to, and the
tests use it as their loopback server.  It only ever listens on 127.0.0.1.

Routes (every stream is ``text/event-stream``, chunked, ``Connection: close``):

``GET|POST /v1/chat/completions`` (any method)
    An OpenAI-style token stream: ``chat.completion.chunk`` JSON events, then ``data: [DONE]``.
    Query: ``delay`` (ms between tokens; default: the server's ``token_delay``); ``error`` (an error
    type such as ``overloaded_error``: after ``error_after`` tokens, default 3, the stream carries an
    in-band ``event: error`` with an Anthropic-style JSON body instead of finishing).
``GET /bulk``
    A burst of small ``tick`` events written in 64 KiB chunks.  Query: ``n`` (events, default
    10000), ``size`` (bytes of padding per event, default 32).
``GET /events``
    Numbered events with ids ``1..n`` cycling through three types: a plain ``message`` (no
    ``event:`` field), ``update`` (two data lines) and ``ping``, after a ``: hello`` comment.
    Resumable: a request with ``Last-Event-ID: k`` continues at ``k + 1``, and once every event
    was delivered the answer is ``204 No Content``, the spec's way of telling a client to stop
    reconnecting.  Query: ``n`` (default 10; ``0`` is endless), ``interval`` (ms between events,
    default 0), ``retry`` (send ``retry: <ms>`` first), ``drop`` (close the connection after this
    many events without ending the chunked body, a network drop).
``GET /echo``
    One event carrying the query's ``data`` (and ``event`` type, if given), then the end.
``GET /huge``
    One small event, then one whose single data line is ``size`` bytes long (default 17 MiB, over
    the client's default 16 MiB line limit): a stream that a client must refuse to buffer.
``GET /status/<code>``
    An empty response with that status (``/status/204``, ``/status/404``, ``/status/500``...).
``GET /redirect?to=<path>``
    ``302 Found`` to ``<path>``.
``GET /text``
    ``200`` with ``text/plain``: not an event stream.
Anything else is ``404 Not Found``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl as _ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from urllib.parse import parse_qs, urlsplit

__all__ = ["CHAT_TEXT", "DemoRequest", "DemoServer", "chat_tokens", "serve_in_thread"]

CHAT_TEXT = (
    "Hello from sonicsse! This answer streams from a local server, one token at a time, as "
    "OpenAI-style chat.completion.chunk events ending in [DONE]. A C decoder turns each socket "
    "read into events in one pass, and repeated tokens survive: ha ha ha."
)
"""The answer the demo chat endpoint streams."""

_MAX_HEAD = 64 * 1024
_MAX_BODY = 16 * 1024 * 1024
_WRITE_CHUNK = 64 * 1024


def chat_tokens(text: str = CHAT_TEXT) -> list[str]:
    """Split ``text`` into word tokens the way an LLM streams them: ``["Hello", " from", ...]``."""
    words = text.split(" ")
    return [words[0]] + [" " + w for w in words[1:]]


@dataclass
class DemoRequest:
    """One request the demo server received (kept for tests and for ``sonicsse serve``'s log)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    received_at: float = field(default_factory=time.monotonic)


class _BadRequest(Exception):
    pass


class DemoServer:
    """An SSE server on 127.0.0.1 serving the routes described in this module's docstring.

    Use it as an async context manager (``async with DemoServer() as server: server.url``) or
    with :meth:`start` / :meth:`stop`; :func:`serve_in_thread` runs one on a background thread
    for synchronous code.

    Args:
        port: the port to listen on; 0 (the default) picks a free one.
        token_delay: seconds between two chat tokens unless the request says otherwise.
        ssl: serve HTTPS with this context (tests use it for ``--insecure``).
    """

    def __init__(
        self, port: int = 0, *, token_delay: float = 0.02, ssl: _ssl.SSLContext | None = None
    ) -> None:
        self.host = "127.0.0.1"
        self.port = port
        self.token_delay = token_delay
        self.ssl = ssl
        self.requests: list[DemoRequest] = []
        """Every request received, in order."""
        self.connections_opened = 0
        """TCP connections accepted so far."""
        self.connections_closed = 0
        """TCP connections that have ended (either side closed)."""
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:43127`` (valid once started)."""
        scheme = "https" if self.ssl is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def active_connections(self) -> int:
        """TCP connections currently open."""
        return self.connections_opened - self.connections_closed

    async def start(self) -> DemoServer:
        """Start listening; returns ``self`` with :attr:`port` set."""
        self._server = await asyncio.start_server(
            self._handle, self.host, self.port, limit=_MAX_HEAD, ssl=self.ssl
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Stop listening, drop every open connection and wait until all handlers have ended."""
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=5)
        if self._server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    async def serve_forever(self) -> None:
        """Start (if needed) and serve until cancelled; stops cleanly on cancellation."""
        if self._server is None:
            await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    async def __aenter__(self) -> DemoServer:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- connection handling ------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections_opened += 1
        try:
            try:
                request = await self._read_request(reader)
            except (_BadRequest, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                with contextlib.suppress(OSError):
                    writer.write(_head(400, "text/plain", length=0))
                    await writer.drain()
                return
            if request is None:
                return
            self.requests.append(request)
            # Answer while watching the socket: when the client goes away mid-stream the
            # response is cancelled at once instead of at its next write.
            respond = asyncio.ensure_future(self._respond(request, writer))
            hangup = asyncio.ensure_future(_wait_for_eof(reader))
            try:
                await asyncio.wait({respond, hangup}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in (respond, hangup):
                    t.cancel()
                await asyncio.gather(respond, hangup, return_exceptions=True)
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1)
            self.connections_closed += 1
            if task is not None:
                self._handlers.discard(task)

    async def _read_request(self, reader: asyncio.StreamReader) -> DemoRequest | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as e:
            if not e.partial:
                return None
            raise
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _BadRequest(lines[0])
        method, target = parts[0].upper(), parts[1]
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep:
                raise _BadRequest(line)
            headers[name.strip().lower()] = value.strip()
        body = b""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = await _read_chunked(reader)
        elif headers.get("content-length"):
            length = int(headers["content-length"])
            if not 0 <= length <= _MAX_BODY:
                raise _BadRequest("content-length")
            body = await reader.readexactly(length)
        split = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        return DemoRequest(method, split.path or "/", query, headers, body)

    async def _respond(self, req: DemoRequest, writer: asyncio.StreamWriter) -> None:
        path = req.path.rstrip("/") or "/"
        if path == "/v1/chat/completions":
            await self._chat(req, writer)
        elif path == "/bulk" and req.method == "GET":
            await self._bulk(req, writer)
        elif path == "/events" and req.method == "GET":
            await self._events(req, writer)
        elif path.startswith("/status/") and path[8:].isdigit():
            code = int(path[8:])
            body = b"" if code in (204, 304) or code < 200 else f"{code} {_phrase(code)}\n".encode()
            writer.write(_head(code, "text/plain", length=len(body)) + body)
        elif path == "/redirect":
            location = req.query.get("to", "/events")
            writer.write(_head(302, "text/plain", length=0, extra={"Location": location}))
        elif path == "/echo":
            await self._echo(req, writer)
        elif path == "/huge" and req.method == "GET":
            await self._huge(req, writer)
        elif path == "/text":
            body = b"this is not an event stream\n"
            writer.write(_head(200, "text/plain", length=len(body)) + body)
        else:
            body = f"no route for {req.method} {req.path}\n".encode()
            writer.write(_head(404, "text/plain", length=len(body)) + body)
        await writer.drain()

    async def _chat(self, req: DemoRequest, writer: asyncio.StreamWriter) -> None:
        delay = _ms(req.query.get("delay"), self.token_delay)
        model = "sonicsse-demo"
        if req.body:
            with contextlib.suppress(ValueError, AttributeError):
                model = str(json.loads(req.body).get("model", model))
        created = int(time.time())
        writer.write(_head(200, "text/event-stream; charset=utf-8"))

        def chunk(delta: dict[str, str], finish: str | None = None) -> bytes:
            payload = {
                "id": "chatcmpl-sonicsse-demo",
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"

        error_type = req.query.get("error")
        error_after = _int(req.query.get("error_after"), 3)
        await _send(writer, chunk({"role": "assistant", "content": ""}))
        for index, token in enumerate(chat_tokens()):
            if error_type and index == error_after:
                error = {"type": "error", "error": {"type": error_type, "message": "the demo server failed"}}
                await _send(writer, b"event: error\ndata: " + json.dumps(error).encode() + b"\n\n")
                await _send(writer, b"")
                return
            if delay:
                await asyncio.sleep(delay)
            await _send(writer, chunk({"content": token}))
        await _send(writer, chunk({}, "stop") + b"data: [DONE]\n\n")
        await _send(writer, b"")

    async def _bulk(self, req: DemoRequest, writer: asyncio.StreamWriter) -> None:
        n = _int(req.query.get("n"), 10_000)
        size = _int(req.query.get("size"), 32)
        pad = "x" * size
        # One block of distinct events, repeated: the server spends next to nothing per event,
        # so what a client measures against it is the client's own cost.
        per_block = 512
        events = [f'event: tick\ndata: {{"seq":{i},"pad":"{pad}"}}\n\n'.encode() for i in range(per_block)]
        block = b"".join(events)
        writer.write(_head(200, "text/event-stream"))
        left = n
        pending: list[bytes] = []
        pending_size = 0
        while left > 0:
            take = min(left, per_block)
            piece = block if take == per_block else b"".join(events[:take])
            left -= take
            pending.append(piece)
            pending_size += len(piece)
            if pending_size >= _WRITE_CHUNK or left == 0:
                data = b"".join(pending)
                for start in range(0, len(data), _WRITE_CHUNK):
                    await _send(writer, data[start : start + _WRITE_CHUNK])
                pending, pending_size = [], 0
        await _send(writer, b"")

    async def _echo(self, req: DemoRequest, writer: asyncio.StreamWriter) -> None:
        lines = req.query.get("data", "").replace("\r\n", "\n").replace("\r", "\n").split("\n")
        block = "".join(f"data: {line}\n" for line in lines)
        if req.query.get("event"):
            block = f"event: {req.query['event']}\n" + block
        writer.write(_head(200, "text/event-stream; charset=utf-8"))
        await _send(writer, (block + "\n").encode())
        await _send(writer, b"")

    async def _huge(self, req: DemoRequest, writer: asyncio.StreamWriter) -> None:
        size = _int(req.query.get("size"), 17 << 20)
        writer.write(_head(200, "text/event-stream"))
        await _send(writer, b"data: small\n\ndata: ")
        piece = b"x" * _WRITE_CHUNK
        left = size
        while left > 0:
            await _send(writer, piece[: min(left, _WRITE_CHUNK)])
            left -= _WRITE_CHUNK
        await _send(writer, b"\n\n")
        await _send(writer, b"")

    async def _events(self, req: DemoRequest, writer: asyncio.StreamWriter) -> None:
        n = _int(req.query.get("n"), 10)
        interval = _ms(req.query.get("interval"), 0.0)
        drop = _int(req.query.get("drop"), 0)
        last = req.headers.get("last-event-id", "")
        start = int(last) + 1 if last.isdigit() else 1
        if n and start > n:
            writer.write(_head(204, None, length=0))
            return
        writer.write(_head(200, "text/event-stream"))
        head = ": hello\n\n"
        if "retry" in req.query:
            head = f"retry: {_int(req.query['retry'], 3000)}\n\n" + head
        await _send(writer, head.encode())
        i = start
        sent = 0
        while not n or i <= n:
            if interval and sent:
                await asyncio.sleep(interval)
            await _send(writer, _numbered_event(i).encode())
            sent += 1
            if drop and sent >= drop:
                return  # no terminating chunk: the client sees the connection drop
            i += 1
        await _send(writer, b"")


def _numbered_event(i: int) -> str:
    kind = i % 3
    if kind == 1:
        return f'id: {i}\ndata: {{"n": {i}}}\n\n'
    if kind == 2:
        return f"event: update\nid: {i}\ndata: update {i}\ndata: second line\n\n"
    return f"event: ping\nid: {i}\ndata: ping {i}\n\n"


async def _wait_for_eof(reader: asyncio.StreamReader) -> None:
    while await reader.read(65536):
        pass


async def _send(writer: asyncio.StreamWriter, data: bytes) -> None:
    """Write one chunk of a chunked body (an empty ``data`` writes the terminating chunk)."""
    writer.write(b"%x\r\n%s\r\n" % (len(data), data))
    await writer.drain()


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return bytes(body)
        if len(body) + size > _MAX_BODY:
            raise _BadRequest("body too large")
        body += await reader.readexactly(size)
        await reader.readexactly(2)


def _phrase(code: int) -> str:
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return "Unknown"


def _head(
    status: int, content_type: str | None, *, length: int | None = None, extra: dict[str, str] | None = None
) -> bytes:
    lines = [f"HTTP/1.1 {status} {_phrase(status)}"]
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    if content_type and content_type.startswith("text/event-stream"):
        lines.append("Cache-Control: no-cache")
    if status == 204 or status == 304 or status < 200:
        pass  # no body, and no framing headers either (RFC 9110)
    elif length is None:
        lines.append("Transfer-Encoding: chunked")
    else:
        lines.append(f"Content-Length: {length}")
    lines.append("Connection: close")
    for name, value in (extra or {}).items():
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _int(value: str | None, default: int) -> int:
    if value is None:
        return default
    try:
        return max(0, int(value))
    except ValueError:
        return default


def _ms(value: str | None, default: float) -> float:
    """A query value in milliseconds, as seconds."""
    if value is None:
        return default
    try:
        return max(0.0, float(value)) / 1000
    except ValueError:
        return default


@contextlib.contextmanager
def serve_in_thread(
    port: int = 0, *, token_delay: float = 0.02, ssl: _ssl.SSLContext | None = None
) -> Iterator[DemoServer]:
    """Run a :class:`DemoServer` on its own event loop in a background thread.

    For synchronous code and tests: ``with serve_in_thread() as server: ... server.url``.  The
    server is stopped and the thread joined when the block ends.
    """
    loop = asyncio.new_event_loop()
    server = DemoServer(port, token_delay=token_delay, ssl=ssl)
    started = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.start())
        except BaseException as e:  # reported to the caller below
            failure.append(e)
            started.set()
            return
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="sonicsse-demo-server", daemon=True)
    thread.start()
    started.wait(10)
    if failure:
        thread.join(5)
        loop.close()
        raise failure[0]
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
