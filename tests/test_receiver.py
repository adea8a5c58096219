"""BodyReceiver's buffer and flow control, driven as an event loop drives a BufferedProtocol.

Every test runs on both twins (``_receiver_c`` and ``_receiver_py``). The transport here only records
what the receiver asks of it (pause, resume, protocol swaps); the socket behaviour is covered end to end
by the client and fault tests, which also run on both.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_chunked import splits, wires

from sonicsse import _receiver_py

from conftest import NO_EXTENSIONS, load_module

READ_SIZE = _receiver_py.READ_SIZE
INITIAL_SIZE = _receiver_py.INITIAL_SIZE
CAPACITY = _receiver_py.CAPACITY
QUIET_READS = _receiver_py.QUIET_READS


@pytest.fixture
def BodyReceiver(receiver_module: Any) -> Any:
    """The ``BodyReceiver`` of the implementation under test."""
    return receiver_module.BodyReceiver


class RecordingTransport:
    def __init__(self, reading: bool = True) -> None:
        self.protocol: Any = "previous"
        self.reading = reading
        self.calls: list[str] = []

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol
        self.calls.append("set_protocol")

    def get_protocol(self) -> Any:
        return self.protocol

    def is_reading(self) -> bool:
        return self.reading

    def pause_reading(self) -> None:
        self.reading = False
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.reading = True
        self.calls.append("resume")

    def abort(self) -> None:
        self.calls.append("abort")


def deliver(rx: Any, data: bytes) -> None:
    """What a transport does with bytes from the socket: fill the buffers the protocol offers."""
    while data:
        buf = rx.get_buffer(-1)
        assert len(buf) > 0, "a BufferedProtocol must never offer an empty buffer"
        n = min(len(buf), len(data))
        buf[:n] = data[:n]
        rx.buffer_updated(n)
        data = data[n:]


def take(rx: Any) -> bytes:
    """A consumer that parses everything received (a close-delimited body, the default framing)."""
    return bytes(rx.take())


async def test_takes_over_the_transport_with_the_bytes_already_read(BodyReceiver: Any) -> None:
    transport = RecordingTransport(reading=False)  # the StreamReader had paused it
    rx = BodyReceiver(transport, "previous", b"data: a\n")
    assert transport.protocol is rx and transport.calls == ["set_protocol", "resume"]
    assert take(rx) == b"data: a\n"
    rx.restore()
    assert transport.protocol == "previous"


async def test_starts_small_and_grows_only_while_reads_fill_their_room(BodyReceiver: Any) -> None:
    rx = BodyReceiver(RecordingTransport(), None)
    assert len(rx.buffer) == INITIAL_SIZE
    for _ in range(50):  # a quiet stream: small reads, consumed each time
        deliver(rx, b"data: x\n\n")
        take(rx)
    assert len(rx.buffer) == INITIAL_SIZE
    sizes = set()
    for _ in range(8):  # a busy one: every read fills what it was offered
        deliver(rx, b"y" * READ_SIZE)
        sizes.add(len(rx.buffer))
        take(rx)
    assert max(sizes) <= CAPACITY and len(rx.buffer) > INITIAL_SIZE
    assert max(len(rx.get_buffer(-1)) for _ in range(2)) <= READ_SIZE


async def test_a_grown_buffer_shrinks_back_once_the_stream_is_quiet_again(BodyReceiver: Any) -> None:
    rx = BodyReceiver(RecordingTransport(), None)
    for _ in range(6):  # a burst
        deliver(rx, b"y" * READ_SIZE)
        take(rx)
    grown = len(rx.buffer)
    assert grown > INITIAL_SIZE
    for _ in range(QUIET_READS - 1):  # quiet, but not yet for long enough
        deliver(rx, b"data: x\n\n")
        take(rx)
    assert len(rx.buffer) == grown
    deliver(rx, b"data: x\n\n")
    take(rx)
    deliver(rx, b"data: z\n\n")  # the buffer is replaced when it is empty and a read comes
    assert len(rx.buffer) == INITIAL_SIZE
    assert take(rx) == b"data: z\n\n"


async def test_a_waiting_stream_with_nothing_buffered_gives_its_buffer_up(
    BodyReceiver: Any, receiver_module: Any
) -> None:
    count = receiver_module.SPARE_BUFFERS + 8  # more than the spare list keeps: the rest are freed
    idle = [BodyReceiver(RecordingTransport(), None) for _ in range(count)]
    for rx in idle:
        deliver(rx, b"data: a\n\n")
        assert take(rx) == b"data: a\n\n"
        rx.receive()
        assert len(rx.buffer) == 0  # given up while it waits
    for k, rx in enumerate(idle):  # each read takes a whole buffer, and nothing is mixed up
        deliver(rx, b"data: %d\n\n" % k)
        assert len(rx.buffer) == INITIAL_SIZE
    assert [take(rx) for rx in idle] == [b"data: %d\n\n" % k for k in range(count)]


async def test_a_stream_keeps_its_buffer_while_it_holds_bytes_or_a_grown_buffer(
    BodyReceiver: Any, chunked_cls: Any
) -> None:
    rx = BodyReceiver(RecordingTransport(), None)
    rx.set_framing(chunked=chunked_cls())
    deliver(rx, b"5\r\nhello\r\n1")  # a chunk size cut by the read: kept for the next one
    assert take(rx) == b"hello"
    rx.receive()
    assert len(rx.buffer) == INITIAL_SIZE
    deliver(rx, b"\r\n!\r\n")
    assert take(rx) == b"!"
    grown = BodyReceiver(RecordingTransport(), None)
    for _ in range(6):
        deliver(grown, b"y" * READ_SIZE)
        take(grown)
    grown.receive()
    assert len(grown.buffer) > INITIAL_SIZE


async def test_pauses_when_full_and_resumes_when_the_consumer_waits_again(BodyReceiver: Any) -> None:
    transport = RecordingTransport()
    rx = BodyReceiver(transport, None)
    deliver(rx, b"z" * CAPACITY)  # nobody consumes: the buffer grows to CAPACITY and fills
    assert len(rx.buffer) == CAPACITY and rx.end == CAPACITY
    assert transport.calls.count("pause") == 1 and not transport.reading
    assert take(rx) == b"z" * CAPACITY
    rx.start -= 10  # ten bytes left unparsed (a partial line)
    waiter = rx.receive()
    assert transport.calls[-1] == "resume" and transport.reading
    assert (rx.start, rx.end) == (0, 10)  # the partial line moved to the front
    deliver(rx, b"!")
    assert waiter.done() and take(rx) == b"z" * 10 + b"!"


async def test_never_offers_an_empty_buffer_even_when_fed_while_paused(BodyReceiver: Any) -> None:
    # A TLS layer may hand over all it decrypted although the receiver paused it.
    rx = BodyReceiver(RecordingTransport(), None)
    deliver(rx, b"a" * CAPACITY + b"b" * 1000)
    assert take(rx) == b"a" * CAPACITY + b"b" * 1000


@pytest.mark.parametrize("asked", [READ_SIZE + 1, 300_000, 3 * CAPACITY])
async def test_room_for_all_a_tls_layer_asks_for(BodyReceiver: Any, asked: int) -> None:
    """A TLS layer asks for room for everything it decrypted; uvloop's drops what does not fit if the
    peer's FIN comes before its next read, so the whole ask (and a record on top) is offered."""
    rx = BodyReceiver(RecordingTransport(), None)
    deliver(rx, b"x" * 1000)
    room = rx.get_buffer(asked)
    assert len(room) >= asked
    room[:asked] = b"y" * asked
    rx.buffer_updated(asked)
    assert take(rx) == b"x" * 1000 + b"y" * asked
    assert len(rx.get_buffer(-1)) <= READ_SIZE  # plain sockets are offered what they always were


