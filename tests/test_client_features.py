"""SSEClient features beyond the core loop: framing and compression, scale, redirects, helpers, stats,
dedup, header callables, pooling, and the seed's own usage examples. Real loopback servers only."""

from __future__ import annotations

import asyncio
import json
import zlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiosonic
import pytest
from aiohttp import web

from sonicsse import SSEClient, make_http_client
from sonicsse.exceptions import SSEConnectionError, SSEParsingError

from client_helpers import async_wait_until, collect, datas
from servers import (
    CLOSE,
    DROP,
    LAST_CHUNK,
    STALL,
    Request,
    ScriptServer,
    aiohttp_server,
    chunk,
    gzip_chunks,
    head,
    sse_chunked,
    sse_close,
)

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.usefixtures("client_decoder"),  # every test on the compiled and on the pure hot path
]


# -- compression and big events -----------------------------------------------------------------


@pytest.mark.parametrize(("encoding", "wbits"), [("gzip", 31), ("deflate", 15), ("deflate", -15)])
async def test_compressed_body_decoded_incrementally(encoding: str, wbits: int) -> None:
    pieces = [b"data: one\n\n", b"data: two\n\n", b"data: three\n\n"]
    compressed = gzip_chunks(pieces, wbits)
    steps: list[Any] = [head(headers=[("Content-Encoding", encoding)])]
    steps += [chunk(compressed[0]), 0.05, chunk(compressed[1]), 0.05, chunk(compressed[2]), b"0\r\n\r\n"]
    async with ScriptServer([steps]) as srv, SSEClient() as client:
        conn = await client.connect(srv.url(), reconnect=False)
        # the first event arrives before the rest of the body was sent: decoding is incremental
        first = await asyncio.wait_for(conn.__aiter__().__anext__(), 5)
        assert first["data"] == "one"
        await conn.close()
        conn = await client.connect(srv.url(), reconnect=False)
        assert datas(await collect(conn)) == ["one", "two", "three"]
        await conn.close()


async def test_gzip_close_delimited_body() -> None:
    pieces = [b"data: %d\n\n" % i for i in range(50)]
    steps = [head(headers=[("Content-Encoding", "gzip")], framing="close"), *gzip_chunks(pieces), CLOSE]
    async with ScriptServer([steps]) as srv, SSEClient() as client:
        conn = await client.connect(srv.url(), reconnect=False)
        assert datas(await collect(conn)) == [str(i) for i in range(50)]
        await conn.close()


async def test_aiohttp_gzip_stream() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        resp.enable_compression(web.ContentCoding.gzip)
        await resp.prepare(request)
        for i in range(3):
            await resp.write(b"data: %d\n\n" % i)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/sse", handler)
    async with aiohttp_server(app) as base, SSEClient() as client:
        conn = await client.connect(base + "/sse", reconnect=False, headers={"Accept-Encoding": "gzip"})
        assert conn.headers.get("content-encoding") == "gzip"
        assert datas(await collect(conn)) == ["0", "1", "2"]
        await conn.close()


@pytest.mark.parametrize("one_line", [True, False])
async def test_8_mib_event(one_line: bool) -> None:
    if one_line:
        body = b"data: " + b"x" * (8 << 20) + b"\n\ndata: after\n\n"
        size = 8 << 20
    else:  # 128 data lines of 64 KiB, within the default line limit
        body = b"data: " + b"x" * (64 << 10) + b"\n"
        body = body * 128 + b"\ndata: after\n\n"
        size = 128 * (64 << 10) + 127
    limit = {"max_line_size": 9 << 20} if one_line else {}
    async with ScriptServer([sse_close(body)]) as srv, SSEClient() as client:
        conn = await client.connect(srv.url(), reconnect=False, **limit)
        events = await collect(conn)
        await conn.close()
    assert [len(e["data"]) for e in events] == [size, 5]


async def test_oversized_line_yields_earlier_events_then_raises() -> None:
    body = b"data: ok\n\ndata: " + b"y" * (2 << 20)
    async with ScriptServer([sse_close(body)]) as srv, SSEClient() as client:
        conn = await client.connect(srv.url(), reconnect=False, max_line_size=1 << 20)
        seen: list[str] = []
        with pytest.raises(SSEParsingError) as info:
            async for event in conn:
                seen.append(event["data"])
        await conn.close()
    assert seen == ["ok"]
    assert info.value.url == srv.url() and srv.url() in str(info.value)  # the error names the request


