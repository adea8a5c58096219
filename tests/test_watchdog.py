"""The shared per-loop timer behind read_timeout, event_timeout and first_event_timeout."""

from __future__ import annotations

import asyncio
import gc

import pytest

from sonicsse._watchdog import Watchdog, tick_of, watchdog

from client_helpers import async_wait_until


class Recorder:
    def __init__(self, loop: asyncio.AbstractEventLoop, log: list[tuple[str, float]], name: str) -> None:
        self.loop = loop
        self.log = log
        self.name = name

    def _on_timer(self) -> None:
        self.log.append((self.name, self.loop.time()))


class Failing:
    def _on_timer(self) -> None:
        raise RuntimeError("boom")


def test_tick_is_a_hundredth_of_the_timeout_within_bounds() -> None:
    assert tick_of(300.0) == 1.0
    assert tick_of(5.0) == pytest.approx(0.05)
    assert tick_of(0.01) == 0.001


async def test_streams_due_in_one_tick_share_one_timer_and_never_fire_early() -> None:
    loop = asyncio.get_running_loop()
    dog = Watchdog(loop)
    log: list[tuple[str, float]] = []
    now = loop.time()
    whens = {f"s{k}": now + 0.05 + k * 0.0001 for k in range(20)}
    keys = {name: dog.watch(Recorder(loop, log, name), when, 0.05) for name, when in whens.items()}
    assert len(dog._handles) <= 2  # twenty deadlines within a tick: one or two ticks
    assert len(dog) == 20
    for name, key in keys.items():
        assert whens[name] <= key <= whens[name] + 0.05
    assert await async_wait_until(lambda: len(log) == 20, 10)
    for name, at in log:
        assert at >= whens[name]
    assert len(dog) == 0 and not dog._handles


async def test_unwatch_cancels_and_the_last_one_out_drops_the_timer() -> None:
    loop = asyncio.get_running_loop()
    dog = Watchdog(loop)
    log: list[tuple[str, float]] = []
    a, b = Recorder(loop, log, "a"), Recorder(loop, log, "b")
    when = loop.time() + 0.02
    key_a = dog.watch(a, when, 0.01)
    key_b = dog.watch(b, when, 0.01)
    assert key_a == key_b
    dog.unwatch(a, key_a)
    assert len(dog._handles) == 1
    dog.unwatch(b, key_b)
    assert not dog._handles and len(dog) == 0
    dog.unwatch(b, key_b)  # twice is harmless
    await asyncio.sleep(0.05)
    assert log == []


async def test_one_failing_check_does_not_skip_the_others() -> None:
    loop = asyncio.get_running_loop()
    seen: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    dog = Watchdog(loop)
    log: list[tuple[str, float]] = []
    when = loop.time() + 0.01
    dog.watch(Failing(), when, 0.01)
    dog.watch(Recorder(loop, log, "ok"), when, 0.01)
    assert await async_wait_until(lambda: log, 10)
    assert [name for name, _ in log] == ["ok"]
    assert len(seen) == 1 and isinstance(seen[0]["exception"], RuntimeError)
    loop.set_exception_handler(None)


def test_one_watchdog_per_loop_gone_with_the_loop() -> None:
    loop = asyncio.new_event_loop()
    first = watchdog(loop)
    assert watchdog(loop) is first
    other = asyncio.new_event_loop()
    assert watchdog(other) is not first
    other.close()
    loop.close()
    import weakref

    ref = weakref.ref(first)
    del first, loop, other
    gc.collect()
    assert ref() is None
