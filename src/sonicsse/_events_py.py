"""The pure-Python twin of ``sonicsse._events_c``: ``async for`` over a connection's event batches."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator

from ._types import Event

__all__ = ["EventIterator"]


async def EventIterator(
    step: Callable[[], list[Event] | asyncio.Future[None] | None],
    next_batch: Callable[[], Awaitable[list[Event] | None]],
    on_exit: Callable[[], object],
    rest: list[Iterator[Event]],
) -> AsyncGenerator[Event, None]:
    """Yield the events of the lists ``step()`` and ``await next_batch()`` give, until ``next_batch()``
    gives None; ``on_exit()`` runs once when the iteration ends, however it ends.

    ``step()`` is tried first each time a batch is used up: it gives the next batch, or a future to wait
    on before trying it again, or None to have ``next_batch()`` run instead.

    ``rest`` is a one-item list holding an iterator over the current batch's events not yet yielded: the
    connection shares it with every iterator it makes, so one that is abandoned half-way through a batch
    (``await anext(aiter(conn))``) leaves the rest to the next.
    """
    if len(rest) != 1:
        raise ValueError("rest must be a list holding one iterator")
    try:
        while True:
            for event in rest[0]:
                yield event
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
            rest[0] = iter(events)
    finally:
        on_exit()
