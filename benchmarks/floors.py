"""What an event must cost at least, in memory: the floors under the bulk targets.

    python -m benchmarks.floors            # bulk workload, best of 7 rounds each

Each line is CPU µs per event of the ``bulk`` workload (500,000 events with ``id``, ``event`` and ~90 B of
data), with the same per-event consumer work as the end-to-end runner (count the event, add up
``len(data)``):

- ``dict floor``: build the 4-key dict from ready strings (the end-to-end runner's ``dict-floor``);
- ``dict + str floor``: the same, but the data and id strings are decoded from bytes for each event, as
  any client that hands out ``str`` must;
- ``async for delivery``: what ``async for`` over sonicsse's compiled ``EventIterator`` adds to a plain
  ``for`` over the same list of events;
- ``compiled decode + consume``: sonicsse's compiled decoder fed the workload's 64 KiB writes, dedup on
  (the client's default), with the consumer loop over the events it returns.

No I/O: the raw socket floor is measured by the end-to-end runner (``raw-floor``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from sonicsse._types import Event

from .clients import Tally, dict_floor
from .workloads import make_events, serialise, split_writes

ROUNDS = 7


def _best(fn: Callable[[], int]) -> float:
    """Best CPU seconds per event over ROUNDS calls of ``fn`` (which returns its event count)."""
    best = float("inf")
    for _ in range(ROUNDS):
        start = time.process_time()
        n = fn()
        best = min(best, (time.process_time() - start) / n)
    return best


def main() -> None:
    """Print the floors of the bulk workload."""
    from sonicsse._decoder_c import SSEDecoder
    from sonicsse._events_c import EventIterator

    events = make_events("bulk", 500_000)
    raw = [(data.encode(), event, (eid or "").encode()) for data, event, eid in events]
    writes = split_writes(b"".join(serialise(events)))

    def dicts_only() -> int:
        tally = Tally()
        dict_floor(events, tally)  # the end-to-end runner's own dict floor
        return tally.events

    def str_floor() -> int:
        n = size = 0
        for data, event, eid in raw:
            ev: Event = {"data": data.decode(), "event": event, "id": eid.decode(), "retry": None}
            n += 1
            size += len(ev["data"])
        return n

    def decode_and_consume() -> int:
        decoder = SSEDecoder(dedup=True)
        n = size = 0
        for write in writes:
            for ev in decoder.feed(write):
                n += 1
                size += len(ev["data"])
        return n

    batch: list[Event] = [
        {"data": data, "event": event, "id": eid, "retry": None} for data, event, eid in events
    ]

    def plain_for() -> int:
        n = size = 0
        for ev in batch:
            n += 1
            size += len(ev["data"])
        return n

    class OneBatch:
        """An EventIterator source that gives ``batch`` once, as a connection's ``_step()`` would."""

        def __init__(self) -> None:
            self.given = False

        def _step(self) -> list[Event] | None:
            if self.given:
                return None
            self.given = True
            return batch

        async def _next_batch(self) -> None:
            return None

        def _leave(self, token: object) -> None:
            pass

    async def consume_async() -> int:
        n = size = 0
        async for ev in EventIterator(OneBatch(), None, [iter(())]):
            n += 1
            size += len(ev["data"])
        return n

    def async_for() -> int:
        return asyncio.run(consume_async())

    rows = [
        ("dict floor", _best(dicts_only)),
        ("dict + str floor", _best(str_floor)),
        ("async for delivery", _best(async_for) - _best(plain_for)),
        ("compiled decode + consume, dedup on", _best(decode_and_consume)),
    ]
    print("| bulk, in memory | CPU µs/event |\n|---|---:|")
    for name, seconds in rows:
        print(f"| {name} | {seconds * 1e6:.3f} |")


if __name__ == "__main__":
    main()
