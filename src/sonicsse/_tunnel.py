"""An HTTP ``CONNECT`` tunnel through a proxy, then TLS to the target inside it (plain asyncio streams).

RFC 9110, section 9.3.6: the request target of ``CONNECT`` is ``host:port`` (an IPv6 address in
brackets), any 2xx answer switches the connection to a tunnel, and anything else is the proxy's refusal.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
from typing import Any

from ._proxy import ProxyURL, format_host
from ._version import __version__

__all__ = ["ProxyError", "open_tunnel"]

#: Largest proxy answer head read (status line and headers).
_MAX_HEAD = 64 << 10
#: Statuses of a proxy's refusal that asking again will not change: the credentials or the target.
_PERMANENT = frozenset({400, 401, 403, 405, 407})


class ProxyError(ConnectionError):
    """The proxy did not open the tunnel: its status (None when it did not answer HTTP) and reason."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def permanent(self) -> bool:
        """Whether retrying cannot help (authentication or a forbidden target)."""
        return self.status in _PERMANENT


def connect_request(proxy: ProxyURL, host: str, port: int) -> bytes:
    """The ``CONNECT`` request for ``host:port``."""
    target = format_host(host.encode("idna").decode("ascii") if ":" not in host else host, port)
    lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}", f"User-Agent: sonicsse/{__version__}"]
    authorization = proxy.authorization
    if authorization is not None:
        lines.append(f"Proxy-Authorization: {authorization}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def parse_answer(head: bytes, proxy: ProxyURL, target: str) -> None:
    """Check the proxy's answer to ``CONNECT``; raise ProxyError unless it is a 2xx."""
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1", "replace")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ProxyError(f"proxy {proxy} did not answer CONNECT {target} with HTTP: {status_line[:80]!r}")
    status = int(parts[1])
    if not 200 <= status < 300:
        reason = parts[2] if len(parts) > 2 else ""
        hint = " (check the proxy's user and password)" if status == 407 else ""
        raise ProxyError(
            f"proxy {proxy} refused CONNECT {target}: {status} {reason}".rstrip() + hint, status=status
        )


async def open_tunnel(
    proxy: ProxyURL,
    address: dict[str, Any],
    host: str,
    port: int,
    ssl_context: ssl.SSLContext,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to the proxy at ``address`` (one of its resolved addresses, as aiosonic's resolvers give
    them), open a tunnel to ``host:port`` and start TLS with ``ssl_context`` inside it.

    The streams come back as ``asyncio.open_connection`` gives them, with the writer's transport the
    TLS one.
    """
    reader, writer = await asyncio.open_connection(
        host=address["host"],
        port=address["port"],
        family=address.get("family", 0),
        proto=address.get("proto", 0),
        flags=address.get("flags", 0),
        limit=_MAX_HEAD,
    )
    try:
        target = format_host(host, port)
        writer.write(connect_request(proxy, host, port))
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            raise ProxyError(f"proxy {proxy} closed the connection during CONNECT {target}") from exc
        except asyncio.LimitOverrunError as exc:
            raise ProxyError(f"proxy {proxy} answered CONNECT {target} with an oversized head") from exc
        parse_answer(head, proxy, target)
        if reader._buffer:  # type: ignore[attr-defined]
            # The server speaks only after the client's TLS hello: bytes here are not the target's.
            raise ProxyError(f"proxy {proxy} sent bytes after its answer to CONNECT {target}")
        await _start_tls(reader, writer, ssl_context, host)
    except BaseException:
        writer.transport.abort()
        raise
    return reader, writer


async def _start_tls(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, context: ssl.SSLContext, host: str
) -> None:
    if sys.version_info >= (3, 11):
        await writer.start_tls(context, server_hostname=host)
        return
    # Python 3.10 has no StreamWriter.start_tls: the same steps, as aiosonic takes them there.
    loop = asyncio.get_running_loop()
    transport = writer.transport
    protocol = transport.get_protocol()
    tls = await loop.start_tls(transport, protocol, context, server_side=False, server_hostname=host)
    writer._transport = tls  # type: ignore[attr-defined]
    reader._transport = tls  # type: ignore[attr-defined]
    protocol._transport = tls  # type: ignore[attr-defined]
    protocol._over_ssl = True  # type: ignore[attr-defined]