async def test_default_line_limit_admits_multi_megabyte_lines() -> None:
    # Real APIs put base64 images or tool results on one data line: the client's default allows
    # a line as long as its event limit (16 MiB), not the bare decoder's 1 MiB.
    body = b"data: " + b"z" * (5 << 20) + b"\n\n"
    async with ScriptServer([sse_close(body)]) as srv, SSEClient() as client:
        conn = await client.connect(srv.url(), reconnect=False)
        sizes = [len(event["data"]) async for event in conn]
        await conn.close()
    assert sizes == [5 << 20]


# -- scale ----------------------------------------------------------------------------------------


async def test_1000_concurrent_streams_from_one_client() -> None:
    n = 1000
    release = asyncio.Event()

    async def script_gate() -> None:
        await release.wait()

    scripts = [[*sse_chunked(b"data: hi\n\n", end=False), STALL]]
    async with ScriptServer(scripts) as srv, SSEClient() as client:
        conns = await asyncio.wait_for(
            asyncio.gather(*(client.connect(srv.url(), reconnect=False) for _ in range(n))), 30
        )
        firsts = await asyncio.wait_for(asyncio.gather(*(c.__aiter__().__anext__() for c in conns)), 30)
        assert len(firsts) == n and all(e["data"] == "hi" for e in firsts)
        assert len(srv.conns) == n
        await asyncio.gather(*(c.close() for c in conns))
        await asyncio.wait_for(asyncio.gather(*(c.gone.wait() for c in srv.conns)), 5)
    del script_gate


# -- redirects ------------------------------------------------------------------------------------


def _redirect_app(seen: list[tuple[str, str, bytes, dict[str, str]]]) -> web.Application:
    async def stream(request: web.Request) -> web.StreamResponse:
        seen.append((request.method, request.path, await request.read(), dict(request.headers)))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: " + request.method.encode() + b"\n\n")
        await resp.write_eof()
        return resp

    def redirect(status: int, location: str | None) -> Any:
        async def handler(request: web.Request) -> web.Response:
            seen.append((request.method, request.path, await request.read(), dict(request.headers)))
            headers = {"Location": location} if location is not None else {}
            return web.Response(status=status, headers=headers)

        return handler

    app = web.Application()
    app.router.add_route("*", "/sse", stream)
    app.router.add_route("*", "/r302", redirect(302, "/sse"))
    app.router.add_route("*", "/r307", redirect(307, "/sse"))
    app.router.add_route("*", "/r303", redirect(303, "/sse"))
    app.router.add_route("*", "/nolocation", redirect(302, None))
    app.router.add_route("*", "/emptylocation", redirect(302, ""))
    return app


async def test_redirect_followed() -> None:
    seen: list[tuple[str, str, bytes, dict[str, str]]] = []
    async with aiohttp_server(_redirect_app(seen)) as base, SSEClient() as client:
        conn = await client.connect(base + "/r302", follow=True, reconnect=False)
        assert datas(await collect(conn)) == ["GET"]
        await conn.close()
        conn = await client.connect(base + "/r307", method="POST", data="keep", follow=True, reconnect=False)
        assert datas(await collect(conn)) == ["POST"]
        await conn.close()
        conn = await client.connect(base + "/r303", method="POST", data="drop", follow=True, reconnect=False)
        assert datas(await collect(conn)) == ["GET"]
        await conn.close()
    assert [(m, p, b) for m, p, b, _ in seen] == [
        ("GET", "/r302", b""),
        ("GET", "/sse", b""),
        ("POST", "/r307", b"keep"),
        ("POST", "/sse", b"keep"),
        ("POST", "/r303", b"drop"),
        ("GET", "/sse", b""),
    ]


@pytest.mark.parametrize("path", ["/nolocation", "/emptylocation"])
async def test_redirect_without_location_raises(path: str) -> None:
    seen: list[tuple[str, str, bytes, dict[str, str]]] = []
    async with aiohttp_server(_redirect_app(seen)) as base, SSEClient() as client:
        with pytest.raises(SSEConnectionError, match="Location") as info:
            await client.connect(base + path, follow=True)
    assert info.value.status == 302
    assert len(seen) == 1


