"""SSEConnection: the read → feed → yield loop, with reconnection, timeouts, stats and clean shutdown."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import inspect
import json as _json
import logging
import socket
import ssl
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterable,
    Iterator,
    Mapping,
)
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aiosonic import HTTPClient
from aiosonic.exceptions import ConnectTimeout

from . import _policy
from ._errors import describe_failure
from ._hooks import call_hook, is_secret_name, logger, redact_headers, redact_url
from ._impl import EventIterator, SSEDecoder
from ._inband import error_from_event
from ._transport import BodyReader, TransportError, is_bad_response, open_response
from ._tunnel import ProxyError
from ._types import CommentCallback, Event
from .exceptions import SSEConnectionError, SSEInvalidURLError, SSEParsingError, SSEServerError

__all__ = ["HeadersArg", "SSEConnection", "SSEStats"]

log = logger

HeaderPairs = Mapping[str, str] | Iterable[tuple[str, str]]
#: ``headers=``: a mapping or pairs, or a callable (sync or async) giving them before every attempt.
HeadersArg = HeaderPairs | Callable[[], HeaderPairs | Awaitable[HeaderPairs]] | None

_MAX_REDIRECTS = 10
# A client reads real APIs, which put multi-megabyte values (base64 images, tool results) on one line:
# a line may be as long as the largest event (the bare decoder keeps its stricter 1 MiB line default).
_DEFAULT_MAX_EVENT = 16 << 20
_DEFAULT_MAX_LINE = _DEFAULT_MAX_EVENT
_DRAIN_WAIT = 1.0  # how long the end of a body after a sentinel may take before the socket is closed
_DRAIN_BYTES = 64 << 10
_SNIPPET_CHARS = 200
_SNIPPET_WAIT = 1.0


class _Interrupted(Exception):
    """Raised into a pending body read by a timer, ``close()`` or ``restart()``."""

    def __init__(self, kind: str, reason: str = "") -> None:
        super().__init__(reason or kind)
        self.kind = kind
        self.reason = reason or kind


class _Retryable(Exception):
    """An attempt failed in a way that a later attempt may not."""

    def __init__(
        self,
        reason: str,
        *,
        status: int | None = None,
        body: str | None = None,
        retry_after: float | None = None,
        unprocessed: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.body = body
        self.retry_after = retry_after
        self.unprocessed = unprocessed  # the server surely did not act on the request (refused, 429, 503)


@dataclass(frozen=True)
class SSEStats:
    """A snapshot of a connection's counters (``conn.stats``).

    Attributes:
        events: events yielded (after dedup).
        bytes: body bytes received (after decompression).
        reconnects: streams opened after the first one.
        time_to_first_event: seconds from ``connect()`` to the first event, or None before it.
        time_since_last_event: seconds since the last event (or since the connection was opened when
            none came yet).
    """

    events: int
    bytes: int
    reconnects: int
    time_to_first_event: float | None
    time_since_last_event: float


@dataclass
class _Config:
    method: str
    url: str
    headers: HeadersArg
    params: Any
    data: Any
    json: Any
    request_kwargs: dict[str, Any]
    follow: bool
    reconnect: bool
    retry_delay: int
    keep_connection: bool
    last_event_id: str | None = None
    max_retries: int | None = None
    max_retry_delay: int = 30000
    read_timeout: float | None = 300.0
    event_timeout: float | None = None
    first_event_timeout: float | None = None
    dedup: bool = True
    on_comment: CommentCallback | None = None
    resume_unsafe: bool = False
    max_line_size: int | None = None
    max_event_size: int | None = None
    strict: bool = False
    event_types: Collection[str] | None = None
    decode: bool = True
    error_event: str | None = None
    done: str | Callable[[Event], bool] | None = None
    checkpoint: Any = None
    on_open: Callable[[int, Mapping[str, str]], Any] | None = None
    on_retry: Callable[[int, float, BaseException | None], Any] | None = None
    on_error: Callable[[BaseException], Any] | None = None


def _default_loads() -> Callable[[Any], Any]:
    """orjson.loads when orjson is installed (``sonicsse[fast]``), else json.loads."""
    try:
        import orjson
    except ImportError:
        return _json.loads
    loads: Callable[[Any], Any] = orjson.loads
    return loads


def _sentinel_matcher(
    done: str | Callable[[Event], bool] | None, raw: bool, text_events: bool = False
) -> Callable[[Event], bool] | None:
    """A test for the end sentinel: a predicate, or equality with the data (bytes when ``raw``).

    ``text_events``: the decoder gives bytes only for sonicsse's own use (``iter_json`` feeding a JSON
    parser), so the caller's predicate still gets the event with str data it was written for.
    """
    if done is None:
        return None
    if callable(done):
        if not text_events:
            return done
        predicate = done
        return lambda event: predicate(_as_text(event))
    value: str | bytes = done.encode() if raw else done
    return lambda event: event["data"] == value


def _as_text(event: Event) -> Event:
    data: Any = event["data"]
    if not isinstance(data, bytes):
        return event
    text = event.copy()
    text["data"] = data.decode("utf-8", "replace")
    return text


def _resume_point(events: list[Event], before: str | None) -> str | None:
    """The id to resume after, when only ``events`` of a read were delivered (the rest was cut off by
    an end sentinel or an in-band error): the last id among them, else the resume point before them."""
    for event in reversed(events):
        if event["id"] is not None:
            return event["id"]
    return before


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _close_abandoned(request: asyncio.Task[BodyReader]) -> None:
    """Done callback of a request abandoned by ``close()``: close the response if one still came."""
    if not request.cancelled() and request.exception() is None:
        request.result().close()


def _is_one_shot(data: Any) -> bool:
    return isinstance(data, (AsyncIterator, Iterator))


def _same_origin(a: str, b: str) -> bool:
    pa, pb = urlsplit(a), urlsplit(b)
    return (pa.scheme, pa.hostname, pa.port) == (pb.scheme, pb.hostname, pb.port)


class SSEConnection:
    """An open event stream: iterate it for events; it reconnects by itself when configured to.

    Made by :meth:`sonicsse.SSEClient.connect`. Iterate with ``async for event in conn`` (one dict per
    event: ``data``, ``event``, ``id``, ``retry``), :meth:`iter_batches` (one list per socket read) or
    :meth:`iter_json`. Leaving the iteration early (``break``, an exception, cancellation) closes the
    socket at once; a later iteration reconnects with ``Last-Event-ID`` when reconnection is allowed.
    """

    # Slots: with 44 attributes the instance dict stops sharing its keys (3.11 shares up to 30) and
    # becomes a 1.5 KiB hash table; each read's _step() looks up a dozen of them, cold in the cache
    # when 1,000 streams take turns. Slots are fixed offsets in the object.
    __slots__ = (
        "__weakref__",  # SSEClient keeps its live connections in a WeakSet
        "_bad_ids_logged",
        "_body",
        "_bytes",
        "_checkpoint",
        "_client",
        "_closed",
        "_closer",
        "_comments",
        "_config",
        "_consumed_id",
        "_created",
        "_decoder",
        "_error_event",
        "_events",
        "_failures",
        "_finished",
        "_first_event_at",
        "_is_done",
        "_iterations",
        "_last_error",
        "_last_event_at",
        "_last_headers",
        "_last_status",
        "_loads",
        "_loop",
        "_min_timeout",
        "_opened_at",
        "_pending_error",
        "_plain",
        "_poll",
        "_queue",
        "_rest",
        "_restart",
        "_retry_after",
        "_retry_cause",
        "_retry_reason",
        "_saved_id",
        "_screening",
        "_sent_body",
        "_sleeper",
        "_step_error",
        "_step_events",
        "_stream_events",
        "_streams_opened",
        "_timer",
        "_wait_since",
    )

    def __init__(self, client: HTTPClient, config: _Config) -> None:
        self._client = client
        self._config = config
        initial_id = config.last_event_id
        if initial_id is None and isinstance(config.headers, Mapping):
            initial_id = next(
                (str(v) for k, v in config.headers.items() if k.lower() == "last-event-id"), None
            )
        self._decoder = self._make_decoder(initial_id)
        # end sentinel and in-band errors: looked at only when configured (``_screening``)
        self._error_event = config.error_event
        self._is_done = _sentinel_matcher(config.done, raw=not config.decode)
        self._loads: Callable[[Any], Any] = _json.loads
        self._screening = bool(self._error_event or self._is_done)
        self._checkpoint = config.checkpoint
        self._consumed_id: str | None = None  # the id as of the last batch the consumer finished
        self._saved_id: str | None = None
        self._body: BodyReader | None = None
        # the body's per-read step while a stream is open (BodyReader.poller()), used by _step()
        self._poll: Callable[[], memoryview | asyncio.Future[None] | None] | None = None
        self._last_status: int | None = None
        self._last_headers: Mapping[str, str] = {}
        self._closed = False
        self._restart = False
        self._finished = False  # no further stream will be opened
        self._retry_after: float | None = None
        self._failures = 0
        self._last_error: _Retryable | None = None
        self._streams_opened = 0
        self._sent_body = False
        self._pending_error: BaseException | None = None
        # left by _step() for _next_batch(): a bad line, or events that end the stream (screening)
        self._step_error: SSEParsingError | None = None
        self._step_events: list[Event] | None = None
        # _step() may deliver events: no hook has to be awaited per read
        self._plain = self._checkpoint is None and config.on_comment is None
        # on_comment: the comments of the read being decoded, each with the number of its events before
        # it; then the rest of that read, its event lists and comments in stream order, for _next_batch()
        # to hand out and call one by one
        self._comments: list[tuple[int, str]] = []
        self._queue: collections.deque[list[Event] | str] = collections.deque()
        self._retry_cause: BaseException | None = None
        self._retry_reason: str | None = None  # why the next attempt is made (None: a clean end)
        self._bad_ids_logged: set[str] = set()
        self._iterations = 0
        # The events of the last batch that no iterator has yielded yet, shared by all iterators.
        self._rest: list[Iterator[Event]] = [iter(())]
        # stats and timers
        self._loop: asyncio.AbstractEventLoop | None = None
        self._created = 0.0
        self._events = 0
        self._bytes = 0
        self._first_event_at: float | None = None
        self._last_event_at = 0.0
        self._opened_at = 0.0
        self._stream_events = 0
        self._wait_since = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._sleeper: asyncio.Future[None] | None = None
        self._closer: asyncio.Future[None] | None = None  # set while a request waits for its response
        timeouts = [t for t in (config.read_timeout, config.event_timeout, config.first_event_timeout) if t]
        self._min_timeout = min(timeouts) if timeouts else None

    def _make_decoder(self, initial_id: str | None) -> SSEDecoder:
        cfg = self._config
        return SSEDecoder(
            dedup=cfg.dedup,
            strict=cfg.strict,
            last_event_id=(initial_id or "").replace("\0", ""),
            on_comment=self._on_comment if cfg.on_comment is not None else None,
            max_line_size=cfg.max_line_size or _DEFAULT_MAX_LINE,
            max_event_size=cfg.max_event_size or _DEFAULT_MAX_EVENT,
            event_types=cfg.event_types,
            decode=cfg.decode,
        )

    # -- public state -------------------------------------------------------------------------

    @property
    def last_event_id(self) -> str:
        """The last event ID: sent as ``Last-Event-ID`` when reconnecting (empty: none)."""
        return str(self._decoder.last_event_id)

    @property
    def retry(self) -> int | None:
        """The server's last valid ``retry:`` value in milliseconds, or None."""
        retry: int | None = self._decoder.retry
        return retry

    @property
    def status(self) -> int | None:
        """The HTTP status of the current (or last) response."""
        return self._last_status

    @property
    def headers(self) -> Mapping[str, str]:
        """The headers of the current (or last) response (case-insensitive mapping)."""
        return self._last_headers

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @property
    def stats(self) -> SSEStats:
        """A snapshot of the counters: events, bytes, reconnects, time to first event, time since last."""
        now = self._loop.time() if self._loop is not None else self._created
        first = None if self._first_event_at is None else self._first_event_at - self._created
        last = self._last_event_at if self._first_event_at is not None else self._created
        return SSEStats(
            events=self._events,
            bytes=self._bytes,
            reconnects=max(0, self._streams_opened - 1),
            time_to_first_event=first,
            time_since_last_event=now - last,
        )

    # -- lifecycle ----------------------------------------------------------------------------

    async def _start(self) -> None:
        """Open the first stream (called by ``connect()``)."""
        self._loop = asyncio.get_running_loop()
        self._created = self._loop.time()
        if self._checkpoint is not None and self._config.last_event_id is None:
            try:
                loaded = await _maybe_await(self._checkpoint.load())
            except Exception as exc:
                raise self._error(f"checkpoint load failed: {exc!r}") from exc
            if loaded:
                self._decoder = self._make_decoder(str(loaded))
                self._saved_id = self._consumed_id = str(loaded)
        try:
            await self._open(immediate=True)
        except BaseException:
            self._drop_body()
            raise

    async def close(self) -> None:
        """Close the connection: the socket is closed at once and iteration ends. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        # Exhausted in place, not replaced: an iterator of either twin that is half-way through a batch
        # stops at once (the pure one holds the batch iterator itself).
        collections.deque(self._rest[0], maxlen=0)
        self._queue.clear()
        self._comments.clear()
        log.debug("sonicsse: closed %s %s", self._config.method.upper(), redact_url(self._config.url))
        body = self._body
        if body is not None:
            body.interrupt(_Interrupted("closed"))
        self._drop_body()
        if self._sleeper is not None:
            _resolve(self._sleeper)
        if self._closer is not None:
            _resolve(self._closer)

    def restart(self) -> None:
        """Drop the current response now and reconnect with ``Last-Event-ID``; iteration continues.

        While waiting to reconnect, it cuts the wait short.
        """
        if self._closed:
            return
        body = self._body
        if body is not None:
            self._restart = True
            body.interrupt(_Interrupted("restart"))
            self._drop_body()
        elif self._sleeper is not None:
            _resolve(self._sleeper)

    async def __aenter__(self) -> SSEConnection:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __del__(self) -> None:
        body = getattr(self, "_body", None)
        if body is not None:
            with contextlib.suppress(Exception):  # e.g. the loop is already closed
                body.close()

    # -- iteration ----------------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Event]:
        """Yield events until the stream ends for good (or the connection is closed)."""
        # Not built on iter_batches(): the per-event step is the hot path of token streams, and the
        # compiled EventIterator hands over a decoded event without making any object.
        self._iterations += 1
        return EventIterator(
            self._step, self._next_batch, functools.partial(self._leave, self._iterations), self._rest
        )

    async def iter_batches(self) -> AsyncGenerator[list[Event], None]:
        """Yield the list of events each socket read completed (never empty): the fast path for ingestion.

        With ``on_comment``, a read's list is split where comments came between its events."""
        step = self._step
        next_batch = self._next_batch
        self._iterations += 1
        iteration = self._iterations
        try:
            rest = list(self._rest[0])  # left by an ``async for`` iterator abandoned half-way
            if rest:
                yield rest
            while True:
                got = step()
                if got is None:
                    events = await next_batch()
                    if events is None:
                        return
                elif isinstance(got, list):
                    events = got
                else:
                    await got
                    continue
                yield events
        finally:
            self._leave(iteration)

    async def iter_json(
        self,
        done: str | Callable[[Event], bool] | None = "[DONE]",
        loads: Callable[[Any], Any] | None = None,
    ) -> AsyncGenerator[Any, None]:
        """Yield each event's data decoded as JSON, ending (and closing) at the ``done`` sentinel.

        The LLM-streaming helper. Events with empty data are skipped. ``loads`` defaults to
        ``orjson.loads`` when orjson is installed (``sonicsse[fast]``), else ``json.loads``. orjson (also
        when passed as ``loads``) is fed the raw bytes, any other parser the data as the connection
        gives it (str, or bytes with ``decode=False``). In-band errors (an ``error`` event, or a JSON
        object with an ``error`` member) raise :class:`SSEServerError`; data that is not JSON raises
        :class:`SSEParsingError`.
        """
        parse: Callable[[Any], Any] = _default_loads() if loads is None else loads
        # orjson parses bytes fastest (0.34x the cost of str + json.loads on OpenAI-style chunks), while
        # json.loads is slower on bytes (1.29x: it has to detect the encoding first): see
        # benchmarks/test_options.py.
        raw = getattr(parse, "__module__", None) == "orjson"
        decoder = self._decoder
        saved = (decoder.decode, self._error_event, self._is_done, self._loads, self._screening)
        switched = raw and decoder.decode
        if raw:
            decoder.decode = False
        self._error_event = self._error_event or "error"
        if done is None:
            done = self._config.done
        self._is_done = _sentinel_matcher(done, raw=not decoder.decode, text_events=switched)
        self._loads = parse
        self._screening = True
        try:
            async with contextlib.aclosing(self.iter_batches()) as batches:
                async for events in batches:
                    for event in events:
                        data = event["data"]
                        if not data:
                            continue
                        try:
                            value = parse(data)
                        except ValueError as exc:
                            text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
                            raise SSEParsingError(
                                f"event data is not JSON: {exc}",
                                line=text[:80],
                                method=self._config.method.upper(),
                                url=self._config.url,
                            ) from exc
                        yield value
        finally:
            decoder.decode, self._error_event, self._is_done, self._loads, self._screening = saved

    async def _next_batch(self) -> list[Event] | None:
        """Read until a socket read completes at least one event; None when the stream is over.

        With ``on_comment``, a read's events are handed out in parts split where its comments came, and
        each comment is passed to the callback between the parts: after the events before it were
        delivered, before the ones after it.
        """
        if self._checkpoint is not None:
            await self._save_checkpoint()
        if self._pending_error is not None and not self._queue:
            exc, self._pending_error = self._pending_error, None
            raise exc
        decoder = self._decoder
        while True:
            if self._queue:  # the rest of a read that comments split
                events = await self._unqueue()
            elif self._step_error is not None:  # _step() decoded a bad line
                error, self._step_error = self._step_error, None
                events = await self._parse_failed(error)
            elif self._step_events is not None:  # _step() decoded an end sentinel or an in-band error
                events, self._step_events = self._step_events, None
            else:
                body = self._body
                if body is None:
                    if self._closed or not await self._reconnect():
                        return None
                    body = self._body
                    assert body is not None
                loop = self._loop
                assert loop is not None
                self._wait_since = loop.time()
                try:
                    data = await body.read()
                except _Interrupted as exc:
                    self._wait_since = 0.0
                    if exc.kind == "closed" or self._closed:
                        self._drop_body()
                        return None
                    if exc.kind == "restart":
                        continue
                    await self._report(exc.reason, exc)
                    self._end_stream(exc.reason, exc)
                    continue
                except TransportError as exc:
                    self._wait_since = 0.0
                    await self._report(str(exc), exc)
                    self._end_stream(str(exc), exc)
                    continue
                self._wait_since = 0.0
                if not data:
                    self._end_stream(None, None)
                    continue
                self._bytes += len(data)
                try:
                    events = decoder.feed(data)
                except SSEParsingError as exc:
                    events = await self._parse_failed(exc)
                if self._comments:
                    events = await self._split(events)
            cut = False
            if events and self._screening:
                screened = await self._screen(events)
                cut = len(screened) < len(events)
                if cut:
                    self._queue.clear()  # the stream ended there
                events = screened
            if events:
                self._count(events)
                if self._checkpoint is not None:
                    partial = cut or any(isinstance(part, list) for part in self._queue)
                    self._consumed_id = (
                        _resume_point(events, self._consumed_id) if partial else decoder.last_event_id
                    )
                return events
            if self._pending_error is not None:
                pending, self._pending_error = self._pending_error, None
                raise pending

    def _step(self) -> list[Event] | asyncio.Future[None] | None:
        """``_next_batch()`` without a coroutine, for the steady state of a stream (the iterators try it
        first): the events that the bytes already received complete, or else a future that is done when
        more bytes arrive. None when ``_next_batch()`` must run instead: to open or end a stream, after
        an error or an interrupt, when hooks need awaiting, and for a batch that screening cuts."""
        self._wait_since = 0.0
        poll = self._poll
        if poll is None or not self._plain or self._pending_error is not None:
            return None
        while True:
            data = poll()
            if data is None:
                return None
            if not isinstance(data, memoryview):
                loop = self._loop
                assert loop is not None  # a stream is open
                self._wait_since = loop.time()
                return data
            self._bytes += len(data)
            try:
                events = self._decoder.feed(data)
            except SSEParsingError as exc:
                self._step_error = exc
                return None
            if events:
                if self._screening and self._find_stop(events) is not None:
                    self._step_events = events
                    return None
                self._count(events)
                return events

    async def _parse_failed(self, exc: SSEParsingError) -> list[Event]:
        """The decoder found a bad line: the events before it are delivered first, the error on the
        next call."""
        self._drop_body()
        self._decoder.reset()
        exc.method, exc.url = self._config.method.upper(), self._config.url
        await call_hook(self._config.on_error, exc)
        self._pending_error = exc
        return exc.events

    def _on_comment(self, text: str) -> None:
        """The decoder's comment callback: notes where the comment came among the events of the read.

        The user's callback is not called from inside ``feed()``: the events before the comment are not
        delivered yet then. ``_split()`` and ``_unqueue()`` call it in its place among them.
        """
        self._comments.append((self._decoder.dispatched, text))

    async def _split(self, events: list[Event]) -> list[Event]:
        """Queue a read's events and comments in stream order; hand out the part before the first comment
        at once, after calling the comments that precede every event."""
        comments, self._comments = self._comments, []
        queue = self._queue
        start = 0
        for position, text in comments:
            if position > start:
                queue.append(events[start:position])
                start = position
            queue.append(text)
        if start < len(events):
            queue.append(events[start:] if start else events)
        return await self._unqueue()

    async def _unqueue(self) -> list[Event]:
        """Pass the comments at the front of the queue to ``on_comment``, then give the events up to the
        next comment ([] when the read has none left).

        An exception from the callback is raised once the rest of the read's events were delivered
        (without their comments): raised at once, it would leave events behind that the resume point
        (``last_event_id``) has already passed.
        """
        queue = self._queue
        callback = self._config.on_comment
        assert callback is not None
        while queue:
            part = queue.popleft()
            if isinstance(part, list):
                return part
            try:
                result = callback(part)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                if self._pending_error is None:  # (an error that ended the read stays the one raised)
                    self._pending_error = exc
                rest = [event for left in queue if isinstance(left, list) for event in left]
                queue.clear()
                return rest
        return []

    def _find_stop(self, events: list[Event]) -> tuple[int, SSEServerError | None] | None:
        """The first event that ends the stream: its index, with None for an end sentinel or the error
        for an in-band error; None when the batch has neither."""
        is_done = self._is_done
        error_event = self._error_event
        loads = self._loads
        method, url = self._config.method.upper(), self._config.url
        for index, event in enumerate(events):
            if is_done is not None and is_done(event):
                return index, None
            if error_event is not None:
                error = error_from_event(event, error_event, loads, method=method, url=url)
                if error is not None:
                    return index, error
        return None

    async def _screen(self, events: list[Event]) -> list[Event]:
        """The events before an end sentinel or an in-band error; either one ends the stream."""
        stop = self._find_stop(events)
        if stop is None:
            return events
        index, error = stop
        if error is None:
            await self._end_at_sentinel()
        else:
            self._finished = True
            self._drop_body()
            await call_hook(self._config.on_error, error)
            self._pending_error = error
        return events[:index]

    async def _end_at_sentinel(self) -> None:
        """The server said the stream is complete: no reconnect; with ``keep_connection`` the connection
        goes back to the pool if the body ends promptly, otherwise the socket is closed."""
        self._finished = True
        body = self._body
        if body is not None and self._config.keep_connection and not body.completed:
            loop = asyncio.get_running_loop()
            handle = loop.call_later(_DRAIN_WAIT, body.interrupt, TransportError("body did not end"))
            drained = 0
            try:
                while not body.completed and drained <= _DRAIN_BYTES:
                    data = await body.read()
                    if not data:
                        break
                    drained += len(data)
            except (TransportError, _Interrupted, OSError):
                pass
            finally:
                handle.cancel()
        self._drop_body()
        self._closed = True

    async def _save_checkpoint(self) -> None:
        """Save the id of the last batch the consumer finished (at most once per batch)."""
        last_id = self._consumed_id
        if last_id is None or last_id == self._saved_id:
            return
        try:
            await _maybe_await(self._checkpoint.save(last_id))
        except Exception as exc:
            # Nothing is lost: the store still holds an older id, so a restart delivers these events again.
            error = self._error(f"checkpoint save failed: {exc!r}")
            await call_hook(self._config.on_error, error)
            raise error from exc
        self._saved_id = last_id

    async def _report(self, reason: str, cause: BaseException) -> None:
        """Tell ``on_error`` about a stream that broke (whether or not it will be reconnected)."""
        if self._config.on_error is not None:
            error = self._error(f"stream failed: {reason}", status=self._last_status)
            error.__cause__ = cause
            await call_hook(self._config.on_error, error)

    def _count(self, events: list[Event]) -> None:
        loop = self._loop
        assert loop is not None  # a stream is open
        self._events += len(events)
        self._stream_events += len(events)
        now = self._last_event_at = loop.time()
        if self._first_event_at is None:
            self._first_event_at = now

    def _end_stream(self, error: str | None, cause: BaseException | None) -> None:
        """The current stream ended (``error`` is None for a clean end): decide whether to reconnect."""
        delivered = self._stream_events > 0
        self._drop_body()
        if self._closed:
            return
        if self._restart:
            return
        if delivered:
            self._failures = 0
        else:
            self._failures += 1
        self._retry_after = None
        self._retry_cause = cause
        self._retry_reason = error
        cfg = self._config
        if error is not None:
            self._last_error = _Retryable(error, status=self._last_status)
            if cause is not None:
                self._last_error.__cause__ = cause
        if not cfg.reconnect or not self._resumable():
            self._finished = True
            if error is not None:
                raise self._error(f"stream failed: {error}", status=self._last_status) from cause

    # -- opening streams ----------------------------------------------------------------------

    def _resumable(self) -> bool:
        return _policy.may_resume(
            self._config.method, self._decoder.last_event_id, self._config.resume_unsafe
        )

    def _error(
        self, reason: str, *, status: int | None = None, body: str | None = None
    ) -> SSEConnectionError:
        return SSEConnectionError(
            reason, method=self._config.method.upper(), url=self._config.url, status=status, body=body
        )

    async def _reconnect(self) -> bool:
        """Open the next stream after one ended; False when iteration should end."""
        if self._closed or self._finished:
            return False
        if self._restart:
            self._restart = False
            return await self._open(immediate=True)
        return await self._open(immediate=False)

    async def _open(self, *, immediate: bool) -> bool:
        cfg = self._config
        while True:
            if self._closed:
                return False
            if not immediate:
                if cfg.max_retries is not None and self._failures > cfg.max_retries:
                    last = self._last_error
                    cause: BaseException | None = None
                    if last is not None:
                        cause = last.__cause__
                        if cause is None:  # an HTTP failure: the error of that last attempt
                            cause = self._error(last.reason, status=last.status, body=last.body)
                    raise self._error(
                        f"gave up after {self._failures} failed attempts"
                        + (f": {last.reason}" if last is not None else ""),
                        status=last.status if last is not None else None,
                        body=last.body if last is not None else None,
                    ) from cause
                base = _policy.base_delay_ms(cfg.retry_delay, self._decoder.retry, cfg.max_retry_delay)
                delay = _policy.reconnect_delay(base, cfg.max_retry_delay, self._failures, self._retry_after)
                cause = self._retry_cause
                if self._retry_reason is None:
                    log.info(
                        "sonicsse: the stream ended; reconnecting %s %s in %.3f s",
                        cfg.method.upper(),
                        redact_url(cfg.url),
                        delay,
                    )
                else:
                    # Visible by default: a server that cannot be reached must not look like a quiet
                    # stream. Logged once per failure, with the wait, only when another attempt follows.
                    log.warning(
                        "sonicsse: %s %s failed: %s; retrying in %.1f s (attempt %d%s)",
                        cfg.method.upper(),
                        redact_url(cfg.url),
                        self._retry_reason,
                        delay,
                        self._failures + 1,
                        "" if cfg.max_retries is None else f" of {cfg.max_retries + 1}",
                    )
                await call_hook(cfg.on_retry, self._failures + 1, delay, cause)
                await self._sleep(delay)
                if self._closed:
                    return False
            immediate = False
            try:
                opened = await self._attempt()
            except _Retryable as exc:
                self._failures += 1
                self._last_error = exc
                self._retry_after = exc.retry_after
                self._retry_cause = exc.__cause__ or exc
                self._retry_reason = exc.reason
                if cfg.on_error is not None:
                    failure = self._error(exc.reason, status=exc.status, body=exc.body)
                    failure.__cause__ = exc.__cause__
                    await call_hook(cfg.on_error, failure)
                if not cfg.reconnect or not (exc.unprocessed or self._resumable()):
                    self._finished = True
                    raise self._error(exc.reason, status=exc.status, body=exc.body) from exc.__cause__
                continue
            if not opened:
                self._finished = True
            return opened

    async def _sleep(self, delay: float) -> None:
        """Wait before the next attempt; ``close()`` cuts the wait short (or skips it, when it came
        before, e.g. from ``on_retry``)."""
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        handle = loop.call_later(max(0.0, delay), _resolve, waiter)
        self._sleeper = waiter
        try:
            await waiter
        finally:
            handle.cancel()
            self._sleeper = None

    async def _request_headers(self) -> dict[str, str]:
        source = self._config.headers
        if callable(source):
            result = source()
            if inspect.isawaitable(result):
                result = await result
            source = result
        last_id = str(self._decoder.last_event_id)
        bad = self._bad_ids_logged
        if last_id and not _policy.header_value_ok(last_id) and last_id not in bad and len(bad) < 16:
            bad.add(last_id)
            log.warning("sonicsse: last event id %r cannot be sent as a header value; left out", last_id)
        return _policy.build_headers(source, last_id)

    async def _attempt(self) -> bool:
        """One request (following redirects): True with a stream open, False when the server said stop."""
        cfg = self._config
        if self._sent_body and (_is_one_shot(cfg.data)):
            self._finished = True
            raise self._error(
                "cannot reconnect: the request body is a one-shot iterator that was already sent"
            )
        method, url, data, json = cfg.method, cfg.url, cfg.data, cfg.json
        headers = await self._request_headers()
        if log.isEnabledFor(logging.DEBUG):
            shown = redact_url(url), redact_headers(headers)
            log.debug("sonicsse: requesting %s %s headers=%s", method.upper(), *shown)
        self._decoder.reset()
        for _ in range(_MAX_REDIRECTS + 1):
            try:
                self._sent_body = True
                body = await self._request(method, url, headers, data, json)
            except ssl.SSLError as exc:
                if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):  # dropped mid-handshake
                    raise _Retryable(describe_failure(exc, url)) from exc
                # A certificate that does not verify, or a server that does not speak TLS: retrying
                # cannot fix a setup problem.
                self._finished = True
                raise SSEConnectionError(describe_failure(exc, url), method=method.upper(), url=url) from exc
            except ProxyError as exc:
                reason = describe_failure(exc, url)
                if exc.permanent:  # the proxy's credentials or its policy: asking again will not help
                    self._finished = True
                    status = exc.status
                    raise SSEConnectionError(reason, method=method.upper(), url=url, status=status) from exc
                raise _Retryable(reason, status=exc.status, unprocessed=True) from exc
            except (ValueError, TypeError) as exc:
                if not is_bad_response(exc):
                    raise  # invalid arguments (e.g. a header value aiosonic refuses)
                raise _Retryable(f"malformed response: {exc!r}") from exc
            except Exception as exc:
                unprocessed = isinstance(exc, (ConnectionRefusedError, ConnectTimeout, socket.gaierror))
                raise _Retryable(describe_failure(exc, url), unprocessed=unprocessed) from exc
            if body is None or self._closed:  # closed from another task while the request was in flight
                if body is not None:
                    body.close()
                return False
            self._last_status = body.status
            self._last_headers = body.headers
            action, reason = _policy.classify_response(
                body.status, body.headers.get("content-type"), follow=cfg.follow
            )
            if action is _policy.Action.STREAM:
                if body.unframed_lost:
                    body.close()
                    self._finished = True
                    raise SSEConnectionError(
                        "close-delimited body lost: the HTTPClient closed the connection (Connection: close)"
                        " before the body was read; use SSEClient() without http_client, or an HTTPClient"
                        " from sonicsse.make_http_client()",
                        method=method.upper(),
                        url=url,
                        status=body.status,
                    )
                self._stream_opened(body)
                log.info("sonicsse: connected %s %s (%s)", method.upper(), redact_url(url), body.status)
                await call_hook(cfg.on_open, body.status, body.headers)
                return True
            if action is _policy.Action.END:
                body.close()
                return False
            if action is _policy.Action.REDIRECT:
                body.close()
                nxt = _policy.redirect_request(body.status, method, url, body.headers.get("location"))
                if nxt is None:
                    self._finished = True
                    raise SSEConnectionError(
                        "redirect without a Location header",
                        method=method.upper(),
                        url=url,
                        status=body.status,
                    )
                new_method, new_url, keep_body = nxt
                problem = _policy.url_problem(new_url)
                if problem is not None:
                    self._finished = True
                    raise SSEInvalidURLError(
                        f"redirect to a URL that cannot be requested ({new_url!r}): {problem}",
                        method=method.upper(),
                        url=url,
                        status=body.status,
                    )
                if not keep_body:
                    data = json = None
                    headers = {
                        k: v
                        for k, v in headers.items()
                        if k.lower() not in ("content-type", "content-length")
                    }
                if not _same_origin(url, new_url):  # credentials stay with the origin they were meant for
                    headers = {k: v for k, v in headers.items() if not is_secret_name(k)}
                method, url = new_method, new_url
                continue
            try:
                snippet = await self._snippet(body)
            finally:
                body.close()
            if action is _policy.Action.RETRY:
                retry_after = _policy.parse_retry_after(body.headers.get("retry-after"), time.time())
                raise _Retryable(
                    f"{reason} ({body.status} {body.reason})".strip(),
                    status=body.status,
                    body=snippet,
                    retry_after=retry_after,
                    unprocessed=body.status in _policy.RETRY_STATUSES,
                )
            self._finished = True
            raise SSEConnectionError(
                f"{reason} ({body.status} {body.reason})".strip(),
                method=method.upper(),
                url=url,
                status=body.status,
                body=snippet,
            )
        self._finished = True
        raise SSEConnectionError(
            f"more than {_MAX_REDIRECTS} redirects", method=method.upper(), url=url, status=self._last_status
        )

    async def _request(
        self, method: str, url: str, headers: dict[str, str], data: Any, json: Any
    ) -> BodyReader | None:
        """Send one request; None when ``close()`` was called before its response came."""
        cfg = self._config
        loop = asyncio.get_running_loop()
        request = loop.create_task(
            open_response(self._client, method, url, headers, cfg.params, data, json, cfg.request_kwargs)
        )
        closer: asyncio.Future[None] = loop.create_future()
        self._closer = closer
        try:
            await asyncio.wait((request, closer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._closer = None
            if not request.done():  # closed, or this task was cancelled: abandon the request
                request.cancel()
                request.add_done_callback(_close_abandoned)
        if not request.done():
            return None
        return request.result()

    async def _snippet(self, body: BodyReader) -> str | None:
        """The start of an error response's body, for the error message (waits at most a second)."""
        loop = asyncio.get_running_loop()
        handle = loop.call_later(_SNIPPET_WAIT, body.interrupt, TransportError("timeout"))
        try:
            data = await body.read()
        except (TransportError, OSError):
            return None
        finally:
            handle.cancel()
        if not data:
            return None
        return bytes(data[: _SNIPPET_CHARS * 4]).decode("utf-8", "replace")[:_SNIPPET_CHARS]

    def _stream_opened(self, body: BodyReader) -> None:
        loop = self._loop or asyncio.get_running_loop()
        self._loop = loop
        self._body = body
        self._poll = body.poller()
        self._streams_opened += 1
        self._stream_events = 0
        self._opened_at = loop.time()
        self._retry_after = None
        if self._min_timeout is not None:
            self._arm(self._opened_at + self._min_timeout)

    def _leave(self, iteration: int) -> None:
        """The consumer left an iteration: close the socket now; a later iteration resumes at once.

        Only the latest iteration does: an abandoned older iterator, finalized later, leaves the
        stream that a newer one reads alone.
        """
        if iteration == self._iterations and self._body is not None:
            if self._config.reconnect and self._resumable():
                self._restart = True
            else:
                self._finished = True
            self._drop_body()

    def _drop_body(self) -> None:
        body = self._body
        self._body = None
        self._poll = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if body is not None:
            body.close(keep_connection=self._config.keep_connection)

    # -- timeouts -----------------------------------------------------------------------------

    def _arm(self, when: float) -> None:
        loop = self._loop
        assert loop is not None
        self._timer = loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        """Check the deadlines; interrupt the pending read when one passed, else re-arm."""
        self._timer = None
        body = self._body
        loop = self._loop
        if body is None or loop is None or self._min_timeout is None:
            return
        cfg = self._config
        now = loop.time()
        waiting = self._wait_since
        deadlines: list[tuple[float, str]] = []
        if cfg.read_timeout:
            deadlines.append(
                ((waiting or now) + cfg.read_timeout, f"no data for {cfg.read_timeout:g} s (read_timeout)")
            )
        if self._stream_events == 0 and cfg.first_event_timeout:
            deadlines.append(
                (
                    self._opened_at + cfg.first_event_timeout,
                    f"no event {cfg.first_event_timeout:g} s after connecting (first_event_timeout)",
                )
            )
        if cfg.event_timeout:
            base = self._last_event_at if self._stream_events else self._opened_at
            deadlines.append(
                (base + cfg.event_timeout, f"no event for {cfg.event_timeout:g} s (event_timeout)")
            )
        when, reason = min(deadlines)
        if waiting and when <= now:
            body.interrupt(_Interrupted("timeout", reason))
            return
        self._arm(when if when > now else now + self._min_timeout)

    # -- aiosonic compatibility ---------------------------------------------------------------

    def _parse_event(self, block: str) -> Event:
        """Parse one event block strictly (``aiosonic.SSEConnection._parse_event`` compatibility)."""
        decoder = SSEDecoder(strict=True)
        events: list[Event] = decoder.feed(block.encode("utf-8") + b"\n\n")
        if events:
            return events[0]
        return {"data": "", "event": None, "id": None, "retry": None}
