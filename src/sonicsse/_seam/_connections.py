"""aiosonic connections as sonicsse holds them: the settings a socket was opened with, a connection that
stays with its response until the body was read, and a pool that makes connections when first needed."""

from __future__ import annotations

import asyncio
import contextvars
import ssl
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import h2.config
import h2.connection
from aiosonic.connection import Connection
from aiosonic.pools import SmartPool

from .._proxy import ProxyURL
from ._h2 import StreamH2Handler

if TYPE_CHECKING:
    from ._h2 import _H2Origin


#: Connections per pool of the HTTPClient an SSEClient creates: 1,000 streams to one host never wait.
DEFAULT_POOL_SIZE = 1024
# Set while sonicsse sends a request: HoldingConnection then keeps the connection for the response
# (even a close-delimited one) until the transport gives it back.
_HOLD: contextvars.ContextVar[bool] = contextvars.ContextVar("sonicsse_hold", default=False)


@dataclass(frozen=True)
class ConnectionSettings:
    """What a socket was opened with; a pooled socket serves only requests that ask for the same."""

    proxy: ProxyURL | None
    verify: bool
    context: ssl.SSLContext | None  # compared by identity (SSLContext has no value equality)
    http2: bool


class HoldingConnection(Connection):  # type: ignore[misc]
    """An aiosonic connection that stays with a sonicsse response until the body was read.

    aiosonic releases (and, with ``Connection: close``, closes) a connection whose response has no length
    and no chunked framing as soon as the headers were read, losing a close-delimited body. While
    sonicsse sends a request, this class keeps such a connection blocked instead; the transport gives it
    back when the stream is closed.
    """

    settings: ConnectionSettings | None = None
    #: While shared by HTTP/2 streams: the origin's shared connections, and how many streams use it.
    h2origin: _H2Origin | None = None
    leases = 0

    async def _connection_made(self) -> None:
        """HTTP/2 when ALPN chose it, with sonicsse's handler (aiosonic's makes its own)."""
        tls = self.writer.get_extra_info("ssl_object") if self.writer is not None else None
        if tls is None or tls.selected_alpn_protocol() != "h2":
            return
        self.h2conn = h2.connection.H2Connection(config=h2.config.H2Configuration())
        self.h2handler = StreamH2Handler(self, self.pool.http2_config)

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc is not None:
            # The request failed or was cancelled half-way: the socket's state is unknown. aiosonic would
            # put a kept-alive connection back in the pool with its socket open; close it instead.
            self.keep = False
        elif _HOLD.get() and self.h2conn is None and self.reader is not None:
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
