"""StreamCore: the decisions of one event stream, without I/O.

The connection (``connection.py``) does the I/O and feeds this core facts: a request failed, a response
head came, a stream opened, events were delivered, a stream ended, the clock reads ``now``. The core
answers with what to do: stream the body, follow a redirect (with which request), give up with which
error, wait how long before the next attempt, which deadline the next timeout check is due at. It keeps
the counters behind ``conn.stats`` and the resume point that a checkpoint store saves. It never reads a
clock, a socket or a random number generator by itself (``rand`` and ``now`` are passed in), so every
decision is tested without sockets (``tests/test_core.py``).

Where a reconnect is decided: :meth:`StreamCore.stream_ended` (a stream ended: reconnect or stop),
:meth:`StreamCore.attempt_failed` (an attempt failed: retry or raise), :meth:`StreamCore.next_wait`
(how long to wait, or give up after ``max_retries``).
"""

from __future__ import annotations

import random
import socket
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from . import _policy
from ._errors import describe_failure
from ._logging import is_secret_name
from ._options import ConnectOptions
from ._seam import ConnectTimeout
from ._tunnel import ProxyError
from ._types import Event
from .exceptions import SSEConnectionError, SSEInvalidURLError

__all__ = ["MAX_REDIRECTS", "Follow", "Retryable", "SSEStats", "StreamCore", "Wait"]

MAX_REDIRECTS = 10


