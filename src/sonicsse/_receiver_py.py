"""Receive a response body straight into one reusable buffer: an ``asyncio.BufferedProtocol``.

asyncio's ``StreamReader`` copies every byte twice after the kernel (``recv()`` makes a new bytes object,
which is appended to the reader's buffer, which ``read()`` copies out again), allocates a bytes object per
socket read, and pauses and resumes the socket around every read once 128 KiB are queued. After the
response head, the transport hands the socket to a ``BodyReceiver`` instead: the socket is read into one
preallocated buffer (``recv_into``) and the consumer parses the bytes where they lie.

The receiver also knows how the body is framed (``set_framing()``): ``take()`` and ``poll()`` give the
payload without its framing and say when the body is ``completed``, so that the consumer's per-read step
is one call.

The buffer holds only what a stream needs: it starts at INITIAL_SIZE, grows while reads fill it (bulk,
large events) or a TLS layer asks for more, and goes back to INITIAL_SIZE once the stream is quiet again,
so that thousands of slow streams cost a few KiB each; while a stream waits with nothing buffered, its
buffer is given up, for the streams that are reading.

The consumer owns ``buffer[start:end]``: it parses from ``start``, moves ``start`` past what it used, and
may rewrite the bytes it has already parsed (the chunked decoder compacts the payload in place). A view it
was given stays valid until it next awaits anything: only the event loop's callbacks (``get_buffer``)
move or replace the buffer.

This is the pure-Python twin; ``ext/_receiver_c.pyx`` is the same class compiled, and ``sonicsse._impl``
picks one.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any, Protocol, cast

__all__ = ["BodyReceiver"]

#: Largest socket read: events are decoded in batches of up to 64 KiB, large enough that per-read costs
#: vanish, small enough that a batch's event dicts stay in cache.
READ_SIZE = 1 << 16
#: The buffer starts at one page (a quiet stream costs little memory, and a burst of 1,000 new streams
#: does not fault in 16 KiB each) and doubles, up to CAPACITY, while reads fill all the room they are
#: given. Above CAPACITY unread, the socket is paused.
INITIAL_SIZE = 1 << 12
CAPACITY = 1 << 18
#: Room offered on top of what a TLS layer asks for (its size hint can leave out a decrypted record).
#: Only a TLS transport's size hint is a need: a plain socket's is the event loop's read size (uvloop
#: passes libuv's 64 KiB on every read), and honouring it kept 80 KiB per stream, however quiet.
TLS_RECORD = 1 << 14
#: The largest Content-Length held (the compiled twin keeps it in a C ``Py_ssize_t``).
MAX_LENGTH = sys.maxsize
#: A grown buffer goes back to INITIAL_SIZE after this many reads in a row that would have fitted in it, so
#: a stream that once had a burst does not keep 256 KiB for the rest of its life.
QUIET_READS = 64
#: A stream that waits with nothing buffered gives its INITIAL_SIZE buffer up and takes one when its next
#: read comes, so thousands of idle streams hold no buffer at all. The spare list that serves those reads
#: keeps at most this many (1 MiB); a buffer given up when it is full is freed.
SPARE_BUFFERS = 256
_spare: list[memoryview] = []  # views of INITIAL_SIZE buffers, each the whole buffer
_NO_BUFFER = bytearray()  # stands for a buffer given up: the view below keeps it from ever growing
_NO_VIEW = memoryview(_NO_BUFFER)


def takes_size_hints(transport: Any) -> bool:
    """Whether ``get_buffer()`` must honour the size hints of ``transport``'s reads: unless it is known
    to be a plain socket (it names its socket and no TLS context), as a TLS layer's are needs."""
    get_extra_info = getattr(transport, "get_extra_info", None)
    if get_extra_info is None:
        return True
    try:
        return get_extra_info("sslcontext") is not None or get_extra_info("socket") is None
    except Exception:
        return True


class Dechunker(Protocol):
    """What ``set_framing()`` takes: a ``ChunkedDecoder`` of either twin."""

    completed: bool
    leftover: bool

    def decode(self, buffer: bytearray, start: int, end: int) -> tuple[int, int, int]: ...