async def test_redirect_not_followed_by_default_raises() -> None:
    seen: list[tuple[str, str, bytes, dict[str, str]]] = []
    async with aiohttp_server(_redirect_app(seen)) as base, SSEClient() as client:
        with pytest.raises(SSEConnectionError, match="follow"):
            await client.connect(base + "/r302")
    assert len(seen) == 1


# -- helpers and stats ----------------------------------------------------------------------------


async def test_iter_batches_one_list_per_read() -> None:
    steps = [head(), chunk(b"data: 1\n\ndata: 2\n\ndata: 3\n\n"), 0.05, chunk(b"data: 4\n\n"), b"0\r\n\r\n"]
    async with ScriptServer([steps]) as srv, SSEClient() as client:
        conn = await client.connect(srv.url(), reconnect=False)
        batches = [[e["data"] for e in batch] async for batch in conn.iter_batches()]
        await conn.close()
    assert batches == [["1", "2", "3"], ["4"]]


async def test_iter_json_stops_at_done_and_closes() -> None:
    body = b'data: {"a": 1}\n\n: ping\n\ndata: [1, 2]\n\ndata: [DONE]\n\n'
    scripts = [[*sse_chunked(body, end=False), STALL]]
    async with ScriptServer(scripts) as srv, SSEClient() as client:
        conn = await client.connect(srv.url(), method="POST", json={})
        items = [item async for item in conn.iter_json(loads=json.loads)]
        await asyncio.wait_for(srv.conns[0].gone.wait(), 5)
        assert conn.closed
    assert items == [{"a": 1}, [1, 2]]
    assert len(srv.requests) == 1


async def test_stats() -> None:
    steps = [head(), chunk(b"data: a\n\n"), chunk(b"data: b\n\n"), DROP]
    scripts = [steps, [*sse_chunked(b"data: c\n\n", end=False), STALL]]
    loop = asyncio.get_running_loop()
    async with ScriptServer(scripts) as srv, SSEClient() as client:
        start = loop.time()  # the stats' clock
        conn = await client.connect(srv.url(), retry_delay=10)
        assert conn.stats.events == 0 and conn.stats.time_to_first_event is None
        events = await collect(conn, 3)
        stats = conn.stats
        taken = loop.time() - start
        await conn.close()
    assert datas(events) == ["a", "b", "c"]
    assert stats.events == 3
    assert stats.bytes == 27
    assert stats.reconnects == 1
    # durations within the test's own: measured, on the loop's clock, not guessed
    assert stats.time_to_first_event is not None and 0 <= stats.time_to_first_event <= taken
    assert 0 <= stats.time_since_last_event <= taken


async def test_status_and_headers_of_current_response() -> None:
    steps = [head(headers=[("X-Stream", "yes")]), chunk(b"data: a\n\n"), b"0\r\n\r\n"]
    async with (
        ScriptServer([steps]) as srv,
        SSEClient() as client,
        client.connect(srv.url(), reconnect=False) as conn,
    ):
        assert conn.status == 200
        assert conn.headers["x-stream"] == "yes"


async def test_restart_reconnects_with_last_event_id() -> None:
    scripts = [
        [*sse_chunked(b"id: 5\ndata: a\n\n", end=False), STALL],
        [*sse_chunked(b"id: 6\ndata: b\n\n", end=False), STALL],
    ]
    async with ScriptServer(scripts) as srv, SSEClient() as client:
        async with client.connect(srv.url(), retry_delay=60_000) as conn:
            seen: list[str] = []
            async for event in conn:
                seen.append(event["data"])
                if len(seen) == 1:
                    conn.restart()
                else:
                    break
        await asyncio.wait_for(srv.conns[0].gone.wait(), 5)
    assert seen == ["a", "b"]
    assert srv.requests[1].headers["last-event-id"] == "5"


# -- dedup, ids and headers -------------------------------------------------------------------------


@pytest.mark.parametrize("dedup", [True, False])
async def test_dedup_after_reconnect(dedup: bool) -> None:
    scripts = [
        sse_chunked(b"id: 1\ndata: a\n\nid: 2\ndata: b\n\n"),
        [*sse_chunked(b"id: 2\ndata: b\n\nid: 3\ndata: c\n\n", end=False), STALL],
    ]
    async with (
        ScriptServer(scripts) as srv,
        SSEClient() as client,
        client.connect(srv.url(), retry_delay=10, dedup=dedup) as conn,
    ):
        events = await collect(conn, 3 if dedup else 4)
    assert datas(events) == (["a", "b", "c"] if dedup else ["a", "b", "b", "c"])


