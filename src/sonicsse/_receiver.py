"""Receive a response body straight into one reusable buffer: an ``asyncio.BufferedProtocol``.

asyncio's ``StreamReader`` copies every byte twice after the kernel (``recv()`` makes a new bytes object,
which is appended to the reader's buffer, which ``read()`` copies out again), allocates a bytes object per
socket read, and pauses and resumes the socket around every read once 128 KiB are queued. After the
response head, the transport hands the socket to a ``BodyReceiver`` instead: the socket is read into one
preallocated buffer (``recv_into``) and the consumer parses the bytes where they lie.

The consumer owns ``buffer[start:end]``: it parses from ``start``, moves ``start`` past what it used, and
may rewrite the bytes it has already parsed (the chunked decoder compacts the payload in place). A view it
was given stays valid until it next awaits ``receive()``: the buffer is only reorganised while it waits.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["BodyReceiver"]

#: Buffer size. Socket reads are at most this large, so events are decoded in batches of up to 64 KiB:
#: large enough that per-read costs vanish, small enough that a batch's event dicts stay in cache.
#: (asyncio's StreamReader read 256 KiB into a new bytes object each time; with glibc, buffers over
#: 128 KiB grow and trim the heap with brk() on every read.)
CAPACITY = 1 << 16
#: The unparsed tail is moved to the front of the buffer when less than this is free after it.
_MIN_FREE = 1 << 12


class BodyReceiver(asyncio.BufferedProtocol):
    """The protocol of a connection while its response body is read; ``restore()`` gives it back."""

    def __init__(self, transport: Any, previous: Any, initial: bytes = b"", eof: bool = False) -> None:
        self.buffer = bytearray(max(CAPACITY, len(initial) + _MIN_FREE))
        self._view = memoryview(self.buffer)
        self.start = 0
        self.end = len(initial)
        self._view[: self.end] = initial
        #: The peer ended the stream (EOF or connection lost); what is buffered is still to be read.
        self.eof = eof
        #: Why the connection was lost, if it did not end cleanly.
        self.lost: BaseException | None = None
        self._interrupt: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._transport = transport
        self._previous = previous
        if not eof:
            transport.set_protocol(self)
            if not transport.is_reading():  # the StreamReader had paused it
                transport.resume_reading()

    # -- protocol callbacks (the event loop) ------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.start == self.end:
            self.start = self.end = 0
        elif len(self.buffer) - self.end < _MIN_FREE:
            self._compact()
        return self._view[self.end :]

    def buffer_updated(self, nbytes: int) -> None:
        self.end += nbytes
        if self.end == len(self.buffer) and not self._paused:
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

    def view(self, start: int, stop: int) -> memoryview:
        """``buffer[start:stop]`` without a copy; valid until the next ``receive()``."""
        return self._view[start:stop]

    def move(self, dest: int, start: int, stop: int) -> None:
        """Copy ``buffer[start:stop]`` to ``dest`` (``dest <= start``: the consumer compacting)."""
        view = self._view
        view[dest : dest + stop - start] = view[start:stop]

    def check(self) -> None:
        """Raise the exception given to ``interrupt()``, if any."""
        if self._interrupt is not None:
            raise self._interrupt

    async def receive(self) -> None:
        """Wait until bytes arrive after ``end``, the stream ends (``eof``), or an interrupt."""
        if self._interrupt is not None:
            raise self._interrupt
        if self.eof:
            return
        if self._paused:
            self._compact()
            self._paused = False
            self._transport.resume_reading()
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            self._waiter = None
        if self._interrupt is not None:
            raise self._interrupt

    def interrupt(self, exc: BaseException) -> None:
        """Make the pending (or next) ``receive()`` and ``check()`` raise ``exc``."""
        self._interrupt = exc
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

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
