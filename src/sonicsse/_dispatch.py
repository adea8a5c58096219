"""Dispatcher: ``SSEConnection.dispatch(handler)``, events handed to a callback from the event loop.

``async for`` wakes the iterating task once per socket read: the read's future completes, the task is
scheduled, its coroutine chain resumes, and only then is the read decoded. With thousands of slow streams
that task switch is most of the client's cost. The dispatcher decodes a read in the future's own done
callback instead and calls the handler there; its task wakes only when the stream needs it (to open the
next stream, after an error or a timeout, for hooks, for a handler that returned an awaitable).

The semantics are those of ``async for``: the same reconnection, timeouts, end sentinel, in-band errors,
checkpoints and exceptions (raised from ``dispatch()``); an exception from the handler ends the dispatch
as it would end an ``async for`` loop. Backpressure: a handler that returns an awaitable (a coroutine
function) stops the dispatch until it is done; meanwhile nothing more is read than the receive buffer
holds (then the socket is paused), so memory stays bounded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ._types import Event

if TYPE_CHECKING:
    from .connection import SSEConnection

__all__ = ["Dispatcher", "Handler"]

#: ``handler(event)`` (or ``handler(batch)`` with ``batches=True``); plain, or returning an awaitable.
Handler = Callable[[Any], Awaitable[object] | object]


class Dispatcher:
    """Runs one ``dispatch()`` (see the module's docstring)."""

    __slots__ = (
        "_armed",
        "_backlog",
        "_batches",
        "_conn",
        "_error",
        "_handler",
        "_pending",
        "_stopped",
        "_wake",
    )

    def __init__(self, conn: SSEConnection, handler: Handler, batches: bool) -> None:
        self._conn = conn
        self._handler = handler
        self._batches = batches
        self._wake: asyncio.Future[None] | None = None  # resolved when the task is needed
        self._armed: asyncio.Future[None] | None = None  # the read's future this dispatcher listens to
        self._pending: Awaitable[object] | None = None  # what the handler returned, to be awaited
        self._backlog: list[Event] = []  # the events of a read after the one whose handler is awaited
        self._error: BaseException | None = None
        self._stopped = False

    async def run(self) -> None:
        """Dispatch until the stream ends for good; raises what ``async for`` would raise."""
        conn = self._conn
        loop = asyncio.get_running_loop()
        try:
            await self._deliver_awaiting(list(conn._rest[0]))  # left by an abandoned async for
            while True:
                wake = self._wake = loop.create_future()
                self._on_ready()
                await wake
                if self._error is not None:
                    error, self._error = self._error, None
                    raise error
                if self._pending is not None:
                    pending, self._pending = self._pending, None
                    await pending
                    backlog, self._backlog = self._backlog, []
                    await self._deliver_awaiting(backlog)
                    continue
                events = await conn._next_batch()  # the slow path: open, end, errors, hooks
                if events is None:
                    return
                await self._deliver_awaiting(events)
        finally:
            self._stopped = True
            self._armed = None
            if self._backlog:  # events not handled yet, for a later iteration (as async for leaves them)
                conn._rest[0] = iter(self._backlog)

    def _on_ready(self, ready: asyncio.Future[None] | None = None) -> None:
        """Decode what the socket gave and hand it to the handler; listen for the next read, or wake the
        task. Runs as the read future's done callback: from the event loop, with no task switch."""
        if ready is not None:
            if ready is not self._armed:  # a stale listener (the task took over meanwhile)
                return
            self._armed = None
        wake = self._wake
        if self._stopped or wake is None or wake.done():
            return
        step = self._conn._step
        try:
            while True:
                got = step()
                if got is None:
                    break
                if isinstance(got, list):
                    if self._deliver(got):
                        continue
                    break
                self._armed = got  # a future: done when more bytes arrive
                got.add_done_callback(self._on_ready)
                return
        except BaseException as exc:  # the handler's, or the stream's: raised from dispatch()
            self._error = exc
        wake.set_result(None)

    def _deliver(self, events: list[Event]) -> bool:
        """Call the handler from the loop: True when it is done with them, False when it returned an
        awaitable (kept in ``_pending``, with the events after it in ``_backlog``)."""
        handler = self._handler
        if self._batches:
            result = handler(events)
            if result is not None and hasattr(result, "__await__"):
                self._pending = result
                return False
            return True
        for index, event in enumerate(events):
            try:
                result = handler(event)
            except BaseException:
                self._backlog = events[index + 1 :]  # for a later iteration, as async for leaves them
                raise
            if result is not None and hasattr(result, "__await__"):
                self._pending = result
                self._backlog = events[index + 1 :]
                return False
        return True

    async def _deliver_awaiting(self, events: list[Event]) -> None:
        """Call the handler from the task, awaiting what it returns (the slow path)."""
        if not events:
            return
        handler = self._handler
        if self._batches:
            result = handler(events)
            if result is not None and hasattr(result, "__await__"):
                await result
            return
        for index, event in enumerate(events):
            self._backlog = events[index + 1 :]
            result = handler(event)
            if result is not None and hasattr(result, "__await__"):
                await result
        self._backlog = []
