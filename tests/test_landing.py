"""Long data lines received straight into their str, and the events they make.

The compiled decoder builds a long ASCII data line in place as the str it becomes; the compiled
receiver can read the next body bytes of such a line straight into that str (``land_into()``, with the
decoder's ``_landing_view()`` and ``_landed()``), so that the kernel's copy is the only one. Whatever
the reads, the framing and the line ends, the events must be exactly those of ``feed()``.

The decoder and receiver tests here need the compiled twins (the pure ones have no such path). The
client tests at the end run on both implementations: the pure one reads every byte through ``take()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_receiver import RecordingTransport

from sonicsse import SSEClient, _transport
from sonicsse._parser_py import SSEDecoder as PureDecoder
from sonicsse.exceptions import SSEConnectionError, SSEParsingError

from conftest import NO_EXTENSIONS
from servers import CLOSE, DROP, LAST_CHUNK, ScriptServer, chunk, head

compiled_only = pytest.mark.skipif(NO_EXTENSIONS, reason="built with SONICSSE_NO_EXTENSIONS")
if not NO_EXTENSIONS:
    from sonicsse._chunked_c import ChunkedDecoder
    from sonicsse._parser_c import SSEDecoder
    from sonicsse._receiver_c import BodyReceiver

#: The compiled decoder holds a data line as its str from this many bytes on (TEXT_MIN in the .pyx).
LONG = 1 << 15


def long_value(n: int, seed: int = 0) -> bytes:
    return bytes(b"abcdefghijklmnopqrstuvwxyz0123456789"[(i + seed) % 36] for i in range(n))


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    """Event streams whose data lines are often long: short fields around them, every line end, now
    and then a non-ASCII byte (valid or not) or a line end inside what would have been one line."""
    parts = []
    for k in range(draw(st.integers(1, 4))):
        eol = draw(st.sampled_from([b"\n", b"\r", b"\r\n"]))
        if draw(st.booleans()):
            parts.append(b"id: %d" % k + eol)
        value = long_value(draw(st.sampled_from([10, LONG - 50, LONG + 10, 70_000, 150_000])), k)
        twist = draw(st.sampled_from(["none", "none", "utf8", "invalid", "eol"]))
        at = draw(st.integers(0, len(value) - 1))
        if twist == "utf8":
            value = value[:at] + "é".encode() + value[at:]
        elif twist == "invalid":
            value = value[:at] + b"\xff" + value[at:]
        elif twist == "eol":
            value = value[:at] + eol + b"data:" + value[at:]
        parts.append(draw(st.sampled_from([b"data: ", b"data:", b"data:  "])) + value + eol)
        if draw(st.booleans()):
            parts.append(b"data: more" + eol)
        parts.append(eol)
    return b"".join(parts)


def decoded(decoder: Any, pieces: Sequence[bytes], land: bool) -> tuple[list[Any], str | None]:
    """Feed ``pieces``; with ``land``, put each piece into the decoder's landing view first when it
    offers one, as the compiled receiver does, and feed only what it did not keep."""
    events: list[Any] = []
    try:
        for piece in pieces:
            while piece and land:
                view = decoder._landing_view(len(piece))
                if view is None:
                    break
                n = len(view)
                view[:n] = piece[:n]
                kept = decoder._landed(n)
                piece = piece[kept:]
                if kept < n:
                    break  # the receiver puts the rest in its buffer: it is fed as usual
            if piece:
                events += decoder.feed(piece)
    except SSEParsingError as exc:
        return events + exc.events, str(exc)
    return events, None


# -- the decoder's side ---------------------------------------------------------------------------


@compiled_only
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    stream=streams(),
    sizes=st.lists(st.sampled_from([1, 5, 999, 4096, 30_000, 65_536, 200_000]), min_size=1, max_size=6),
    max_line_size=st.sampled_from([1 << 20, 60_000, LONG + 20]),
)
def test_landing_gives_the_events_feeding_gives(stream: bytes, sizes: list[int], max_line_size: int) -> None:
    pieces, pos, i = [], 0, 0
    while pos < len(stream):
        pieces.append(stream[pos : pos + sizes[i % len(sizes)]])
        pos += sizes[i % len(sizes)]
        i += 1
    expected = decoded(PureDecoder(max_line_size=max_line_size), [stream], land=False)
    assert decoded(SSEDecoder(max_line_size=max_line_size), pieces, land=True) == expected


@compiled_only
def test_a_view_is_offered_only_for_a_held_long_data_line() -> None:
    decoder = SSEDecoder()
    assert decoder._landing_view(100) is None  # nothing held
    decoder.feed(b"data: " + b"x" * 100)
    assert decoder._landing_view(100) is None  # held, but short: in the line buffer, not a str
    decoder.feed(b"x" * LONG)
    view = decoder._landing_view(100)
    assert view is not None and len(view) == 100 and not view.readonly
    view[:3] = b"yz\n"
    assert decoder._landed(3) == 2  # up to the line end: the caller feeds the rest
    assert decoder.feed(b"\n\n") == [
        {"data": "x" * (100 + LONG) + "yz", "event": None, "id": None, "retry": None}
    ]


@compiled_only
@pytest.mark.parametrize("head", [b"id: 1", b"event: x", b": comment"])
def test_no_view_for_a_long_line_that_is_not_data(head: bytes) -> None:
    decoder = SSEDecoder()
    decoder.feed(head + b"x" * (2 * LONG))
    assert decoder._landing_view(100) is None


@compiled_only
def test_a_view_never_reaches_past_max_line_size() -> None:
    decoder = SSEDecoder(max_line_size=LONG + 100)
    decoder.feed(b"data: " + b"x" * LONG)  # 6 + LONG bytes of the line held
    view = decoder._landing_view(1000)
    assert view is not None and len(view) == 94
    view[:] = b"y" * 94
    assert decoder._landed(94) == 94
    assert decoder._landing_view(1000) is None  # the line is at the limit: feed() raises on more
    with pytest.raises(SSEParsingError, match="max_line_size"):
        decoder.feed(b"z")


@compiled_only
def test_landed_needs_the_view_it_reports_on() -> None:
    decoder = SSEDecoder()
    with pytest.raises(ValueError):
        decoder._landed(0)
    decoder.feed(b"data: " + b"x" * (2 * LONG))
    view = decoder._landing_view(10)
    assert view is not None
    with pytest.raises(ValueError):
        decoder._landed(11)
    decoder.feed(b"x")  # anything else done with the decoder ends the view's turn
    with pytest.raises(ValueError):
        decoder._landed(1)


@compiled_only
def test_no_view_after_a_cr_that_may_start_a_crlf() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"data: " + b"x" * (2 * LONG) + b"\r")
    assert decoder._landing_view(10) is None


# -- the receiver's side --------------------------------------------------------------------------


def framed(payload: bytes, framing: str, chunk_sizes: Sequence[int]) -> bytes:
    if framing != "chunked":
        return payload
    out, pos, i = [], 0, 0
    while pos < len(payload):
        size = chunk_sizes[i % len(chunk_sizes)]
        out.append(chunk(payload[pos : pos + size]))
        pos += size
        i += 1
    return b"".join(out) + LAST_CHUNK


async def received(
    wire: bytes, framing: str, reads: Sequence[int], payload_len: int, sink: Any
) -> tuple[list[Any], Any]:
    """Deliver ``wire`` in reads of the given sizes, as an event loop does, to a compiled receiver that
    may land bytes in ``sink``; the consumer parses only when its wait is over, as the connection does."""
    rx = BodyReceiver(RecordingTransport(), None)
    chunked = ChunkedDecoder() if framing == "chunked" else None
    rx.set_framing(chunked=chunked, length=payload_len if framing == "length" else None)
    rx.land_into(sink)
    events: list[Any] = []
    waiting: Any = None

    def consume() -> None:
        nonlocal waiting
        while True:
            data = rx.poll()
            if data is None or not isinstance(data, memoryview):
                waiting = data
                return
            events.extend(sink.feed(data))

    consume()
    pos = i = 0
    while pos < len(wire):
        view = rx.get_buffer(-1)
        n = min(len(view), len(wire) - pos, reads[i % len(reads)])
        i += 1
        view[:n] = wire[pos : pos + n]
        pos += n
        rx.buffer_updated(n)
        if waiting is None or waiting.done():
            consume()
    rx.eof_received()
    consume()
    while rx.start < rx.end and not rx.completed and rx.failed is None:
        events.extend(sink.feed(rx.take()))
    assert rx.failed is None
    if framing != "close":
        assert rx.completed
    return events, rx


@compiled_only
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    stream=streams(),
    framing=st.sampled_from(["chunked", "length", "close"]),
    chunk_sizes=st.lists(st.sampled_from([1, 9, 4096, 65_536, 100_000]), min_size=1, max_size=3),
    reads=st.lists(st.sampled_from([1, 10, 7000, 65_536, 65_545, 300_000]), min_size=1, max_size=5),
)
async def test_receiving_into_the_line_gives_the_events_feeding_gives(
    stream: bytes, framing: str, chunk_sizes: list[int], reads: list[int]
) -> None:
    expected, _ = decoded(PureDecoder(), [stream], land=False)
    events, rx = await received(
        framed(stream, framing, chunk_sizes), framing, reads, len(stream), SSEDecoder()
    )
    assert events == expected
    assert rx.landed <= len(stream)


@compiled_only
@pytest.mark.parametrize("framing", ["chunked", "length", "close"])
async def test_a_long_line_mostly_skips_the_buffer(framing: str) -> None:
    value = long_value(1_000_000)
    stream = b"id: 1\ndata: " + value + b"\n\ndata: after\n\n"
    wire = framed(stream, framing, [65_536])
    events, rx = await received(wire, framing, [65_536 + 9, 1 << 20], len(stream), SSEDecoder())
    assert [e["data"] for e in events] == [value.decode(), "after"]
    # All but the line's start, the read with its end, and one read each time its str grows (the
    # first line of a stream starts small; later ones start as large as the last).
    assert rx.landed > 0.6 * len(value)


@compiled_only
async def test_only_the_compiled_decoder_is_landed_into() -> None:
    stream = b"data: " + long_value(300_000) + b"\n\n"
    events, rx = await received(stream, "close", [65_536], len(stream), PureDecoder())
    assert len(events) == 1 and rx.landed == 0


@compiled_only
async def test_broken_framing_after_a_landed_chunk_is_kept_as_the_error() -> None:
    stream = b"data: " + long_value(200_000)
    wire = chunk(stream[:100_000]) + b"XX\r\n" + chunk(stream[100_000:])  # not a chunk size
    rx = BodyReceiver(RecordingTransport(), None)
    rx.set_framing(chunked=ChunkedDecoder())
    sink = SSEDecoder()
    rx.land_into(sink)
    waiting = rx.poll()
    pos = 0
    while pos < len(wire) and rx.failed is None:
        if waiting is None or waiting.done():
            while isinstance(data := rx.poll(), memoryview):
                sink.feed(data)
            waiting = data
        view = rx.get_buffer(-1)
        n = min(len(view), len(wire) - pos, 65_536)
        view[:n] = wire[pos : pos + n]
        pos += n
        rx.buffer_updated(n)
    assert rx.landed > 0
    assert isinstance(rx.failed, ValueError) and "bad chunk size b'XX" in str(rx.failed)
    assert rx.poll() is None


# -- through the client, on both implementations ---------------------------------------------------


@pytest.fixture
def landed_per_body(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many bytes each response body landed straight in the decoder, recorded as it closes."""
    seen: list[int] = []
    close = _transport.BodyReader.close

    def recording_close(self: Any, keep_connection: bool = False) -> None:
        seen.append(self.landed)
        close(self, keep_connection)

    monkeypatch.setattr(_transport.BodyReader, "close", recording_close)
    return seen


