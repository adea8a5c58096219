"""Name resolution for many streams at once: one lookup per name, none for an IP address.

aiosonic caches what it resolved, but a burst of connections to one host (1,000 streams opened together)
all miss that cache at once, and each of them sends its own ``getaddrinfo()`` to a thread, even for a
host that is already an IP address. ``SharedResolver`` answers IP addresses itself and lets concurrent
lookups of one name share a single one.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

from ._seam import AbstractResolver, DefaultResolver

__all__ = ["SharedResolver"]

HostInfo = dict[str, Any]


def _literal(host: str, port: int, family: int) -> list[HostInfo] | None:
    """The connection info of an IP address of the requested family, as aiosonic's resolvers give it;
    None for a name (or an address that needs the system resolver: scoped IPv6, another family)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    found = socket.AF_INET if address.version == 4 else socket.AF_INET6
    if "%" in host or family not in (found, socket.AF_UNSPEC):
        return None
    return [
        {
            "hostname": host,
            "host": host,
            "port": port,
            "family": found,
            "proto": socket.IPPROTO_TCP,
            "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
        }
    ]


class SharedResolver(AbstractResolver):  # type: ignore[misc]
    """Wraps an aiosonic resolver (by default aiosonic's own choice): IP addresses are answered without
    it, and a lookup already in flight for the same name, port and family is shared, not repeated."""

    def __init__(self, resolver: AbstractResolver | None = None) -> None:
        self._resolver = resolver if resolver is not None else DefaultResolver()
        self._pending: dict[tuple[str, int, int], asyncio.Future[list[HostInfo]]] = {}

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_UNSPEC) -> list[HostInfo]:
        """The addresses of ``host`` (a list of aiosonic's connection-info dicts), IPv4 and IPv6 unless
        ``family`` says which, in the order the system prefers them."""
        literal = _literal(host, port, family)
        if literal is not None:
            return literal
        key = (host, port, family)
        lookup = self._pending.get(key)
        if lookup is None:
            lookup = asyncio.ensure_future(self._resolver.resolve(host, port, family))
            self._pending[key] = lookup
            lookup.add_done_callback(lambda done: self._finished(key, done))
        # One waiter's cancellation (its connect timeout) must not cancel the lookup the others wait on;
        # shield() also retrieves a failure that nobody waits for any more.
        return await asyncio.shield(lookup)

    def _finished(self, key: tuple[str, int, int], lookup: asyncio.Future[list[HostInfo]]) -> None:
        if self._pending.get(key) is lookup:
            del self._pending[key]

    async def close(self) -> None:
        """Close the wrapped resolver."""
        await self._resolver.close()
