"""Feeding bytes to an ``asyncio.BufferedProtocol`` by hand, as the event loop feeds it a socket's bytes."""

from __future__ import annotations

from typing import Any

__all__ = ["feed"]


def feed(protocol: Any, data: bytes | bytearray | memoryview) -> None:
    """Copy ``data`` into the buffers ``protocol.get_buffer()`` offers, calling ``buffer_updated()`` after
    each (used where the bytes do not come from a socket the protocol owns: the fallback pump of an
    aiosonic reader, and HTTP/2 DATA frames)."""
    view = memoryview(data)
    while view:
        room = protocol.get_buffer(len(view))
        n = min(len(room), len(view))
        room[:n] = view[:n]
        protocol.buffer_updated(n)
        view = view[n:]