def pieces_of(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


BIG = long_value(1_000_000 - 16)
ODD = long_value(300_000, 7)[:150_000] + "é".encode() + long_value(300_000, 7)[150_000:]
STREAM = (
    b"id: 1\ndata: " + BIG + b"\n\n"
    b"id: 2\r\ndata: " + ODD + b"\r\n\r\n"
    b"id: 3\ndata: short\n\n"
    b"id: 4\rdata:" + BIG[:400_000] + b"\r\r"
)
EXPECTED = [BIG.decode(), ODD.decode(), "short", BIG[:400_000].decode()]


@pytest.mark.parametrize(
    "framing, piece",
    [("chunked", 65_536), ("chunked", 10_007), ("chunked", 300_000), ("length", 65_536), ("close", 50_000)],
)
async def test_large_events_arrive_whole(
    client_decoder: Any, landed_per_body: list[int], framing: str, piece: int
) -> None:
    body = pieces_of(STREAM, piece)
    if framing == "chunked":
        steps: list[Any] = [head(), *(chunk(p) for p in body), LAST_CHUNK]
    else:
        steps = [head(framing=framing, length=len(STREAM)), *body, CLOSE]
    async with ScriptServer([steps]) as server, SSEClient() as client:
        async with client.connect(server.url(), reconnect=False) as conn:
            events = [event async for event in conn]
            assert conn.stats.bytes == len(STREAM)
    assert [event["data"] for event in events] == EXPECTED
    assert [event["id"] for event in events] == ["1", "2", "3", "4"]
    # How much goes straight to the line depends on how the reads fall (uvloop reads a burst from this
    # in-process server into the buffer before the consumer runs): only the compiled twins do it.
    compiled = client_decoder.__module__ == "sonicsse._parser_c"
    assert (sum(landed_per_body) > 0) == compiled


async def test_bytes_going_straight_to_the_line_count_as_data_for_read_timeout(
    client_decoder: Any, landed_per_body: list[int]
) -> None:
    """A long line trickling in for longer than ``read_timeout`` in all is not a stalled stream: the
    reads that land in the line do not wake the consumer, and the timer still sees them."""
    start = b"data: " + long_value(200_000)
    steps: list[Any] = [head(), chunk(start)]  # a burst first: full reads start the landing
    for i in range(12):
        steps += [0.05, chunk(long_value(20_000, i))]
    steps += [chunk(b"\n\n"), LAST_CHUNK]
    async with ScriptServer([steps]) as server, SSEClient() as client:
        async with client.connect(server.url(), reconnect=False, read_timeout=0.3) as conn:
            events = [event async for event in conn]
    assert [len(event["data"]) for event in events] == [200_000 + 12 * 20_000]
    compiled = client_decoder.__module__ == "sonicsse._parser_c"
    assert (sum(landed_per_body) > 0) == compiled


async def test_a_line_over_max_line_size_fails_the_same_when_landed(client_decoder: Any) -> None:
    steps = [head(), *(chunk(p) for p in pieces_of(b"data: " + long_value(300_000), 65_536)), LAST_CHUNK]
    async with ScriptServer([steps]) as server, SSEClient() as client:
        with pytest.raises(SSEParsingError, match=r"line longer than max_line_size \(200000 bytes\)"):
            async with client.connect(server.url(), reconnect=False, max_line_size=200_000) as conn:
                async for _ in conn:
                    pass


async def test_the_connection_drops_while_a_line_lands(client_decoder: Any) -> None:
    steps = [head(), chunk(b"data: " + long_value(300_000)), 0.02, chunk(long_value(100_000)), DROP]
    async with ScriptServer([steps]) as server, SSEClient() as client:
        with pytest.raises(SSEConnectionError):
            async with client.connect(server.url(), reconnect=False) as conn:
                async for _ in conn:
                    pass
