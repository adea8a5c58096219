"""Many event streams to one origin over shared HTTP/2 connections, against a loopback h2 server over TLS.

The server counts the TCP connections it accepted and the streams each carried, so the tests can tell how
streams were multiplexed: streams with the same connection settings share a connection, up to the
server's SETTINGS_MAX_CONCURRENT_STREAMS; closing one stream resets it alone; a connection that dies (or
says GOAWAY) ends every stream on it, and each resumes with its Last-Event-ID on a new one.
"""

from __future__ import annotations

import asyncio
import gc
import os
import ssl
import sys
import weakref
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AsyncExitStack
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import pytest
import trustme

from sonicsse import SSEClient, SSEConnection

from client_helpers import async_wait_until
from servers import TunnelProxy

#: Bound of every wait in this module (nothing here is timed: waits end on a condition).
WAIT = 20


class _Peer(asyncio.Protocol):
    """One client connection of :class:`H2SSEServer`: HTTP/2, or HTTP/1.1 when ALPN did not give h2."""

    def __init__(self, server: H2SSEServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.h2: h2.connection.H2Connection | None = None
        self.streams = 0
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.closed = False
        self._window: asyncio.Future[None] | None = None
        self._head = b""

    # -- asyncio ------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.server.peers.append(self)
        tls = transport.get_extra_info("ssl_object")
        if tls is not None and tls.selected_alpn_protocol() == "h2":
            config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
            self.h2 = h2.connection.H2Connection(config=config)
            settings: dict[Any, int] = {}
            if self.server.max_streams is not None:
                settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = self.server.max_streams
            self.h2.local_settings = h2.settings.Settings(client=False, initial_values=settings)
            self.h2.initiate_connection()
            self._flush()

    def data_received(self, data: bytes) -> None:
        if self.h2 is None:
            self._http1(data)
            return
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self._flush()
            self.abort()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                headers = dict(cast(Any, event.headers))
                self._start(event.stream_id, headers[":path"], headers.get("last-event-id"))
            elif isinstance(event, h2.events.DataReceived):
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
                self._wake()
            elif isinstance(event, h2.events.StreamReset):
                self.server.resets.append((self.server.peers.index(self), event.stream_id, event.error_code))
                task = self.tasks.pop(event.stream_id, None)
                if task is not None:
                    task.cancel()
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        for task in self.tasks.values():
            task.cancel()
        self._wake()
        self.server.gone.set()

    # -- the server's side ---------------------------------------------------------------------------

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def goaway(self) -> None:
        assert self.h2 is not None
        self.h2.close_connection(error_code=h2.errors.ErrorCodes.NO_ERROR)
        self._flush()

    def _start(self, sid: int, path: str, last_id: str | None) -> None:
        self.streams += 1
        self.server.requests.append((self.server.peers.index(self), path, last_id))
        self.tasks[sid] = asyncio.get_running_loop().create_task(self._serve_h2(sid, path, last_id))

    async def _serve_h2(self, sid: int, path: str, last_id: str | None) -> None:
        assert self.h2 is not None
        try:
            self.h2.send_headers(sid, [(":status", "200"), ("content-type", "text/event-stream")])
            self._flush()
            for event in self.server.events(path, last_id):
                if isinstance(event, float):
                    await asyncio.sleep(event)
                    continue
                while event:
                    room = min(self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size)
                    if self.closed:
                        return
                    if room <= 0:
                        self._window = self._window or asyncio.get_running_loop().create_future()
                        await self._window
                        continue
                    self.h2.send_data(sid, event[:room])
                    event = event[room:]
                    self._flush()
            self.h2.end_stream(sid)
            self._flush()
        except (asyncio.CancelledError, h2.exceptions.ProtocolError):
            pass
        finally:
            self.tasks.pop(sid, None)

    def _http1(self, data: bytes) -> None:
        """HTTP/1.1 (ALPN without h2): one close-delimited event stream per connection."""
        self._head += data
        if b"\r\n\r\n" not in self._head or self.streams:
            return
        lines = self._head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        path = lines[0].split(" ")[1]
        self.streams += 1
        self.server.requests.append((self.server.peers.index(self), path, headers.get("last-event-id")))
        self.tasks[1] = asyncio.get_running_loop().create_task(
            self._serve_http1(path, headers.get("last-event-id"))
        )

    async def _serve_http1(self, path: str, last_id: str | None) -> None:
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
        )
        try:
            for event in self.server.events(path, last_id):
                if isinstance(event, float):
                    await asyncio.sleep(event)
                elif not self.closed:
                    self.transport.write(event)
        except asyncio.CancelledError:
            return
        self.transport.close()

    def _flush(self) -> None:
        if self.h2 is not None and self.transport is not None and not self.closed:
            data = self.h2.data_to_send()
            if data:
                self.transport.write(data)

    def _wake(self) -> None:
        if self._window is not None and not self._window.done():
            self._window.set_result(None)
        self._window = None


