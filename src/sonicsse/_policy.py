"""Reconnection and status rules as pure functions: no I/O, no clock reads unless passed in.

The connection loop asks these functions what to do (stream, stop, follow, retry or fail) and how
long to wait, so every rule can be tested exhaustively without sockets.
"""

from __future__ import annotations

import enum
import functools
import random
import re
from collections.abc import Callable, Iterable, Mapping
from email.utils import parsedate_to_datetime
from urllib.parse import urljoin, urlsplit

__all__ = [
    "ACCEPT_ENCODING",
    "IDEMPOTENT_METHODS",
    "MIN_BACKOFF_MS",
    "REDIRECT_STATUSES",
    "Action",
    "base_delay_ms",
    "build_headers",
    "classify_response",
    "header_value_ok",
    "is_event_stream",
    "may_resume",
    "parse_retry_after",
    "reconnect_delay",
    "redirect_request",
    "url_problem",
]

#: Methods whose request may be sent again without a side effect being repeated (RFC 9110, 9.2.2).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
#: Statuses followed as redirects when ``follow=True``.
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
#: Statuses after which a request is retried with backoff (the server asks to come back later).
RETRY_STATUSES = frozenset({429, 503})
#: Where the backoff of failed attempts starts when the base delay is shorter (a ``retry: 0`` or
#: ``retry_delay=0`` must not turn a failing server into a hot loop of requests).
MIN_BACKOFF_MS = 100

# Same rule as aiosonic's header validation: no control character but TAB.
_BAD_HEADER_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class Action(enum.Enum):
    """What the connection loop does with a response."""

    STREAM = "stream"  #: read the body as an event stream
    END = "end"  #: the server asked to stop (204): end the iteration, no reconnect
    REDIRECT = "redirect"  #: follow the ``Location`` header
    RETRY = "retry"  #: a transient server failure: reconnect with backoff (if reconnecting)
    FAIL = "fail"  #: a permanent failure: raise at once, no retry


def is_event_stream(content_type: str | None) -> bool:
    """Whether a ``Content-Type`` value is the ``text/event-stream`` media type (parameters ignored)."""
    if not content_type:
        return False
    return content_type.split(";", 1)[0].strip().lower() == "text/event-stream"


def classify_response(status: int, content_type: str | None, *, follow: bool) -> tuple[Action, str]:
    """Decide what to do with a response from its status and content type.

    Returns the action and a short reason (used in error messages).
    """
    if status == 200:
        if is_event_stream(content_type):
            return Action.STREAM, "ok"
        return Action.FAIL, f"unexpected content type {content_type!r}, expected 'text/event-stream'"
    if status == 204:
        return Action.END, "server asked to stop (204 No Content)"
    if status in REDIRECT_STATUSES:
        if follow:
            return Action.REDIRECT, "redirect"
        return Action.FAIL, "redirect not followed (follow=True, or --follow on the command line, follows it)"
    if status in RETRY_STATUSES or 500 <= status <= 599:
        return Action.RETRY, "server error" if status >= 500 else "rate limited"
    return Action.FAIL, "unexpected status"


def may_resume(method: str, last_event_id: str, resume_unsafe: bool) -> bool:
    """Whether a stream may be requested again after it was opened.

    Idempotent methods always may. A non-idempotent request (POST, PATCH, ...) is sent again only
    when the server made the stream resumable (it gave an event ID, sent back as ``Last-Event-ID``)
    or when the caller opted in: re-sending a finished LLM completion request would bill it twice.
    """
    return resume_unsafe or bool(last_event_id) or method.upper() in IDEMPOTENT_METHODS


def base_delay_ms(retry_delay: int, server_retry: int | None, max_retry_delay: int) -> int:
    """The reconnection time: the server's last ``retry:`` value or ``retry_delay``, capped."""
    delay = retry_delay if server_retry is None else server_retry
    return max(0, min(delay, max_retry_delay))