async def test_eof_and_loss_come_after_the_buffered_bytes(BodyReceiver: Any) -> None:
    rx = BodyReceiver(RecordingTransport(), None)
    deliver(rx, b"data: last\n\n")
    rx.connection_lost(ConnectionResetError("reset"))
    assert rx.eof and isinstance(rx.lost, ConnectionResetError)
    assert take(rx) == b"data: last\n\n"
    assert rx.receive().done()  # at the end: nothing to wait for


async def test_interrupt_wakes_the_pending_wait_and_fails_the_next_ones(BodyReceiver: Any) -> None:
    rx = BodyReceiver(RecordingTransport(), None)
    waiter = rx.receive()
    rx.interrupt(TimeoutError("no data"))
    # Woken, not failed: an abandoned waiter must not log "exception was never retrieved".
    assert waiter.done() and waiter.exception() is None
    with pytest.raises(TimeoutError):
        rx.check()
    with pytest.raises(TimeoutError):
        rx.receive()


async def test_a_view_stays_valid_until_the_consumer_waits(BodyReceiver: Any) -> None:
    rx = BodyReceiver(RecordingTransport(), None)
    deliver(rx, b"0123456789")
    view = rx.take()[2:6]
    assert rx.start == rx.end
    assert bytes(view) == b"2345"
    waiter = rx.receive()
    deliver(rx, b"abcdefgh")  # the buffer is reused from the front once everything was parsed
    assert waiter.done() and take(rx) == b"abcdefgh"