async def test_non_ascii_id_sent_utf8_and_control_char_id_left_out() -> None:
    scripts = [
        sse_chunked("id: é-42\ndata: a\n\n".encode()),
        sse_chunked(b"id: bad\x01id\ndata: b\n\n"),
        [*sse_chunked(b"data: c\n\n", end=False), STALL],
    ]
    async with (
        ScriptServer(scripts) as srv,
        SSEClient() as client,
        client.connect(srv.url(), retry_delay=10) as conn,
    ):
        events = await collect(conn, 3)
    assert datas(events) == ["a", "b", "c"]
    assert srv.requests[1].headers["last-event-id"] == "é-42"
    assert "last-event-id" not in srv.requests[2].headers


@pytest.mark.parametrize("is_async", [False, True])
async def test_headers_callable_called_before_every_attempt(is_async: bool) -> None:
    calls = 0

    def sync_headers() -> dict[str, str]:
        nonlocal calls
        calls += 1
        return {"Authorization": f"Bearer t{calls}"}

    async def async_headers() -> dict[str, str]:
        return sync_headers()

    scripts = [sse_chunked(b"data: a\n\n"), [*sse_chunked(b"data: b\n\n", end=False), STALL]]
    async with ScriptServer(scripts) as srv, SSEClient() as client:
        source: Any = async_headers if is_async else sync_headers
        async with client.connect(srv.url(), retry_delay=10, headers=source) as conn:
            await collect(conn, 2)
    assert [r.headers["authorization"] for r in srv.requests] == ["Bearer t1", "Bearer t2"]
    assert srv.requests[1].headers["accept"] == "text/event-stream"


async def test_one_shot_body_cannot_be_resent() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"part1"
        yield b"part2"

    scripts = [sse_chunked(b"id: 1\ndata: a\n\n")]
    async with ScriptServer(scripts) as srv, SSEClient() as client:
        conn = await client.connect(srv.url(), method="POST", data=body(), retry_delay=10)
        events: list[str] = []
        with pytest.raises(SSEConnectionError, match="one-shot"):
            async for event in conn:
                events.append(event["data"])
        await conn.close()
    assert events == ["a"]
    assert srv.requests[0].body == b"part1part2"
    assert len(srv.requests) == 1


async def test_max_retries_raises_with_cause() -> None:
    scripts = [[head(503, "text/plain", framing="length", length=4), b"busy"]]
    async with ScriptServer(scripts) as srv, SSEClient() as client:
        with pytest.raises(SSEConnectionError) as info:
            await client.connect(srv.url(), retry_delay=5, max_retries=2)
    assert len(srv.requests) == 3
    err = info.value
    assert err.status == 503 and "busy" in str(err) and "gave up" in str(err)
    assert err.__cause__ is not None


async def test_refused_connection_retried_then_raises() -> None:
    async with ScriptServer([[DROP]]) as srv:
        url = srv.url()
    async with SSEClient() as client:
        with pytest.raises(SSEConnectionError) as info:
            await client.connect(url, retry_delay=5, max_retries=1)
    assert info.value.__cause__ is not None
    assert url in str(info.value)


# -- pooling and clients ----------------------------------------------------------------------------


async def test_keep_connection_returns_completed_connection_to_pool() -> None:
    scripts = [sse_chunked(b"data: a\n\n"), sse_chunked(b"data: b\n\n")]
    async with ScriptServer(scripts) as srv, SSEClient() as client:
        for _ in range(2):
            async with client.connect(srv.url(), reconnect=False, keep_connection=True) as conn:
                await collect(conn)
    assert [r.conn_id for r in srv.requests] == [0, 0]


async def test_without_keep_connection_each_stream_gets_a_new_socket() -> None:
    scripts = [sse_chunked(b"data: a\n\n"), sse_chunked(b"data: b\n\n")]
    async with ScriptServer(scripts) as srv, SSEClient() as client:
        for _ in range(2):
            async with client.connect(srv.url(), reconnect=False) as conn:
                await collect(conn)
    assert [r.conn_id for r in srv.requests] == [0, 1]