class BodyReceiver(asyncio.BufferedProtocol):
    """The protocol of a connection while its response body is read; ``restore()`` gives it back."""

    # Slots: a read touches this object, and with 1,000 streams each one's state is cold in the cache.
    __slots__ = (
        "_chunked",
        "_filled",
        "_hints",
        "_loop",
        "_offered",
        "_paused",
        "_previous",
        "_quiet",
        "_transport",
        "_view",
        "_waiter",
        "buffer",
        "completed",
        "end",
        "eof",
        "failed",
        "interruption",
        "leftover",
        "lost",
        "remaining",
        "start",
    )

    def __init__(self, transport: Any, previous: Any, initial: bytes = b"", eof: bool = False) -> None:
        size = INITIAL_SIZE
        while size < 2 * len(initial):  # the bytes aiosonic read with the head (often the first event)
            size *= 2
        self.buffer = bytearray(size)
        self._view = memoryview(self.buffer)
        self.start = 0
        self.end = len(initial)
        self._view[: self.end] = initial
        #: The peer ended the stream (EOF or connection lost); what is buffered is still to be read.
        self.eof = eof
        #: Why the connection was lost, if it did not end cleanly.
        self.lost: BaseException | None = None
        #: The exception given to ``interrupt()``: ``check()`` raises it.
        self.interruption: BaseException | None = None
        #: The framing says the body ended (the last chunk, or all ``Content-Length`` bytes, was taken).
        self.completed = False
        #: Bytes came after the end of the body (the connection cannot be reused).
        self.leftover = False
        #: Why the framing is broken: the ValueError ``take()`` raised (``poll()`` gives None instead).
        self.failed: ValueError | None = None
        #: Bytes of a ``Content-Length`` body still to come; -1 when the body is not framed by length.
        self.remaining = -1
        self._chunked: Dechunker | None = None
        self._loop = asyncio.get_running_loop()
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._offered = 0
        self._filled = False  # the last read took all the room it was given: more is probably waiting
        self._quiet = 0  # reads in a row that were small
        self._transport = transport
        self._previous = previous
        self._hints = takes_size_hints(transport)
        if not eof:
            transport.set_protocol(self)
            if not transport.is_reading():  # the StreamReader had paused it
                transport.resume_reading()

    # -- protocol callbacks (the event loop) ------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        if not self.buffer:  # given up while the stream waited (start == end == 0)
            try:
                self._view = _spare.pop()
            except IndexError:
                self._view = memoryview(bytearray(INITIAL_SIZE))
            self.buffer = cast(bytearray, self._view.obj)  # the bytearray behind the view
        end = self.end
        if self.start == end:
            self.start = self.end = end = 0
            if self._quiet >= QUIET_READS and len(self.buffer) > INITIAL_SIZE:
                self.buffer = bytearray(INITIAL_SIZE)
                self._view = memoryview(self.buffer)
                self._filled = False
        room = len(self.buffer) - end
        if room < READ_SIZE:
            if self.start:
                self._compact()
                end = self.end
                room = len(self.buffer) - end
            if room == 0 or (self._filled and room < READ_SIZE and len(self.buffer) < CAPACITY):
                # room == 0: fed while paused (a TLS layer hands over all it decrypted): never refuse.
                # Doubling (a 5 KiB event takes 8 KiB, not 68); past CAPACITY, a read's worth more.
                self._grow(1 if len(self.buffer) < CAPACITY else READ_SIZE)
                room = len(self.buffer) - end
        offered = room if room < READ_SIZE else READ_SIZE
        if sizehint > offered and self._hints:
            # A TLS layer asks for room for everything it has decrypted: uvloop's reads what does not
            # fit on a later turn of the loop, and drops it if the peer's FIN comes in between.
            want = sizehint + TLS_RECORD  # the decrypted record in hand may come on top
            if want > room:
                self._grow(want)
                room = len(self.buffer) - end
            offered = want
        self._offered = offered
        return self._view[end : end + offered]

    def buffer_updated(self, nbytes: int) -> None:
        self.end += nbytes
        self._filled = nbytes == self._offered
        self._quiet = self._quiet + 1 if nbytes < INITIAL_SIZE else 0
        if self.end == len(self.buffer) and len(self.buffer) >= CAPACITY and not self._paused:
            # Full: the socket waits (TCP flow control) until the consumer has caught up.
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        if exc is not None and self.lost is None:
            self.lost = exc
        self._wake()
        previous = self._previous
        if previous is not None:
            # Keep the StreamReader/StreamWriter pair consistent (their closed future resolves).
            self._previous = None
            previous.connection_lost(exc)

    # -- consumer side ----------------------------------------------------------------------------

    def set_framing(self, chunked: Dechunker | None = None, length: int | None = None) -> None:
        """How the body ends: chunked transfer coding, undone by ``chunked``; ``length`` bytes
        (``Content-Length``); or neither, at the end of the stream (close-delimited, the default)."""
        self._chunked = chunked
        # A Content-Length past 2**63 - 1 (aiosonic passes any header value through) never ends before
        # the connection does: both twins hold it as that largest length.
        self.remaining = -1 if length is None else min(length, MAX_LENGTH)

    def take(self) -> memoryview:
        """The body bytes received and not taken yet, without their framing: a view, valid until the
        consumer next awaits anything, and empty when only framing (or a partial chunk size line) came.
        Sets ``completed`` (and ``leftover``) at the end of the body; raises ValueError when the chunked
        framing is broken."""
        start = self.start
        chunked = self._chunked
        if chunked is not None:
            try:
                out_start, out_end, self.start = chunked.decode(self.buffer, start, self.end)
            except ValueError as exc:
                self.failed = exc
                raise
            if chunked.completed:
                self.completed = True
                self.leftover = chunked.leftover
            return self._view[out_start:out_end]
        stop = self.end
        if self.remaining >= 0:
            stop = min(stop, start + self.remaining)
            self.remaining -= stop - start
            if self.remaining == 0:
                self.completed = True
                self.leftover = stop < self.end
        self.start = stop
        return self._view[start:stop]

    def poll(self) -> memoryview | asyncio.Future[None] | None:
        """``take()`` for the steady state of a stream: the next payload bytes when some are buffered,
        else the ``receive()`` future. None when the consumer must look closer: the body is completed,
        the framing is broken (``failed``), the stream ended (``eof``) or was interrupted."""
        if self.completed or self.failed is not None or self.interruption is not None:
            return None
        if self.start < self.end:
            try:
                data = self.take()
            except ValueError:  # kept in self.failed
                return None
            if data:
                return data
            if self.completed:
                return None
        if self.eof:
            return None
        return self.receive()

    def check(self) -> None:
        """Raise the exception given to ``interrupt()``, if any."""
        if self.interruption is not None:
            raise self.interruption

    def receive(self) -> asyncio.Future[None]:
        """A future done when bytes arrive after ``end``, the stream ends (``eof``) or ``interrupt()`` is
        called; call ``check()`` after it. A plain future, not a coroutine: one read, one object.

        The future never holds an exception, so a consumer that is cancelled or gives up while another
        task interrupts it leaves nothing unretrieved behind."""
        if self.interruption is not None:
            raise self.interruption
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            # A second consumer waits too (two iterators, or anext() from two tasks): the same future
            # wakes both, where a new one would leave the first waiting for ever.
            return waiter
        waiter = self._loop.create_future()
        if self.eof:
            waiter.set_result(None)
            return waiter
        if self._paused:
            self._compact()
            self._paused = False
            self._transport.resume_reading()
        elif self.start == self.end and len(self.buffer) == INITIAL_SIZE:
            # Nothing to keep while it waits: the buffer goes to the spare list (or is freed when that
            # is full), and get_buffer() takes one when the next read comes.
            if len(_spare) < SPARE_BUFFERS:
                _spare.append(self._view)
            self.buffer = _NO_BUFFER
            self._view = _NO_VIEW
            self.start = self.end = 0
        self._waiter = waiter
        return waiter

    def interrupt(self, exc: BaseException) -> None:
        """Wake the pending ``receive()``; ``check()`` and the next ``receive()`` raise ``exc``."""
        self.interruption = exc
        self._wake()

    def restore(self) -> None:
        """Give the connection back to its previous protocol (before it returns to a pool)."""
        previous = self._previous
        self._previous = None
        if previous is not None and not self.eof:
            self._transport.set_protocol(previous)
            if self._paused:
                self._paused = False
                self._transport.resume_reading()

    def abort(self) -> None:
        """Close the socket at once (nobody else knows it)."""
        self._transport.abort()

    def _compact(self) -> None:
        start, end = self.start, self.end
        if start:
            self._view[: end - start] = self._view[start:end]
            self.start, self.end = 0, end - start

    def _grow(self, room: int = READ_SIZE) -> None:
        """A larger buffer, with at least ``room`` bytes after ``end``."""
        grown = bytearray(max(min(2 * len(self.buffer), CAPACITY), self.end + room))
        grown[: self.end] = self._view[: self.end]
        self.buffer = grown
        self._view = memoryview(grown)

    def _wake(self) -> None:
        waiter = self._waiter
        self._waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
