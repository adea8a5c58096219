"""How sonicsse's own ``aiosonic.HTTPClient`` makes connections: proxies, TLS settings, IPv6.

``StreamConnector`` is an aiosonic ``TCPConnector`` whose ``after_acquire`` (the step that connects a
pooled connection object) is sonicsse's:

- https through a proxy: a ``CONNECT`` tunnel to ``host:port`` for any port, then TLS with the request's
  own context, verification and ALPN (see ``_tunnel``); aiosonic then sees a plain https connection to
  the target. Plain http through a proxy is aiosonic's (the absolute URL sent to the proxy), through
  the forwarding clients of :meth:`StreamConnector.forwarding_client`.
- A pooled connection is reused only by a request with the same route and TLS settings (verification,
  context, HTTP/2): ``verify=False`` never lends its socket to a verifying request.
- ``ssl=`` applies to https only (aiosonic would wrap a plain http connection in it).
- Names resolve to IPv4 and IPv6 addresses, tried in the resolver's order until one connects.

aiosonic names used beyond its documented API (checked against the installed version by
``tests/test_aiosonic_seam.py``):
``Connection.reader``/``writer``/``temp_key``/``_verify``/``reused``/``blocked``/``keep``,
``Connection._connection_made()`` (sets HTTP/2 up after ALPN), ``SmartPool._init_pool``/
``_new_connection``/``_free_count``/``sem``, ``TCPConnector.after_acquire``/``resolver``/``cache``.
"""

from __future__ import annotations

import asyncio
import contextvars
import ssl
from collections import deque
from dataclasses import dataclass
from typing import Any

from aiosonic import HTTPClient
from aiosonic.connection import Connection, get_default_ssl_context
from aiosonic.connectors import TCPConnector
from aiosonic.exceptions import ConnectTimeout
from aiosonic.pools import PoolConfig, SmartPool
from aiosonic.proxy import Proxy
from aiosonic.utils import connection_key, default_port

from ._proxy import ProxyRoutes, ProxyURL
from ._resolver import SharedResolver
from ._tunnel import open_tunnel

__all__ = ["DEFAULT_POOL_SIZE", "HOLD", "HoldingConnection", "StreamConnector", "make_http_client"]

#: Connections per pool of the HTTPClient an SSEClient creates: 1,000 streams to one host never wait.
DEFAULT_POOL_SIZE = 1024
# Set while sonicsse sends a request: HoldingConnection then keeps the connection for the response
# (even a close-delimited one) until the transport releases it.
HOLD: contextvars.ContextVar[bool] = contextvars.ContextVar("sonicsse_hold", default=False)


@dataclass(frozen=True)
class ConnectionSettings:
    """What a socket was opened with; a pooled socket serves only requests that ask for the same."""

    proxy: ProxyURL | None
    verify: bool
    context: ssl.SSLContext | None  # compared by identity (SSLContext has no value equality)
    http2: bool


class HoldingConnection(Connection):  # type: ignore[misc]
    """An aiosonic connection that stays with a sonicsse response until the body was read.

    aiosonic releases (and, with ``Connection: close``, closes) a connection whose response has
    no length and no chunked framing as soon as the headers were read, losing a close-delimited
    body. While sonicsse sends a request, this class keeps such a connection blocked instead; the
    transport releases it when the stream is closed.
    """

    settings: ConnectionSettings | None = None

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc is not None:
            # The request failed or was cancelled half-way: the socket's state is unknown. aiosonic would
            # put a kept-alive connection back in the pool with its socket open; close it instead.
            self.keep = False
        elif HOLD.get() and self.h2conn is None and self.reader is not None:
            self.blocked = True
        await super().__aexit__(exc_type, exc, tb)


class LazyPool(SmartPool):  # type: ignore[misc]
    """aiosonic's SmartPool, with its connection objects made when first needed.

    SmartPool makes all of them up front: 1,024 for an SSEClient's pool, 1.5 ms per client.
    """

    def _init_pool(self, connection_cls: type[Connection]) -> None:
        self._connection_cls = connection_cls
        self._made = 0
        self.pool: dict[Any, deque[Connection]] = {}
        self._free_count = self.pool_size
        self.sem = asyncio.Semaphore(self.pool_size)

    async def acquire(self, urlparsed: Any = None) -> Connection:
        if not self.pool and self._made < self.pool_size:
            # Every connection made is in use: make one more (SmartPool.acquire takes it at once).
            self._made += 1
            self.pool[None] = deque([self._new_connection(self._connection_cls)])
        return await super().acquire(urlparsed)


def _is_connect_failure(exc: BaseException) -> bool:
    """A failure to reach one address, after which the next address is worth trying."""
    return isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError)