async def test_shared_http_client_is_not_closed() -> None:
    scripts = [sse_chunked(b"data: a\n\n")]
    async with ScriptServer(scripts) as srv:
        http = aiosonic.HTTPClient()
        client = SSEClient(http)
        assert client.http_client is http
        conn = await client.connect(srv.url(), reconnect=False)
        assert datas(await collect(conn)) == ["a"]
        await client.close()
        # still usable after the SSEClient closed
        conn = await SSEClient(http).connect(srv.url(), reconnect=False)
        assert datas(await collect(conn)) == ["a"]
        await conn.close()
        await http.aclose()


async def test_shared_plain_client_reads_keep_alive_close_delimited_body() -> None:
    steps = [head(framing="none"), b"data: a\n\n", CLOSE]
    async with ScriptServer([steps]) as srv:
        http = aiosonic.HTTPClient()
        conn = await SSEClient(http).connect(srv.url(), reconnect=False)
        assert datas(await collect(conn)) == ["a"]
        await conn.close()
        await http.aclose()


async def test_pool_size_is_configurable() -> None:
    client = SSEClient(pool_size=7)
    assert client.http_client.connector.pools[":default"].pool_size == 7
    await client.close()
    assert make_http_client().connector.pools[":default"].pool_size >= 1000


async def test_the_pool_makes_connections_as_streams_need_them_up_to_its_size() -> None:
    scripts = [[head(), chunk(b"data: x\n\n"), 0.2, b"0\r\n\r\n"]] * 5
    async with ScriptServer(scripts) as srv, SSEClient(pool_size=3) as client:
        pool = client.http_client.connector.pools[":default"]
        assert len(pool._connections) == 0
        conns = [await client.connect(srv.url(), reconnect=False) for _ in range(3)]
        assert len(pool._connections) == 3
        # a fourth stream waits for a free connection (aiosonic's pool semantics) instead of a fifth object
        fourth = asyncio.ensure_future(client.connect(srv.url(), reconnect=False))
        await asyncio.sleep(0.05)
        assert not fourth.done()
        results = [datas(await collect(conn)) for conn in conns]
        for conn in conns:
            await conn.close()
        extra = await asyncio.wait_for(fourth, 5)
        assert datas(await collect(extra)) == ["x"]
        await extra.close()
        assert results == [["x"]] * 3
        assert len(pool._connections) <= 3


# -- the seed's own usage examples ------------------------------------------------------------------


async def test_seed_example_await_loop_close() -> None:
    scripts = [sse_chunked(b"event: message\ndata: hello\n\nevent: message\ndata: stop\n\n")]
    async with ScriptServer(scripts) as srv:
        client = SSEClient()
        sse_conn = await client.connect(srv.url())
        seen = []
        async for event in sse_conn:
            seen.append((event["event"], event["data"]))
            if event["data"] == "stop":
                break
        await sse_conn.close()
        await client.close()
    assert seen == [("message", "hello"), ("message", "stop")]


async def test_seed_example_nested_context_managers() -> None:
    scripts = [sse_chunked(b"data: hello\n\ndata: stop\n\n")]
    async with ScriptServer(scripts) as srv:
        seen = []
        async with SSEClient() as client, client.connect(srv.url()) as sse_conn:
            async for event in sse_conn:
                seen.append(event["data"])
                if event["data"] == "stop":
                    break
    assert seen == ["hello", "stop"]


