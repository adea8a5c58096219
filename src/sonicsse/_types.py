"""Plain types shared by both decoder implementations and the client."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypedDict

__all__ = ["CommentCallback", "Event"]


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
