"""Hostile sizes: whatever a server sends, the decoder finishes within its limits or raises, bounded memory.

Peaks are measured with tracemalloc, which sees the compiled decoder's buffers too (PyMem allocations).
The input is generated chunk by chunk so that only the decoder's own memory is measured.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sonicsse.exceptions import SSEParsingError

CHUNK = 64 << 10
MiB = 1 << 20


def repeated(unit: bytes, count: int, tail: bytes = b"") -> Iterator[bytes]:
    """``unit * count + tail`` in chunks of about 64 KiB, never all in memory at once."""
    per_chunk = max(1, CHUNK // len(unit))
    block = unit * per_chunk
    full, rest = divmod(count, per_chunk)
    for _ in range(full):
        yield block
    yield unit * rest + tail


def peak_while(run: Callable[[], Any]) -> tuple[Any, int]:
    """Run ``run`` and return its result and the peak of traced memory it caused."""
    gc.collect()
    tracemalloc.start()
    try:
        result = run()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


#: The pure twin takes 10 to 35 s over a million lines, and 4 to 10 s over 100,000 ids (the compiled one
#: under a second): its runs are marked ``slow``, so ``pytest -m "not slow"`` leaves them out and keeps the
#: compiled one's.
slow_on_pure = pytest.mark.parametrize("impl", ["c", pytest.param("py", marks=pytest.mark.slow)])


def count_events(decoder: Any, chunks: Iterator[bytes]) -> tuple[int, int]:
    events = data_size = 0
    for chunk in chunks:
        for event in decoder.feed(chunk):
            events += 1
            data_size += len(event["data"])
    return events, data_size


@slow_on_pure
def test_million_data_lines_in_one_event(decoder_cls: Any) -> None:
    decoder = decoder_cls()
    (events, size), peak = peak_while(lambda: count_events(decoder, repeated(b"data: x\n", 1_000_000, b"\n")))
    assert (events, size) == (1, 2 * 1_000_000 - 1)
    # the 2 MB event: its buffer (with doubling slack), its str, and a chunk in flight
    assert peak < 3 * 2 * MiB + 4 * CHUNK


@slow_on_pure
def test_million_data_lines_over_the_event_limit_raise(decoder_cls: Any) -> None:
    decoder = decoder_cls(max_event_size=MiB)

    def run() -> None:
        with pytest.raises(SSEParsingError, match="max_event_size"):
            count_events(decoder, repeated(b"data: x\n", 1_000_000, b"\n"))

    _, peak = peak_while(run)
    assert peak < 2 * MiB + 4 * CHUNK


@slow_on_pure
def test_million_comments_use_no_memory(decoder_cls: Any) -> None:
    decoder = decoder_cls()
    (events, _), peak = peak_while(lambda: count_events(decoder, repeated(b": keep-alive\n", 1_000_000)))
    assert events == 0
    # only the chunk in flight (the pure twin splits it into a list of lines): nothing accumulates
    assert peak < 8 * CHUNK


@slow_on_pure
def test_hundred_thousand_distinct_ids_with_dedup_stay_bounded(decoder_cls: Any) -> None:
    decoder = decoder_cls(dedup=True)

    def chunks() -> Iterator[bytes]:
        block = []
        for i in range(100_000):
            block.append(b"id: event-%08d\ndata: x\n\n" % i)
            if len(block) == 2000:
                yield b"".join(block)
                block = []
        yield b"".join(block)

    (events, _), peak = peak_while(lambda: count_events(decoder, chunks()))
    assert events == 100_000
    assert decoder.last_event_id == "event-00099999"
    # the dedup window holds the last 1,024 ids, not all 100,000 (which would take over 7 MB)
    assert peak < 2 * MiB


@pytest.mark.parametrize("piece", [1, 2, 7])
def test_huge_line_delivered_in_tiny_pieces_is_bounded(decoder_cls: Any, piece: int) -> None:
    limit = 64 << 10
    decoder = decoder_cls(max_line_size=limit)

    def run() -> int:
        fed = 0
        with pytest.raises(SSEParsingError, match="max_line_size"):
            while True:
                decoder.feed(b"a" * piece)
                fed += piece
        return fed

    fed, peak = peak_while(run)
    assert fed <= limit
    assert peak < 3 * limit