class H2SSEServer:
    """An event-stream server on 127.0.0.1 over TLS: HTTP/2 (ALPN h2), or HTTP/1.1 with ``alpn``.

    ``GET /<name>?n=N&every=S`` answers events ``id: k`` / ``data: <name> k`` for k after the request's
    Last-Event-ID up to N, one every S seconds, then ends the stream (N=0: never ends). ``peers``: the
    connections accepted, each with the number of ``streams`` it carried; ``requests``: (connection
    index, path, Last-Event-ID) per request; ``resets``: the streams the client reset.
    """

    def __init__(self, *, max_streams: int | None = None, alpn: Iterable[str] = ("h2",)) -> None:
        ca = trustme.CA()
        self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(self._tls)
        self._tls.set_alpn_protocols(list(alpn))
        self.ca = ca
        self.client_ssl = self.new_client_context()
        self.max_streams = max_streams
        self.peers: list[_Peer] = []
        self.requests: list[tuple[int, str, str | None]] = []
        self.resets: list[tuple[int, int, int]] = []
        self.gone = asyncio.Event()
        self.port = 0
        self._server: asyncio.Server | None = None

    def new_client_context(self) -> ssl.SSLContext:
        """A client context that trusts this server (a new object: other connection settings)."""
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    def url(self, name: str, n: int = 0, every: float = 0.01, size: int = 0) -> str:
        return f"https://127.0.0.1:{self.port}/{name}?n={n}&every={every}&size={size}"

    @staticmethod
    def events(path: str, last_id: str | None) -> Iterable[bytes | float]:
        parts = urlsplit(path)
        name = parts.path.strip("/")
        query = parse_qs(parts.query)
        n, every = int(query["n"][0]), float(query["every"][0])
        pad = "x" * int(query.get("size", ["0"])[0])
        k = int(last_id) if last_id else 0
        while n == 0 or k < n:
            k += 1
            yield every
            yield f"id: {k}\ndata: {name} {k}{pad}\n\n".encode()

    @property
    def live(self) -> list[_Peer]:
        return [peer for peer in self.peers if not peer.closed]

    async def __aenter__(self) -> H2SSEServer:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Peer(self), "127.0.0.1", 0, ssl=self._tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for peer in self.peers:
            peer.abort()
        await self._server.wait_closed()

    async def wait_closed(self) -> None:
        """Until every connection the clients opened is closed (by them)."""
        await until(lambda: not self.live)


async def until(condition: Callable[[], bool]) -> None:
    assert await async_wait_until(condition, WAIT), "not within the wait"


#: One iterator per stream: leaving an ``async for`` drops the response (and reconnects).
_ITERATORS: weakref.WeakKeyDictionary[SSEConnection, AsyncIterator[Any]] = weakref.WeakKeyDictionary()


async def read(conn: SSEConnection, count: int) -> list[str]:
    """The next ``count`` events' data."""
    it = _ITERATORS.get(conn)
    if it is None:
        it = _ITERATORS[conn] = conn.__aiter__()

    async def take() -> list[str]:
        return [(await it.__anext__())["data"] for _ in range(count)]

    return await asyncio.wait_for(take(), WAIT)


def numbered(name: str, first: int, last: int) -> list[str]:
    return [f"{name} {k}" for k in range(first, last + 1)]


async def open_streams(
    stack: AsyncExitStack, client: SSEClient, urls: list[str], **options: Any
) -> list[SSEConnection]:
    return await asyncio.gather(
        *(stack.enter_async_context(client.connect(url, http2=True, **options)) for url in urls)
    )


