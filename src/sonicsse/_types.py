"""Plain types shared by both decoder implementations and the client."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypedDict

__all__ = ["CommentCallback", "Event", "EventSource"]


class Event(TypedDict):
    """One dispatched server-sent event: exactly the keys of ``aiosonic.SSEClient``'s events.

    ``data``: the data lines joined with ``"\\n"``.
    ``event``: the ``event:`` field of the event's block, or None when it had none (or an empty one).
    ``id``: the ``id:`` field given in the event's own block (``""`` for a bare ``id:``), or None.
    ``retry``: the valid ``retry:`` value given in the event's own block, or None.
    """

    data: str
    event: str | None
    id: str | None
    retry: int | None


CommentCallback = Callable[[str], Any]


class EventSource(Protocol):
    """What an ``EventIterator`` iterates (a connection): see ``_events_py.EventIterator``."""

    def _step(self) -> list[Event] | asyncio.Future[None] | None: ...
    def _next_batch(self) -> Awaitable[list[Event] | None]: ...
    def _leave(self, token: Any) -> object: ...
