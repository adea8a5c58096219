"""SSEClient / SSEConnection against real loopback servers (asyncio and uvloop, both decoders)."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import socket
import struct
from typing import Any

import pytest

from sonicsse import SSEClient, SSEConnection
from sonicsse.exceptions import SSEConnectionError, SSEParsingError

from client_helpers import async_wait_until, collect, datas
from servers import (
    DROP,
    LAST_CHUNK,
    STALL,
    HandlerServer,
    Request,
    ScriptServer,
    chunk,
    head,
    sse_chunked,
    sse_close,
)

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.usefixtures("client_decoder"),  # every test on the compiled and on the pure hot path
]


HAS_PROC_FD = os.path.isdir("/proc/self/fd")


# -- basic streaming ----------------------------------------------------------------------------


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
async def test_line_endings(eol: bytes) -> None:
    body = (
        b"id: 1"
        + eol
        + b"event: greet"
        + eol
        + b"data: hello"
        + eol
        + eol
        + b"data: a"
        + eol
        + b"data: b"
        + eol
        + eol
    )
    async with ScriptServer([sse_chunked(body)]) as srv, SSEClient() as client:
        conn = await client.connect(srv.url(), reconnect=False)
        events = await collect(conn)
        await conn.close()
    assert events == [
        {"data": "hello", "event": "greet", "id": "1", "retry": None},
        {"data": "a\nb", "event": None, "id": None, "retry": None},
    ]


async def test_byte_by_byte() -> None:
    body = "id: 7\ndata: héllo wörld\n\n: comment\ndata: second\n\n".encode()
    steps: list[Any] = [head()]
    for i in range(len(body)):
        steps += [chunk(body[i : i + 1]), 0.001]
    steps.append(LAST_CHUNK)
    async with (
        ScriptServer([steps]) as srv,
        SSEClient() as client,
        client.connect(srv.url(), reconnect=False) as conn,
    ):
        events = await collect(conn)
    assert datas(events) == ["héllo wörld", "second"]
    assert events[0]["id"] == "7"


async def test_chunked_framing_split_anywhere_with_extensions_and_trailers() -> None:
    raw = b"a;ext=1\r\ndata: abc\n\r\n" + chunk(b"\ndata: second\n\n") + b"0\r\nX-Trailer: t\r\n\r\n"
    steps: list[Any] = [head()]
    for i in range(len(raw)):
        steps += [raw[i : i + 1], 0.001]
    async with ScriptServer([steps]) as srv, SSEClient() as client:
        conn = await client.connect(srv.url(), reconnect=False)
        assert datas(await collect(conn)) == ["abc", "second"]
        await conn.close()


async def test_broken_chunked_framing_is_a_stream_failure() -> None:
    async with ScriptServer([[head(), chunk(b"data: a\n\n"), b"zz\r\nxx\r\n"]]) as srv, SSEClient() as client:
        conn = await client.connect(srv.url(), reconnect=False)
        seen: list[str] = []
        with pytest.raises(SSEConnectionError, match="chunk"):
            async for event in conn:
                seen.append(event["data"])
        await conn.close()
    assert seen == ["a"]


async def test_bytes_received_before_a_connection_reset_are_delivered_first() -> None:
    # b arrives, then the peer resets the connection, all while the consumer is busy elsewhere: the
    # events of those bytes come first, the reset after them (StreamReader raised at once, losing b).
    sent = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(head() + chunk(b"data: a\n\n"))
        await sent.wait()
        writer.write(chunk(b"data: b\n\n"))
        await writer.drain()
        await asyncio.sleep(0.05)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # RST

    seen: list[str] = []
    async with HandlerServer(handle) as server, SSEClient() as client:
        conn = await client.connect(server.url(), reconnect=False)
        with pytest.raises(SSEConnectionError, match="connection lost"):
            async for event in conn:
                seen.append(event["data"])
                if event["data"] == "a":
                    sent.set()
                    await asyncio.sleep(0.3)  # a busy consumer: b and the reset arrive meanwhile
        await conn.close()
    assert seen == ["a", "b"]


async def test_request_headers_defaults_and_user_wins() -> None:
    async with (
        ScriptServer([sse_chunked(b"data: x\n\n")]) as srv,
        SSEClient() as client,
        client.connect(
            srv.url(), reconnect=False, headers={"accept": "text/event-stream; q=1", "X-A": "1"}
        ) as conn,
    ):
        await collect(conn)
    req = srv.requests[0]
    assert req.headers["accept"] == "text/event-stream; q=1"
    assert req.headers["cache-control"] == "no-cache"
    assert req.headers["x-a"] == "1"
    assert "last-event-id" not in req.headers


async def test_close_delimited_body() -> None:
    async with (
        ScriptServer([sse_close(b"data: one\n\n", b"data: two\n\n")]) as srv,
        SSEClient() as client,
        client.connect(srv.url(), reconnect=False) as conn,
    ):
        events = await collect(conn)
    assert datas(events) == ["one", "two"]


async def test_content_length_body() -> None:
    body = b"data: one\n\ndata: two\n\n"
    async with (
        ScriptServer([[head(framing="length", length=len(body)), body]]) as srv,
        SSEClient() as client,
        client.connect(srv.url(), reconnect=False) as conn,
    ):
        events = await collect(conn)
    assert datas(events) == ["one", "two"]


# -- reconnection -------------------------------------------------------------------------------


async def test_reconnect_sends_last_event_id_and_resumes() -> None:
    scripts = [
        sse_chunked(b"id: 1\ndata: first\n\n"),
        [*sse_chunked(b"id: 2\ndata: second\n\n", end=False), STALL],
    ]
    async with (
        ScriptServer(scripts) as srv,
        SSEClient() as client,
        client.connect(srv.url(), retry_delay=10) as conn,
    ):
        events = await collect(conn, 2)
        assert conn.last_event_id == "2"
    assert datas(events) == ["first", "second"]
    assert "last-event-id" not in srv.requests[0].headers
    assert srv.requests[1].headers["last-event-id"] == "1"


async def test_explicit_initial_and_cleared_last_event_id() -> None:
    scripts = [
        sse_chunked(b"data: a\n\n"),
        sse_chunked(b"id\ndata: b\n\n"),  # "id" with no value clears the last event id
        [*sse_chunked(b"data: c\n\n", end=False), STALL],
    ]
    async with (
        ScriptServer(scripts) as srv,
        SSEClient() as client,
        client.connect(srv.url(), retry_delay=10, last_event_id="42") as conn,
    ):
        events = await collect(conn, 3)
    assert datas(events) == ["a", "b", "c"]
    assert srv.requests[0].headers["last-event-id"] == "42"
    assert srv.requests[1].headers["last-event-id"] == "42"
    assert "last-event-id" not in srv.requests[2].headers


async def test_server_retry_wins_over_retry_delay() -> None:
    scripts = [sse_chunked(b"retry: 20\ndata: a\n\n"), [*sse_chunked(b"data: b\n\n", end=False), STALL]]
    async with (
        ScriptServer(scripts) as srv,
        SSEClient() as client,
        client.connect(srv.url(), retry_delay=60_000) as conn,
    ):
        events = await asyncio.wait_for(collect(conn, 2), 5)
        assert conn.retry == 20
    assert datas(events) == ["a", "b"]


async def test_retry_capped_by_max_retry_delay() -> None:
    scripts = [sse_chunked(b"retry: 86400000\ndata: a\n\n"), [*sse_chunked(b"data: b\n\n", end=False), STALL]]
    async with (
        ScriptServer(scripts) as srv,
        SSEClient() as client,
        client.connect(srv.url(), max_retry_delay=50) as conn,
    ):
        events = await asyncio.wait_for(collect(conn, 2), 5)
    assert datas(events) == ["a", "b"]


async def test_partial_event_discarded_on_drop() -> None:
    scripts = [
        [head(), chunk(b"data: a\n\ndata: partial"), 0.05, DROP],
        [*sse_chunked(b"data: b\n\n", end=False), STALL],
    ]
    async with (
        ScriptServer(scripts) as srv,
        SSEClient() as client,
        client.connect(srv.url(), retry_delay=10) as conn,
    ):
        events = await collect(conn, 2)
    assert datas(events) == ["a", "b"]


async def test_500_then_200_recovers() -> None:
    scripts = [
        [head(500, "text/plain", framing="length", length=4), b"oops"],
        [*sse_chunked(b"data: ok\n\n", end=False), STALL],
    ]
    async with (
        ScriptServer(scripts) as srv,
        SSEClient() as client,
        client.connect(srv.url(), retry_delay=10) as conn,
    ):
        events = await collect(conn, 1)
    assert datas(events) == ["ok"]
    assert len(srv.requests) == 2


async def test_404_raises_without_retry() -> None:
    async with ScriptServer([[head(404, "text/plain", framing="length", length=9), b"not here!"]]) as srv:
        async with SSEClient() as client:
            with pytest.raises(SSEConnectionError) as info:
                await client.connect(srv.url("/missing"), retry_delay=10)
    err = info.value
    assert err.status == 404 and err.method == "GET" and err.url == srv.url("/missing")
    message = str(err)
    assert "GET" in message and "/missing" in message and "404" in message and "not here!" in message
    assert len(srv.requests) == 1


async def test_429_retry_after_honoured() -> None:
    """The wait before the next attempt is the server's Retry-After (1 s), not the backoff from the
    retry delay (10 ms, so 0.1 to 0.2 s after one failure)."""
    scripts = [
        [head(429, "text/plain", [("Retry-After", "1")], framing="length", length=0)],
        [*sse_chunked(b"data: ok\n\n", end=False), STALL],
    ]
    waits: list[tuple[int, float]] = []

    def on_retry(attempt: int, delay: float, cause: object) -> None:
        waits.append((attempt, delay))

    async with ScriptServer(scripts) as srv, SSEClient() as client:
        async with client.connect(srv.url(), retry_delay=10, on_retry=on_retry) as conn:
            events = await collect(conn, 1)
    assert datas(events) == ["ok"]
    assert waits == [(2, 1.0)]
    assert len(srv.requests) == 2


async def test_wrong_content_type_raises() -> None:
    async with (
        ScriptServer([[head(200, "application/json", framing="length", length=2), b"{}"]]) as srv,
        SSEClient() as client,
    ):
        with pytest.raises(SSEConnectionError, match="content type"):
            await client.connect(srv.url())
    assert len(srv.requests) == 1


async def test_204_stops_without_reconnect() -> None:
    scripts = [sse_chunked(b"data: a\n\n"), [head(204, None, framing="none")]]
    async with (
        ScriptServer(scripts) as srv,
        SSEClient() as client,
        client.connect(srv.url(), retry_delay=10) as conn,
    ):
        events = await collect(conn)
    assert datas(events) == ["a"]
    assert len(srv.requests) == 2


async def test_204_at_connect_ends_iteration() -> None:
    async with ScriptServer([[head(204, None, framing="none")]]) as srv, SSEClient() as client:
        conn = await client.connect(srv.url())
        assert await collect(conn) == []
        assert conn.status == 204
        await conn.close()


async def test_no_reconnect_stream_end_ends_iteration() -> None:
    async with ScriptServer([sse_chunked(b"data: a\n\n")]) as srv, SSEClient() as client:
        conn = await client.connect(srv.url(), reconnect=False)
        assert datas(await collect(conn)) == ["a"]
        await conn.close()
    assert len(srv.requests) == 1


async def test_first_connection_failure_without_reconnect_raises() -> None:
    async with ScriptServer([[DROP]]) as srv, SSEClient() as client:
        with pytest.raises(SSEConnectionError) as info:
            await client.connect(srv.url(), reconnect=False)
    assert info.value.url == srv.url()


async def test_post_json_body_resent_when_resumable() -> None:
    scripts = [
        sse_chunked(b"id: 1\ndata: first\n\n"),
        [*sse_chunked(b"id: 2\ndata: second\n\n", end=False), STALL],
    ]
    async with ScriptServer(scripts) as srv, SSEClient() as client:
        conn = await client.connect(srv.url(), method="POST", json={"q": "hi"}, retry_delay=10)
        events = await collect(conn, 2)
        await conn.close()
    assert datas(events) == ["first", "second"]
    assert [r.method for r in srv.requests] == ["POST", "POST"]
    assert [json.loads(r.body) for r in srv.requests] == [{"q": "hi"}, {"q": "hi"}]
    assert srv.requests[1].headers["last-event-id"] == "1"


async def test_post_without_id_is_not_resent() -> None:
    scripts = [sse_chunked(b"data: answer\n\ndata: [DONE]\n\n")]
    async with ScriptServer(scripts) as srv, SSEClient() as client:
        conn = await client.connect(srv.url(), method="POST", json={"q": "hi"}, retry_delay=10)
        events = await collect(conn)
        await conn.close()
    assert datas(events) == ["answer", "[DONE]"]
    assert len(srv.requests) == 1


async def test_post_resume_unsafe_opt_in() -> None:
    scripts = [sse_chunked(b"data: a\n\n"), [*sse_chunked(b"data: b\n\n", end=False), STALL]]
    async with ScriptServer(scripts) as srv, SSEClient() as client:
        conn = await client.connect(srv.url(), method="POST", data="body", retry_delay=10, resume_unsafe=True)
        events = await collect(conn, 2)
        await conn.close()
    assert datas(events) == ["a", "b"]
    assert [r.body for r in srv.requests] == [b"body", b"body"]


async def test_post_failure_without_resume_raises() -> None:
    scripts = [[head(), chunk(b"data: a\n\n"), DROP]]
    async with ScriptServer(scripts) as srv, SSEClient() as client:
        conn = await client.connect(srv.url(), method="POST", json={}, retry_delay=10)
        events: list[dict[str, Any]] = []
        with pytest.raises(SSEConnectionError):
            async for event in conn:
                events.append(dict(event))
        await conn.close()
    assert datas(events) == ["a"]
    assert len(srv.requests) == 1


# -- timeouts -----------------------------------------------------------------------------------


async def test_stalled_stream_read_timeout_reconnects() -> None:
    scripts = [
        [*sse_chunked(b"id: 1\ndata: a\n\n", end=False), STALL],
        [*sse_chunked(b"data: b\n\n", end=False), STALL],
    ]
    async with (
        ScriptServer(scripts) as srv,
        SSEClient() as client,
        client.connect(srv.url(), retry_delay=10, read_timeout=0.3) as conn,
    ):
        events = await asyncio.wait_for(collect(conn, 2), 5)
    assert datas(events) == ["a", "b"]
    assert srv.requests[1].headers["last-event-id"] == "1"


async def test_stalled_stream_read_timeout_raises_without_reconnect() -> None:
    async with (
        ScriptServer([[*sse_chunked(b"data: a\n\n", end=False), STALL]]) as srv,
        SSEClient() as client,
        client.connect(srv.url(), reconnect=False, read_timeout=0.2) as conn,
    ):
        events: list[dict[str, Any]] = []
        with pytest.raises(SSEConnectionError, match="read_timeout"):
            async for event in conn:
                events.append(dict(event))
    assert datas(events) == ["a"]


async def test_streams_with_a_timeout_share_the_loops_timer_and_leave_it_when_closed() -> None:
    from sonicsse._watchdog import watchdog

    dog = watchdog(asyncio.get_running_loop())
    scripts = [[*sse_chunked(b"data: a\n\n", end=False), STALL] for _ in range(50)]
    async with ScriptServer(scripts) as srv, SSEClient() as client:
        conns = [await client.connect(srv.url(), reconnect=False, read_timeout=60) for _ in range(50)]
        assert len(dog) == 50
        assert len(dog._handles) <= 3  # a tick is 0.6 s: fifty streams opened together share it
        for conn in conns[:25]:
            await conn.close()
        assert len(dog) == 25
        for conn in conns[25:]:
            await conn.close()
    assert len(dog) == 0 and not dog._handles


async def test_heartbeats_keep_read_timeout_but_not_event_timeout() -> None:
    beats: list[Any] = []
    for _ in range(20):
        beats += [chunk(b": ping\n\n"), 0.05]
    scripts = [[head(), chunk(b"data: a\n\n"), *beats, STALL]]
    comments: list[str] = []
    async with (
        ScriptServer(scripts) as srv,
        SSEClient() as client,
        client.connect(
            srv.url(), reconnect=False, read_timeout=0.3, event_timeout=0.4, on_comment=comments.append
        ) as conn,
    ):
        with pytest.raises(SSEConnectionError, match="event_timeout"):
            await collect(conn)
    assert "ping" in comments


async def test_on_comment_error_is_raised_after_the_events_before_it() -> None:
    """A failing comment callback must not lose the events of the same read, nor move the resume point
    past undelivered events."""
    body = b"id: 1\ndata: a\n\n: boom\nid: 2\ndata: b\n\n"

    def on_comment(text: str) -> None:
        raise ValueError(f"callback failed on {text!r}")

    async with (
        ScriptServer([sse_chunked(body)]) as srv,
        SSEClient() as client,
        client.connect(srv.url(), reconnect=False, on_comment=on_comment) as conn,
    ):
        events: list[dict[str, Any]] = []
        with pytest.raises(ValueError, match="boom"):
            async for event in conn:
                events.append(dict(event))
    assert [e["id"] for e in events] == ["1", "2"]
    assert conn.last_event_id == "2"


async def test_async_on_comment_is_awaited_in_order() -> None:
    seen: list[str] = []

    async def on_comment(text: str) -> None:
        await asyncio.sleep(0)
        seen.append(text)

    body = b": one\ndata: a\n\n: two\n: three\ndata: b\n\n"
    async with (
        ScriptServer([sse_chunked(body)]) as srv,
        SSEClient() as client,
        client.connect(srv.url(), reconnect=False, on_comment=on_comment) as conn,
    ):
        assert datas(await collect(conn)) == ["a", "b"]
    assert seen == ["one", "two", "three"]


async def test_first_event_timeout() -> None:
    async with (
        ScriptServer([[head(), STALL]]) as srv,
        SSEClient() as client,
        client.connect(srv.url(), reconnect=False, first_event_timeout=0.2) as conn,
    ):
        with pytest.raises(SSEConnectionError, match="first_event_timeout"):
            await collect(conn)


async def test_first_event_timeout_alone_is_quiet_once_an_event_came() -> None:
    """With only first_event_timeout set, the timer finds no deadline after the first event: it stops,
    and the stream waits for more events without an error in the loop's callbacks."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: errors.append(context))
    try:
        async with (
            ScriptServer(
                [[*sse_chunked(b"data: a\n\n", end=False), 0.3, chunk(b"data: b\n\n"), LAST_CHUNK]]
            ) as srv,
            SSEClient() as client,
            client.connect(srv.url(), reconnect=False, read_timeout=None, first_event_timeout=0.05) as conn,
        ):
            assert datas(await collect(conn)) == ["a", "b"]  # the 0.3 s gap is past the timer's first check
    finally:
        loop.set_exception_handler(None)
    assert errors == []


