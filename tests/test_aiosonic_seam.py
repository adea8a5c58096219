"""The aiosonic and asyncio internals that ``sonicsse._connector`` and ``sonicsse._transport`` rely on
(their docstrings list them) exist with the expected shape in the installed versions: an aiosonic
release that renames one fails here, by name, instead of somewhere in a stream."""

from __future__ import annotations

import asyncio
import inspect

from aiosonic.client import HttpResponse
from aiosonic.connection import Connection
from aiosonic.connectors import TCPConnector
from aiosonic.pools import PoolConfig, SmartPool

from sonicsse._connector import HoldingConnection, LazyPool


def test_response_internals() -> None:
    response = HttpResponse()
    for name in ("_connection", "_owns_connection", "_remaining", "_h2_chunk_queue", "_h2_flow_cb"):
        assert hasattr(response, name), name
    assert callable(response._discard_h2_queue)


def test_connection_internals() -> None:
    conn = Connection(SmartPool(PoolConfig(size=1), Connection))
    for name in ("reader", "writer", "temp_key", "_verify", "reused", "blocked", "keep", "h2conn", "key"):
        assert hasattr(conn, name), name
    assert inspect.iscoroutinefunction(Connection._connection_made)
    assert list(inspect.signature(Connection.connect).parameters) == [
        "self",
        "urlparsed",
        "dns_info",
        "verify",
        "ssl_context",
        "http2",
    ]


def test_connector_and_pool_internals() -> None:
    assert list(inspect.signature(TCPConnector.after_acquire).parameters) == [
        "self",
        "urlparsed",
        "conn",
        "verify",
        "ssl",
        "timeouts",
        "http2",
    ]
    pool = LazyPool(PoolConfig(size=2), HoldingConnection)
    for name in ("_free_count", "sem", "pool", "_new_connection"):
        assert hasattr(pool, name), name
    connector = TCPConnector()
    assert hasattr(connector, "resolver") and hasattr(connector, "cache")


async def test_stream_internals() -> None:
    reader = asyncio.StreamReader()
    protocol = asyncio.StreamReaderProtocol(reader)
    assert isinstance(reader._buffer, bytearray)  # type: ignore[attr-defined]
    for name in ("_eof", "_paused", "_transport"):
        assert hasattr(reader, name), name
    assert protocol._stream_reader is reader  # type: ignore[attr-defined]