@pytest.fixture
async def server() -> AsyncIterator[H2SSEServer]:
    async with H2SSEServer() as srv:
        yield srv


async def test_streams_to_one_origin_share_one_connection(server: H2SSEServer) -> None:
    names = [f"s{i}" for i in range(8)]
    async with SSEClient() as client, AsyncExitStack() as stack:
        conns = await open_streams(
            stack, client, [server.url(name, n=25, every=0.001) for name in names], ssl=server.client_ssl
        )
        got = await asyncio.gather(*(read(conn, 25) for conn in conns))
        for name, data in zip(names, got, strict=True):
            assert data == numbered(name, 1, 25)
    assert [peer.streams for peer in server.peers] == [8]
    await server.wait_closed()


async def test_closing_one_stream_resets_it_and_leaves_the_others_streaming(server: H2SSEServer) -> None:
    async with SSEClient() as client, AsyncExitStack() as stack:
        conns = await open_streams(
            stack, client, [server.url(f"s{i}") for i in range(4)], ssl=server.client_ssl, reconnect=False
        )
        for i, conn in enumerate(conns):
            assert await read(conn, 3) == numbered(f"s{i}", 1, 3)
        await conns[0].close()
        await until(lambda: len(server.resets) == 1)
        assert server.resets == [(0, 1, h2.errors.ErrorCodes.CANCEL)]
        for i, conn in enumerate(conns[1:], 1):
            assert await read(conn, 20) == numbered(f"s{i}", 4, 23)
        assert len(server.live) == 1 and server.live[0].streams == 4
        # A new stream takes the freed slot on the same connection.
        again = await stack.enter_async_context(
            client.connect(server.url("again"), http2=True, ssl=server.client_ssl)
        )
        assert await read(again, 2) == numbered("again", 1, 2)
    assert len(server.peers) == 1
    await server.wait_closed()


async def test_a_stream_nobody_reads_does_not_stall_the_others(server: H2SSEServer) -> None:
    """A stream whose reader is behind has its receiver paused: its own window is not credited (the
    server stops it), the connection's is (the other streams go on); reading it again resumes it."""
    size = 200_000  # 20 events: 4 MB, past the receiver's 256 KiB and near the stream's 4 MiB window
    async with SSEClient() as client, AsyncExitStack() as stack:
        slow, fast = await open_streams(
            stack,
            client,
            [server.url("slow", n=20, every=0, size=size), server.url("fast", n=200, every=0, size=1000)],
            ssl=server.client_ssl,
            reconnect=False,
        )
        assert await read(slow, 1) == [f"slow 1{'x' * size}"]
        data = await read(fast, 200)
        assert [d[: d.index("x")] for d in data] == numbered("fast", 1, 200)
        assert await read(slow, 19) == [f"slow {k}{'x' * size}" for k in range(2, 21)]
    assert [peer.streams for peer in server.peers] == [2]
    await server.wait_closed()


async def test_a_dropped_connection_makes_every_stream_resume_on_a_new_one(server: H2SSEServer) -> None:
    names = [f"s{i}" for i in range(6)]
    async with SSEClient() as client, AsyncExitStack() as stack:
        conns = await open_streams(
            stack, client, [server.url(name) for name in names], ssl=server.client_ssl, retry_delay=10
        )
        seen = await asyncio.gather(*(read(conn, 5) for conn in conns))
        server.peers[0].abort()
        more = await asyncio.gather(*(read(conn, 10) for conn in conns))
        for name, before, after in zip(names, seen, more, strict=True):
            assert before + after == numbered(name, 1, 15)  # none lost, none twice
        assert all(conn.stats.reconnects == 1 for conn in conns)
    assert [peer.streams for peer in server.peers] == [6, 6]
    assert sorted(last for peer, _, last in server.requests if peer == 1) == ["5"] * 6
    await server.wait_closed()


async def test_goaway_makes_every_stream_resume_on_a_new_connection(server: H2SSEServer) -> None:
    names = [f"s{i}" for i in range(3)]
    async with SSEClient() as client, AsyncExitStack() as stack:
        conns = await open_streams(
            stack, client, [server.url(name) for name in names], ssl=server.client_ssl, retry_delay=10
        )
        seen = await asyncio.gather(*(read(conn, 2) for conn in conns))
        server.peers[0].goaway()
        more = await asyncio.gather(*(read(conn, 5) for conn in conns))
        for name, before, after in zip(names, seen, more, strict=True):
            assert before + after == numbered(name, 1, 7)
        await until(lambda: server.peers[0].closed)  # the client closed the old connection
    assert [peer.streams for peer in server.peers] == [3, 3]
    await server.wait_closed()


