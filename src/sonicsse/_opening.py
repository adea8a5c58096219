"""Opener: opening a stream: the reconnection wait, the attempts, each request and its redirects.

The decisions are the core's (``_core.StreamCore``) and the policy's (``_policy``); this module does the
I/O between them: it logs and waits before an attempt (``on_retry`` first), builds the headers (a
callable may give them), sends each request of the redirect chain, reads the start of an error
response for its message, reports failures to ``on_error``, and lets ``close()`` cut a wait short or
abandon a request still waiting for its response.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from . import _policy, _seam
from ._core import MAX_REDIRECTS, Retryable, StreamCore
from ._gate import OpeningGate
from ._hooks import call_hook
from ._logging import logger, redact_headers, redact_url
from ._transport import Interrupted, ResponseBody, TransportError, open_response

__all__ = ["Opener"]

_SNIPPET_CHARS = 200
_SNIPPET_WAIT = 1.0


def _close_abandoned(request: asyncio.Task[ResponseBody]) -> None:
    """Done callback of a request abandoned by ``close()``: close the response if one still came."""
    if not request.cancelled() and request.exception() is None:
        request.result().close()


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Opener:
    """Sends the requests of one connection's attempts (see the module's docstring)."""

    __slots__ = (
        "_bad_ids_logged",
        "_client",
        "_closer",
        "_core",
        "_gate",
        "_kwargs",
        "_sent_body",
        "_sleeper",
        "headers",
        "status",
    )

    def __init__(self, client: Any, core: StreamCore, gate: OpeningGate | None = None) -> None:
        self._client = client
        self._core = core
        self._gate = gate  # the client's limit on openings at once (None: no limit)
        self._kwargs = request_kwargs(core.options, client)  # the same for every attempt
        self._sent_body = False
        self._bad_ids_logged: set[str] | None = None  # made on the first id that cannot be sent
        # set while a request waits for its turn or its response: close() resolves it (with None)
        self._closer: asyncio.Future[Any] | None = None
        self._sleeper: asyncio.Future[None] | None = None  # set during the wait before an attempt
        self.status: int | None = None  # of the last response
        self.headers: Any = {}

    def abandon(self) -> None:
        """``close()``: the wait before an attempt ends, and a request still waiting for its response is
        abandoned."""
        self.cut_wait()
        if self._closer is not None:
            _resolve(self._closer)

    def cut_wait(self) -> None:
        """End the wait before the next attempt now (``restart()`` while waiting)."""
        if self._sleeper is not None:
            _resolve(self._sleeper)

    async def next_stream(self, decoder: Any, *, immediate: bool) -> ResponseBody | None:
        """Attempts until one opens a stream (its body), waiting before each but an ``immediate`` first;
        None when no stream will be opened (closed, or the server said stop). Raises SSEConnectionError
        when the core gives up."""
        core = self._core
        options = core.options
        while True:
            if core.closed:
                return None
            if not immediate:
                wait = core.next_wait(decoder.retry)
                method, url = options.upper_method, redact_url(options.url)
                if wait.reason is None:
                    logger.info(
                        "sonicsse: the stream ended; reconnecting %s %s in %.3f s", method, url, wait.delay
                    )
                else:
                    # Visible by default: a server that cannot be reached must not look like a quiet
                    # stream. Logged once per failure, with the wait, only when another attempt follows.
                    limit = "" if options.max_retries is None else f" of {options.max_retries + 1}"
                    logger.warning(
                        "sonicsse: %s %s failed: %s; retrying in %.1f s (attempt %d%s)",
                        method,
                        url,
                        wait.reason,
                        wait.delay,
                        wait.attempt,
                        limit,
                    )
                await call_hook(options.on_retry, wait.attempt, wait.delay, wait.cause)
                await self._sleep(wait.delay)
                if core.closed:
                    return None
            immediate = False
            decoder.reset()
            try:
                body = await self.attempt(decoder.last_event_id)
            except Retryable as exc:
                if options.on_error is not None:
                    failure = core.error(exc.reason, status=exc.status, body=exc.body)
                    failure.__cause__ = exc.__cause__
                    await call_hook(options.on_error, failure)
                error = core.attempt_failed(exc, decoder.last_event_id)
                if error is not None:
                    raise error from exc.__cause__
                continue
            if body is None:
                core.finished = True
            return body

    async def _sleep(self, delay: float) -> None:
        """Wait before the next attempt; ``close()`` cuts the wait short (or skips it, when it came
        before, e.g. from ``on_retry``)."""
        if self._core.closed:
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        handle = loop.call_later(max(0.0, delay), _resolve, waiter)
        self._sleeper = waiter
        try:
            await waiter
        finally:
            handle.cancel()
            self._sleeper = None

    async def attempt(self, last_event_id: str) -> ResponseBody | None:
        """One request, following redirects: the stream's body, or None when the server said stop (204)
        or the connection was closed meanwhile. Raises :class:`Retryable` when a later attempt may work,
        SSEConnectionError when none can."""
        core = self._core
        options = core.options
        if self._sent_body and isinstance(options.data, (AsyncIterator, Iterator)):
            raise core.fail("cannot reconnect: the request body is a one-shot iterator that was already sent")
        method, url, data, json = options.method, options.url, options.data, options.json
        headers = await self._headers(last_event_id)
        if logger.isEnabledFor(logging.DEBUG):
            shown = redact_url(url), redact_headers(headers)
            logger.debug("sonicsse: requesting %s %s headers=%s", method.upper(), *shown)
        for _ in range(MAX_REDIRECTS + 1):
            try:
                self._sent_body = True
                body = await self._request(method, url, headers, data, json)
            except Exception as exc:
                outcome = core.request_failed(exc, url)
                if outcome is exc:
                    raise
                raise outcome from exc
            if body is None or core.closed:  # closed from another task while the request was in flight
                if body is not None:
                    body.close()
                return None
            self.status, self.headers = body.status, body.headers
            core.last_status = body.status
            action, reason = _policy.classify_response(
                body.status, body.headers.get("content-type"), follow=options.follow
            )
            if action is _policy.Action.STREAM:
                if body.unframed_lost:
                    body.close()
                    raise core.fail(
                        "close-delimited body lost: the HTTPClient closed the connection (Connection: close)"
                        " before the body was read; use SSEClient() without http_client, or an HTTPClient"
                        " from sonicsse.make_http_client()",
                        url=url,
                        status=body.status,
                    )
                return body
            if action is _policy.Action.END:
                body.close()
                return None
            if action is _policy.Action.REDIRECT:
                body.close()
                follow = core.redirect(body.status, method, url, headers, body.headers.get("location"))
                method, url, headers = follow.method, follow.url, follow.headers
                if not follow.keep_body:
                    data = json = None
                continue
            try:
                snippet = await self._snippet(body)
            finally:
                body.close()
            raise core.refused(
                action, reason, body.status, body.reason, body.headers, snippet, url, time.time()
            )
        raise core.fail(f"more than {MAX_REDIRECTS} redirects", url=url, status=self.status)

    async def _headers(self, last_event_id: str) -> dict[str, str]:
        """The request headers of an attempt: the caller's (a callable gives them anew each time)."""
        source = self._core.options.headers
        if callable(source):
            result = source()
            if inspect.isawaitable(result):
                result = await result
            source = result
        if last_event_id and not _policy.header_value_ok(last_event_id):
            bad = self._bad_ids_logged
            if bad is None:
                bad = self._bad_ids_logged = set()
            if last_event_id not in bad and len(bad) < 16:  # once per id, for a few ids
                bad.add(last_event_id)
                logger.warning(
                    "sonicsse: last event id %r cannot be sent as a header value; left out", last_event_id
                )
        headers = _policy.build_headers(source, last_event_id)
        options = self._core.options
        _seam.check_request(headers, options.data, options.multipart)
        return headers

    async def _request(
        self, method: str, url: str, headers: dict[str, str], data: Any, json: Any
    ) -> ResponseBody | None:
        """Send one request (when the client's gate gives this connection a turn); None when ``close()``
        was called before its response came."""
        gate = self._gate
        if gate is None:
            return await self._send(method, url, headers, data, json)
        if not gate.try_enter():
            waiter = self._closer = gate.wait()  # close() resolves it with None: no turn taken
            try:
                turn = await waiter
            except BaseException:
                gate.settle(waiter)
                raise
            finally:
                self._closer = None
            if not turn:
                return None
            if self._core.closed:  # close() came with the turn
                gate.leave()
                return None
        try:
            return await self._send(method, url, headers, data, json)
        finally:
            gate.leave()

    async def _send(
        self, method: str, url: str, headers: dict[str, str], data: Any, json: Any
    ) -> ResponseBody | None:
        options = self._core.options
        loop = asyncio.get_running_loop()
        request = loop.create_task(
            open_response(
                self._client,
                method,
                url,
                headers,
                options.params,
                data,
                json,
                self._kwargs,
            )
        )
        closer: asyncio.Future[None] = loop.create_future()
        self._closer = closer
        try:
            await asyncio.wait((request, closer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._closer = None
            if not request.done():  # closed, or this task was cancelled: abandon the request
                request.cancel()
                request.add_done_callback(_close_abandoned)
        if not request.done():
            return None
        return request.result()

    async def _snippet(self, body: ResponseBody) -> str | None:
        """The start of an error response's body, for the error message (waits at most a second)."""
        loop = asyncio.get_running_loop()
        handle = loop.call_later(_SNIPPET_WAIT, body.interrupt, "timeout")
        try:
            data = await body.read()
        except (TransportError, Interrupted, OSError):
            return None
        finally:
            handle.cancel()
        if not data:
            return None
        return bytes(data[: _SNIPPET_CHARS * 4]).decode("utf-8", "replace")[:_SNIPPET_CHARS]


def request_kwargs(options: Any, client: Any) -> dict[str, Any]:
    """The per-request arguments for aiosonic: ``timeouts`` defaults to the client's, with the status
    line awaited at most ``read_timeout`` (a server that accepts and never answers is dead after
    ``read_timeout``, like a stalled body; aiosonic's own default is 30 s)."""
    timeouts = options.timeouts
    if timeouts is None and options.read_timeout:
        base = getattr(client.connector, "timeouts", None) or _seam.Timeouts()
        sock_read = base.sock_read if base.sock_read is not None else options.read_timeout
        timeouts = _seam.Timeouts(
            sock_connect=base.sock_connect,
            sock_read=min(sock_read, options.read_timeout),
            pool_acquire=base.pool_acquire,
            request_timeout=base.request_timeout,
        )
    kwargs: dict[str, Any] = options.request_kwargs(timeouts)
    return kwargs
