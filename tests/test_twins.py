"""Each hand-written compiled module against its pure twin: a change to one without the other fails here.

``ChunkedDecoder``, ``BodyReceiver`` and ``EventIterator`` are driven side by side with the same random
scripts (Hypothesis), and everything a caller can observe is compared after every step: return values,
the bytes of the buffers they work in, their public state, the calls they make, and the type and message
of every exception. (``SSEDecoder``'s twins are compared in ``test_decoder_differential.py``.)

The compiled twins are needed: in a build with ``SONICSSE_NO_EXTENSIONS`` the whole module is skipped.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sonicsse import _chunked_py, _events_py, _receiver_py

from conftest import NO_EXTENSIONS

if NO_EXTENSIONS:
    pytest.skip(
        "built with SONICSSE_NO_EXTENSIONS: there are no compiled twins to compare with the pure ones",
        allow_module_level=True,
    )

from sonicsse import _chunked_c, _events_c, _receiver_c

TWINS = {"c": (_chunked_c, _receiver_c, _events_c), "py": (_chunked_py, _receiver_py, _events_py)}

# SONICSSE_HYPOTHESIS_EXAMPLES scales the budget for a long local run (as in test_decoder_differential).
SCALE = int(os.environ.get("SONICSSE_HYPOTHESIS_EXAMPLES", "600")) / 600


def budget(examples: int) -> settings:
    return settings(
        max_examples=max(1, int(examples * SCALE)),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def failure(exc: BaseException) -> tuple[str, str]:
    """An exception as the twins must agree on it: its type and its message."""
    return type(exc).__name__, str(exc)


def contents(buffer: bytearray) -> tuple[int, int]:
    """Every byte of a buffer, in short: its length and checksum."""
    return len(buffer), zlib.crc32(buffer)


# -- ChunkedDecoder ------------------------------------------------------------------------------------

MAX_LINE = _chunked_py.MAX_LINE
line_ends = st.sampled_from([b"\r\n", b"\n", b" \r\n", b"\t\n", b"\r\r\n", b" \t \r\n"])
extensions = st.sampled_from(
    [b"", b";", b";e", b";e=1", b' ;a;b="c;d"', b";\tq=\xff", b"; " + b"x" * (MAX_LINE - 40)]
)
chunk_data = st.binary(max_size=40) | st.sampled_from(
    [b"\r\n", b"\n", b"0\r\n\r\n", b"data: x\n\n", b"\xee" * 300, b"y" * 5000]
)
trailer_lines = st.sampled_from([b"A: b", b"X-Y:", b"T: \xff", b" \tC: d", b"K: " + b"v" * (MAX_LINE - 10)])


# Size lines the grammar refuses: 16 or more digits, a prefix, a vertical tab or form feed as blank, bad
# digits (the error message quotes up to 40 bytes of the line).
BAD_SIZES = [b"%016x", b"%017x", b"0x%x", b"%x\x0b", b"\x0c%x", b"%x" + b"q" * 50, b"-%x", b"z" * 45]


@st.composite
def size_lines(draw: st.DrawFn, size: int, bad: bool = False) -> bytes:
    if bad:
        spelling = draw(st.sampled_from(BAD_SIZES))
        return (spelling % size if b"%" in spelling else spelling) + draw(line_ends)
    digits = draw(st.sampled_from([b"%x", b"%X", b"%03x", b"%015x"])) % size
    pad = draw(st.sampled_from([b"", b" ", b"\t", b"\r", b" \t"]))
    return draw(st.sampled_from([b"", pad])) + digits + pad + draw(extensions) + draw(line_ends)


@st.composite
def chunked_bodies(draw: st.DrawFn, respell: bool = False) -> tuple[bytes, bytes]:
    """A valid chunked body (extensions, odd whitespace, bare LFs, trailers) and its payload; with
    ``respell``, one of its size lines (perhaps the last one's) is spelt in a way the grammar refuses."""
    chunks = draw(st.lists(chunk_data.filter(bool), max_size=6))
    bad = draw(st.integers(0, len(chunks))) if respell else -1
    wire = b"".join(
        draw(size_lines(len(data), i == bad)) + data + draw(line_ends) for i, data in enumerate(chunks)
    )
    wire += draw(size_lines(0, bad == len(chunks)))
    wire += b"".join(line + draw(line_ends) for line in draw(st.lists(trailer_lines, max_size=3)))
    wire += draw(line_ends)
    return wire, b"".join(chunks)


BAD_PIECES = [
    *(b"g", b"-1", b"+1", b"0x1", b"1_0", b"1 0", b"f" * 15, b"f" * 16, b"\x00", b";", b"\r", b"\n"),
    *(b"\r\n", b"\x0b", b"\x0c\r\n", b"z" * 50, b"0" * 45, b"0" * 16 + b"\r\n", b"ffffffffffffff\r\n"),
    *(b"1" * (MAX_LINE + 2), b" " * (MAX_LINE + 2), b"X" * (MAX_LINE - 1)),
]


@st.composite
def chunked_wires(draw: st.DrawFn) -> tuple[bytes, bytes | None]:
    """A chunked body and its payload; or a broken one (a size line spelt wrong, a byte changed, added or
    dropped, a bad piece put in, the body cut short, garbage) and None; bytes of a next response may
    follow either."""
    mutation = draw(
        st.sampled_from(["none", "none", "respell", "flip", "insert", "drop", "piece", "cut", "garbage"])
    )
    wire, payload = draw(chunked_bodies(respell=mutation == "respell"))
    if mutation in ("flip", "insert", "drop", "piece", "cut") and wire:
        i = draw(st.integers(0, len(wire) - 1))
        if mutation == "flip":
            wire = wire[:i] + bytes([draw(st.integers(0, 255))]) + wire[i + 1 :]
        elif mutation == "insert":
            wire = wire[:i] + draw(st.binary(min_size=1, max_size=3)) + wire[i:]
        elif mutation == "drop":
            wire = wire[:i] + wire[i + 1 :]
        elif mutation == "piece":
            wire = wire[:i] + draw(st.sampled_from(BAD_PIECES)) + wire[i:]
        else:
            wire = wire[:i]
    elif mutation == "garbage":
        wire = draw(st.binary(max_size=80) | st.lists(st.sampled_from(BAD_PIECES), max_size=4).map(b"".join))
    after = draw(st.sampled_from([b"", b"", b"HTTP/1.1 200 OK\r\n", b"\r\n", b"5\r\nabcde\r\n"]))
    return wire + after, payload if mutation == "none" and not after else None


@st.composite
def reads(draw: st.DrawFn, wire: bytes) -> list[int]:
    """How many bytes each socket read brings: a random cut of ``wire``."""
    cuts = draw(st.lists(st.integers(0, len(wire)), max_size=10))
    if draw(st.booleans()):
        size = draw(st.sampled_from([1, 2, 3, 7, 64, 4096]))
        cuts += range(0, len(wire), max(size, len(wire) // 300))  # at most 300 reads
    bounds = sorted({0, *cuts, len(wire)})
    return [b - a for a, b in itertools.pairwise(bounds)]


def dechunk(cls: type, wire: bytes, sizes: list[int], head: int, room: int) -> tuple[list[Any], bytes]:
    """Drive a ``ChunkedDecoder`` as ``BodyReceiver`` does: one buffer, with ``head`` bytes already parsed
    in front of the region and ``room`` bytes of junk after it; each read's bytes come after what is left
    unparsed. Log every call's result (or error) with the whole buffer and the decoder's state; return
    the log and the payload."""
    decoder = cls()
    log: list[Any] = []
    payload = b""
    buffer = bytearray(b"\xaa" * head)
    start = end = head
    pos = 0
    for size in [*sizes, 0, 0]:  # two more calls with no new bytes: an error kept for the next call
        del buffer[end:]  # the junk after the region
        buffer += wire[pos : pos + size]
        pos += size
        end = len(buffer)
        buffer += b"\x55" * room
        try:
            result: Any = decoder.decode(buffer, start, end)
        except ValueError as exc:
            result = failure(exc)
        else:
            out_start, out_end, start = result
            if out_end >= 0:
                payload += buffer[out_start:out_end]
        log.append((result, contents(buffer), decoder.completed, decoder.leftover))
        if decoder.completed:
            break
    return log, payload


@budget(200)
@given(chunked_wires(), st.data(), st.sampled_from([0, 3]), st.sampled_from([0, 5]))
def test_chunked_decoders_agree_on_any_wire_in_any_reads(
    case: tuple[bytes, bytes | None], data: st.DataObject, head: int, room: int
) -> None:
    wire, payload = case
    sizes = data.draw(reads(wire))
    compiled = dechunk(_chunked_c.ChunkedDecoder, wire, sizes, head, room)
    pure = dechunk(_chunked_py.ChunkedDecoder, wire, sizes, head, room)
    assert compiled == pure
    if payload is not None:  # a valid body: all of its payload, and its end
        log, got = pure
        assert got == payload
        assert log[-1][2:] == (True, False)


@pytest.mark.parametrize("delta", [-2, -1, 0, 1, 2])
@pytest.mark.parametrize("line", ["size", "chunk end", "trailer"])
def test_chunked_decoders_agree_on_the_bound_of_a_framing_line(line: str, delta: int) -> None:
    """A framing line of about ``MAX_LINE`` bytes, held at each point around the bound."""
    length = MAX_LINE + delta  # the line's bytes before its LF
    lines = {
        "size": b"3;" + b"e" * (length - 3) + b"\r\nabc\r\n0\r\n\r\n",
        "chunk end": b"3\r\nabc" + b" " * (length - 1) + b"\r\n0\r\n\r\n",
        "trailer": b"3\r\nabc\r\n0\r\nT: " + b"t" * (length - 4) + b"\r\n\r\n",
    }
    wire = lines[line]
    line_start = {"size": 0, "chunk end": 6, "trailer": 11}[line]
    for cut in range(line_start + MAX_LINE - 3, line_start + MAX_LINE + 4):
        for sizes in ([cut, len(wire) - cut], [line_start + 1, cut - line_start - 1, len(wire) - cut]):
            compiled = dechunk(_chunked_c.ChunkedDecoder, wire, sizes, 0, 0)
            assert compiled == dechunk(_chunked_py.ChunkedDecoder, wire, sizes, 0, 0), (cut, sizes)


@pytest.mark.parametrize(
    "buffer",
    [
        b"3\r\nabc\r\n",
        memoryview(bytearray(b"3\r\nabc\r\n")),
        type("Sub", (bytearray,), {})(b"3\r\nabc\r\n"),
        None,
    ],
    ids=["bytes", "memoryview", "subclass", "None"],
)
def test_chunked_decoders_refuse_the_same_buffers(buffer: Any) -> None:
    outcomes = []
    for module in (_chunked_c, _chunked_py):
        try:
            outcomes.append(module.ChunkedDecoder().decode(buffer, 0, 8))
        except Exception as exc:
            outcomes.append(failure(exc))
    assert outcomes[0] == outcomes[1]


@given(st.integers(-3, 12), st.integers(-3, 12))
@budget(100)
def test_chunked_decoders_check_the_region_alike(start: int, end: int) -> None:
    outcomes = []
    for module in (_chunked_c, _chunked_py):
        buffer = bytearray(b"3\r\nabc\r\n")
        try:
            outcomes.append((module.ChunkedDecoder().decode(buffer, start, end), bytes(buffer)))
        except ValueError as exc:
            outcomes.append(failure(exc))
    assert outcomes[0] == outcomes[1]


def test_chunked_twins_share_their_bound() -> None:
    assert _chunked_c.MAX_LINE == _chunked_py.MAX_LINE


# -- BodyReceiver --------------------------------------------------------------------------------------


class Transport:
    """Records what a receiver asks of its transport. ``extra`` is what its ``get_extra_info()`` tells:
    ``"plain"`` (a socket, no TLS), ``"tls"``, ``"raises"``, or ``"absent"`` (it has no such method)."""

    def __init__(self, log: list[Any], reading: bool, extra: str) -> None:
        self.log = log
        self.reading = reading
        self.extra = extra
        self.protocol: Any = "previous"
        if extra != "absent":
            self.get_extra_info = self._get_extra_info

    def _get_extra_info(self, name: str, default: Any = None) -> Any:
        if self.extra == "raises":
            raise RuntimeError("transport closed")
        if name == "socket":
            return object()
        return object() if name == "sslcontext" and self.extra == "tls" else default

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol
        self.log.append("set_protocol")

    def is_reading(self) -> bool:
        return self.reading

    def pause_reading(self) -> None:
        self.reading = False
        self.log.append("pause")

    def resume_reading(self) -> None:
        self.reading = True
        self.log.append("resume")

    def abort(self) -> None:
        self.log.append("abort")


class Previous:
    """The protocol a receiver takes the transport from, and gives it back to."""

    def __init__(self, log: list[Any]) -> None:
        self.log = log

    def connection_lost(self, exc: BaseException | None) -> None:
        self.log.append(("previous lost", None if exc is None else failure(exc)))


READ_SIZE = _receiver_py.READ_SIZE
CAPACITY = _receiver_py.CAPACITY
QUIET_READS = _receiver_py.QUIET_READS
INITIAL_SIZE = _receiver_py.INITIAL_SIZE
PATTERN = bytes(range(256))
sizehints = st.sampled_from([-1, -1, 0, 1, 100, READ_SIZE - 1, READ_SIZE + 1, 300_000, 3 * CAPACITY])
read_lengths = st.sampled_from([1, 9, 100, 1000, 4095, 4096, READ_SIZE]) | st.integers(1, 5000)
framings = st.sampled_from(["chunked", "length", "close"])

receiver_ops = st.one_of(
    st.tuples(st.just("read"), sizehints, read_lengths),  # the event loop: get_buffer, then buffer_updated
    st.tuples(st.just("read"), sizehints, read_lengths),
    st.tuples(st.just("reads"), st.integers(2, 12), read_lengths),  # many reads in a row, nothing consumed
    # reads that take all the room offered, until the socket is paused; all but a few bytes consumed
    st.tuples(st.just("fill"), st.sampled_from([0, 0, 1, 10])),
    st.tuples(st.just("fill"), st.sampled_from([0, 0, 1, 10])),
    st.tuples(st.just("burst"), st.integers(1, 8)),  # full reads, each consumed: the buffer grows
    st.tuples(
        st.just("quiet"),
        st.sampled_from([1, 10, QUIET_READS - 1, QUIET_READS, QUIET_READS + 1]),
        st.sampled_from([9, INITIAL_SIZE - 1, INITIAL_SIZE]),
    ),
    st.tuples(st.just("take")),
    st.tuples(st.just("poll")),
    st.tuples(st.just("poll")),
    st.tuples(st.just("receive")),
    st.tuples(st.just("check")),
    st.tuples(st.just("unparsed"), st.integers(0, 50)),  # the consumer leaves a partial line unparsed
    st.tuples(st.just("framing"), framings, st.integers(0, 10**20)),
    st.tuples(st.just("eof")),
    st.tuples(st.just("lost"), st.booleans()),
    st.tuples(st.just("interrupt")),
    st.tuples(st.just("restore")),
    st.tuples(st.just("abort")),
)


def run_receiver(
    modules: tuple[Any, Any, Any], wire: bytes, setup: dict[str, Any], ops: list[Any]
) -> list[Any]:
    """Run one script on one twin; the log of everything observable, after every step."""
    chunked_module, receiver_module, _ = modules
    log: list[Any] = []
    transport = Transport(log, setup["reading"], setup["extra"])
    rx = receiver_module.BodyReceiver(transport, Previous(log), setup["initial"], setup["eof"])
    futures: list[asyncio.Future[None]] = []
    sent = 0

    def fill(sizehint: int, length: int) -> tuple[int, int]:
        nonlocal sent
        view = rx.get_buffer(sizehint)
        offered = len(view)
        assert offered > 0, "a BufferedProtocol must never offer an empty buffer"
        n = min(length, offered)
        data = wire[sent : sent + n]  # the wire, then a pattern
        view[:n] = data + (PATTERN * (1 + (n - len(data)) // len(PATTERN)))[: n - len(data)]
        sent += n
        rx.buffer_updated(n)
        return offered, n

    def future(got: asyncio.Future[None]) -> tuple[str, int]:
        if not any(got is f for f in futures):
            futures.append(got)
        return "future", next(i for i, f in enumerate(futures) if f is got)

    def frame(framing: str, length: int) -> None:
        if framing == "chunked":
            rx.set_framing(chunked=chunked_module.ChunkedDecoder())
        else:
            rx.set_framing(length=length if framing == "length" else None)

    if setup["framing"]:
        frame(*setup["framing"])
    for index, op in enumerate(ops):
        kind = op[0]
        result: Any = None
        try:
            if kind == "read":
                result = fill(op[1], op[2])
            elif kind == "reads":
                result = [fill(-1, op[2]) for _ in range(op[1])]
            elif kind == "fill":
                result = [fill(-1, 1 << 30) for _ in range(40) if transport.reading]
                result.append(len(rx.take()))
                rx.start = max(0, rx.end - op[1])
            elif kind == "burst":
                result = [(fill(-1, READ_SIZE), len(rx.take())) for _ in range(op[1])]
            elif kind == "quiet":
                result = []
                for _ in range(op[1]):
                    fill(-1, op[2])
                    result.append(len(rx.take()))
            elif kind == "take":
                result = bytes(rx.take())
            elif kind == "poll":
                got = rx.poll()
                result = bytes(got) if isinstance(got, memoryview) else future(got) if got else got
            elif kind == "receive":
                result = future(rx.receive())
            elif kind == "check":
                rx.check()
            elif kind == "unparsed":
                rx.start = max(0, min(rx.end, rx.start - op[1]))
            elif kind == "framing":
                frame(op[1], op[2])
            elif kind == "eof":
                result = rx.eof_received()
            elif kind == "lost":
                rx.connection_lost(ConnectionResetError(f"reset {index}") if op[1] else None)
            elif kind == "interrupt":
                rx.interrupt(TimeoutError(f"no data {index}"))
            elif kind == "restore":
                rx.restore()
            else:
                rx.abort()
        except Exception as exc:
            result = failure(exc)
        state = (
            *(rx.start, rx.end, rx.eof, rx.completed, rx.leftover, rx.remaining),
            *(None if e is None else failure(e) for e in (rx.lost, rx.interruption, rx.failed)),
            transport.protocol is rx,
            transport.reading,
        )
        log.append((op, result, state, contents(rx.buffer), [f.done() for f in futures]))
    return log


receiver_setups = st.fixed_dictionaries(
    {
        "initial": st.sampled_from([b"", b"4\r\ndata\r\n", b"x" * 5000]),
        "eof": st.sampled_from([False, False, False, True]),  # the stream ended before the body began
        "reading": st.booleans(),
        "extra": st.sampled_from(["plain", "tls", "raises", "absent"]),
        "framing": st.none() | st.tuples(framings, st.sampled_from([0, 1, 10, 5000, 10**20])),
    }
)


@budget(150)
@given(chunked_wires(), receiver_setups, st.lists(receiver_ops, max_size=25))
async def test_receivers_agree_on_any_script(
    case: tuple[bytes, bytes | None], setup: dict[str, Any], ops: list[Any]
) -> None:
    wire, _ = case
    compiled = run_receiver(TWINS["c"], wire, setup, ops)
    pure = run_receiver(TWINS["py"], wire, setup, ops)
    assert len(compiled) == len(pure)
    for step, (c, p) in enumerate(zip(compiled, pure, strict=True)):
        assert c == p, f"step {step}: {ops[step] if step < len(ops) else 'the end'}"


def test_receiver_twins_share_their_sizes() -> None:
    names = ("READ_SIZE", "INITIAL_SIZE", "CAPACITY", "QUIET_READS", "TLS_RECORD", "MAX_LENGTH")
    assert [getattr(_receiver_c, n) for n in names] == [getattr(_receiver_py, n) for n in names]


# -- EventIterator -------------------------------------------------------------------------------------

# What step() gives, in turn: a batch of n events, None (next_batch() runs), a future done (or failed, or
# cancelled) after some turns of the loop, or an error.
step_items = st.one_of(
    st.tuples(st.just("batch"), st.integers(0, 3)),
    st.tuples(st.just("none")),
    st.tuples(st.just("future"), st.integers(1, 3), st.sampled_from(["done", "done", "error", "cancel"])),
    st.tuples(st.just("raise")),
)
# What next_batch() gives, in turn, after some turns of the loop: a batch, the end (None), or an error.
batch_items = st.tuples(
    st.sampled_from(["batch", "batch", "end", "raise"]), st.integers(0, 3), st.integers(0, 2)
)
# What the consumer does, with the iterator at some index among those it made.
iterator_ops = st.one_of(
    st.tuples(st.just("next"), st.integers(0, 3)),
    st.tuples(st.just("next"), st.integers(0, 3)),
    st.tuples(st.just("next"), st.integers(0, 3)),
    st.tuples(st.just("new")),  # another iterator over the same connection (they share ``rest``)
    st.tuples(st.just("aclose"), st.integers(0, 3)),
    st.tuples(st.just("drop"), st.integers(0, 3)),  # abandoned: it ends from the loop
    st.tuples(st.just("cancel"), st.integers(0, 3), st.integers(0, 3)),  # anext() cancelled after n turns
    st.tuples(st.just("spawn"), st.integers(0, 3)),  # anext() in a task of its own, awaited later
    st.tuples(st.just("join")),  # await the oldest such task
    st.tuples(st.just("turns"), st.integers(1, 3)),
)


class Connection:
    """``step`` and ``next_batch`` over the scripts, as a connection gives them to its iterators; every
    call, event and ``on_exit`` is logged."""

    def __init__(self, steps: list[Any], batches: list[Any], log: list[Any]) -> None:
        self.steps = list(steps)
        self.batches = list(batches)
        self.log = log
        self.made = 0
        self.rest: list[Iterator[dict[str, Any]]] = [iter(())]

    def events(self, n: int) -> list[dict[str, Any]]:
        self.made += n
        return [{"data": str(i)} for i in range(self.made - n, self.made)]

    def step(self) -> Any:
        item = self.steps.pop(0) if self.steps else ("none",)
        self.log.append(("step", item))
        if item[0] == "batch":
            return self.events(item[1])
        if item[0] == "future":
            loop = asyncio.get_running_loop()
            future: asyncio.Future[None] = loop.create_future()

            def settle(turns: int, how: str) -> None:
                if future.done():
                    return
                if turns:
                    loop.call_soon(settle, turns - 1, how)
                elif how == "done":
                    future.set_result(None)
                elif how == "error":
                    future.set_exception(OSError("future failed"))
                else:
                    future.cancel()

            loop.call_soon(settle, item[1], item[2])
            return future
        if item[0] == "raise":
            raise RuntimeError("step broke")
        return None

    async def next_batch(self) -> list[dict[str, Any]] | None:
        kind, n, turns = self.batches.pop(0) if self.batches else ("end", 0, 0)
        self.log.append(("next_batch", kind, n, turns))
        try:
            for _ in range(turns):
                await asyncio.sleep(0)
        except BaseException as exc:
            self.log.append(("next_batch interrupted", type(exc).__name__))
            raise
        if kind == "raise":
            raise KeyError("next_batch broke")
        return None if kind == "end" else self.events(n)

    def iterator(self, cls: Callable[..., Any], name: int) -> Any:
        return cls(self, name, self.rest)

    def _step(self) -> Any:
        return self.step()

    def _next_batch(self) -> Any:
        return self.next_batch()

    def _leave(self, name: int) -> None:
        self.log.append(("on_exit", name))


async def turns(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def run_iterators(
    cls: Callable[..., Any], steps: list[Any], batches: list[Any], ops: list[Any]
) -> list[Any]:
    log: list[Any] = []
    conn = Connection(steps, batches, log)
    iterators = [(0, conn.iterator(cls, 0))]  # (name, iterator)
    tasks: dict[int, asyncio.Task[Any]] = {}  # by iterator name: an anext() running in a task
    made = 1

    async def anext_of(it: Any) -> Any:
        return await it.__anext__()

    async def outcome(awaitable: Any) -> Any:
        try:
            return "event", await awaitable
        except StopAsyncIteration:
            return "stop"
        except (Exception, asyncio.CancelledError) as exc:
            return failure(exc)

    async def act(it: Any, op: Any) -> Any:
        """One op on one iterator; no reference to it is left behind."""
        if op[0] == "next":
            return await outcome(it.__anext__())
        if op[0] == "aclose":
            return await outcome(it.aclose())
        task = asyncio.ensure_future(anext_of(it))
        await turns(op[2])
        task.cancel()
        return await outcome(task)

    for op in ops:
        log.append(op)
        if op[0] == "new":
            iterators.append((made, conn.iterator(cls, made)))
            made += 1
        elif op[0] == "turns":
            await turns(op[1])
        elif op[0] == "join":
            if tasks:
                name = next(iter(tasks))
                log.append(("joined", name, await outcome(tasks.pop(name))))
        elif iterators:
            index = op[1] % len(iterators)
            name = iterators[index][0]
            if op[0] == "drop":
                del iterators[index]  # freed at once (unless its task runs): neither twin makes a cycle
                log.append("dropped")
                await turns(2)
            elif name in tasks:
                log.append("busy")  # one anext() at a time per iterator
            elif op[0] == "spawn":
                tasks[name] = asyncio.ensure_future(anext_of(iterators[index][1]))
            else:
                log.append(await act(iterators[index][1], op))
    for name in list(tasks):
        log.append(("joined", name, await outcome(tasks.pop(name))))
    del iterators
    log.append("dropped")
    await turns(2)
    log.append(("left in rest", list(conn.rest[0])))
    return log


@budget(150)
@given(
    st.lists(step_items, max_size=12), st.lists(batch_items, max_size=6), st.lists(iterator_ops, max_size=14)
)
async def test_event_iterators_agree_on_any_script(
    steps: list[Any], batches: list[Any], ops: list[Any]
) -> None:
    compiled = await run_iterators(_events_c.EventIterator, steps, batches, ops)
    pure = await run_iterators(_events_py.EventIterator, steps, batches, ops)
    assert compiled == pure


@pytest.mark.parametrize("rest", [[], [iter(()), iter(())], (iter(()),), None])
async def test_event_iterators_refuse_the_same_rest(rest: Any) -> None:
    outcomes = []
    for cls in (_events_c.EventIterator, _events_py.EventIterator):
        try:
            cls(None, None, rest)
        except Exception as exc:
            outcomes.append(failure(exc))
    assert outcomes[0] == outcomes[1]
    assert len(outcomes) == 2