async def test_seed_example_openai_style_post() -> None:
    def script(n: int, req: Request) -> list[Any]:
        body = json.loads(req.body)
        assert body["stream"] is True
        pieces = [b'data: {"choices": [{"delta": {"content": "Hel"}}]}\n\n']
        pieces.append(b'data: {"choices": [{"delta": {"content": "lo"}}]}\n\n')
        pieces.append(b"data: [DONE]\n\n")
        return sse_chunked(*pieces)

    async with (
        ScriptServer(script) as srv,
        SSEClient() as client,
        client.connect(
            srv.url("/v1/chat/completions"),
            method="POST",
            json={"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}], "stream": True},
            headers={"Authorization": "Bearer token"},
        ) as sse_conn,
    ):
        text = ""
        async for event in sse_conn:
            if event["data"] == "[DONE]":
                break
            text += json.loads(event["data"])["choices"][0]["delta"]["content"]
    assert text == "Hello"
    req = srv.requests[0]
    assert req.method == "POST" and req.headers["authorization"] == "Bearer token"
    assert req.headers["content-type"] == "application/json"
    assert len(srv.requests) == 1


async def test_aiosonic_reconnect_example() -> None:
    scripts = [sse_chunked(b"id: 1\ndata: event 1\n\n"), sse_chunked(b"id: 2\ndata: event 2\n\n")]
    async with ScriptServer(scripts) as srv:
        client = SSEClient()
        sse_conn = await client.connect(srv.url(), reconnect=True, retry_delay=100)
        events = await collect(sse_conn, 2)
        await sse_conn.close()
        await client.close()
    assert datas(events) == ["event 1", "event 2"]


def test_zlib_helper_roundtrip() -> None:
    out = gzip_chunks([b"abc", b"def"], 31)
    assert zlib.decompress(b"".join(out), 31) == b"abcdef"


async def test_http2_stream() -> None:
    from servers import H2Server

    async with H2Server([b"id: 1\ndata: over h2\n\n", b"data: second\n\n"]) as srv, SSEClient() as client:
        conn = await client.connect(srv.url(), http2=True, ssl=srv.client_ssl, reconnect=False)
        events = await asyncio.wait_for(collect(conn), 10)
        await conn.close()
    assert datas(events) == ["over h2", "second"]
    assert srv.requests[0][":method"] == "GET"
    assert srv.requests[0]["accept"] == "text/event-stream"


async def test_http2_close_and_read_timeout() -> None:
    from servers import H2Server

    async with H2Server([b"data: a\n\n"], end=False) as srv, SSEClient() as client:
        conn = await client.connect(srv.url(), http2=True, ssl=srv.client_ssl, reconnect=False)
        assert datas(await collect(conn, 1)) == ["a"]
        await conn.close()
        conn = await client.connect(
            srv.url(), http2=True, ssl=srv.client_ssl, reconnect=False, read_timeout=0.2
        )
        with pytest.raises(SSEConnectionError, match="read_timeout"):
            await asyncio.wait_for(collect(conn), 5)
        await conn.close()


async def test_http2_close_resets_the_stream_and_frees_the_connection() -> None:
    """Closing an unfinished HTTP/2 stream sends RST_STREAM, so the server stops producing it, and the
    bytes the client had queued are credited back: streams closed early must not drain the shared
    connection's flow-control window (64 KiB by default) until every later stream stalls."""
    from servers import H2Server

    big = b"data: " + b"x" * 16_000 + b"\n\n"
    async with H2Server([b"data: first\n\n", *[big] * 4], end=False) as srv, SSEClient() as client:
        for _ in range(12):
            conn = await client.connect(
                srv.url(), http2=True, ssl=srv.client_ssl, reconnect=False, read_timeout=5
            )
            assert datas(await asyncio.wait_for(collect(conn, 1), 10)) == ["first"]
            await conn.close()
        await async_wait_until(lambda: len(srv.resets) == 12, timeout=10)
    assert len(srv.resets) == 12


async def test_user_last_event_id_header_is_the_initial_id() -> None:
    scripts = [sse_chunked(b"id: 10\ndata: a\n\n"), [*sse_chunked(b"data: b\n\n", end=False), STALL]]
    async with (
        ScriptServer(scripts) as srv,
        SSEClient() as client,
        client.connect(srv.url(), retry_delay=10, headers={"Last-Event-ID": "9"}) as conn,
    ):
        await collect(conn, 2)
    assert [r.headers.get("last-event-id") for r in srv.requests] == ["9", "10"]


async def test_client_close_closes_its_streams() -> None:
    async with ScriptServer([[*sse_chunked(b"data: a\n\n", end=False), STALL]]) as srv:
        client = SSEClient()
        conn = await client.connect(srv.url())
        it = conn.__aiter__()
        assert (await it.__anext__())["data"] == "a"
        await client.close()
        assert conn.closed
        await asyncio.wait_for(srv.conns[0].gone.wait(), 5)
        with pytest.raises(StopAsyncIteration):
            await it.__anext__()


async def test_shared_plain_client_and_connection_close_body_gives_a_clear_error() -> None:
    async with ScriptServer([sse_close(b"data: a\n\n")]) as srv:
        http = aiosonic.HTTPClient()
        with pytest.raises(SSEConnectionError, match="make_http_client"):
            await SSEClient(http).connect(srv.url(), reconnect=False)
        await http.aclose()
        http = make_http_client()  # the remedy
        conn = await SSEClient(http).connect(srv.url(), reconnect=False)
        assert datas(await collect(conn)) == ["a"]
        await conn.close()
        await http.aclose()


async def test_one_event_by_anext_then_async_for_loses_none_of_the_same_read() -> None:
    # a, b and c arrive in one socket read: the first iterator takes only a, the next gets b and c.
    steps = [head(), chunk(b"data: a\n\ndata: b\n\ndata: c\n\n"), 0.1, chunk(b"data: d\n\n"), b"0\r\n\r\n"]
    async with ScriptServer([steps]) as srv, SSEClient() as client:
        conn = await client.connect(srv.url(), reconnect=False)
        first = await anext(aiter(conn))
        rest = await collect(conn)
        await conn.close()
    assert first["data"] == "a" and datas(rest) == ["b", "c", "d"]
    assert len(srv.requests) == 1


async def test_iter_batches_after_an_abandoned_async_for_starts_with_the_rest_of_its_batch() -> None:
    steps = [head(), chunk(b"data: a\n\ndata: b\n\ndata: c\n\n"), 0.1, chunk(b"data: d\n\n"), b"0\r\n\r\n"]
    async with ScriptServer([steps]) as srv, SSEClient() as client:
        conn = await client.connect(srv.url(), reconnect=False)
        first = await anext(aiter(conn))
        batches = [datas(batch) async for batch in conn.iter_batches()]
        await conn.close()
    assert first["data"] == "a" and batches == [["b", "c"], ["d"]]


async def test_abandoned_iterator_does_not_close_the_stream_of_a_newer_one() -> None:
    steps = [head(), chunk(b"data: a\n\n"), 0.2, chunk(b"data: b\n\n"), b"0\r\n\r\n"]
    async with ScriptServer([steps]) as srv, SSEClient() as client:
        conn = await client.connect(srv.url(), reconnect=False)
        first = await conn.__aiter__().__anext__()  # this iterator is dropped (and finalized) at once
        rest = await collect(conn)
        await conn.close()
    assert first["data"] == "a" and datas(rest) == ["b"]
    assert len(srv.requests) == 1


# -- comments in stream order -------------------------------------------------------------------------
# A comment reaches on_comment after the events before it were delivered and before the ones after it,
# also when they all come in one socket read.


def one_write(body: bytes, end: bool = True) -> list[Any]:
    """A chunked event stream whose head and body (and end) the server sends in one socket write."""
    if end:
        return [head() + chunk(body) + LAST_CHUNK]
    return [head() + chunk(body), STALL]


def noting(timeline: list[Any]) -> Callable[[str], None]:
    """An on_comment that puts each comment in ``timeline``."""
    return lambda text: timeline.append(f": {text}")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # LaunchDarkly's SSE contract test "comment after event"
        (b"data: a\n\n: one\ndata: b\n\n: two\n", ["a", ": one", "b", ": two"]),
        (b": hello\ndata: a\n\n: before b\ndata: b\n\n", [": hello", "a", ": before b", "b"]),
        (
            b"data: 1\n\n: x\n: y\nid: 2\ndata: 2\n\n: z\ndata: 3\n\ndata: 4\n\n:\n:w\n",
            ["1", ": x", ": y", "2", ": z", "3", "4", ": ", ": w"],
        ),
    ],
    ids=["comment-after-event", "comment-before-event", "several-between-events"],
)
async def test_comments_keep_their_places_among_the_events(body: bytes, expected: list[str]) -> None:
    timeline: list[str] = []
    async with (
        ScriptServer([one_write(body)]) as srv,
        SSEClient() as client,
        client.connect(srv.url(), reconnect=False, on_comment=noting(timeline)) as conn,
    ):
        async for event in conn:
            timeline.append(event["data"])
    assert timeline == expected


