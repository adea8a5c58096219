"""Leak checks: after many reconnects and many open/close cycles, fds and tasks are back to baseline."""

from __future__ import annotations

import asyncio
import gc
import os
import sys
from collections.abc import Sequence
from typing import Any

import pytest

from sonicsse import SSEClient

from servers import CLOSE, STALL, Request, ScriptServer, chunk, head

CYCLES = 1000

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts /proc/self/fd")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def other_tasks() -> int:
    current = asyncio.current_task()
    return sum(1 for task in asyncio.all_tasks() if task is not current and not task.done())


async def settle(server: ScriptServer) -> None:
    """Wait until the server saw every client socket go away, so only the client's fds are counted."""
    for conn in server.conns:
        await asyncio.wait_for(conn.gone.wait(), 5)
    for _ in range(5):
        await asyncio.sleep(0)
    gc.collect()


def one_event_then_close(n: int, request: Request) -> Sequence[Any]:
    return [head(framing="close"), b"id: %d\ndata: event %d\n\n" % (n, n), CLOSE]


async def test_thousand_reconnect_cycles_leak_nothing() -> None:
    async with ScriptServer(one_event_then_close) as server:
        fds, tasks = open_fds(), other_tasks()
        seen = []
        async with (
            SSEClient() as client,
            client.connect(server.url(), retry_delay=0, max_retry_delay=0) as conn,
        ):
            async for event in conn:
                seen.append(int(event["id"]))
                if len(seen) == CYCLES:
                    break
            assert conn.stats.reconnects >= CYCLES - 1
        await settle(server)
        assert seen == list(range(CYCLES))  # every reconnect resumed with the next id: none lost, none twice
        assert server.requests[-1].headers["last-event-id"] == str(CYCLES - 2)
        assert open_fds() == fds
        assert other_tasks() == tasks


def endless(n: int, request: Request) -> Sequence[Any]:
    return [head(), chunk(b"data: hello\n\n"), STALL]


@pytest.mark.parametrize("shared_client", [True, False], ids=["one-client", "client-per-cycle"])
async def test_thousand_open_close_cycles_leak_nothing(shared_client: bool) -> None:
    cycles = CYCLES if shared_client else CYCLES // 4
    async with ScriptServer(endless) as server:
        fds, tasks = open_fds(), other_tasks()
        client = SSEClient()
        for _ in range(cycles):
            if not shared_client:
                client = SSEClient()
            conn = await client.connect(server.url())
            async for event in conn:
                assert event["data"] == "hello"
                break
            await conn.close()
            if not shared_client:
                await client.close()
        await client.close()
        await settle(server)
        assert len(server.requests) == cycles
        assert open_fds() == fds
        assert other_tasks() == tasks