async def test_module_constants_are_consistent(receiver_module: Any, BodyReceiver: Any) -> None:
    assert INITIAL_SIZE <= READ_SIZE <= CAPACITY
    # the twins use the same sizes
    sizes = ("READ_SIZE", "INITIAL_SIZE", "CAPACITY", "QUIET_READS", "TLS_RECORD")
    assert [getattr(receiver_module, n) for n in sizes] == [getattr(_receiver_py, n) for n in sizes]
    assert asyncio.BufferedProtocol in BodyReceiver.__mro__
    assert isinstance(BodyReceiver(RecordingTransport(), None, eof=True), asyncio.BufferedProtocol)


async def test_a_second_wait_shares_the_pending_future(BodyReceiver: Any) -> None:
    # Two consumers waiting at once must both wake: a fresh future would strand the first one.
    rx = BodyReceiver(RecordingTransport(), None)
    first = rx.receive()
    assert rx.receive() is first
    deliver(rx, b"x")
    assert first.done()
    assert rx.receive() is not first  # once woken, the next wait is a new one


async def test_reads_of_a_few_kib_count_as_quiet(BodyReceiver: Any) -> None:
    # A token stream with 2-3 KiB events (tool-call JSON) after a burst: its reads fit the initial size,
    # so the 256 KiB buffer is given back.
    rx = BodyReceiver(RecordingTransport(), None)
    for _ in range(6):
        deliver(rx, b"y" * READ_SIZE)
        take(rx)
    assert len(rx.buffer) > INITIAL_SIZE
    event = b"data: " + b"t" * (INITIAL_SIZE * 3 // 4) + b"\n\n"
    for _ in range(QUIET_READS + 1):
        deliver(rx, event)
        assert take(rx) == event
    assert len(rx.buffer) == INITIAL_SIZE


# -- framing: take() and poll() give the payload and tell the end of the body -----------------------


async def test_take_undoes_chunked_framing_and_tells_the_end(BodyReceiver: Any, chunked_cls: Any) -> None:
    rx = BodyReceiver(RecordingTransport(), None)
    rx.set_framing(chunked=chunked_cls())
    deliver(rx, b"7\r\ndata: a\r\n2\r\n\n\n\r\n")
    assert bytes(rx.take()) == b"data: a\n\n" and not rx.completed
    deliver(rx, b"0\r")  # a partial last-chunk line: nothing to give yet, and it stays
    assert bytes(rx.take()) == b"" and not rx.completed and rx.end - rx.start == 2
    deliver(rx, b"\n\r\nHTTP/1.1")
    assert bytes(rx.take()) == b"" and rx.completed and rx.leftover


async def test_take_stops_at_the_content_length(BodyReceiver: Any) -> None:
    rx = BodyReceiver(RecordingTransport(), None, b"data: a\n")
    rx.set_framing(length=12)
    assert bytes(rx.take()) == b"data: a\n" and rx.remaining == 4 and not rx.completed
    deliver(rx, b"\n\n\n\nmore")
    assert bytes(rx.take()) == b"\n\n\n\n" and rx.completed and rx.leftover
    assert rx.remaining == 0


async def test_take_gives_everything_of_a_close_delimited_body(BodyReceiver: Any) -> None:
    rx = BodyReceiver(RecordingTransport(), None)
    deliver(rx, b"data: a\n\n" * 3)
    assert bytes(rx.take()) == b"data: a\n\n" * 3 and not rx.completed and rx.remaining == -1


async def test_poll_gives_payload_or_the_future_to_wait_on(BodyReceiver: Any, chunked_cls: Any) -> None:
    rx = BodyReceiver(RecordingTransport(), None)
    rx.set_framing(chunked=chunked_cls())
    waiter = rx.poll()
    assert isinstance(waiter, asyncio.Future) and not waiter.done()
    deliver(rx, b"5\r\n")  # framing only: still nothing to give, so wait again
    assert waiter.done()
    waiter = rx.poll()
    assert isinstance(waiter, asyncio.Future) and not waiter.done()
    deliver(rx, b"data:\r\n")
    assert bytes(rx.poll()) == b"data:"
    deliver(rx, b"0\r\n\r\n")
    assert rx.poll() is None and rx.completed  # the end of the body: read() takes over


async def test_poll_leaves_broken_framing_eof_and_interrupts_to_the_caller(
    BodyReceiver: Any, chunked_cls: Any
) -> None:
    rx = BodyReceiver(RecordingTransport(), None)
    rx.set_framing(chunked=chunked_cls())
    deliver(rx, b"zz\r\ndata: a\n\n")
    assert rx.poll() is None and isinstance(rx.failed, ValueError)
    assert "chunk size" in str(rx.failed)
    with pytest.raises(ValueError):
        rx.take()

    rx = BodyReceiver(RecordingTransport(), None)
    deliver(rx, b"data: last\n\n")
    rx.eof_received()
    assert bytes(rx.poll()) == b"data: last\n\n"  # what came before the end first
    assert rx.poll() is None

    rx = BodyReceiver(RecordingTransport(), None)
    deliver(rx, b"data: a\n\n")
    rx.interrupt(TimeoutError("no data"))
    assert rx.poll() is None


async def test_take_keeps_broken_framing_as_failed(BodyReceiver: Any, chunked_cls: Any) -> None:
    rx = BodyReceiver(RecordingTransport(), None)
    rx.set_framing(chunked=chunked_cls())
    deliver(rx, b"5\r\ndata:\r\n")
    assert bytes(rx.take()) == b"data:" and rx.failed is None
    deliver(rx, b"5\r\nabcdeXY")  # the chunk's data is not followed by CRLF
    assert bytes(rx.take()) == b"abcde" and rx.failed is None  # the payload before the break first
    with pytest.raises(ValueError, match="no CRLF after chunk data") as caught:
        rx.take()
    assert rx.failed is caught.value and rx.poll() is None
    with pytest.raises(ValueError, match="no CRLF after chunk data"):
        rx.take()  # and again


@pytest.mark.parametrize("chunked_impl", ["c", "py"])
async def test_the_compiled_receiver_takes_either_chunked_decoder(chunked_impl: str) -> None:
    # The receiver needs only decode(), completed and leftover of the decoder it is given.
    receiver = load_module("c", "receiver")
    chunked = load_module(chunked_impl, "chunked").ChunkedDecoder
    for body, payload in ((b"5\r\ndata:\r\n0\r\n\r\n", b"data:"), (b"zz\r\n", None)):
        rx = receiver.BodyReceiver(RecordingTransport(), None)
        rx.set_framing(chunked=chunked())
        deliver(rx, body)
        if payload is None:
            assert rx.poll() is None and "bad chunk size b'zz" in str(rx.failed)
        else:
            assert bytes(rx.poll()) == payload and rx.completed


def drain(rx: Any, pieces: list[bytes]) -> tuple[bytes, bool, bool, str | None]:
    """Deliver ``pieces`` one read at a time, polling as a stream's step does after each."""
    payload = b""
    for piece in pieces:
        deliver(rx, piece)
        while True:
            got = rx.poll()
            if not isinstance(got, memoryview):
                break
            payload += bytes(got)
        if got is None:
            break
    failed = None if rx.failed is None else str(rx.failed)
    return payload, rx.completed, rx.leftover, failed


@pytest.mark.skipif(NO_EXTENSIONS, reason="built with SONICSSE_NO_EXTENSIONS: no compiled twin")
@settings(max_examples=300, deadline=None)
@given(
    wires(),
    st.sampled_from([b"", b"HTTP/1.1 200 OK\r\n"]),
    st.lists(st.integers(0, 400), max_size=6),
    st.sampled_from(["chunked", "length", "close"]),
)
async def test_compiled_and_pure_receivers_agree(
    wire_and_payload: tuple[bytes, bytes | None], after: bytes, cuts: list[int], framing: str
) -> None:
    from sonicsse import _chunked_c, _chunked_py, _receiver_c

    wire, payload = wire_and_payload
    wire += after  # the next response on the connection, or nothing
    pieces = splits(wire, *sorted(c for c in cuts if c <= len(wire)))
    results = []
    for receiver, chunked in ((_receiver_c, _chunked_c), (_receiver_py, _chunked_py)):
        rx = receiver.BodyReceiver(RecordingTransport(), None)
        if framing == "chunked":
            rx.set_framing(chunked=chunked.ChunkedDecoder())
        elif framing == "length":
            rx.set_framing(length=max(1, len(wire) // 2))
        results.append(drain(rx, pieces))
    assert results[0] == results[1]
    if framing == "chunked" and payload is not None:
        # Bytes after the body are seen only when they come in the read that ends it: the consumer
        # stops reading there.
        body_end = len(wire) - len(after)
        read_end = next(end for end in itertools.accumulate(map(len, pieces)) if end >= body_end)
        assert results[0] == (payload, True, read_end > body_end, None)
    elif framing == "length" and wire:
        assert results[0][0] == wire[: max(1, len(wire) // 2)]
    elif framing == "close":
        assert results[0] == (wire, False, False, None)


async def test_a_length_past_the_largest_int64_is_held(BodyReceiver: Any, receiver_module: Any) -> None:
    rx = BodyReceiver(RecordingTransport(), None, b"data: a\n\n")
    rx.set_framing(length=10**20)  # aiosonic passes any Content-Length through
    assert receiver_module.MAX_LENGTH == _receiver_py.MAX_LENGTH == 2**63 - 1
    assert bytes(rx.take()) == b"data: a\n\n" and not rx.completed
    assert rx.remaining == 2**63 - 1 - 9


async def test_receive_uses_the_loops_create_future(BodyReceiver: Any) -> None:
    # A create_future() put on the loop (an instrumenting tool, a subclass) makes the waits' futures.
    loop = asyncio.get_running_loop()
    if not hasattr(loop, "__dict__"):
        pytest.skip("this loop takes no instance attributes (uvloop)")
    made: list[asyncio.Future[None]] = []

    def create_future() -> asyncio.Future[None]:
        made.append(asyncio.Future(loop=loop))
        return made[-1]

    loop.create_future = create_future  # type: ignore[method-assign]
    try:
        rx = BodyReceiver(RecordingTransport(), None)
        assert rx.receive() is made[0]
    finally:
        del loop.create_future  # type: ignore[method-assign]