async def test_async_on_comment_is_awaited_in_its_place() -> None:
    timeline: list[str] = []

    async def on_comment(text: str) -> None:
        await asyncio.sleep(0.01)  # the event after the comment waits for the callback to finish
        timeline.append(f": {text}")

    body = b": first\ndata: a\n\n: one\n: two\ndata: b\n\n: three\n"
    async with (
        ScriptServer([one_write(body)]) as srv,
        SSEClient() as client,
        client.connect(srv.url(), reconnect=False, on_comment=on_comment) as conn,
    ):
        async for event in conn:
            timeline.append(event["data"])
    assert timeline == [": first", "a", ": one", ": two", "b", ": three"]


@pytest.mark.parametrize("is_async", [False, True])
async def test_on_comment_raising_is_called_in_its_place_and_raised_after_the_read(is_async: bool) -> None:
    """The callback runs after the events before its comment; its error is raised once the rest of the
    read was delivered (the resume point, last_event_id, is already past them), the read's later
    comments are dropped."""
    timeline: list[str] = []

    def fail(text: str) -> None:
        timeline.append(f": {text}")
        raise ValueError(f"callback failed on {text!r}")

    async def fail_async(text: str) -> None:
        await asyncio.sleep(0)
        fail(text)

    body = b"id: 1\ndata: a\n\n: boom\nid: 2\ndata: b\n\n: later\nid: 3\ndata: c\n\n"
    async with (
        ScriptServer([one_write(body, end=False)]) as srv,
        SSEClient() as client,
        client.connect(srv.url(), reconnect=False, on_comment=fail_async if is_async else fail) as conn,
    ):
        with pytest.raises(ValueError, match="boom"):
            async for event in conn:
                timeline.append(event["data"])
    assert timeline == ["a", ": boom", "b", "c"]
    assert conn.last_event_id == "3"


