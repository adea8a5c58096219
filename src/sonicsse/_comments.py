"""CommentOrder: ``on_comment`` called in stream order among a read's events.

The decoder notes each comment with the number of events dispatched before it; the user's callback is
not called from inside ``feed()``, since the events before the comment are not delivered yet then. The
read's events are handed out in parts split where its comments came, and each comment goes to the
callback between the parts: after the events before it were delivered, before the ones after it.
"""

from __future__ import annotations

import collections
import inspect

from ._types import CommentCallback, Event

__all__ = ["CommentOrder"]


class CommentOrder:
    """The comments of the read being decoded, then the rest of that read in stream order."""

    __slots__ = ("_callback", "_noted", "error", "queue")

    def __init__(self, callback: CommentCallback) -> None:
        self._callback = callback
        self._noted: list[tuple[int, str]] = []
        self.queue: collections.deque[list[Event] | str] = collections.deque()
        # An exception from the callback: raised once the rest of the read's events were delivered.
        self.error: BaseException | None = None

    def note(self, dispatched: int, text: str) -> None:
        """A comment came after ``dispatched`` events of the read being decoded."""
        self._noted.append((dispatched, text))

    @property
    def noted(self) -> bool:
        """Whether the read just decoded had comments."""
        return bool(self._noted)

    def clear(self) -> None:
        """Forget everything (the connection was closed, or the stream ended there)."""
        self._noted.clear()
        self.queue.clear()

    def has_events_left(self) -> bool:
        """Whether events of the read are still queued (its resume point is not reached yet)."""
        return any(isinstance(part, list) for part in self.queue)

    async def split(self, events: list[Event]) -> list[Event]:
        """Queue a read's events and comments in stream order; hand out the part before the first comment
        at once, after calling the comments that precede every event."""
        noted, self._noted = self._noted, []
        queue = self.queue
        start = 0
        for position, text in noted:
            if position > start:
                queue.append(events[start:position])
                start = position
            queue.append(text)
        if start < len(events):
            queue.append(events[start:] if start else events)
        return await self.next_part()

    async def next_part(self) -> list[Event]:
        """Pass the comments at the front of the queue to the callback, then give the events up to the
        next comment ([] when the read has none left).

        An exception from the callback is kept in ``error`` once the rest of the read's events were
        handed out (without their comments): raised at once, it would leave events behind that the
        resume point (``last_event_id``) has already passed.
        """
        queue = self.queue
        while queue:
            part = queue.popleft()
            if isinstance(part, list):
                return part
            try:
                result = self._callback(part)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                if self.error is None:
                    self.error = exc
                rest = [event for left in queue if isinstance(left, list) for event in left]
                queue.clear()
                return rest
        return []
