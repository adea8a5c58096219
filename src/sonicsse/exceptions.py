"""The exceptions sonicsse raises, shared by both decoder implementations and the client.

Every class subclasses the matching aiosonic exception, so code written against
``aiosonic.SSEClient`` that catches ``aiosonic.exceptions.SSEParsingError`` or
``SSEConnectionError`` keeps working unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._logging import redact_url
from ._seam import AiosonicSSEConnectionError as _AiosonicSSEConnectionError
from ._seam import AiosonicSSEParsingError as _AiosonicSSEParsingError

if TYPE_CHECKING:
    from ._types import Event

__all__ = [
    "SSECheckpointError",
    "SSEConnectionError",
    "SSEError",
    "SSEInvalidURLError",
    "SSEParsingError",
    "SSEServerError",
]


class SSEError(Exception):
    """Base class of every error sonicsse raises."""


class SSEParsingError(SSEError, _AiosonicSSEParsingError):
    """The event stream broke a rule: a limit in any mode, or malformed input with ``strict=True``.

    Attributes:
        reason: what was wrong, in a few words.
        line: the offending line (at most 80 characters of it), or None.
        offset: the byte offset of that line in the stream (counted since the last reset), or None.
        events: the events completed in the same ``feed()`` call before the error, so nothing
            valid that arrived before the bad line is lost.
        method, url: the request whose stream it was, when raised by a connection (the message shows
            the URL without user info and credential query parameters; ``url`` is the URL as given).
    """

    def __init__(
        self,
        reason: str,
        *,
        line: str | None = None,
        offset: int | None = None,
        events: list[Event] | None = None,
        method: str | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.line = line
        self.offset = offset
        self.events: list[Event] = events if events is not None else []
        self.method = method
        self.url = url

    def __str__(self) -> str:
        message = self.reason
        if self.offset is not None:
            message += f" at byte offset {self.offset}"
        if self.method or self.url:
            url = redact_url(self.url) if self.url else None
            request = " ".join(part for part in (self.method, url) if part)
            message += f" ({request})"
        if self.line is not None:
            message += f": {self.line!r}"
        return message


class SSEConnectionError(SSEError, _AiosonicSSEConnectionError):
    """The stream could not be opened or kept open.

    Attributes:
        reason: what went wrong, in a few words.
        method, url: the request that failed (the message shows the URL without user info and
            credential query parameters; ``url`` is the URL as given).
        status: the HTTP status of the response, or None when there was none.
        body: the start of the response body for HTTP errors (at most 200 characters), or None.
    """

    def __init__(
        self,
        reason: str,
        *,
        method: str | None = None,
        url: str | None = None,
        status: int | None = None,
        body: str | None = None,
    ) -> None:
        parts = []
        if method or url:
            parts.append(f"{method or ''} {redact_url(url) if url else ''}".strip())
        if status is not None:
            parts.append(f"status {status}")
        message = reason if not parts else f"{reason} ({', '.join(parts)})"
        if body:
            message += f": {body!r}"
        super().__init__(message)
        self.reason = reason
        self.method = method
        self.url = url
        self.status = status
        self.body = body


class SSEInvalidURLError(SSEConnectionError, ValueError):
    """The URL cannot be requested: not ``http://`` or ``https://``, no host, or a bad port. Raised at
    once by ``connect()`` (or for a redirect's ``Location``), never retried; also a ``ValueError``."""


class SSECheckpointError(SSEConnectionError):
    """The checkpoint store failed: ``load()`` when the connection opened, or ``save()`` after a batch.

    Nothing is lost when ``save()`` fails: the store still holds an older id, so a restarted process
    delivers the events since then again. The store's exception is the ``__cause__``.
    """


class SSEServerError(SSEConnectionError):
    """The server reported a failure inside a successful (200) stream, as an in-band error event.

    Attributes:
        event: the event that carried the error.
        payload: its data parsed as JSON, or None when it was not JSON.
        error_type: the error's type as the server named it (e.g. ``"overloaded_error"``), or None.
        message: the server's human-readable message, or None.
        retryable: True for overload, rate-limit and timeout errors.
    """

    def __init__(
        self,
        reason: str,
        *,
        event: Event,
        payload: Any,
        error_type: str | None,
        message: str | None,
        retryable: bool,
        method: str | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(reason, method=method, url=url, status=200)
        self.event = event
        self.payload = payload
        self.error_type = error_type
        self.message = message
        self.retryable = retryable
