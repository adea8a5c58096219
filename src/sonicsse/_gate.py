"""OpeningGate: at most so many streams of one client being opened at once.

Opening a stream (connect, TLS, the request, the response head, taking the body over) costs a few hundred
microseconds of CPU in many short steps. When thousands of streams are opened together, every step of
every opening waits in the event loop's queue with the reads of the streams already open: those streams'
events wait behind the whole storm (over a second with 10,000 streams), and every half-opened stream
holds its buffers at once. The gate lets ``limit`` openings run and queues the rest in order: the total
work is the same, the streams already open keep their latency, and memory grows with the streams that
are open rather than with the ones being opened.
"""

from __future__ import annotations

import asyncio
from collections import deque

__all__ = ["DEFAULT_MAX_OPENING", "OpeningGate"]

#: Enough to keep a high-latency origin's handshakes overlapping (128 openings in flight at 400 ms each is
#: 320 streams a second, more than one core opens), few enough that the loop's queue stays short.
DEFAULT_MAX_OPENING = 128


class OpeningGate:
    """At most ``limit`` openings at once; the others wait for a turn, first come first served."""

    __slots__ = ("_busy", "_queue", "limit")

    def __init__(self, limit: int) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"max_opening must be a positive int or None, not {limit!r}")
        self.limit = limit
        self._busy = 0
        self._queue: deque[asyncio.Future[bool | None]] = deque()

    def try_enter(self) -> bool:
        """Take a turn now if one is free."""
        if self._busy < self.limit and not self._queue:
            self._busy += 1
            return True
        return False

    def wait(self) -> asyncio.Future[bool | None]:
        """A future that becomes True when a turn is handed over. Whoever resolves it otherwise (with
        None: the opening was abandoned) or cancels it does not hold a turn; see :meth:`settle`."""
        waiter: asyncio.Future[bool | None] = asyncio.get_running_loop().create_future()
        self._queue.append(waiter)
        return waiter

    def settle(self, waiter: asyncio.Future[bool | None]) -> None:
        """Give back a turn handed to ``waiter`` that its owner will not use (it was cancelled after the
        hand-over)."""
        if waiter.done() and not waiter.cancelled() and waiter.result() is True:
            self.leave()

    def leave(self) -> None:
        """An opening ended: its turn goes to the next waiter still waiting."""
        queue = self._queue
        while queue:
            waiter = queue.popleft()
            if not waiter.done() and not waiter.get_loop().is_closed():
                waiter.set_result(True)
                return
        self._busy -= 1

    @property
    def busy(self) -> int:
        """Openings running now."""
        return self._busy

    @property
    def waiting(self) -> int:
        """Openings waiting for a turn (some may have been abandoned and not yet skipped)."""
        return len(self._queue)
