"""``check_shape()``: the private aiosonic names the seam relies on, verified when sonicsse is imported
(the list and the why of each: the package's docstring)."""

from __future__ import annotations

import asyncio
import inspect
from importlib.metadata import version

from aiosonic.client import HttpResponse
from aiosonic.connection import Connection
from aiosonic.connectors import TCPConnector
from aiosonic.http2 import Http2Handler
from aiosonic.pools import PoolConfig, SmartPool

AIOSONIC_VERSION = version("aiosonic")


def check_shape() -> None:
    """Verify that the private names listed in the package's docstring exist with the expected shape.

    Raises ImportError naming the installed aiosonic when one does not: sonicsse would otherwise fail
    somewhere in the middle of a stream.
    """
    missing: list[str] = []

    def need(owner: object, names: tuple[str, ...], label: str) -> None:
        missing.extend(f"{label}.{name}" for name in names if not hasattr(owner, name))

    need(
        HttpResponse(),
        (
            "_connection",
            "_owns_connection",
            "_remaining",
            "_h2_chunk_queue",
            "_h2_flow_cb",
            "_discard_h2_queue",
            "read_chunks",
            "chunked",
            "body",
        ),
        "HttpResponse",
    )
    conn = Connection(SmartPool(PoolConfig(size=1), Connection))
    need(
        conn,
        (
            "reader",
            "writer",
            "temp_key",
            "_verify",
            "reused",
            "blocked",
            "keep",
            "h2conn",
            "h2handler",
            "key",
            "_connection_made",
            "release",
            "close",
            "reuse",
            "connect",
        ),
        "Connection",
    )
    need(SmartPool, ("_init_pool", "_new_connection", "acquire"), "SmartPool")
    need(TCPConnector(), ("resolver", "cache", "release", "acquire", "after_acquire"), "TCPConnector")
    need(
        Http2Handler,
        (
            "request",
            "_register_stream",
            "_make_flow_cb",
            "_make_sem_release",
            "_on_data_received",
            "_on_stream_ended",
            "_on_stream_reset",
            "_on_remote_settings_changed",
            "_on_disconnect",
            "_fail_all_pending",
        ),
        "Http2Handler",
    )
    handler_assigns = Http2Handler.__init__.__code__.co_names
    missing.extend(
        f"Http2Handler.{name}"
        for name in ("connection", "http2_config", "requests")
        if name not in handler_assigns
    )
    # Not made: a StreamReader made outside a running loop would make (and leak) an event loop.
    assigned = asyncio.StreamReader.__init__.__code__.co_names
    missing.extend(
        f"asyncio.StreamReader.{name}"
        for name in ("_buffer", "_eof", "_paused", "_transport")
        if name not in assigned
    )
    signatures = {
        "Connection.connect": (
            Connection.connect,
            ["self", "urlparsed", "dns_info", "verify", "ssl_context", "http2"],
        ),
        "TCPConnector.after_acquire": (
            TCPConnector.after_acquire,
            ["self", "urlparsed", "conn", "verify", "ssl", "timeouts", "http2"],
        ),
        "TCPConnector.acquire": (
            TCPConnector.acquire,
            ["self", "urlparsed", "verify", "ssl", "timeouts", "http2", "proxy_target"],
        ),
        "Http2Handler.__init__": (Http2Handler.__init__, ["self", "connection", "http2_config"]),
        "Http2Handler._register_stream": (
            Http2Handler._register_stream,
            ["self", "stream_id", "headers", "body"],
        ),
        "Http2Handler._make_flow_cb": (Http2Handler._make_flow_cb, ["self", "stream_id"]),
    }
    for label, (function, expected) in signatures.items():
        if list(inspect.signature(function).parameters) != expected:
            missing.append(f"{label}({', '.join(expected[1:])})")
    if missing:
        raise ImportError(
            f"sonicsse does not support the installed aiosonic {AIOSONIC_VERSION}: it lacks "
            f"{', '.join(missing)}. Install a version in sonicsse's supported range (see its metadata)."
        )


check_shape()
