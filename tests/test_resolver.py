"""SharedResolver: IP addresses answered at once, concurrent lookups of one name shared."""

from __future__ import annotations

import asyncio
import gc
import socket
from typing import Any

import pytest

from sonicsse._resolver import SharedResolver


class CountingResolver:
    """An aiosonic-style resolver that counts its lookups; each takes ``delay`` seconds."""

    def __init__(self, delay: float = 0.01, error: BaseException | None = None) -> None:
        self.calls: list[tuple[str, int, int]] = []
        self.delay = delay
        self.error = error
        self.closed = False

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[dict[str, Any]]:
        self.calls.append((host, port, family))
        await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        info = {"hostname": host, "host": "10.0.0.1", "port": port, "family": family, "proto": 6, "flags": 0}
        return [info]

    async def close(self) -> None:
        self.closed = True


async def test_an_ipv4_address_is_answered_without_a_lookup() -> None:
    base = CountingResolver()
    info = await SharedResolver(base).resolve("127.0.0.1", 8080)
    assert base.calls == []
    assert info == [
        {
            "hostname": "127.0.0.1",
            "host": "127.0.0.1",
            "port": 8080,
            "family": socket.AF_INET,
            "proto": socket.IPPROTO_TCP,
            "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
        }
    ]


async def test_an_ipv6_address_is_answered_when_ipv6_is_asked_for() -> None:
    base = CountingResolver()
    resolver = SharedResolver(base)
    info = await resolver.resolve("::1", 443, socket.AF_INET6)
    assert base.calls == [] and info[0]["family"] == socket.AF_INET6 and info[0]["host"] == "::1"
    # aiosonic asks for IPv4: the wrapped resolver decides, as it would without SharedResolver
    await resolver.resolve("::1", 443, socket.AF_INET)
    await resolver.resolve("fe80::1%lo", 443, socket.AF_INET6)  # scoped: needs the system resolver
    assert base.calls == [("::1", 443, socket.AF_INET), ("fe80::1%lo", 443, socket.AF_INET6)]


async def test_concurrent_lookups_of_one_name_share_one() -> None:
    base = CountingResolver()
    resolver = SharedResolver(base)
    results = await asyncio.gather(*(resolver.resolve("example.test", 80) for _ in range(100)))
    assert base.calls == [("example.test", 80, socket.AF_UNSPEC)]
    assert all(r == results[0] for r in results) and results[0][0]["host"] == "10.0.0.1"
    # Other ports or names are other lookups; a finished lookup is not kept (aiosonic caches results).
    await asyncio.gather(resolver.resolve("example.test", 81), resolver.resolve("other.test", 80))
    await resolver.resolve("example.test", 80)
    assert len(base.calls) == 4


async def test_a_failed_lookup_fails_every_waiter_and_is_retried_next_time() -> None:
    base = CountingResolver(error=socket.gaierror(socket.EAI_NONAME, "Name or service not known"))
    resolver = SharedResolver(base)
    lookups = (resolver.resolve("nowhere.test", 80) for _ in range(5))
    results = await asyncio.gather(*lookups, return_exceptions=True)
    assert all(isinstance(r, socket.gaierror) for r in results)
    assert len(base.calls) == 1
    with pytest.raises(socket.gaierror):
        await resolver.resolve("nowhere.test", 80)
    assert len(base.calls) == 2


async def test_one_waiter_giving_up_does_not_cancel_the_others() -> None:
    base = CountingResolver(delay=0.05)
    resolver = SharedResolver(base)
    impatient = asyncio.ensure_future(resolver.resolve("example.test", 80))
    patient = asyncio.ensure_future(resolver.resolve("example.test", 80))
    await asyncio.sleep(0.01)
    impatient.cancel()
    assert (await patient)[0]["host"] == "10.0.0.1"
    assert impatient.cancelled() and len(base.calls) == 1


async def test_a_failure_nobody_waits_for_any_more_is_not_reported_as_unretrieved(
    caplog: pytest.LogCaptureFixture,
) -> None:
    base = CountingResolver(delay=0.02, error=OSError("resolver down"))
    resolver = SharedResolver(base)
    waiter = asyncio.ensure_future(resolver.resolve("example.test", 80))
    await asyncio.sleep(0.005)
    waiter.cancel()
    await asyncio.sleep(0.05)  # the lookup fails with nobody waiting
    gc.collect()
    assert "never retrieved" not in caplog.text


async def test_the_real_default_resolver_resolves_localhost() -> None:
    resolver = SharedResolver()
    infos = await resolver.resolve("localhost", 8080)
    assert infos and all(info["port"] == 8080 for info in infos)
    assert {info["host"] for info in infos} <= {"127.0.0.1", "::1"}
    await resolver.close()


async def test_close_closes_the_wrapped_resolver() -> None:
    base = CountingResolver()
    await SharedResolver(base).close()
    assert base.closed