async def test_streams_beyond_the_peers_limit_open_another_connection() -> None:
    names = [f"s{i}" for i in range(7)]
    async with H2SSEServer(max_streams=3) as server:
        async with SSEClient() as client, AsyncExitStack() as stack:
            conns = await open_streams(
                stack, client, [server.url(name, n=10, every=0.001) for name in names], ssl=server.client_ssl
            )
            got = await asyncio.gather(*(read(conn, 10) for conn in conns))
            for name, data in zip(names, got, strict=True):
                assert data == numbered(name, 1, 10)
        assert sorted(peer.streams for peer in server.peers) == [1, 3, 3]
        assert not server.resets  # no stream was refused
        await server.wait_closed()


async def test_different_connection_settings_never_share(server: H2SSEServer) -> None:
    other = server.new_client_context()  # the same trust, another SSLContext object
    async with SSEClient() as client, AsyncExitStack() as stack:
        a = await open_streams(stack, client, [server.url("a1"), server.url("a2")], ssl=server.client_ssl)
        b = await open_streams(stack, client, [server.url("b1"), server.url("b2")], ssl=other)
        c = await open_streams(stack, client, [server.url("c1")], ssl=other, verify=False)
        for conn, name in zip([*a, *b, *c], ["a1", "a2", "b1", "b2", "c1"], strict=True):
            assert await read(conn, 2) == numbered(name, 1, 2)
    assert sorted(peer.streams for peer in server.peers) == [1, 2, 2]
    await server.wait_closed()


async def test_http1_fallback_opens_a_connection_per_stream() -> None:
    async with H2SSEServer(alpn=["http/1.1"]) as server:
        names = [f"s{i}" for i in range(4)]
        async with SSEClient() as client, AsyncExitStack() as stack:
            conns = await open_streams(
                stack, client, [server.url(name, n=5, every=0.001) for name in names], ssl=server.client_ssl
            )
            got = await asyncio.gather(*(read(conn, 5) for conn in conns))
            for name, data in zip(names, got, strict=True):
                assert data == numbered(name, 1, 5)
            assert all(peer.h2 is None for peer in server.peers)
        assert len(server.peers) >= 4 and all(peer.streams <= 1 for peer in server.peers)
        await server.wait_closed()


async def test_streams_through_a_connect_proxy_share_one_tunnel(server: H2SSEServer) -> None:
    names = [f"s{i}" for i in range(4)]
    async with TunnelProxy() as proxy, SSEClient(proxy=proxy.url) as client, AsyncExitStack() as stack:
        conns = await open_streams(
            stack, client, [server.url(name, n=5, every=0.001) for name in names], ssl=server.client_ssl
        )
        got = await asyncio.gather(*(read(conn, 5) for conn in conns))
        for name, data in zip(names, got, strict=True):
            assert data == numbered(name, 1, 5)
        assert [head for head, _ in proxy.heads] == [f"CONNECT 127.0.0.1:{server.port} HTTP/1.1"]
    assert [peer.streams for peer in server.peers] == [4]
    await server.wait_closed()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts /proc/self/fd")
async def test_many_shared_streams_opened_and_closed_leak_nothing(server: H2SSEServer) -> None:
    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    async with SSEClient() as client:
        for round in range(1, 4):  # the first round opens the connection (and warms up everything else)
            async with AsyncExitStack() as stack:
                conns = await open_streams(
                    stack, client, [server.url(f"s{i}") for i in range(20)], ssl=server.client_ssl
                )
                await asyncio.gather(*(read(conn, 1) for conn in conns))
            await until(lambda: len(server.resets) == 20 * round)  # noqa: B023
            if round == 1:
                gc.collect()
                baseline, tasks = fds(), len(asyncio.all_tasks())
        gc.collect()
        assert fds() == baseline and len(asyncio.all_tasks()) == tasks
        # Streams and their slots are all given back: one connection, kept for the next stream.
        assert len(server.peers) == 1
    await server.wait_closed()
