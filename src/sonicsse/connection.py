"""SSEConnection: the I/O shell of a stream: read, decode, hand events over; the core decides the rest.

Per read, one path serves ``async for``, :meth:`SSEConnection.iter_batches` and
:meth:`SSEConnection.iter_json`: ``_step()`` (no coroutine: the steady state) and ``_next_batch()``
(everything else: opening, ending, errors, hooks). What to do when a stream opens, fails or ends, how
long to wait and when a timeout is due are asked of ``_core.StreamCore``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from . import _impl
from ._comments import CommentOrder
from ._core import SSEStats, StreamCore
from ._gate import OpeningGate
from ._hooks import call_hook
from ._inband import StopSignals
from ._json_events import json_values
from ._logging import logger, redact_url
from ._opening import Opener
from ._options import DEFAULT_MAX_EVENT_SIZE, DEFAULT_MAX_LINE_SIZE, ConnectOptions, HeadersArg
from ._transport import Interrupted, Poller, ResponseBody, TransportError
from ._types import Event
from ._watchdog import Watchdog, tick_of, watchdog
from .exceptions import SSECheckpointError, SSEParsingError

if TYPE_CHECKING:
    from ._impl import SSEDecoder

__all__ = ["HeadersArg", "SSEConnection", "SSEStats"]

_DRAIN_WAIT = 1.0  # how long the end of a body after a sentinel may take before the socket is closed
_DRAIN_BYTES = 64 << 10
_NOTHING_TO_SCREEN = StopSignals(None, None, raw=False)  # shared by the streams that set neither


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


class SSEConnection:
    """An open event stream: iterate it for events; it reconnects by itself when configured to.

    Made by :meth:`sonicsse.SSEClient.connect`. Iterate with ``async for event in conn`` (one dict per
    event: ``data``, ``event``, ``id``, ``retry``), :meth:`iter_batches` (one list per socket read) or
    :meth:`iter_json`. Leaving the iteration early (``break``, an exception, cancellation) closes the
    socket at once; a later iteration reconnects with ``Last-Event-ID`` when reconnection is allowed.
    """

    # Slots: each read's _step() looks up several of them, cold in the cache when 1,000 streams take
    # turns; slots are fixed offsets in the object.
    __slots__ = (
        "__weakref__",  # SSEClient keeps its live connections in a WeakSet
        "_body",
        "_comments",
        "_config",  # aiosonic's SSEConnection has it: code written for aiosonic may read or set it
        "_core",
        "_decoder",
        "_iterations",
        "_loop",
        "_min_timeout",
        "_opener",
        "_pending_error",
        "_plain",
        "_poll",
        "_rest",
        "_signals",
        "_step_error",
        "_step_events",
        "_tick",
        "_timer_key",
        "_wait_since",
        "_watchdog",
    )

    def __init__(self, client: Any, options: ConnectOptions, gate: OpeningGate | None = None) -> None:
        self._config: Any = options
        core = self._core = StreamCore(options)
        self._opener = Opener(client, core, gate)
        self._comments = CommentOrder(options.on_comment) if options.on_comment is not None else None
        self._decoder = self._make_decoder(options.initial_event_id())
        self._signals = (
            StopSignals(
                options.done,
                options.error_event,
                raw=not options.decode,
                method=options.upper_method,
                url=options.url,
            )
            if options.done is not None or options.error_event is not None
            else _NOTHING_TO_SCREEN
        )
        self._body: ResponseBody | None = None
        # the body's per-read step while a stream is open (ResponseBody.poller()), used by _step()
        self._poll: Poller | None = None
        self._pending_error: BaseException | None = None
        # left by _step() for _next_batch(): a bad line, or events that end the stream (screening)
        self._step_error: SSEParsingError | None = None
        self._step_events: list[Event] | None = None
        # _step() may deliver events: no hook has to be awaited per read
        self._plain = options.checkpoint is None and options.on_comment is None
        self._iterations = 0
        # The events of the last batch that no iterator has yielded yet, shared by all iterators.
        self._rest: list[Iterator[Event]] = [iter(())]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wait_since = 0.0  # when the pending read began (0: none pending), for read_timeout
        self._min_timeout = options.shortest_timeout()
        # the loop's shared timer calls _on_timer(); _timer_key is where this stream waits in it (0: not)
        self._watchdog: Watchdog | None = None
        self._timer_key = 0.0
        self._tick = tick_of(self._min_timeout) if self._min_timeout is not None else 0.0

    def _make_decoder(self, initial_id: str | None) -> SSEDecoder:
        options = self._core.options
        comments = self._comments
        return _impl.SSEDecoder(
            dedup=options.dedup,
            strict=options.strict,
            last_event_id=(initial_id or "").replace("\0", ""),
            on_comment=self._on_comment if comments is not None else None,
            max_line_size=options.max_line_size or DEFAULT_MAX_LINE_SIZE,
            max_event_size=options.max_event_size or DEFAULT_MAX_EVENT_SIZE,
            event_types=options.event_types,
            decode=options.decode,
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
        return self._opener.status

    @property
    def headers(self) -> Mapping[str, str]:
        """The headers of the current (or last) response (case-insensitive mapping)."""
        headers: Mapping[str, str] = self._opener.headers
        return headers

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._core.closed

    @property
    def stats(self) -> SSEStats:
        """A snapshot of the counters: events, bytes, reconnects, time to first event, time since last."""
        core = self._core
        return core.stats(self._loop.time() if self._loop is not None else core.created)

    # -- lifecycle ----------------------------------------------------------------------------

    async def _start(self) -> None:
        """Open the first stream (called by ``connect()``)."""
        self._loop = asyncio.get_running_loop()
        core = self._core
        core.created = self._loop.time()
        store = core.options.checkpoint
        if store is not None and core.options.last_event_id is None:
            try:
                loaded = await _maybe_await(store.load())
            except Exception as exc:
                raise SSECheckpointError(
                    f"checkpoint load failed: {exc!r}", method=core.options.upper_method, url=core.options.url
                ) from exc
            if loaded:
                self._decoder = self._make_decoder(str(loaded))
                core.saved_id = core.consumed_id = str(loaded)
        try:
            await self._open(immediate=True)
        except BaseException:
            self._drop_body()
            raise

    async def close(self) -> None:
        """Close the connection: the socket is closed at once and iteration ends. Safe to call twice."""
        core = self._core
        if core.closed:
            return
        core.closed = True
        # Exhausted in place, not replaced: an iterator of either twin that is half-way through a batch
        # stops at once (the pure one holds the batch iterator itself).
        collections.deque(self._rest[0], maxlen=0)
        if self._comments is not None:
            self._comments.clear()
        logger.debug("sonicsse: closed %s %s", core.options.upper_method, redact_url(core.options.url))
        body = self._body
        if body is not None:
            body.interrupt("closed")
        self._drop_body()
        self._opener.abandon()

    def restart(self) -> None:
        """Drop the current response now and reconnect with ``Last-Event-ID``; iteration continues.

        While waiting to reconnect, it cuts the wait short.
        """
        if self._core.closed:
            return
        body = self._body
        if body is not None:
            self._core.restart = True
            body.interrupt("restart")
            self._drop_body()
        else:
            self._opener.cut_wait()

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
        iterator: AsyncIterator[Event] = _impl.EventIterator(self, self._iterations, self._rest)
        return iterator

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

    def iter_json(
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
        return json_values(self, done, loads)

    @contextlib.contextmanager
    def _screened(self, signals: StopSignals, decode: bool) -> Iterator[None]:
        """Screen for ``signals`` (and decode data or not) while the block runs (``iter_json``)."""
        decoder = self._decoder
        saved = decoder.decode, self._signals
        decoder.decode, self._signals = decode, signals
        try:
            yield
        finally:
            decoder.decode, self._signals = saved

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
            data = poll.poll()
            if data is None:
                return None
            if not isinstance(data, memoryview):
                loop = self._loop
                assert loop is not None  # a stream is open
                self._wait_since = loop.time()
                return data
            core = self._core
            core.bytes += len(data)
            try:
                events = self._decoder.feed(data)
            except SSEParsingError as exc:
                self._step_error = exc
                return None
            if events:
                if self._signals.active and self._signals.find(events) is not None:
                    self._step_events = events
                    return None
                core.count(len(events), self._loop.time())  # type: ignore[union-attr]
                return events

    async def _next_batch(self) -> list[Event] | None:
        """Read until a socket read completes at least one event; None when the stream is over."""
        core = self._core
        comments = self._comments
        if core.options.checkpoint is not None:
            await self._save_checkpoint()
        if self._pending_error is not None and not (comments is not None and comments.queue):
            exc, self._pending_error = self._pending_error, None
            raise exc
        while True:
            if comments is not None and comments.queue:  # the rest of a read that comments split
                events = await self._next_part(comments)
            elif self._step_error is not None:  # _step() decoded a bad line
                error, self._step_error = self._step_error, None
                events = await self._parse_failed(error)
            elif self._step_events is not None:  # _step() decoded an end sentinel or an in-band error
                events, self._step_events = self._step_events, None
            else:
                got = await self._read()
                if got is None:
                    return None
                if not got:
                    continue
                try:
                    events = self._decoder.feed(got)
                except SSEParsingError as exc:
                    events = await self._parse_failed(exc)
                if comments is not None and comments.noted:
                    events = await self._next_part(comments, events)
            cut = False
            if events and self._signals.active:
                screened = await self._screen(events)
                cut = len(screened) < len(events)
                if cut and comments is not None:
                    comments.clear()  # the stream ended there
                events = screened
            if events:
                assert self._loop is not None
                core.count(len(events), self._loop.time())
                if core.options.checkpoint is not None:
                    partial = cut or (comments is not None and comments.has_events_left())
                    core.delivered(events, partial, self._decoder.last_event_id)
                return events
            if self._pending_error is not None:
                pending, self._pending_error = self._pending_error, None
                raise pending

    async def _read(self) -> bytes | memoryview | None:
        """The next bytes of the stream (opening the next one when needed); b"" when a stream ended or
        was dropped; None when the connection is over."""
        body = self._body
        core = self._core
        if body is None:
            if core.closed or not await self._reconnect():
                return None
            body = self._body
            assert body is not None
        loop = self._loop
        assert loop is not None
        self._wait_since = loop.time()
        try:
            data = await body.read()
        except Interrupted as exc:
            self._wait_since = 0.0
            if exc.kind == "closed" or core.closed:
                self._drop_body()
                return None
            if exc.kind != "restart":
                await self._stream_ended(exc.reason, exc)
            return b""
        except TransportError as exc:
            self._wait_since = 0.0
            await self._stream_ended(str(exc), exc)
            return b""
        self._wait_since = 0.0
        if not data:
            await self._stream_ended(None, None)
            return b""
        core.bytes += len(data)
        return data

    async def _next_part(self, comments: CommentOrder, events: list[Event] | None = None) -> list[Event]:
        part = await (comments.split(events) if events is not None else comments.next_part())
        if comments.error is not None:
            if self._pending_error is None:  # (an error that ended the read stays the one raised)
                self._pending_error = comments.error
            comments.error = None
        return part

    async def _parse_failed(self, exc: SSEParsingError) -> list[Event]:
        """The decoder found a bad line: the events before it are delivered first, the error on the
        next call."""
        self._drop_body()
        self._decoder.reset()
        exc.method, exc.url = self._core.options.upper_method, self._core.options.url
        await call_hook(self._core.options.on_error, exc)
        self._pending_error = exc
        events: list[Event] = exc.events
        return events

    def _on_comment(self, text: str) -> None:
        """The decoder's comment callback: notes where the comment came among the events of the read."""
        assert self._comments is not None
        self._comments.note(self._decoder.dispatched, text)

    async def _screen(self, events: list[Event]) -> list[Event]:
        """The events before an end sentinel or an in-band error; either one ends the stream."""
        stop = self._signals.find(events)
        if stop is None:
            return events
        index, error = stop
        if error is None:
            await self._end_at_sentinel()
        else:
            self._core.finished = True
            self._drop_body()
            await call_hook(self._core.options.on_error, error)
            self._pending_error = error
        return events[:index]

    async def _end_at_sentinel(self) -> None:
        """The server said the stream is complete: no reconnect; with ``keep_connection`` the connection
        goes back to the pool if the body ends promptly, otherwise the socket is closed."""
        core = self._core
        core.finished = True
        body = self._body
        if body is not None and core.options.keep_connection:
            await body.drain(_DRAIN_BYTES, _DRAIN_WAIT)
        self._drop_body()
        core.closed = True

    async def _save_checkpoint(self) -> None:
        """Save the id of the last batch the consumer finished (at most once per batch)."""
        core = self._core
        last_id = core.checkpoint_due()
        if last_id is None:
            return
        store = core.options.checkpoint
        assert store is not None
        try:
            await _maybe_await(store.save(last_id))
        except Exception as exc:
            # Nothing is lost: the store still holds an older id, so a restart delivers these events again.
            error = SSECheckpointError(
                f"checkpoint save failed: {exc!r}", method=core.options.upper_method, url=core.options.url
            )
            error.__cause__ = exc
            await call_hook(core.options.on_error, error)
            raise error from exc
        core.saved_id = last_id

    async def _stream_ended(self, reason: str | None, cause: BaseException | None) -> None:
        """The current stream ended (``reason`` None: cleanly): tell ``on_error`` about a failure, then
        let the core decide whether another stream follows."""
        core = self._core
        if reason is not None and core.options.on_error is not None:
            failure = core.error(f"stream failed: {reason}", status=self._opener.status)
            failure.__cause__ = cause
            await call_hook(core.options.on_error, failure)
        self._drop_body()
        error = core.stream_ended(reason, cause, self._decoder.last_event_id)
        if error is not None:
            raise error from cause

    # -- opening streams ----------------------------------------------------------------------

    async def _reconnect(self) -> bool:
        """Open the next stream after one ended; False when iteration should end."""
        core = self._core
        if core.closed or core.finished:
            return False
        immediate = core.restart
        core.restart = False
        return await self._open(immediate=immediate)

    async def _open(self, *, immediate: bool) -> bool:
        """Open a stream (after the reconnection wait unless ``immediate``); False when none will be."""
        body = await self._opener.next_stream(self._decoder, immediate=immediate)
        if body is None:
            return False
        self._stream_opened(body)
        options = self._core.options
        logger.info(
            "sonicsse: connected %s %s (%s)", options.upper_method, redact_url(options.url), body.status
        )
        await call_hook(options.on_open, body.status, body.headers)
        return True

    def _stream_opened(self, body: ResponseBody) -> None:
        loop = self._loop or asyncio.get_running_loop()
        self._loop = loop
        self._body = body
        self._poll = body.poller()
        now = loop.time()
        self._core.stream_opened(body.status, now)
        if self._min_timeout is not None:
            watch = self._watchdog = watchdog(loop)
            self._timer_key = watch.watch(self, now + self._min_timeout, self._tick)

    def _leave(self, iteration: int) -> None:
        """The consumer left an iteration: close the socket now; a later iteration resumes at once.

        Only the latest iteration does: an abandoned older iterator, finalized later, leaves the
        stream that a newer one reads alone.
        """
        if iteration == self._iterations and self._body is not None:
            self._core.left(self._decoder.last_event_id)
            self._drop_body()

    def _drop_body(self) -> None:
        body = self._body
        self._body = None
        self._poll = None
        if self._timer_key:
            assert self._watchdog is not None
            self._watchdog.unwatch(self, self._timer_key)
            self._timer_key = 0.0
        if body is not None:
            body.close(keep_connection=self._core.options.keep_connection)

    # -- timeouts -----------------------------------------------------------------------------

    def _on_timer(self) -> None:
        """Check the deadlines; interrupt the pending read when one passed, else re-arm (called by
        the loop's watchdog)."""
        self._timer_key = 0.0
        body = self._body
        loop = self._loop
        if body is None or loop is None or self._min_timeout is None:
            return
        now = loop.time()
        waiting = self._wait_since
        due = self._core.deadline(now, waiting)
        if due is None:
            return
        when, reason = due
        if waiting and when <= now:
            body.interrupt("timeout", reason)
            return
        assert self._watchdog is not None
        when = when if when > now else now + self._min_timeout
        self._timer_key = self._watchdog.watch(self, when, self._tick)

    # -- aiosonic compatibility ---------------------------------------------------------------

    def _parse_event(self, block: str) -> Event:
        """Parse one event block strictly (``aiosonic.SSEConnection._parse_event`` compatibility)."""
        decoder = _impl.SSEDecoder(strict=True)
        events: list[Event] = decoder.feed(block.encode("utf-8") + b"\n\n")
        if events:
            return events[0]
        return {"data": "", "event": None, "id": None, "retry": None}
