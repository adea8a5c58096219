"""The event iterator behind ``async for event in conn``, compiled and pure: same behaviour.

Driven here by a ``next_batch`` coroutine that really suspends (``asyncio.sleep``), so the compiled
iterator's ``am_send`` path passes the loop's futures through, as it does over a socket.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from typing import Any

import pytest

Event = dict[str, Any]


class Source:
    """``next_batch`` over scripted batches (None ends), counting calls and ``on_exit`` calls."""

    def __init__(self, *batches: list[Event] | BaseException | None, pause: float = 0.001) -> None:
        self.batches = list(batches)
        self.pause = pause
        self.calls = 0
        self.exits = 0
        self.rest: list[Iterator[Event]] = [iter(())]

    async def next_batch(self) -> list[Event] | None:
        self.calls += 1
        await asyncio.sleep(self.pause)
        if not self.batches:
            return None
        item = self.batches.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    def on_exit(self) -> None:
        self.exits += 1

    def step(self) -> None:
        return None  # always next_batch(); StepSource scripts step()

    def iterator(self, event_iterator: Any) -> Any:
        return event_iterator(self.step, self.next_batch, self.on_exit, self.rest)


def ev(*names: str) -> list[Event]:
    return [{"data": n, "event": None, "id": None, "retry": None} for n in names]


def names(events: list[Event]) -> list[str]:
    return [e["data"] for e in events]


async def test_yields_every_event_of_every_batch_then_ends_once(event_iterator: Any) -> None:
    src = Source(ev("a", "b"), ev("c"), [], ev("d"), None)
    got = [e async for e in src.iterator(event_iterator)]
    assert names(got) == ["a", "b", "c", "d"]
    assert src.exits == 1
    assert src.calls == 5


async def test_an_ended_iterator_stays_ended(event_iterator: Any) -> None:
    src = Source(ev("a"), None)
    it = src.iterator(event_iterator)
    assert names([e async for e in it]) == ["a"]
    with pytest.raises(StopAsyncIteration):
        await it.__anext__()
    assert src.exits == 1


async def test_an_error_from_next_batch_ends_the_iteration(event_iterator: Any) -> None:
    src = Source(ev("a"), RuntimeError("boom"), ev("never"))
    it = src.iterator(event_iterator)
    got = []
    with pytest.raises(RuntimeError, match="boom"):
        async for e in it:
            got.append(e)
    assert names(got) == ["a"]
    assert src.exits == 1
    with pytest.raises(StopAsyncIteration):
        await it.__anext__()


async def test_cancellation_while_waiting_for_a_batch_propagates_and_ends(event_iterator: Any) -> None:
    src = Source(ev("a"), ev("b"), pause=10)
    it = src.iterator(event_iterator)
    task = asyncio.ensure_future(it.__anext__())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert src.exits == 1


async def test_wait_for_timeout_on_anext(event_iterator: Any) -> None:
    src = Source(ev("a"), pause=10)
    it = src.iterator(event_iterator)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(it.__anext__(), 0.01)
    assert src.exits == 1


async def test_aclose_ends_at_once(event_iterator: Any) -> None:
    src = Source(ev("a", "b"), ev("c"), None)
    it = src.iterator(event_iterator)
    assert (await it.__anext__())["data"] == "a"
    await it.aclose()
    assert src.exits == 1
    with pytest.raises(StopAsyncIteration):
        await it.__anext__()


async def test_an_abandoned_iterator_ends_from_the_loop_and_leaves_its_batch(event_iterator: Any) -> None:
    src = Source(ev("a", "b", "c"), ev("d"), None)
    first = await src.iterator(event_iterator).__anext__()  # dropped at once, half-way through a batch
    gc.collect()
    # a new iteration that starts before the loop finalizes the old one gets the rest of the batch
    got = [e async for e in src.iterator(event_iterator)]
    assert first["data"] == "a"
    assert names(got) == ["b", "c", "d"]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert src.exits == 2


async def test_break_then_a_new_iterator_goes_on_where_the_first_stopped(event_iterator: Any) -> None:
    src = Source(ev("a", "b"), ev("c"), None)
    got = []
    async for e in src.iterator(event_iterator):
        got.append(e)
        break
    async for e in src.iterator(event_iterator):
        got.append(e)
    assert names(got) == ["a", "b", "c"]


async def test_throw_into_a_waiting_iterator_reaches_next_batch(event_iterator: Any) -> None:
    seen: list[BaseException] = []

    async def next_batch() -> list[Event] | None:
        try:
            await asyncio.sleep(10)
        except KeyError as exc:
            seen.append(exc)
            return ev("recovered")
        return None

    it = event_iterator(lambda: None, next_batch, lambda: None, [iter(())])
    awaitable = it.__anext__().__await__()
    future = awaitable.send(None)  # runs next_batch up to its sleep: the loop's future comes out
    assert isinstance(future, asyncio.Future)
    future.cancel()  # the sleep's timer; the iterator is driven by hand here
    with pytest.raises(StopIteration) as stop:
        awaitable.throw(KeyError("k"))
    assert stop.value.value["data"] == "recovered"
    assert len(seen) == 1


async def test_rest_must_hold_one_iterator(event_iterator: Any) -> None:
    with pytest.raises(ValueError, match="one iterator"):
        await event_iterator(lambda: None, Source().next_batch, lambda: None, []).__anext__()


class StepSource(Source):
    """A Source whose ``step()`` gives scripted items first: a batch, None (``next_batch()`` runs), or
    a number of seconds, which becomes a future done that much later (then ``step()`` is tried again)."""

    def __init__(self, steps: list[list[Event] | float | None], *batches: list[Event] | None) -> None:
        super().__init__(*batches)
        self.steps = steps
        self.step_calls = 0
        self.futures: list[asyncio.Future[None]] = []

    def step(self) -> Any:
        self.step_calls += 1
        if not self.steps:
            return None
        item = self.steps.pop(0)
        if isinstance(item, float):
            loop = asyncio.get_running_loop()
            future: asyncio.Future[None] = loop.create_future()
            loop.call_later(item, lambda: future.done() or future.set_result(None))
            self.futures.append(future)
            return future
        return item


async def test_step_batches_come_without_next_batch(event_iterator: Any) -> None:
    src = StepSource([ev("a", "b"), ev("c")], None)
    got = [e async for e in src.iterator(event_iterator)]
    assert names(got) == ["a", "b", "c"]
    assert src.calls == 1  # only for the end
    assert src.step_calls == 3
    assert src.exits == 1


async def test_a_future_from_step_is_awaited_then_step_is_tried_again(event_iterator: Any) -> None:
    src = StepSource([0.001, ev("a"), 0.001, 0.001, ev("b"), None], ev("c"), None)
    got = [e async for e in src.iterator(event_iterator)]
    assert names(got) == ["a", "b", "c"]
    assert all(f.done() for f in src.futures) and len(src.futures) == 3
    assert src.step_calls == 7 and src.calls == 2
    assert src.exits == 1


async def test_cancellation_while_waiting_on_a_step_future_ends_the_iteration(event_iterator: Any) -> None:
    src = StepSource([ev("a"), 10.0], ev("never"))
    it = src.iterator(event_iterator)
    assert (await it.__anext__())["data"] == "a"
    task = asyncio.ensure_future(it.__anext__())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert src.futures[0].cancelled()  # the task cancelled what it waited on
    assert src.exits == 1
    with pytest.raises(StopAsyncIteration):
        await it.__anext__()
    assert src.calls == 0


async def test_wait_for_timeout_on_a_step_future(event_iterator: Any) -> None:
    src = StepSource([10.0])
    it = src.iterator(event_iterator)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(it.__anext__(), 0.01)
    assert src.exits == 1


async def test_an_error_from_step_ends_the_iteration(event_iterator: Any) -> None:
    def step() -> Any:
        raise RuntimeError("step broke")

    src = Source(ev("never"))
    it = event_iterator(step, src.next_batch, src.on_exit, src.rest)
    with pytest.raises(RuntimeError, match="step broke"):
        await it.__anext__()
    assert src.exits == 1 and src.calls == 0


async def test_an_iterator_whose_arguments_were_refused_leaves_nothing_to_end(event_iterator: Any) -> None:
    """Its finalizer must not schedule ``on_exit`` (the compiled twin's was None: asyncio logged
    "Exception in callback None()")."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    exits: list[int] = []
    loop.set_exception_handler(lambda _, context: errors.append(context))
    try:
        with pytest.raises(ValueError, match="one iterator"):
            event_iterator(lambda: None, Source().next_batch, lambda: exits.append(1), [])
        gc.collect()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert errors == [] and exits == []