class StreamConnector(TCPConnector):  # type: ignore[misc]
    """aiosonic's connector with sonicsse's connection step (see the module's docstring)."""

    def __init__(self, routes: ProxyRoutes, pool_size: int = DEFAULT_POOL_SIZE) -> None:
        super().__init__(
            pool_configs={":default": PoolConfig(size=pool_size)},
            connection_cls=HoldingConnection,
            pool_cls=LazyPool,
            resolver=SharedResolver(),
        )
        self.routes = routes
        self._forwarders: dict[ProxyURL, HTTPClient] = {}

    def forwarding_client(self, scheme: str, host: str, port: int) -> HTTPClient | None:
        """The client for a plain-http request that goes through a proxy (aiosonic sends the absolute URL
        to the proxy), sharing this connector; None when the request does not use a proxy."""
        if scheme != "http":
            return None
        proxy = self.routes.for_url(scheme, host, port)
        if proxy is None:
            return None
        client = self._forwarders.get(proxy)
        if client is None:
            client = HTTPClient(connector=self, proxy=Proxy(proxy.url, auth=proxy.credentials))
            self._forwarders[proxy] = client
        return client

    async def after_acquire(
        self,
        urlparsed: Any,
        conn: HoldingConnection,
        verify: bool,
        ssl_context: Any,
        timeouts: Any,
        http2: bool,
    ) -> HoldingConnection:
        secure = urlparsed.scheme in ("https", "wss")
        host = urlparsed.hostname
        port = default_port(urlparsed)
        proxy = self.routes.for_url(urlparsed.scheme, host, port) if secure else None
        settings = ConnectionSettings(
            proxy=proxy,
            verify=bool(verify) if secure else True,
            context=ssl_context if secure else None,
            http2=bool(http2) if secure else False,
        )
        if conn.settings != settings:
            conn.close()  # opened for other settings (or never): a new socket
        try:
            if (timeouts.sock_connect is None or timeouts.sock_connect > 0) and conn.reuse(urlparsed, verify):
                conn.reused = True
                return conn
            conn.reused = False
            connecting = self._connect(conn, urlparsed, settings, host, port)
            await asyncio.wait_for(connecting, timeout=timeouts.sock_connect)
        except asyncio.TimeoutError:
            self.release(conn)
            raise ConnectTimeout() from None
        except BaseException:
            self.release(conn)
            raise
        conn.settings = settings
        return conn

    async def _connect(
        self, conn: HoldingConnection, urlparsed: Any, settings: ConnectionSettings, host: str, port: int
    ) -> None:
        proxy = settings.proxy
        if proxy is None:
            addresses = await self._resolve(host, port)
            await _first_that_connects(
                addresses,
                lambda address: conn.connect(
                    urlparsed, address, settings.verify, settings.context, settings.http2
                ),
            )
            return
        context = settings.context or get_default_ssl_context(settings.verify, settings.http2)
        if settings.http2 and settings.context is not None:
            context.set_alpn_protocols(["h2", "http/1.1"])
        conn.close()
        addresses = await self._resolve(proxy.host, proxy.port)
        streams = await _first_that_connects(
            addresses, lambda address: open_tunnel(proxy, address, host, port, context)
        )
        conn.reader, conn.writer = streams
        conn._verify = settings.verify
        conn.temp_key = connection_key(urlparsed)
        await conn._connection_made()  # HTTP/2 when ALPN chose it

    async def _resolve(self, host: str, port: int) -> list[dict[str, Any]]:
        key = f"{host}-{port}"
        cache = self.cache
        found = cache.get(key) if cache is not None else None
        if not found:
            found = await self.resolver.resolve(host, port)
            if cache is not None:
                cache.set(key, found)
        return list(found)


async def _first_that_connects(addresses: list[dict[str, Any]], attempt: Any) -> Any:
    """``attempt(address)`` for each address in turn until one connects; the last failure otherwise."""
    failure: BaseException | None = None
    for address in addresses:
        try:
            return await attempt(address)
        except Exception as exc:
            if not _is_connect_failure(exc):
                raise
            failure = exc
    assert failure is not None, "the resolver gave no address"
    raise failure


def make_http_client(
    pool_size: int = DEFAULT_POOL_SIZE, *, proxy: str | None = None, trust_env: bool = True
) -> HTTPClient:
    """An ``aiosonic.HTTPClient`` suited to many long-lived streams.

    Its pools hold ``pool_size`` connections (aiosonic's default is 30, which would make the 31st
    concurrent stream to a host wait), close-delimited bodies are readable, and connections go through
    ``proxy`` (an ``http://[user:password@]host:port`` URL) or, with ``trust_env``, through the
    environment's ``HTTP_PROXY`` / ``HTTPS_PROXY`` / ``ALL_PROXY``, except for ``NO_PROXY`` hosts.
    """
    connector = StreamConnector(ProxyRoutes(proxy, trust_env), pool_size)
    return HTTPClient(connector=connector)
