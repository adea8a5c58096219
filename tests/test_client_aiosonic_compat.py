"""aiosonic's own SSE tests (sonic182/aiosonic tests/test_sse.py), run against sonicsse.

The server is an aiohttp twin of aiosonic's node test server (tests/nodeapps/sse-server.mjs).
The test bodies are aiosonic's with the import swapped; exceptions are caught as aiosonic's classes,
which sonicsse's subclass.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiosonic.exceptions import SSEConnectionError, SSEParsingError
from aiosonic.sse_config import RequestConfig

from sonicsse import SSEClient
from sonicsse.connection import SSEConnection

from servers import aiohttp_server

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.usefixtures("client_decoder"),  # every test on the compiled and on the pure hot path
]


def _app() -> web.Application:
    counts: dict[str, int] = {}

    async def start(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "Connection": "keep-alive",
            }
        )
        await resp.prepare(request)
        return resp

    async def send(
        resp: web.StreamResponse, data: str, event: str | None = "message", id: str | None = None
    ) -> None:
        out = ""
        if id:
            out += f"id: {id}\n"
        if event:
            out += f"event: {event}\n"
        out += "".join(f"data: {line}\n" for line in data.split("\n")) + "\n"
        await resp.write(out.encode())

    async def sse(request: web.Request) -> web.StreamResponse:
        resp = await start(request)
        await send(resp, "hello", "message", "1")
        await send(resp, "world", "message", "2")
        await send(resp, "test data\nwith two lines", "custom", "3")
        for _ in range(200):  # keep the stream open until the client leaves (at most 10 s)
            if request.transport is None or request.transport.is_closing():
                break
            await asyncio.sleep(0.05)
        return resp

    async def reconnect(request: web.Request) -> web.StreamResponse:
        resp = await start(request)
        counts[request.path] = counts.get(request.path, 0) + 1
        if counts[request.path] == 1:
            await send(resp, "event 1", "message", "1")
        else:
            await send(resp, "event 2", "message", "2")
            await asyncio.sleep(0.05)
        await resp.write_eof()
        return resp

    async def malformed(request: web.Request) -> web.StreamResponse:
        resp = await start(request)
        await resp.write(b"data: valid event\n\n")
        await resp.write(b"malformed event\n\n")
        await resp.write_eof()
        return resp

    async def with_body(request: web.Request, label: str, event: str, second: str) -> web.StreamResponse:
        body = await request.text()
        resp = await start(request)
        await send(resp, f"{label} received: {body}", event, "1")
        await send(resp, second, event, "2")
        await resp.write_eof()
        return resp

    async def post(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        resp = await start(request)
        await send(resp, f"POST received: {body['message']}", "post-response", "1")
        await send(resp, f"Stream data for: {body['model']}", "post-response", "2")
        await resp.write_eof()
        return resp

    async def put(request: web.Request) -> web.StreamResponse:
        return await with_body(request, "PUT", "put-response", "PUT update confirmed")

    async def patch(request: web.Request) -> web.StreamResponse:
        return await with_body(request, "PATCH", "patch-response", "PATCH applied")

    async def delete(request: web.Request) -> web.StreamResponse:
        resp = await start(request)
        await send(resp, "DELETE initiated", "delete-response", "1")
        await send(resp, "DELETE completed", "delete-response", "2")
        await resp.write_eof()
        return resp

    async def params(request: web.Request) -> web.StreamResponse:
        resp = await start(request)
        await send(resp, str(dict(request.query)), "params-response", "1")
        await send(resp, f"Channel: {request.query['channel']}", "params-response", "2")
        await resp.write_eof()
        return resp

    async def post_reconnect(request: web.Request) -> web.StreamResponse:
        body = await request.text()
        resp = await start(request)
        counts[request.path] = counts.get(request.path, 0) + 1
        if counts[request.path] == 1:
            await send(resp, f"First POST: {body}", "post-reconnect", "1")
        else:
            await send(resp, f"Reconnected POST: {body}", "post-reconnect", "2")
            await asyncio.sleep(0.05)
        await resp.write_eof()
        return resp

    async def plain(request: web.Request) -> web.Response:
        return web.Response(text="Hello, world")

    app = web.Application()
    app.router.add_get("/sse", sse)
    app.router.add_get("/sse-reconnect", reconnect)
    app.router.add_get("/sse-malformed", malformed)
    app.router.add_post("/sse-post", post)
    app.router.add_put("/sse-put", put)
    app.router.add_patch("/sse-patch", patch)
    app.router.add_delete("/sse-delete", delete)
    app.router.add_get("/sse-params", params)
    app.router.add_post("/sse-post-reconnect", post_reconnect)
    app.router.add_get("/", plain)
    return app


@pytest.fixture
async def base() -> AsyncIterator[str]:
    async with aiohttp_server(_app()) as url:
        yield url


async def test_sse_connection(base: str) -> None:
    client = SSEClient()
    async with client.connect(base + "/sse") as sse_conn:
        events = []
        async for event in sse_conn:
            events.append(event)
            if len(events) == 3:
                break
        assert len(events) == 3
        assert events[0]["data"] == "hello"
        assert events[0]["event"] == "message"
        assert events[0]["id"] == "1"
        assert events[1]["data"] == "world"
        assert events[1]["id"] == "2"
        assert events[2]["data"] == "test data\nwith two lines"
        assert events[2]["event"] == "custom"
        assert events[2]["id"] == "3"
    await client.close()


async def test_sse_reconnection(base: str) -> None:
    client = SSEClient()
    sse_conn = await client.connect(base + "/sse-reconnect", reconnect=True, retry_delay=100)
    events = []
    async for event in sse_conn:
        events.append(event)
        if len(events) == 2:
            break
    assert [e["data"] for e in events] == ["event 1", "event 2"]
    await client.close()


async def test_sse_no_reconnection(base: str) -> None:
    client = SSEClient()
    conn = await client.connect(base + "/sse-reconnect", reconnect=False)
    events = [event async for event in conn]
    assert len(events) == 1
    assert events[0]["data"] in ("event 1", "event 2")
    await client.close()


async def test_sse_malformed_line_is_ignored_as_the_spec_says(base: str) -> None:
    """aiosonic raises SSEParsingError here; a line without a colon is a field with an empty value and
    an unknown name, which the WHATWG rules ignore. (With reconnect=True the stream would be reopened.)"""
    client = SSEClient()
    conn = await client.connect(base + "/sse-malformed", reconnect=False)
    assert [e["data"] async for e in conn] == ["valid event"]
    await client.close()


async def test_sse_connection_error(base: str) -> None:
    client = SSEClient()
    with pytest.raises(SSEConnectionError):
        await client.connect(base + "/")
    await client.close()


async def test_sse_post_request_with_json(base: str) -> None:
    client = SSEClient()
    async with client.connect(
        base + "/sse-post", method="POST", json={"message": "hello world", "model": "gpt-4"}
    ) as sse_conn:
        events = []
        async for event in sse_conn:
            events.append(event)
            if len(events) == 2:
                break
        assert "POST received: hello world" in events[0]["data"]
        assert events[0]["event"] == "post-response"
        assert events[0]["id"] == "1"
        assert "Stream data for: gpt-4" in events[1]["data"]
        assert events[1]["id"] == "2"
    await client.close()


@pytest.mark.parametrize(
    ("method", "path", "data", "first", "second"),
    [
        ("PUT", "/sse-put", "updated content", "PUT received: updated content", "PUT update confirmed"),
        (
            "PATCH",
            "/sse-patch",
            '{"field": "new value"}',
            'PATCH received: {"field": "new value"}',
            "PATCH applied",
        ),
        ("DELETE", "/sse-delete", None, "DELETE initiated", "DELETE completed"),
    ],
)
async def test_sse_other_methods(
    base: str, method: str, path: str, data: str | None, first: str, second: str
) -> None:
    client = SSEClient()
    async with client.connect(base + path, method=method, data=data) as sse_conn:
        events = []
        async for event in sse_conn:
            events.append(event)
            if len(events) == 2:
                break
        assert first in events[0]["data"]
        assert second in events[1]["data"]
        assert events[1]["id"] == "2"
    await client.close()


async def test_sse_get_with_query_params(base: str) -> None:
    client = SSEClient()
    async with client.connect(
        base + "/sse-params",
        method="GET",
        params={"channel": "updates", "since": "2023-01-01", "limit": "10"},
    ) as sse_conn:
        events = []
        async for event in sse_conn:
            events.append(event)
            if len(events) == 2:
                break
        assert "channel" in events[0]["data"] and "updates" in events[0]["data"]
        assert "Channel: updates" in events[1]["data"]
        assert events[1]["event"] == "params-response"
    await client.close()


async def test_sse_post_reconnection_with_body(base: str) -> None:
    client = SSEClient()
    sse_conn = await client.connect(
        base + "/sse-post-reconnect",
        method="POST",
        json={"test": "reconnect"},
        reconnect=True,
        retry_delay=100,
    )
    events = []
    async for event in sse_conn:
        events.append(event)
        if len(events) == 2:
            break
    assert "First POST:" in events[0]["data"]
    assert "Reconnected POST:" in events[1]["data"]
    await client.close()


async def test_sse_keep_connection(base: str) -> None:
    client = SSEClient()
    async with client.connect(base + "/sse", keep_connection=True) as sse_conn:
        events = []
        async for event in sse_conn:
            events.append(event)
            if len(events) == 2:
                break
        assert len(events) == 2
    await client.close()


def test_sse_parse_invalid_retry() -> None:
    config = RequestConfig(method="GET", url="http://example.com")
    conn = SSEConnection.__new__(SSEConnection)
    conn._config = config  # type: ignore[assignment]
    with pytest.raises(SSEParsingError, match="retry"):
        conn._parse_event("retry: abc\n\n")


def test_aiosonic_module_paths_work_with_the_package_name_changed() -> None:
    """aiosonic's test file with every ``aiosonic`` replaced by ``sonicsse`` still imports and runs."""
    from sonicsse import SSEClient as ClientFromPackage
    from sonicsse.exceptions import SSEParsingError as ParsingError
    from sonicsse.sse_client import SSEClient as Client
    from sonicsse.sse_client import SSEConnection as Connection
    from sonicsse.sse_config import RequestConfig as Config

    assert Client is ClientFromPackage
    conn = Connection.__new__(Connection)
    conn._config = Config(method="GET", url="http://example.com")  # type: ignore[assignment]
    with pytest.raises(ParsingError, match="retry"):
        conn._parse_event("retry: abc\n\n")
