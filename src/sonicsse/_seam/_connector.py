"""``StreamConnector``: sonicsse's connections (tunnels, proxies, TLS settings, addresses in order, shared
HTTP/2), and ``make_http_client()``."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from aiosonic import HTTPClient
from aiosonic.connection import get_default_ssl_context
from aiosonic.connectors import TCPConnector
from aiosonic.exceptions import (
    ConnectTimeout,
)
from aiosonic.pools import PoolConfig
from aiosonic.proxy import Proxy
from aiosonic.utils import connection_key, default_port

from .._proxy import ProxyRoutes, ProxyURL
from .._tunnel import open_tunnel
from ._connections import DEFAULT_POOL_SIZE, ConnectionSettings, HoldingConnection, LazyPool
from ._h2 import _H2Origin, _shareable
from ._timeout import within


def _is_connect_failure(exc: BaseException) -> bool:
    """A failure to reach one address, after which the next address is worth trying."""
    return isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError)


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


class StreamConnector(TCPConnector):  # type: ignore[misc]
    """aiosonic's connector with sonicsse's connection step (see the module's docstring)."""

    def __init__(self, routes: ProxyRoutes, pool_size: int = DEFAULT_POOL_SIZE) -> None:
        from .._resolver import SharedResolver  # it builds on aiosonic's resolver, from this package

        super().__init__(
            pool_configs={":default": PoolConfig(size=pool_size)},
            connection_cls=HoldingConnection,
            pool_cls=LazyPool,
            resolver=SharedResolver(),
        )
        self.routes = routes
        self._forwarders: dict[ProxyURL, HTTPClient] = {}
        # The HTTP/2 connections streams share, by origin and connection settings.
        self._h2: dict[tuple[str, ConnectionSettings], _H2Origin] = {}

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

    def _settings(self, urlparsed: Any, verify: bool, ssl_context: Any, http2: bool) -> ConnectionSettings:
        secure = urlparsed.scheme in ("https", "wss")
        proxy = (
            self.routes.for_url(urlparsed.scheme, urlparsed.hostname, default_port(urlparsed))
            if secure
            else None
        )
        return ConnectionSettings(
            proxy=proxy,
            verify=bool(verify) if secure else True,
            context=ssl_context if secure else None,
            http2=bool(http2) if secure else False,
        )

    async def acquire(
        self,
        urlparsed: Any,
        verify: bool,
        ssl: Any,
        timeouts: Any,
        http2: bool,
        proxy_target: Any = None,
    ) -> Any:
        """A connection for one request; with ``http2`` to an https origin, a share of an HTTP/2
        connection to it opened with the same settings (an ``H2Lease``) when ALPN gives h2.

        One stream opens a connection while the others to the origin wait for it: they share it once the
        peer's SETTINGS say how many streams it takes, or open their own when it speaks HTTP/1.1.
        """
        if not http2 or urlparsed.scheme != "https":
            return await super().acquire(urlparsed, verify, ssl, timeouts, http2, proxy_target)
        key = (connection_key(urlparsed), self._settings(urlparsed, verify, ssl, http2))
        origin = self._h2.get(key)
        if origin is None:
            origin = self._h2[key] = _H2Origin(self, key)
        while True:
            conn = origin.with_room()
            if conn is not None:
                return origin.lease(conn, reused=True)
            if origin.h1 or not origin.should_wait():
                break
            try:
                await origin.wait(timeouts.sock_connect)
            except asyncio.TimeoutError:
                raise ConnectTimeout() from None
        if origin.h1:  # HTTP/1.1 the last time: a connection of its own for each stream, at once
            conn = await super().acquire(urlparsed, verify, ssl, timeouts, http2, proxy_target)
            return origin.share(conn, None) if _shareable(conn) else conn
        opening = origin.opening()
        try:
            conn = await super().acquire(urlparsed, verify, ssl, timeouts, http2, proxy_target)
        except BaseException:
            origin.opened(opening)
            raise
        if not _shareable(conn):
            origin.h1 = True
            origin.opened(opening)
            return conn
        return origin.share(conn, opening)

    async def after_acquire(
        self,
        urlparsed: Any,
        conn: HoldingConnection,
        verify: bool,
        ssl_context: Any,
        timeouts: Any,
        http2: bool,
    ) -> HoldingConnection:
        host = urlparsed.hostname
        port = default_port(urlparsed)
        settings = self._settings(urlparsed, verify, ssl_context, http2)
        if conn.settings != settings or (conn.h2handler is not None and not _shareable(conn)):
            # Opened for other settings (or never), or an HTTP/2 connection now gone: a new socket.
            conn.close()
        try:
            if (timeouts.sock_connect is None or timeouts.sock_connect > 0) and conn.reuse(urlparsed, verify):
                conn.reused = True
                return conn
            conn.reused = False
            connecting = self._connect(conn, urlparsed, settings, host, port)
            await within(connecting, timeouts.sock_connect)
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


def make_http_client(
    pool_size: int = DEFAULT_POOL_SIZE, *, proxy: str | None = None, trust_env: bool = True
) -> HTTPClient:
    """An ``aiosonic.HTTPClient`` suited to many long-lived streams.

    Its pools hold ``pool_size`` connections (aiosonic's default is 30, which would make the 31st
    concurrent stream to a host wait), close-delimited bodies are readable, and connections go through
    ``proxy`` (an ``http://[user:password@]host:port`` URL) or, with ``trust_env``, through the
    environment's ``HTTP_PROXY`` / ``HTTPS_PROXY`` / ``ALL_PROXY``, except for ``NO_PROXY`` hosts.
    """
    return HTTPClient(connector=StreamConnector(ProxyRoutes(proxy, trust_env), pool_size))