# -- shutdown -----------------------------------------------------------------------------------


async def test_cancel_closes_the_socket() -> None:
    async with ScriptServer([[*sse_chunked(b"data: a\n\n", end=False), STALL]]) as srv, SSEClient() as client:
        conn = await client.connect(srv.url())
        got = asyncio.Event()

        async def consume() -> None:
            async for _ in conn:
                got.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(got.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # the stream stalls and nothing else ends it: the socket goes because of the cancellation
        await asyncio.wait_for(srv.conns[0].gone.wait(), 5)
        await conn.close()


async def test_close_from_other_task_ends_iteration() -> None:
    async with ScriptServer([[*sse_chunked(b"data: a\n\n", end=False), STALL]]) as srv, SSEClient() as client:
        conn = await client.connect(srv.url())
        got = asyncio.Event()
        seen: list[str] = []

        async def consume() -> None:
            async for event in conn:
                seen.append(event["data"])
                got.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(got.wait(), 5)
        await conn.close()
        await asyncio.wait_for(task, 5)
        await asyncio.wait_for(srv.conns[0].gone.wait(), 5)
    assert seen == ["a"]
    assert len(srv.requests) == 1


async def test_break_closes_socket() -> None:
    async with (
        ScriptServer([[*sse_chunked(b"data: a\n\n", end=False), STALL]]) as srv,
        SSEClient() as client,
        client.connect(srv.url()) as conn,
    ):
        async for _ in conn:
            break
        await asyncio.wait_for(srv.conns[0].gone.wait(), 5)


async def test_cancel_during_backoff_propagates() -> None:
    waiting = asyncio.Event()
    async with ScriptServer([[DROP]]) as srv, SSEClient() as client:
        opening = client.connect(srv.url(), retry_delay=10_000, on_retry=lambda *_: waiting.set())
        task = asyncio.create_task(opening.__aenter__())
        await asyncio.wait_for(waiting.wait(), 5)  # the first attempt failed: the 10 s wait begins
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


# -- aiosonic compatibility -----------------------------------------------------------------------


def test_parse_event_compat() -> None:
    from aiosonic.sse_config import RequestConfig

    conn = SSEConnection.__new__(SSEConnection)
    conn._config = RequestConfig(method="GET", url="http://example.com")  # type: ignore[assignment]
    with pytest.raises(SSEParsingError, match="retry"):
        conn._parse_event("retry: abc\n\n")
    assert conn._parse_event("event: x\ndata: y")["data"] == "y"


async def test_non_sse_endpoint_raises() -> None:
    async with ScriptServer([[head(200, "text/html", framing="length", length=5), b"hello"]]) as srv:
        client = SSEClient()
        with pytest.raises(SSEConnectionError):
            await client.connect(srv.url())
        await client.close()


async def test_close_during_backoff_ends_iteration_at_once() -> None:
    waiting = asyncio.Event()
    async with ScriptServer([sse_chunked(b"data: a\n\n")]) as srv, SSEClient() as client:
        conn = await client.connect(srv.url(), retry_delay=60_000, on_retry=lambda *_: waiting.set())
        seen: list[str] = []

        async def consume() -> None:
            async for event in conn:
                seen.append(event["data"])

        task = asyncio.create_task(consume())
        await asyncio.wait_for(waiting.wait(), 5)  # the stream ended: the client now waits 60 s
        await conn.close()
        await asyncio.wait_for(task, 10)  # well before the 60 s
    assert seen == ["a"]
    assert len(srv.requests) == 1


async def test_no_leaked_sockets_or_tasks() -> None:
    if not HAS_PROC_FD:
        pytest.skip("needs /proc/self/fd")
    scripts = [[*sse_chunked(b"id: 1\ndata: a\n\n", end=False), STALL]]
    async with ScriptServer(scripts) as srv:
        async with SSEClient() as client:  # warm-up: thread pools, resolver
            conn = await client.connect(srv.url())
            await collect(conn, 1)
            await conn.close()
        gc.collect()
        await asyncio.sleep(0.05)
        before = len(os.listdir("/proc/self/fd"))
        async with SSEClient() as client:
            for _ in range(5):
                conn = await client.connect(srv.url())  # break out
                await collect(conn, 1)
                await conn.close()
                async with client.connect(srv.url()) as conn:  # leave the block mid-stream
                    await collect(conn, 1)
                conn = await client.connect(srv.url())  # cancelled consumer, waiting for more
                got = asyncio.Event()
                task = asyncio.create_task(consume_until_cancelled(conn, got))
                await asyncio.wait_for(got.wait(), 5)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                await conn.close()
        await asyncio.wait_for(asyncio.gather(*(c.gone.wait() for c in srv.conns)), 5)

        def leftover() -> list[asyncio.Task[Any]]:
            return [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]

        def settled() -> bool:
            gc.collect()
            return len(os.listdir("/proc/self/fd")) <= before and not leftover()

        await async_wait_until(settled, timeout=5)  # the transports close on a later turn of the loop
        after = len(os.listdir("/proc/self/fd"))
        assert after <= before, (before, after)
        assert leftover() == []


async def consume_until_cancelled(conn: SSEConnection, got: asyncio.Event) -> None:
    async for _ in conn:
        got.set()


async def test_streams_that_deliver_then_end_wait_only_the_base_delay() -> None:
    # 10 streams that each deliver one event and end: with backoff (doubling from 40 ms) this would
    # take over 40 s; with the base delay it takes about 0.4 s.
    def script(n: int, req: Request) -> list[Any]:
        return sse_chunked(b"data: %d\n\n" % n)

    async with (
        ScriptServer(script) as srv,
        SSEClient() as client,
        client.connect(srv.url(), retry_delay=40) as conn,
    ):
        events = await asyncio.wait_for(collect(conn, 10), 10)
    assert datas(events) == [str(i) for i in range(10)]


async def test_post_retried_after_503_but_not_after_500() -> None:
    busy = [head(503, "text/plain", framing="length", length=0)]
    scripts = [busy, [*sse_chunked(b"data: ok\n\n", end=False), STALL]]
    async with (
        ScriptServer(scripts) as srv,
        SSEClient() as client,
        client.connect(srv.url(), method="POST", json={"n": 1}, retry_delay=10) as conn,
    ):
        assert datas(await collect(conn, 1)) == ["ok"]
    assert [r.body for r in srv.requests] == [b'{"n": 1}', b'{"n": 1}']

    failed = [head(500, "text/plain", framing="length", length=4), b"boom"]
    async with ScriptServer([failed]) as srv, SSEClient() as client:
        with pytest.raises(SSEConnectionError) as info:
            await client.connect(srv.url(), method="POST", json={"n": 1}, retry_delay=10)
    assert info.value.status == 500 and "boom" in str(info.value)
    assert len(srv.requests) == 1


async def test_keep_connection_does_not_pool_an_unfinished_body() -> None:
    scripts = [[*sse_chunked(b"data: a\n\ndata: b\n\n", end=False), STALL], sse_chunked(b"data: c\n\n")]
    async with ScriptServer(scripts) as srv, SSEClient() as client:
        async with client.connect(srv.url(), reconnect=False, keep_connection=True) as conn:
            await collect(conn, 1)
        async with client.connect(srv.url(), reconnect=False, keep_connection=True) as conn:
            assert datas(await collect(conn)) == ["c"]
    assert [r.conn_id for r in srv.requests] == [0, 1]


async def test_backpressure_reads_only_when_the_consumer_asks() -> None:
    written = 0
    blob = b"data: " + b"z" * 65530 + b"\n\n"

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal written
        await reader.readuntil(b"\r\n\r\n")
        writer.write(head(framing="close"))
        try:
            for _ in range(2000):  # 128 MiB if nobody pushed back
                writer.write(blob)
                await writer.drain()
                written += len(blob)
        except ConnectionError:
            pass
        finally:
            writer.transport.abort()

    async with HandlerServer(handle) as server, SSEClient() as client:
        conn = await client.connect(server.url(), reconnect=False)
        events = conn.__aiter__()
        assert len((await events.__anext__())["data"]) == 65530
        await asyncio.sleep(0.3)  # a slow consumer: the server must be blocked by TCP flow control
        assert 0 < written < 32 << 20
        assert len((await events.__anext__())["data"]) == 65530  # the stream is still alive
        await events.aclose()
        await conn.close()


async def test_never_answering_server_bounded_by_read_timeout() -> None:
    async with ScriptServer([[STALL]]) as srv, SSEClient() as client:
        with pytest.raises(SSEConnectionError) as info:
            await asyncio.wait_for(client.connect(srv.url(), reconnect=False, read_timeout=0.2), 10)
    assert "sent no response in time" in str(info.value) and "GET" in str(info.value)
    assert type(info.value.__cause__).__name__ == "ReadTimeout"  # the original, chained


async def test_close_while_waiting_for_the_response_head_ends_at_once() -> None:
    """close() from another task while the request waits for the status line aborts the request
    (aiosonic's own status-line timeout is 30 s and must not be what ends it)."""
    async with ScriptServer([[STALL]]) as srv, SSEClient() as client:
        conn_task = asyncio.ensure_future(client.connect(srv.url(), read_timeout=60))
        await srv.wait_requests(1)
        await client.close()  # closes the connection being opened
        conn = await asyncio.wait_for(conn_task, 5)
        assert conn.closed
        assert await asyncio.wait_for(collect(conn), 5) == []
        await asyncio.wait_for(srv.conns[0].gone.wait(), 5)

    scripts = [sse_chunked(b"id: 1\ndata: a\n\n"), [STALL]]
    async with ScriptServer(scripts) as srv, SSEClient() as client:
        conn = await client.connect(srv.url(), retry_delay=0, read_timeout=60)
        task = asyncio.create_task(collect(conn))
        await srv.wait_requests(2)  # the reconnect is waiting for its response head
        await conn.close()
        assert datas(await asyncio.wait_for(task, 5)) == ["a"]
        await asyncio.wait_for(srv.conns[-1].gone.wait(), 5)


async def test_restart_while_waiting_to_reconnect_cuts_the_wait_short_once() -> None:
    scripts = [sse_chunked(b"id: 1\ndata: a\n\n"), sse_chunked(b"id: 2\ndata: b\n\n")]
    scripts.append([*sse_chunked(b"id: 3\ndata: c\n\n", end=False), STALL])
    delays: list[float] = []
    second_wait = asyncio.Event()
    async with ScriptServer(scripts) as srv, SSEClient() as client:

        def on_retry(attempt: int, delay: float, cause: object) -> None:
            delays.append(delay)
            if len(delays) == 1:
                asyncio.get_running_loop().call_soon(conn.restart)
            else:
                second_wait.set()

        # The first connection succeeds at once: on_retry is called for the reconnects only.
        conn = await client.connect(srv.url(), retry_delay=60_000, max_retry_delay=60_000, on_retry=on_retry)
        task = asyncio.create_task(collect(conn))
        await srv.wait_requests(2)  # without restart() this would wait 60 s
        # The second stream ended too: its reconnect waits the full delay again (restart() was a
        # one-off), so no third request arrives.
        await asyncio.wait_for(second_wait.wait(), 5)
        await asyncio.sleep(0.05)
        assert len(srv.requests) == 2
        await conn.close()
        assert datas(await asyncio.wait_for(task, 5)) == ["a", "b"]
    assert delays == [60.0, 60.0]


async def test_giving_up_chains_the_last_attempts_error() -> None:
    failed = [head(500, "text/plain", framing="length", length=4), b"oops"]
    async with ScriptServer([failed]) as srv, SSEClient() as client:
        with pytest.raises(SSEConnectionError) as info:
            await client.connect(srv.url(), retry_delay=1, max_retry_delay=5, max_retries=2)
    message = str(info.value)
    assert "gave up after 3 failed attempts" in message and "500 Internal Server Error" in message
    cause = info.value.__cause__
    assert isinstance(cause, SSEConnectionError) and cause.status == 500
    assert len(srv.requests) == 3


async def test_cancelled_request_on_a_kept_alive_connection_closes_its_socket() -> None:
    """aiosonic returned such a connection to its pool with the socket open."""
    scripts = [sse_chunked(b"data: a\n\n"), [STALL]]
    async with ScriptServer(scripts) as srv, SSEClient() as client:
        async with client.connect(srv.url(), reconnect=False, keep_connection=True) as conn:
            assert datas(await collect(conn)) == ["a"]  # the body ended: the connection is pooled
        task = asyncio.ensure_future(client.connect(srv.url(), reconnect=False, keep_connection=True))
        await srv.wait_requests(2)
        assert srv.requests[1].conn_id == 0  # sent over the pooled connection
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(srv.conns[0].gone.wait(), 5)


async def test_a_bad_line_in_a_later_read_comes_after_the_events_before_it_and_calls_on_error() -> None:
    # Each read is decoded on the steady-state path (no coroutine per read); the error it finds is
    # handed to the full path, which calls the hook and raises after delivering what came before.
    errors: list[BaseException] = []
    steps = [head(), chunk(b"data: a\n\n"), 0.02, chunk(b"data: b\n\n"), 0.02, chunk(b"x" * 2048), STALL]
    async with ScriptServer([steps]) as srv, SSEClient() as client:
        conn = await client.connect(srv.url(), reconnect=False, max_line_size=1024, on_error=errors.append)
        seen: list[str] = []
        with pytest.raises(SSEParsingError, match="max_line_size") as info:
            async for event in conn:
                seen.append(event["data"])
        await conn.close()
    assert seen == ["a", "b"]
    assert errors == [info.value] and info.value.url == srv.url()


async def test_close_in_the_middle_of_a_read_stops_the_iteration_at_once() -> None:
    steps = [head(), chunk(b"data: a\n\ndata: b\n\ndata: c\n\n"), STALL]
    async with ScriptServer([steps]) as srv, SSEClient() as client:
        conn = await client.connect(srv.url(), reconnect=False)
        seen: list[str] = []
        async for event in conn:
            seen.append(event["data"])
            await conn.close()
    assert seen == ["a"]


async def test_two_consumers_waiting_at_once_are_both_woken() -> None:
    # Two iterators (or anext() from two tasks) wait on one stream: each must wake when bytes arrive
    # or the connection closes, not only the one that waited last.
    steps = [head(), chunk(b"data: a\n\n"), 0.2, chunk(b"data: b\n\n"), STALL]
    async with ScriptServer([steps]) as srv, SSEClient() as client:
        conn = await client.connect(srv.url(), reconnect=False)
        assert (await anext(aiter(conn)))["data"] == "a"
        first = asyncio.ensure_future(anext(aiter(conn)))
        await asyncio.sleep(0.02)
        second = asyncio.ensure_future(anext(aiter(conn)))
        done, _ = await asyncio.wait({first, second}, timeout=5, return_when=asyncio.FIRST_COMPLETED)
        assert [task.result()["data"] for task in done] == ["b"]
        await conn.close()
        done, pending = await asyncio.wait({first, second}, timeout=5)
        assert not pending
        assert sorted(type(task.exception()).__name__ for task in done) == ["NoneType", "StopAsyncIteration"]
