"""One timer per event loop for the timeouts of every open stream on it.

A stream with a timeout is checked when its deadline may have passed. Rather than a timer handle per
stream (an object the loop's heap and the cyclic GC carry for each of 10,000 streams), deadlines are
rounded up to a tick, a hundredth of the timeout (at least 1 ms, at most 1 s), and the streams due in
the same tick share one timer: streams opened together with the same timeout cost one handle between
them. A timeout therefore fires at most one tick late: a ``read_timeout`` of 300 s within 301 s.
"""

from __future__ import annotations

import asyncio
import math
import weakref
from typing import Protocol

__all__ = ["Watchdog", "Watched", "tick_of", "watchdog"]

_MIN_TICK = 0.001
_MAX_TICK = 1.0


class Watched(Protocol):
    """What the watchdog calls when a stream's tick comes."""

    def _on_timer(self) -> None: ...


def tick_of(timeout: float) -> float:
    """How far a deadline for ``timeout`` may be rounded up."""
    return min(max(timeout / 100, _MIN_TICK), _MAX_TICK)


class Watchdog:
    """The timers of one event loop's streams, one per tick that has streams due."""

    __slots__ = ("__weakref__", "_due", "_handles", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # weak: the watchdog is the value of a WeakKeyDictionary keyed by this loop
        self._loop = weakref.ref(loop)
        self._due: dict[float, set[Watched]] = {}
        self._handles: dict[float, asyncio.TimerHandle] = {}

    def watch(self, stream: Watched, when: float, tick: float) -> float:
        """Call ``stream._on_timer()`` at ``when`` or up to ``tick`` later; returns the key that
        :meth:`unwatch` takes."""
        key = math.ceil(when / tick) * tick
        streams = self._due.get(key)
        if streams is None:
            streams = self._due[key] = set()
            loop = self._loop()
            assert loop is not None  # a stream is being watched on it
            self._handles[key] = loop.call_at(key, self._fire, key)
        streams.add(stream)
        return key

    def unwatch(self, stream: Watched, key: float) -> None:
        """No call for ``stream`` at ``key`` (a key :meth:`watch` returned)."""
        streams = self._due.get(key)
        if streams is None:
            return
        streams.discard(stream)
        if not streams:
            del self._due[key]
            self._handles.pop(key).cancel()

    def __len__(self) -> int:
        """How many streams are watched."""
        return sum(map(len, self._due.values()))

    def _fire(self, key: float) -> None:
        streams = self._due.pop(key, ())
        self._handles.pop(key, None)
        for stream in streams:
            try:
                stream._on_timer()
            except Exception as exc:  # one stream's failure must not skip the others' timeouts
                asyncio.get_running_loop().call_exception_handler(
                    {"message": "sonicsse: a stream's timeout check failed", "exception": exc}
                )


_WATCHDOGS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Watchdog] = weakref.WeakKeyDictionary()


def watchdog(loop: asyncio.AbstractEventLoop) -> Watchdog:
    """The watchdog of ``loop`` (made on first use, gone with the loop)."""
    found = _WATCHDOGS.get(loop)
    if found is None:
        found = _WATCHDOGS[loop] = Watchdog(loop)
    return found
