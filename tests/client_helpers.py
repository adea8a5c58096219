"""Helpers for the client tests: drain a connection, pick out the data, wait for a condition."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from sonicsse import SSEConnection


async def collect(conn: SSEConnection, limit: int | None = None) -> list[dict[str, Any]]:
    """The events of ``conn`` (copied), until it ends or ``limit`` were read."""
    events: list[dict[str, Any]] = []
    async for event in conn:
        events.append(dict(event))
        if limit is not None and len(events) >= limit:
            break
    return events


def datas(events: list[dict[str, Any]]) -> list[str]:
    return [e["data"] for e in events]


def wait_until(condition: Callable[[], object], timeout: float, interval: float = 0.02) -> bool:
    """Poll ``condition()`` until it is true (True) or ``timeout`` seconds passed (False): for a state
    that nothing signals (a counter of another thread or process, a log file). ``timeout`` only bounds a
    hang: make it generous."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


async def async_wait_until(condition: Callable[[], object], timeout: float, interval: float = 0.02) -> bool:
    """:func:`wait_until` for a coroutine: the event loop runs while it waits."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval)


class CallbackSource:
    """An ``EventIterator`` source made of plain callables, for tests that script them."""

    def __init__(self, step: Callable[[], Any], next_batch: Callable[[], Any], on_exit: Callable[[], Any]):
        self.step = step
        self.next_batch = next_batch
        self.on_exit = on_exit

    def _step(self) -> Any:
        return self.step()

    def _next_batch(self) -> Any:
        return self.next_batch()

    def _leave(self, token: Any) -> None:
        self.on_exit()


def iterator_of(
    cls: Callable[..., Any],
    step: Callable[[], Any],
    next_batch: Callable[[], Any],
    on_exit: Callable[[], Any],
    rest: Any,
) -> Any:
    """``cls(source, token, rest)`` over callables: ``EventIterator`` as the tests drive it."""
    return cls(CallbackSource(step, next_batch, on_exit), None, rest)
