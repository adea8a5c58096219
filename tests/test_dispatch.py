"""``SSEConnection.dispatch(handler)``: events handed to a callback from the event loop, with the semantics
of ``async for`` (reconnection, timeouts, sentinels, in-band errors, checkpoints, errors) and backpressure
for a handler that awaits. Real loopback servers; both implementations of the hot path."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from sonicsse import FileCheckpoint, SSEClient
from sonicsse.exceptions import SSEConnectionError, SSEServerError

from client_helpers import collect, datas
from servers import DROP, LAST_CHUNK, STALL, ScriptServer, chunk, sse_chunked

pytestmark = pytest.mark.usefixtures("client_decoder")


def numbered(first: int, last: int) -> bytes:
    return b"".join(b"id: %d\ndata: %d\n\n" % (i, i) for i in range(first, last + 1))


async def test_events_in_order_across_reads_and_a_reconnect() -> None:
    body = numbered(1, 5)
    scripts = [
        [*sse_chunked(body[:20], end=False), 0.05, chunk(body[20:]), DROP],
        sse_chunked(numbered(6, 8)),
    ]
    seen: list[str] = []
    async with ScriptServer(scripts) as srv, SSEClient() as client:
        async with client.connect(srv.url(), retry_delay=1) as conn:

            def handle(event: dict[str, Any]) -> None:
                seen.append(event["data"])
                if event["data"] == "8":
                    asyncio.get_running_loop().call_soon(asyncio.ensure_future, conn.close())

            await asyncio.wait_for(conn.dispatch(handle), 5)
        assert srv.requests[1].headers.get("last-event-id") == "5"
    assert seen == [str(i) for i in range(1, 9)]


async def test_batches_are_each_reads_events() -> None:
    batches: list[list[str]] = []
    scripts = [[*sse_chunked(numbered(1, 3), end=False), 0.05, chunk(numbered(4, 4)), LAST_CHUNK]]
    async with ScriptServer(scripts) as srv, SSEClient() as client:
        async with client.connect(srv.url(), reconnect=False) as conn:
            await asyncio.wait_for(conn.dispatch(lambda batch: batches.append(datas(batch)), batches=True), 5)
    assert batches == [["1", "2", "3"], ["4"]]


async def test_a_handler_that_raises_ends_the_dispatch_and_leaves_the_rest_to_the_next_iteration() -> None:
    async with (
        ScriptServer([sse_chunked(numbered(1, 4))]) as srv,
        SSEClient() as client,
        client.connect(srv.url(), reconnect=False) as conn,
    ):

        def handle(event: dict[str, Any]) -> None:
            if event["data"] == "2":
                raise KeyError("boom")

        with pytest.raises(KeyError, match="boom"):
            await asyncio.wait_for(conn.dispatch(handle), 5)
        assert datas(await collect(conn)) == ["3", "4"]  # as after leaving an async for mid-batch


async def test_an_awaiting_handler_holds_the_stream_back_and_loses_nothing() -> None:
    release = asyncio.Event()
    seen: list[str] = []
    scripts = [[*sse_chunked(numbered(1, 2), end=False), 0.05, chunk(numbered(3, 40)), LAST_CHUNK]]
    async with ScriptServer(scripts) as srv, SSEClient() as client:
        async with client.connect(srv.url(), reconnect=False) as conn:

            async def handle(event: dict[str, Any]) -> None:
                seen.append(event["data"])
                if event["data"] == "1":
                    await release.wait()

            task = asyncio.create_task(conn.dispatch(handle))
            await asyncio.sleep(0.2)  # the rest of the stream has arrived by now
            assert seen == ["1"]  # nothing is handed over while the handler awaits
            release.set()
            await asyncio.wait_for(task, 5)
    assert seen == [str(i) for i in range(1, 41)]


async def test_the_end_sentinel_ends_the_dispatch_cleanly() -> None:
    seen: list[str] = []
    body = b"data: a\n\ndata: [DONE]\n\ndata: never\n\n"
    async with (
        ScriptServer([[*sse_chunked(body, end=False), STALL]]) as srv,
        SSEClient() as client,
        client.connect(srv.url(), done="[DONE]") as conn,
    ):
        await asyncio.wait_for(conn.dispatch(lambda event: seen.append(event["data"])), 5)
    assert seen == ["a"]


async def test_an_in_band_error_is_raised_after_the_events_before_it() -> None:
    seen: list[str] = []
    body = b'data: a\n\nevent: error\ndata: {"error": {"type": "overloaded_error", "message": "busy"}}\n\n'
    async with (
        ScriptServer([[*sse_chunked(body, end=False), STALL]]) as srv,
        SSEClient() as client,
        client.connect(srv.url(), error_event="error") as conn,
    ):
        with pytest.raises(SSEServerError) as caught:
            await asyncio.wait_for(conn.dispatch(lambda event: seen.append(event["data"])), 5)
    assert seen == ["a"] and caught.value.retryable


async def test_a_stalled_stream_times_out_and_resumes() -> None:
    seen: list[str] = []
    scripts = [[*sse_chunked(numbered(1, 1), end=False), STALL], sse_chunked(numbered(2, 2))]
    async with ScriptServer(scripts) as srv, SSEClient() as client:
        async with client.connect(srv.url(), read_timeout=0.2, retry_delay=1) as conn:

            def handle(event: dict[str, Any]) -> None:
                seen.append(event["data"])
                if len(seen) == 2:
                    asyncio.get_running_loop().call_soon(asyncio.ensure_future, conn.close())

            await asyncio.wait_for(conn.dispatch(handle), 5)
        assert srv.requests[1].headers.get("last-event-id") == "1"
    assert seen == ["1", "2"]


async def test_close_from_another_task_ends_the_dispatch() -> None:
    async with (
        ScriptServer([[*sse_chunked(numbered(1, 1), end=False), STALL]]) as srv,
        SSEClient() as client,
        client.connect(srv.url()) as conn,
    ):
        first = asyncio.Event()
        task = asyncio.create_task(conn.dispatch(lambda event: first.set()))
        await asyncio.wait_for(first.wait(), 5)
        await conn.close()
        await asyncio.wait_for(task, 5)  # returns, as async for ends
        await asyncio.wait_for(srv.conns[-1].gone.wait(), 5)


async def test_a_failure_that_cannot_be_retried_is_raised() -> None:
    """A POST stream without event ids that drops cannot be resumed: as with async for, it raises."""
    async with ScriptServer([[*sse_chunked(b"data: 1\n\n", end=False), DROP]]) as srv, SSEClient() as client:
        async with client.connect(srv.url(), method="POST", json={}) as conn:
            seen: list[str] = []
            with pytest.raises(SSEConnectionError, match="stream failed"):
                await asyncio.wait_for(conn.dispatch(lambda event: seen.append(event["data"])), 5)
    assert seen == ["1"] and len(srv.requests) == 1


async def test_checkpoints_are_saved_as_with_async_for(tmp_path: Path) -> None:
    store = FileCheckpoint(tmp_path / "id")
    async with ScriptServer([sse_chunked(numbered(1, 3))]) as srv, SSEClient() as client:
        async with client.connect(srv.url(), reconnect=False, checkpoint=store) as conn:
            seen: list[str] = []
            await asyncio.wait_for(conn.dispatch(lambda event: seen.append(event["data"])), 5)
    assert seen == ["1", "2", "3"]
    assert store.load() == "3"
