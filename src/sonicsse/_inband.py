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

__all__ = ["error_from_event", "error_from_payload", "is_retryable"]

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