def reconnect_delay(
    base_ms: int,
    max_ms: int,
    failures: int,
    retry_after: float | None = None,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before the next attempt.

    ``failures`` counts the consecutive attempts that delivered no event. After a stream that
    delivered events and then ended (``failures == 0``) the wait is exactly the base delay. After
    failures it doubles per failure from the base delay (at least ``MIN_BACKOFF_MS``), with jitter
    in ``[d/2, d]``, up to ``max_ms``; it never goes below the base delay. A ``Retry-After``
    (seconds) is honoured, capped at ``max_ms``.
    """
    base = min(base_ms, max_ms)
    if failures <= 0:
        delay = float(base)
    else:
        ceiling = min(float(max_ms), max(base, MIN_BACKOFF_MS) * 2.0 ** min(failures, 62))
        delay = max(float(base), ceiling / 2 + rand() * ceiling / 2)
    if retry_after is not None:
        delay = max(delay, min(retry_after * 1000.0, float(max_ms)))
    return delay / 1000.0


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds asked by a ``Retry-After`` header (delay-seconds or HTTP-date), or None when absent/invalid.

    ``now`` is the current UNIX time, used for the HTTP-date form; a date in the past gives 0.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isascii() and value.isdigit():  # str.isdigit() also takes "²" and other digits
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


def header_value_ok(value: str) -> bool:
    """Whether a string can be sent as an HTTP header value (no control character but TAB)."""
    return _BAD_HEADER_VALUE.search(value) is None


#: What sonicsse can inflate as the body arrives (``Content-Encoding``), asked for by default.
ACCEPT_ENCODING = "gzip, deflate"


def build_headers(
    user: Mapping[str, str] | Iterable[tuple[str, str]] | None, last_event_id: str
) -> dict[str, str]:
    """The request headers of one attempt.

    ``Accept: text/event-stream``, ``Cache-Control: no-cache`` and ``Accept-Encoding: gzip, deflate``
    (the body is inflated as it arrives) are added unless the caller gave them (user headers win, names
    compared case-insensitively; ``Accept-Encoding: identity`` asks for no compression).
    ``Last-Event-ID`` is the stream's last event ID when it is non-empty and a valid header value;
    otherwise any is left out.
    """
    items = user.items() if isinstance(user, Mapping) else (user or ())
    headers: dict[str, str] = {}
    lower: set[str] = set()
    for key, value in items:
        if key.lower() == "last-event-id":
            continue
        headers[key] = value
        lower.add(key.lower())
    if "accept" not in lower:
        headers["Accept"] = "text/event-stream"
    if "cache-control" not in lower:
        headers["Cache-Control"] = "no-cache"
    if "accept-encoding" not in lower:
        headers["Accept-Encoding"] = ACCEPT_ENCODING
    if last_event_id and header_value_ok(last_event_id):
        headers["Last-Event-ID"] = last_event_id
    return headers


def redirect_request(
    status: int, method: str, url: str, location: str | None
) -> tuple[str, str, bool] | None:
    """The next request of a redirect: ``(method, url, keep_body)``, or None when ``Location`` is missing.

    303, and 301/302 after a POST, switch to GET without a body (as browsers and aiosonic do);
    307/308 keep the method and body.
    """
    if location is None or not location.strip():
        return None
    target = urljoin(url, location.strip())
    upper = method.upper()
    if status == 303 or (status in (301, 302) and upper == "POST"):
        return "GET", target, False
    return method, target, True


# str.isspace() characters (the same set as ``\s`` in a str pattern) and the C0 controls and DEL
_UNQUOTED = re.compile(r"[\s\x00-\x1f\x7f]")


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be requested (a message for a person), or None when it can."""
    if not isinstance(url, str):
        return f"the URL must be a str, not {type(url).__name__}"
    return _str_url_problem(url)


@functools.lru_cache(maxsize=256)  # streams are opened to a few URLs, many times
def _str_url_problem(url: str) -> str | None:
    text = url.strip()
    if not text:
        return "the URL is empty"
    if _UNQUOTED.search(text):
        return "the URL contains spaces or control characters (quote them as %20 and the like)"
    try:
        parts = urlsplit(text)
    except ValueError as exc:
        return f"the URL cannot be parsed: {exc}"
    scheme = parts.scheme.lower()
    if not scheme or "://" not in text:
        return "the URL has no scheme: start it with http:// or https://"
    if scheme not in ("http", "https"):
        return f"unsupported URL scheme {scheme!r}: use http:// or https://"
    if not parts.hostname:
        return "the URL has no host"
    try:
        parts.port  # noqa: B018 - the property validates the port
    except ValueError:
        port = parts.netloc.rpartition("@")[2].rpartition(":")[2]
        return f"invalid port {port!r}: a port is a number from 1 to 65535"
    if parts.port == 0:
        return "invalid port '0': a port is a number from 1 to 65535"
    return None