class Retryable(Exception):
    """An attempt failed in a way that a later attempt may not."""

    def __init__(
        self,
        reason: str,
        *,
        status: int | None = None,
        body: str | None = None,
        retry_after: float | None = None,
        unprocessed: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.body = body
        self.retry_after = retry_after
        self.unprocessed = unprocessed  # the server surely did not act on the request (refused, 429, 503)


@dataclass(frozen=True)
class SSEStats:
    """A snapshot of a connection's counters (``conn.stats``).

    Attributes:
        events: events yielded (after dedup).
        bytes: body bytes received (after decompression).
        reconnects: streams opened after the first one.
        time_to_first_event: seconds from ``connect()`` to the first event, or None before it.
        time_since_last_event: seconds since the last event (or since the connection was opened when
            none came yet).
    """

    events: int
    bytes: int
    reconnects: int
    time_to_first_event: float | None
    time_since_last_event: float


@dataclass(frozen=True)
class Wait:
    """Wait ``delay`` seconds, then make attempt number ``attempt`` (counted from the last success).

    ``reason`` is why the last stream or attempt failed (None: the server ended the stream cleanly), and
    ``cause`` the exception behind it."""

    delay: float
    attempt: int
    reason: str | None
    cause: BaseException | None


@dataclass(frozen=True)
class Follow:
    """The next request of a redirect."""

    method: str
    url: str
    headers: dict[str, str]
    keep_body: bool


def same_origin(a: str, b: str) -> bool:
    """Whether two URLs have the same scheme, host and port."""
    pa, pb = urlsplit(a), urlsplit(b)
    return (pa.scheme, pa.hostname, pa.port) == (pb.scheme, pb.hostname, pb.port)


def resume_point(events: list[Event], before: str | None) -> str | None:
    """The id to resume after, when only ``events`` of a read were delivered (the rest was cut off by
    an end sentinel or an in-band error): the last id among them, else the resume point before them."""
    for event in reversed(events):
        if event["id"] is not None:
            return event["id"]
    return before


class StreamCore:
    """The state and decisions of one stream across its attempts (see the module's docstring)."""

    __slots__ = (
        "bytes",
        "closed",
        "consumed_id",
        "created",
        "events",
        "failures",
        "finished",
        "first_event_at",
        "last_error",
        "last_event_at",
        "last_status",
        "opened_at",
        "options",
        "restart",
        "retry_after",
        "retry_cause",
        "retry_reason",
        "saved_id",
        "stream_events",
        "streams_opened",
    )

    def __init__(self, options: ConnectOptions) -> None:
        self.options = options
        self.closed = False  # close() was called
        self.restart = False  # the stream in hand is dropped on purpose: reconnect at once
        self.finished = False  # no further stream will be opened
        self.failures = 0  # consecutive attempts that delivered no event
        self.last_error: Retryable | None = None
        self.retry_after: float | None = None
        self.retry_cause: BaseException | None = None
        self.retry_reason: str | None = None  # why the next attempt is made (None: a clean end)
        self.last_status: int | None = None
        # counters
        self.created = 0.0
        self.events = 0
        self.bytes = 0
        self.streams_opened = 0
        self.stream_events = 0
        self.opened_at = 0.0
        self.first_event_at: float | None = None
        self.last_event_at = 0.0
        # checkpoint: the id as of the last batch the consumer finished, and the one last saved
        self.consumed_id: str | None = None
        self.saved_id: str | None = None

    # -- errors -------------------------------------------------------------------------------------

    def error(
        self, reason: str, *, status: int | None = None, body: str | None = None, url: str | None = None
    ) -> SSEConnectionError:
        """An SSEConnectionError for this stream's request."""
        options = self.options
        return SSEConnectionError(
            reason, method=options.upper_method, url=url or options.url, status=status, body=body
        )

    def fail(self, reason: str, **details: Any) -> SSEConnectionError:
        """A permanent failure: no further attempt; the error to raise."""
        self.finished = True
        return self.error(reason, **details)

    # -- attempts -------------------------------------------------------------------------------------

    def resumable(self, last_event_id: str) -> bool:
        """Whether the request may be sent again after it reached the server (idempotent, or resumed)."""
        options = self.options
        return _policy.may_resume(options.method, last_event_id, options.resume_unsafe)

    def request_failed(self, exc: BaseException, url: str) -> Exception:
        """What a request that raised ``exc`` (before any response) means: a :class:`Retryable`, or a
        permanent SSEConnectionError. An exception that is the caller's (invalid arguments) comes back
        as it is."""
        if isinstance(exc, ssl.SSLError):
            if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):  # dropped mid-handshake
                return Retryable(describe_failure(exc, url))
            # A certificate that does not verify, or a server that does not speak TLS: retrying cannot
            # fix a setup problem.
            return self.fail(describe_failure(exc, url), url=url)
        if isinstance(exc, ProxyError):
            reason = describe_failure(exc, url)
            if exc.permanent:  # the proxy's credentials or its policy: asking again will not help
                return self.fail(reason, url=url, status=exc.status)
            return Retryable(reason, status=exc.status, unprocessed=True)
        if isinstance(exc, ValueError):
            # The request's arguments were checked before it was sent (``_seam.check_request``).
            return Retryable(f"malformed response: {exc!r}")
        if isinstance(exc, TypeError):
            return exc  # invalid arguments
        unprocessed = isinstance(exc, (ConnectionRefusedError, ConnectTimeout, socket.gaierror))
        return Retryable(describe_failure(exc, url), unprocessed=unprocessed)

    def redirect(
        self, status: int, method: str, url: str, headers: dict[str, str], location: str | None
    ) -> Follow:
        """The request that follows a redirect response; raises when it cannot be followed.

        ``Content-Type``/``Content-Length`` are dropped with the body (303, or 301/302 after a POST), and
        credentials (``Authorization``, cookies, API keys) when the redirect leaves the origin.
        """
        target = _policy.redirect_request(status, method, url, location)
        if target is None:
            raise self.fail("redirect without a Location header", url=url, status=status)
        new_method, new_url, keep_body = target
        problem = _policy.url_problem(new_url)
        if problem is not None:
            self.finished = True
            raise SSEInvalidURLError(
                f"redirect to a URL that cannot be requested ({new_url!r}): {problem}",
                method=method.upper(),
                url=url,
                status=status,
            )
        if not keep_body:
            headers = {
                k: v for k, v in headers.items() if k.lower() not in ("content-type", "content-length")
            }
        if not same_origin(url, new_url):  # credentials stay with the origin they were meant for
            headers = {k: v for k, v in headers.items() if not is_secret_name(k)}
        return Follow(new_method, new_url, headers, keep_body)

    def refused(
        self,
        action: _policy.Action,
        reason: str,
        status: int,
        phrase: str,
        headers: Mapping[str, str],
        snippet: str | None,
        url: str,
        now: float,
    ) -> Exception:
        """The error of a response that is not a stream (``action`` RETRY or FAIL); ``now`` is the UNIX
        time, for a ``Retry-After`` date."""
        text = f"{reason} ({status} {phrase})".strip()
        if action is _policy.Action.RETRY:
            return Retryable(
                text,
                status=status,
                body=snippet,
                retry_after=_policy.parse_retry_after(headers.get("retry-after"), now),
                unprocessed=status in _policy.RETRY_STATUSES,
            )
        return self.fail(text, url=url, status=status, body=snippet)

    def attempt_failed(self, exc: Retryable, last_event_id: str) -> SSEConnectionError | None:
        """An attempt failed: None when another attempt follows, else the error to raise."""
        self.failures += 1
        self.last_error = exc
        self.retry_after = exc.retry_after
        self.retry_cause = exc.__cause__ or exc
        self.retry_reason = exc.reason
        if not self.options.reconnect or not (exc.unprocessed or self.resumable(last_event_id)):
            self.finished = True
            return self.error(exc.reason, status=exc.status, body=exc.body)
        return None

    def next_wait(self, server_retry: int | None, rand: Callable[[], float] = random.random) -> Wait:
        """How long to wait before the next attempt; raises SSEConnectionError after ``max_retries``
        consecutive failures. ``server_retry``: the stream's last ``retry:`` value in milliseconds."""
        options = self.options
        if options.max_retries is not None and self.failures > options.max_retries:
            self.finished = True
            last = self.last_error
            cause: BaseException | None = None
            if last is not None:
                cause = last.__cause__
                if cause is None:  # an HTTP failure: the error of that last attempt
                    cause = self.error(last.reason, status=last.status, body=last.body)
            error = self.error(
                f"gave up after {self.failures} failed attempts"
                + (f": {last.reason}" if last is not None else ""),
                status=last.status if last is not None else None,
                body=last.body if last is not None else None,
            )
            raise error from cause
        base = _policy.base_delay_ms(options.retry_delay, server_retry, options.max_retry_delay)
        delay = _policy.reconnect_delay(base, options.max_retry_delay, self.failures, self.retry_after, rand)
        return Wait(delay, self.failures + 1, self.retry_reason, self.retry_cause)

    # -- streams ----------------------------------------------------------------------------------------

    def stream_opened(self, status: int, now: float) -> None:
        """A response is being read as the stream."""
        self.last_status = status
        self.streams_opened += 1
        self.stream_events = 0
        self.opened_at = now
        self.retry_after = None

    def count(self, events: int, now: float) -> None:
        """``events`` events were delivered at ``now``."""
        self.events += events
        self.stream_events += events
        self.last_event_at = now
        if self.first_event_at is None:
            self.first_event_at = now

    def stream_ended(
        self, reason: str | None, cause: BaseException | None, last_event_id: str
    ) -> SSEConnectionError | None:
        """The stream ended (``reason`` None: cleanly). None when the next attempt follows (after
        :meth:`next_wait`), or when none does (``finished``); else the error to raise (from ``cause``)."""
        if self.closed or self.restart:
            return None
        self.failures = 0 if self.stream_events > 0 else self.failures + 1
        self.retry_after = None
        self.retry_cause = cause
        self.retry_reason = reason
        if reason is not None:
            self.last_error = Retryable(reason, status=self.last_status)
            if cause is not None:
                self.last_error.__cause__ = cause
        if not self.options.reconnect or not self.resumable(last_event_id):
            self.finished = True
            if reason is not None:
                return self.error(f"stream failed: {reason}", status=self.last_status)
        return None

    def left(self, last_event_id: str) -> None:
        """The consumer left the iteration: the next one resumes at once, when it may."""
        if self.options.reconnect and self.resumable(last_event_id):
            self.restart = True
        else:
            self.finished = True

    def delivered(self, events: list[Event], partial: bool, last_event_id: str) -> None:
        """The resume point of a checkpoint, after ``events`` were handed out (``partial``: the read had
        more events that were not, cut by an end sentinel or an in-band error, or split by comments)."""
        self.consumed_id = resume_point(events, self.consumed_id) if partial else last_event_id

    def checkpoint_due(self) -> str | None:
        """The id to save now (at most once per batch), or None."""
        last_id = self.consumed_id
        return None if last_id is None or last_id == self.saved_id else last_id

    # -- timers -----------------------------------------------------------------------------------------

    def deadline(self, now: float, waiting_since: float) -> tuple[float, str] | None:
        """The earliest deadline of the timeouts that apply, and its reason; None when none does (only
        ``first_event_timeout`` is set and an event came). ``waiting_since`` is when the pending read
        began (0: no read pending)."""
        options = self.options
        deadlines: list[tuple[float, str]] = []
        if options.read_timeout:
            deadlines.append(
                (
                    (waiting_since or now) + options.read_timeout,
                    f"no data for {options.read_timeout:g} s (read_timeout)",
                )
            )
        if self.stream_events == 0 and options.first_event_timeout:
            deadlines.append(
                (
                    self.opened_at + options.first_event_timeout,
                    f"no event {options.first_event_timeout:g} s after connecting (first_event_timeout)",
                )
            )
        if options.event_timeout:
            base = self.last_event_at if self.stream_events else self.opened_at
            deadlines.append(
                (base + options.event_timeout, f"no event for {options.event_timeout:g} s (event_timeout)")
            )
        return min(deadlines) if deadlines else None

    def stats(self, now: float) -> SSEStats:
        """The counters as of ``now``."""
        first = None if self.first_event_at is None else self.first_event_at - self.created
        last = self.last_event_at if self.first_event_at is not None else self.created
        return SSEStats(
            events=self.events,
            bytes=self.bytes,
            reconnects=max(0, self.streams_opened - 1),
            time_to_first_event=first,
            time_since_last_event=now - last,
        )
