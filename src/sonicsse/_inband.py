"""In-band errors: failures an LLM API reports inside a 200 stream, turned into SSEServerError.

Two shapes are recognised: an event whose type is the configured error event (``event: error`` with a JSON
body like ``{"type": "error", "error": {"type": "overloaded_error", "message": "..."}}``), and a data
chunk whose JSON object has an ``error`` member (``data: {"error": {"message": "...", "type": "..."}}``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ._types import Event
from .exceptions import SSEServerError

__all__ = ["StopSignals", "error_from_event", "error_from_payload", "is_retryable", "sentinel_matcher"]

Loads = Callable[[Any], Any]

# Error types that say "try again later": overload, rate limits and timeouts.
_RETRYABLE_MARKS = (
    "overload",
    "rate_limit",
    "ratelimit",
    "rate-limit",
    "too_many_requests",
    "timeout",
    "timed_out",
)


def is_retryable(error_type: str | None) -> bool:
    """Whether an error of this type is worth retrying (overloaded, rate-limited, timed out)."""
    if not error_type:
        return False
    lowered = error_type.lower()
    return any(mark in lowered for mark in _RETRYABLE_MARKS)


def _describe(payload: Any) -> tuple[str | None, str | None]:
    """The error's type and message from the common payload shapes (Anthropic, OpenAI and alike)."""
    if not isinstance(payload, dict):
        return None, None
    detail = payload.get("error")
    error_type = message = None
    if isinstance(detail, dict):
        error_type = detail.get("type") or detail.get("code")
        message = detail.get("message")
    elif isinstance(detail, str):
        message = detail
    if error_type is None and payload.get("type") not in (None, "error"):
        error_type = payload.get("type")
    if message is None:
        message = payload.get("message")
    return (
        str(error_type) if error_type is not None else None,
        str(message) if message is not None else None,
    )


def error_from_payload(
    event: Event, payload: Any, *, method: str | None = None, url: str | None = None
) -> SSEServerError:
    """The SSEServerError for an error event whose data was already parsed (None when it was not JSON)."""
    error_type, message = _describe(payload)
    reason = "server sent an error event"
    if error_type or message:
        reason += ": " + ": ".join(part for part in (error_type, message) if part)
    return SSEServerError(
        reason,
        event=event,
        payload=payload,
        error_type=error_type,
        message=message,
        retryable=is_retryable(error_type),
        method=method,
        url=url,
    )


def error_from_event(
    event: Event,
    error_event: str,
    loads: Loads = json.loads,
    *,
    method: str | None = None,
    url: str | None = None,
) -> SSEServerError | None:
    """The SSEServerError an event carries, or None for an ordinary event.

    Cheap for ordinary events: JSON is parsed only for an event of type ``error_event`` or one whose data
    mentions ``"error"``.
    """
    data = event["data"]
    if event["event"] == error_event:
        try:
            payload = loads(data)
        except ValueError:
            payload = None
        return error_from_payload(event, payload, method=method, url=url)
    if isinstance(data, bytes):
        # find(), not `in`: `in` first tries a bytes needle as an int and builds a TypeError (2x slower)
        if data.find(b'"error"') < 0:
            return None
    elif '"error"' not in data:
        return None
    try:
        payload = loads(data)
    except ValueError:
        return None
    if isinstance(payload, dict) and payload.get("error"):
        return error_from_payload(event, payload, method=method, url=url)
    return None


def _as_text(event: Event) -> Event:
    data: Any = event["data"]
    if not isinstance(data, bytes):
        return event
    text = event.copy()
    text["data"] = data.decode("utf-8", "replace")
    return text


def sentinel_matcher(
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


class StopSignals:
    """What a stream is screened for: its end sentinel (``done``) and in-band errors (``error_event``).

    ``active`` is False when neither is set: the events are then not looked at.
    """

    __slots__ = ("active", "error_event", "is_done", "loads", "method", "url")

    def __init__(
        self,
        done: str | Callable[[Event], bool] | None,
        error_event: str | None,
        *,
        raw: bool,
        loads: Loads = json.loads,
        text_events: bool = False,
        method: str = "",
        url: str = "",
    ) -> None:
        self.is_done = sentinel_matcher(done, raw, text_events)
        self.error_event = error_event
        self.loads = loads
        self.method = method
        self.url = url
        self.active = bool(error_event or self.is_done)

    def find(self, events: list[Event]) -> tuple[int, SSEServerError | None] | None:
        """The first event that ends the stream: its index, with None for an end sentinel or the error
        for an in-band error; None when the batch has neither."""
        is_done = self.is_done
        error_event = self.error_event
        for index, event in enumerate(events):
            if is_done is not None and is_done(event):
                return index, None
            if error_event is not None:
                error = error_from_event(event, error_event, self.loads, method=self.method, url=self.url)
                if error is not None:
                    return index, error
        return None
