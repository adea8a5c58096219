"""SSEClient(max_opening=...): at most so many streams opened at once, the others in order."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sonicsse import SSEClient
from sonicsse._gate import DEFAULT_MAX_OPENING, OpeningGate

from client_helpers import async_wait_until, collect, datas
from servers import HandlerServer, chunk, head


class HeldHeads:
    """A server that reads each request and answers only when the test lets it, counting how many
    requests wait for their answer at once."""

    def __init__(self) -> None:
        self.pending = 0
        self.most = 0
        self.requests = 0
        self.release = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        number = request.split(b" ")[1].rpartition(b"=")[2]
        self.requests += 1
        self.pending += 1
        self.most = max(self.most, self.pending)
        await self.release.wait()
        self.pending -= 1
        writer.write(head() + chunk(b"data: " + number + b"\n\n") + b"0\r\n\r\n")
        await writer.drain()


async def _open_all(client: SSEClient, server: HandlerServer, count: int) -> list[Any]:
    async def one(k: int) -> list[str]:
        async with client.connect(server.url(f"/sse?n={k}"), reconnect=False) as conn:
            return datas(await collect(conn))

    return [asyncio.ensure_future(one(k)) for k in range(count)]


@pytest.mark.parametrize(("limit", "most"), [(2, 2), (None, 6)])
async def test_at_most_max_opening_requests_wait_for_their_response_at_once(
    limit: int | None, most: int
) -> None:
    held = HeldHeads()
    async with HandlerServer(held.handle) as server, SSEClient(max_opening=limit) as client:
        tasks = await _open_all(client, server, 6)
        assert await async_wait_until(lambda: held.pending == most, 10)
        assert held.requests == most  # the others have not even connected
        held.release.set()
        results = await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert results == [[str(k)] for k in range(6)]
    assert held.most == most


async def test_a_connection_closed_while_it_waits_for_a_turn_sends_nothing() -> None:
    held = HeldHeads()
    async with HandlerServer(held.handle) as server, SSEClient(max_opening=1) as client:
        first = asyncio.ensure_future(client.connect(server.url("/sse?n=0"), reconnect=False))
        assert await async_wait_until(lambda: held.pending == 1, 10)
        before = set(client._live)
        second = asyncio.ensure_future(client.connect(server.url("/sse?n=1"), reconnect=False)._open())
        assert await async_wait_until(lambda: client._gate is not None and client._gate.waiting == 1, 10)
        (conn,) = set(client._live) - before
        await conn.close()
        opened = await asyncio.wait_for(second, 10)  # at once: it was only waiting for a turn
        assert opened.closed
        held.release.set()
        stream = await asyncio.wait_for(first, 10)
        assert datas(await collect(stream)) == ["0"]
        await stream.close()
    assert held.requests == 1


async def test_a_cancelled_opening_gives_its_turn_on() -> None:
    held = HeldHeads()
    async with HandlerServer(held.handle) as server, SSEClient(max_opening=1) as client:
        first = asyncio.ensure_future(client.connect(server.url("/sse?n=0"), reconnect=False)._open())
        assert await async_wait_until(lambda: held.pending == 1, 10)
        waiting = asyncio.ensure_future(client.connect(server.url("/sse?n=1"), reconnect=False)._open())
        third = asyncio.ensure_future(client.connect(server.url("/sse?n=2"), reconnect=False)._open())
        assert await async_wait_until(lambda: client._gate is not None and client._gate.waiting == 2, 10)
        waiting.cancel()
        first.cancel()  # the turn it held goes to the third, past the cancelled second
        await asyncio.gather(first, waiting, return_exceptions=True)
        assert await async_wait_until(lambda: held.requests == 2, 10)
        held.release.set()
        stream = await asyncio.wait_for(third, 10)
        assert datas(await collect(stream)) == ["2"]
        await stream.close()
    assert client._gate is not None and client._gate.busy == 0


async def test_the_gate_hands_turns_over_in_order_and_skips_abandoned_waiters() -> None:
    gate = OpeningGate(1)
    assert gate.try_enter() and not gate.try_enter()
    a, b, c = gate.wait(), gate.wait(), gate.wait()
    b.set_result(None)  # abandoned (close() resolves it with None)
    gate.leave()
    assert a.result() is True and not c.done() and gate.busy == 1
    gate.leave()  # a's turn ends: b is skipped, c gets it
    assert c.result() is True and gate.busy == 1
    late = gate.wait()
    late.cancel()
    gate.settle(late)  # cancelled before any hand-over: nothing to give back
    gate.leave()
    assert gate.busy == 0 and gate.try_enter()


async def test_a_turn_handed_to_a_waiter_cancelled_meanwhile_is_given_back() -> None:
    gate = OpeningGate(1)
    assert gate.try_enter()
    waiter = gate.wait()
    gate.leave()  # handed over...
    gate.settle(waiter)  # ...to an owner that will not use it
    assert gate.busy == 0


@pytest.mark.parametrize("limit", [0, -1, 1.5, True, "2"])
def test_max_opening_must_be_a_positive_int_or_none(limit: Any) -> None:
    with pytest.raises(ValueError, match="max_opening"):
        SSEClient(max_opening=limit)


def test_the_default_limit() -> None:
    assert SSEClient()._gate is not None and SSEClient()._gate.limit == DEFAULT_MAX_OPENING
