"""SSEClient: a drop-in for ``aiosonic.SSEClient`` that owns or borrows an ``aiosonic.HTTPClient``."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Collection, Generator, Mapping
from ssl import SSLContext
from types import TracebackType
from typing import Any

from ._gate import DEFAULT_MAX_OPENING, OpeningGate
from ._options import DEFAULTS, ConnectOptions, HeadersArg
from ._policy import url_problem
from ._proxy import ProxyRoutes
from ._seam import DEFAULT_POOL_SIZE, HTTPClient, StreamConnector, Timeouts
from ._types import CommentCallback, Event
from .checkpoint import CheckpointStore
from .connection import SSEConnection
from .exceptions import SSEInvalidURLError

_D = DEFAULTS  # connect()'s defaults are the options' own

__all__ = ["PendingConnection", "SSEClient", "SSEConnect"]


class PendingConnection:
    """What :meth:`SSEClient.connect` returns: ``await`` it, or use it as ``async with``.

    ``conn = await client.connect(url)`` opens the stream (then ``await conn.close()``);
    ``async with client.connect(url) as conn:`` also closes it when the block ends.
    """

    def __init__(self, client: SSEClient, options: ConnectOptions) -> None:
        self._client = client
        self._options = options
        self._conn: SSEConnection | None = None

    async def _open(self) -> SSEConnection:
        conn = SSEConnection(self._client.http_client, self._options, self._client._gate)
        self._client._live.add(conn)
        await conn._start()
        self._conn = conn
        return conn

    def __await__(self) -> Generator[Any, None, SSEConnection]:
        return self._open().__await__()

    async def __aenter__(self) -> SSEConnection:
        return await self._open()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._conn is not None:
            await self._conn.close()


#: The former name of :class:`PendingConnection`, kept for code that imports it.
SSEConnect = PendingConnection


class SSEClient:
    """Server-Sent Events client on aiosonic: ``from sonicsse import SSEClient`` replaces aiosonic's.

    Args:
        http_client: an ``aiosonic.HTTPClient`` to share; it is never closed by this client. When
            None, the client makes its own (see ``pool_size``) and closes it in :meth:`close`.
        pool_size: connections per pool of the client's own HTTPClient (default 1024, so that 1,000
            concurrent streams to one host never wait for a connection; aiosonic's default is 30).
            Ignored with ``http_client``.
        proxy: an ``http://[user:password@]host:port`` proxy for every request: https through a
            ``CONNECT`` tunnel (any port), plain http by sending it the absolute URL. Credentials never
            appear in logs or errors. Not with ``http_client`` (set the proxy on that client).
        trust_env: with no ``proxy``, use the environment's ``HTTPS_PROXY`` / ``HTTP_PROXY`` /
            ``ALL_PROXY`` (lower-case forms too), except for the hosts in ``NO_PROXY`` (names, IP
            addresses, CIDR ranges, ``*``), as httpx and requests do; read when the client is made.
            With no ``NO_PROXY``, loopback addresses go through the proxy too. Ignored with
            ``http_client``.
        max_opening: how many streams the client opens at once (connect, TLS, request, response
            head), reconnections included; the others wait for a turn, in order. Opening thousands
            of streams together then leaves the streams already open their latency, and memory
            follows the streams that are open. None: no limit.

    Use as ``async with SSEClient() as client:`` or call ``await client.close()``.
    """

    def __init__(
        self,
        http_client: HTTPClient | None = None,
        *,
        pool_size: int = DEFAULT_POOL_SIZE,
        proxy: str | None = None,
        trust_env: bool = True,
        max_opening: int | None = DEFAULT_MAX_OPENING,
    ) -> None:
        if http_client is not None and proxy is not None:
            raise TypeError("proxy= applies to the client SSEClient makes: set the proxy on http_client")
        self._client = http_client
        self._owns_client = http_client is None
        self._pool_size = pool_size
        # Checked now, so that a bad proxy URL (or proxy variable) fails here, not on the first request.
        self._routes = ProxyRoutes(proxy, trust_env) if http_client is None else None
        self._live: weakref.WeakSet[SSEConnection] = weakref.WeakSet()
        self._gate = OpeningGate(max_opening) if max_opening is not None else None

    @property
    def http_client(self) -> HTTPClient:
        """The aiosonic HTTPClient used for requests (created on first use when not given)."""
        if self._client is None:
            assert self._routes is not None
            self._client = HTTPClient(connector=StreamConnector(self._routes, self._pool_size))
        return self._client

    def connect(
        self,
        url: str,
        method: str = _D.method,
        headers: HeadersArg = _D.headers,
        params: Any = _D.params,
        data: Any = _D.data,
        json: Any = _D.json,
        multipart: bool = _D.multipart,
        verify: bool = _D.verify,
        ssl: SSLContext | None = _D.ssl,
        timeouts: Timeouts | None = _D.timeouts,
        follow: bool = _D.follow,
        http2: bool = _D.http2,
        reconnect: bool = _D.reconnect,
        retry_delay: int = _D.retry_delay,
        json_serializer: Callable[[Any], str] = _D.json_serializer,
        keep_connection: bool = _D.keep_connection,
        *,
        last_event_id: str | None = _D.last_event_id,
        max_retries: int | None = _D.max_retries,
        max_retry_delay: int = _D.max_retry_delay,
        read_timeout: float | None = _D.read_timeout,
        event_timeout: float | None = _D.event_timeout,
        first_event_timeout: float | None = _D.first_event_timeout,
        dedup: bool = _D.dedup,
        on_comment: CommentCallback | None = _D.on_comment,
        resume_unsafe: bool = _D.resume_unsafe,
        max_line_size: int | None = _D.max_line_size,
        max_event_size: int | None = _D.max_event_size,
        strict: bool = _D.strict,
        event_types: Collection[str] | None = _D.event_types,
        decode: bool = _D.decode,
        error_event: str | None = _D.error_event,
        done: str | Callable[[Event], bool] | None = _D.done,
        checkpoint: CheckpointStore | None = _D.checkpoint,
        on_open: Callable[[int, Mapping[str, str]], Any] | None = _D.on_open,
        on_retry: Callable[[int, float, BaseException | None], Any] | None = _D.on_retry,
        on_error: Callable[[BaseException], Any] | None = _D.on_error,
    ) -> PendingConnection:
        """Open an event stream: ``await`` the result, or use it as ``async with``.

        The positional arguments are ``aiosonic.SSEClient.connect``'s. ``headers`` may also be a
        callable (sync or async) returning the headers, called before every attempt (e.g. to refresh
        a token). ``reconnect``: reconnect after the stream ends, a network error, a timeout, a 5xx
        or 429 (a non-idempotent request only when the server sent an event id, or with
        ``resume_unsafe=True``). ``retry_delay``: the base reconnection delay in ms (the server's
        ``retry:`` replaces it).

        Keyword-only extras:
            last_event_id: the ``Last-Event-ID`` to send on the first request.
            max_retries: consecutive failed attempts tolerated before raising (None: no limit).
            max_retry_delay: the cap in ms of any delay (backoff, ``retry:``, ``Retry-After``).
            read_timeout: seconds without any byte (heartbeats count) before the stream is
                considered dead. None disables it.
            event_timeout: seconds without an event (heartbeats do not count), same effect.
            first_event_timeout: seconds to wait for the first event after each (re)connect.
            dedup: drop events whose id was seen recently, and the replay of the last event after
                a reconnect.
            on_comment: called with each comment line's text (e.g. heartbeats); a plain or a coroutine
                function. An exception from it is raised to the iterating code after the events read
                before the comment were delivered.
            resume_unsafe: reconnect non-idempotent requests even without an event id.
            max_line_size, max_event_size: the limits in bytes of one line and of one event's data
                (None: 16 MiB each); going over raises SSEParsingError, so memory stays bounded.
            strict: raise SSEParsingError on malformed input instead of ignoring it as the spec says
                (aiosonic's raising behaviour).
            event_types: deliver only events of these types (``"message"`` for events without an
                ``event:`` field); the others are dropped in the decoder before any object is built.
            decode: False delivers each event's ``data`` as raw ``bytes`` (no UTF-8 decoding).
            error_event: an event of this type (e.g. ``"error"``), or a JSON data object with an
                ``error`` member, raises SSEServerError (with ``error_type``, ``message``,
                ``retryable``). Off by default; on in :meth:`SSEConnection.iter_json`.
            done: the end sentinel: a string equal to an event's data (e.g. ``"[DONE]"``), or a
                predicate on the event. It is not delivered; the iteration ends cleanly there, with no
                reconnect, and with ``keep_connection`` the connection returns to the pool.
            checkpoint: a store with ``load()`` and ``save(last_event_id)`` (sync or async, e.g.
                :class:`sonicsse.FileCheckpoint`): the first ``Last-Event-ID`` comes from ``load()``,
                and the id of every batch the consumer finished is saved (at most once per socket
                read), so a restarted process resumes where it stopped. A batch is finished when the
                next one is asked for: the one in hand when iteration stops is delivered again after a
                restart (at least once, never lost).
            on_open: ``on_open(status, headers)`` after each stream opens.
            on_retry: ``on_retry(attempt, delay_seconds, cause)`` before each reconnection wait
                (``cause`` is None when the server ended the stream cleanly).
            on_error: ``on_error(exc)`` with each failure, whether it is retried or raised.
                Callbacks may be plain or coroutine functions; an exception in one ends the stream.

        Raises:
            SSEInvalidURLError: at once, when ``url`` cannot be requested (not http or https, no host,
                a bad port); never retried.
            SSEConnectionError: the stream could not be opened (with ``reconnect=False``, or for
                a permanent failure: 4xx, wrong content type, missing redirect target).
        """
        problem = url_problem(url)
        if problem is not None:
            raise SSEInvalidURLError(problem, method=str(method).upper(), url=str(url))
        given = locals()
        options = ConnectOptions(**{name: given[name] for name in ConnectOptions.names()})
        return PendingConnection(self, options)

    async def close(self) -> None:
        """Close the streams this client opened, and its own HTTPClient (never a borrowed one)."""
        for conn in list(self._live):
            await conn.close()
        if self._owns_client and self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def __aenter__(self) -> SSEClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