async def test_iter_batches_splits_a_read_where_its_comments_are() -> None:
    timeline: list[Any] = []
    body = b"data: a\n\ndata: b\n\n: one\ndata: c\n\n: two\n: three\ndata: d\n\ndata: e\n\n"
    async with (
        ScriptServer([one_write(body)]) as srv,
        SSEClient() as client,
        client.connect(srv.url(), reconnect=False, on_comment=noting(timeline)) as conn,
    ):
        async for batch in conn.iter_batches():
            timeline.append(datas(batch))
    assert timeline == [["a", "b"], ": one", ["c"], ": two", ": three", ["d", "e"]]


async def test_iter_json_keeps_comments_in_place_and_none_after_the_sentinel() -> None:
    timeline: list[Any] = []
    body = b'data: {"n": 1}\n\n: one\ndata: {"n": 2}\n\n: two\ndata: [DONE]\n\n: after the end\n'
    async with (
        ScriptServer([one_write(body, end=False)]) as srv,
        SSEClient() as client,
        client.connect(srv.url(), on_comment=noting(timeline)) as conn,
    ):
        async for value in conn.iter_json():
            timeline.append(value["n"])
    assert timeline == [1, ": one", 2, ": two"]


async def test_checkpoint_of_a_read_split_by_a_comment_never_passes_an_undelivered_event() -> None:
    """The part before the comment is saved as consumed before the callback runs; the resume point
    saved then is its last id, not the read's."""
    timeline: list[str] = []

    class Recorder:
        def load(self) -> str | None:
            return None

        def save(self, last_event_id: str) -> None:
            timeline.append(f"save {last_event_id}")

    body = b"id: 1\ndata: a\n\nid: 2\ndata: b\n\n: c\nid: 3\ndata: d\n\n"
    async with (
        ScriptServer([one_write(body, end=False)]) as srv,
        SSEClient() as client,
        client.connect(srv.url(), checkpoint=Recorder(), on_comment=noting(timeline)) as conn,
    ):
        async for event in conn:
            timeline.append(event["data"])
            if event["data"] == "d":
                break
    assert timeline == ["a", "b", "save 2", ": c", "d"]


async def test_close_from_on_comment_ends_the_iteration_at_the_comment() -> None:
    timeline: list[str] = []

    async def on_comment(text: str) -> None:
        timeline.append(f": {text}")
        await conn.close()

    body = b"data: a\n\n: stop\ndata: b\n\n"
    async with ScriptServer([one_write(body, end=False)]) as srv, SSEClient() as client:
        conn = await client.connect(srv.url(), on_comment=on_comment)
        async for event in conn:
            timeline.append(event["data"])
    assert timeline == ["a", ": stop"]
