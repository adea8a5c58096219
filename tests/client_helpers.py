"""Helpers for the client tests: drain a connection, pick out the data."""

from __future__ import annotations

from typing import Any

from sonicsse import SSEConnection


async def collect(conn: SSEConnection, limit: int | None = None) -> list[dict[str, Any]]:
    """The events of ``conn`` (copied), until it ends or ``limit`` were read."""
    events: list[dict[str, Any]] = []
    async for event in conn:
        events.append(dict(event))
        if limit is not None and len(events) >= limit:
            break
    return events


def datas(events: list[dict[str, Any]]) -> list[str]:
    return [e["data"] for e in events]
