# cython: language_level=3
# cython: freethreading_compatible=True
# Free-threading: the module keeps no mutable global state (only constants set at import), and each receiver
# belongs to one connection, driven by one event loop.
"""The compiled twin of ``sonicsse._receiver_py``: a response body received into one reusable buffer.

Same buffer, flow control, framing and wake-ups as the pure twin (see its docstring for the why of
each). The event loop calls ``get_buffer()`` and ``buffer_updated()`` once per socket read, and the
consumer calls ``poll()`` once per read and ``receive()`` once per read it waits for: with 1,000 streams
each call finds the stream's state cold in the cache, and as Python functions they were a large part of
what a read cost beyond the socket.
"""

import asyncio

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from libc.string cimport memchr
from cpython.pyport cimport PY_SSIZE_T_MAX

from sonicsse._parser_c import SSEDecoder

cdef enum:
    C_READ_SIZE = 1 << 16
    C_INITIAL_SIZE = 1 << 12
    C_CAPACITY = 1 << 18
    C_QUIET_READS = 64
    # The most payload read straight into a held line at once: the line is one str that is there
    # anyway, so a read may be larger than READ_SIZE (fewer reads per megabyte).
    C_LAND_SIZE = 1 << 18
    # The framing between two chunks' data guessed before it was seen: the longest size line without
    # extensions (15 hex digits) with both CRLFs.
    C_CHUNK_HEAD = 19

READ_SIZE = C_READ_SIZE
INITIAL_SIZE = C_INITIAL_SIZE
CAPACITY = C_CAPACITY
QUIET_READS = C_QUIET_READS
MAX_LENGTH = PY_SSIZE_T_MAX
LAND_SIZE = C_LAND_SIZE

cdef object Future = asyncio.Future
cdef object CompiledDecoder = SSEDecoder  # the one decoder whose held line a read can go into
cdef object get_running_loop = asyncio.get_running_loop
# A loop whose create_future() is asyncio's own makes the same future as Future(loop=loop), which is
# called directly; any other create_future() is used (uvloop's, or one a subclass or an instrumenting
# tool put on the loop or its class).
cdef object BASE_CREATE_FUTURE = asyncio.BaseEventLoop.create_future


cdef class ReceiverCore:
    """The state and methods of ``BodyReceiver`` (which adds ``asyncio.BufferedProtocol`` as a base)."""

    cdef public bytearray buffer
    cdef public Py_ssize_t start
    cdef public Py_ssize_t end
    cdef public bint eof
    cdef public object lost
    cdef public object interruption
    cdef public bint completed
    cdef public bint leftover
    cdef public object failed
    cdef public Py_ssize_t remaining
    cdef public long long landed
    cdef public double landed_at
    cdef object _chunked
    cdef object _view
    cdef object _loop
    cdef object _create_future  # None: Future(loop=self._loop) is the same
    cdef object _waiter
    cdef object _transport
    cdef object _previous
    cdef Py_ssize_t _offered
    cdef Py_ssize_t _quiet
    cdef bint _paused
    cdef bint _filled
    # Receiving straight into the decoder's held line (land_into()): the decoder, the view of it the
    # last get_buffer() gave out (None: the buffer was given), how much of that view is payload (the
    # rest is the framing expected after it), whether the last read landed and the line goes on, and
    # how long the framing between two chunks' data was guessed to be.
    cdef object _sink
    cdef object _landing
    cdef Py_ssize_t _landing_payload
    cdef bint _lands
    cdef Py_ssize_t _chunk_head

    def __init__(self, transport, previous, initial=b"", bint eof=False):
        cdef Py_ssize_t size = C_INITIAL_SIZE
        cdef Py_ssize_t n = len(initial)
        while size < n + C_INITIAL_SIZE:
            size *= 2
        self.buffer = bytearray(size)
        self._view = memoryview(self.buffer)
        self.start = 0
        self.end = n
        self._view[:n] = initial
        self.eof = eof
        self.lost = None
        self.interruption = None
        self.completed = False
        self.leftover = False
        self.failed = None
        self.remaining = -1
        self.landed = 0
        self.landed_at = 0.0
        self._chunked = None
        self._sink = None
        self._landing = None
        self._landing_payload = 0
        self._lands = False
        self._chunk_head = C_CHUNK_HEAD
        self._loop = get_running_loop()
        create_future = self._loop.create_future
        self._create_future = (
            None if getattr(create_future, "__func__", None) is BASE_CREATE_FUTURE else create_future
        )
        self._waiter = None
        self._paused = False
        self._offered = 0
        self._filled = False
        self._quiet = 0
        self._transport = transport
        self._previous = previous
        if not eof:
            transport.set_protocol(self)
            if not transport.is_reading():
                transport.resume_reading()

    # -- protocol callbacks (the event loop) ------------------------------------------------------

    def get_buffer(self, sizehint):
        cdef Py_ssize_t end = self.end
        cdef Py_ssize_t room
        if self._sink is not None:
            self._landing = None
            # Only while the consumer waits with everything before parsed, and the last read was not
            # small (a long line can be coming: ask the decoder) or went into the line.
            if (self._quiet == 0 or self._lands) and self.start == end and self._waiter is not None \
                    and not self._waiter.done():
                landing = self._offer_landing()
                if landing is not None:
                    return landing
        if self.start == end:
            self.start = self.end = end = 0
            if self._quiet >= C_QUIET_READS and PyByteArray_GET_SIZE(self.buffer) > C_INITIAL_SIZE:
                self.buffer = bytearray(C_INITIAL_SIZE)
                self._view = memoryview(self.buffer)
                self._filled = False
        room = PyByteArray_GET_SIZE(self.buffer) - end
        if room < C_READ_SIZE:
            if self.start:
                self._compact()
                end = self.end
                room = PyByteArray_GET_SIZE(self.buffer) - end
            if room == 0 or (
                self._filled and room < C_READ_SIZE and PyByteArray_GET_SIZE(self.buffer) < C_CAPACITY
            ):
                # room == 0: fed while paused (a TLS layer hands over all it decrypted): never refuse.
                self._grow()
                room = PyByteArray_GET_SIZE(self.buffer) - end
        self._offered = room if room < C_READ_SIZE else C_READ_SIZE
        return self._view[end : end + self._offered]

    def buffer_updated(self, Py_ssize_t nbytes):
        cdef Py_ssize_t size = PyByteArray_GET_SIZE(self.buffer)
        if self._landing is not None:
            self._landed(nbytes)
            return
        self.end += nbytes
        self._filled = nbytes == self._offered
        self._quiet = self._quiet + 1 if nbytes < C_INITIAL_SIZE else 0
        if self.end == size and size >= C_CAPACITY and not self._paused:
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def eof_received(self):
        self.eof = True
        self._wake()
        return False

    def connection_lost(self, exc):
        self.eof = True
        if exc is not None and self.lost is None:
            self.lost = exc
        self._wake()
        previous = self._previous
        if previous is not None:
            self._previous = None
            previous.connection_lost(exc)

    # -- consumer side ----------------------------------------------------------------------------

    def set_framing(self, chunked=None, length=None):
        """How the body ends: chunked transfer coding, undone by ``chunked``; ``length`` bytes
        (``Content-Length``); or neither, at the end of the stream (close-delimited, the default)."""
        self._chunked = chunked
        self.remaining = -1 if length is None else min(length, PY_SSIZE_T_MAX)  # see the pure twin

    def land_into(self, decoder):
        """Let the body bytes that continue a long data line held by ``decoder`` be received straight
        into the str that line becomes, when it is the compiled decoder: the kernel's copy is then the
        only one. Such bytes are counted in ``landed`` and never given by ``take()``; the decoder keeps
        only the ones ``feed()`` would (up to a line end or a non-ASCII byte), and the rest are received
        as usual, so the events are the same as without."""
        self._sink = decoder if isinstance(decoder, CompiledDecoder) else None

    def take(self):
        """The body bytes received and not taken yet, without their framing (see the pure twin)."""
        data = self._take()
        if data is None:
            raise self.failed
        return data

    def poll(self):
        """``take()`` for the steady state of a stream: the next payload bytes when some are buffered,
        else the ``receive()`` future; None when the consumer must look closer (see the pure twin)."""
        if self.completed or self.failed is not None or self.interruption is not None:
            return None
        if self.start < self.end:
            data = self._take()
            if data is None:
                return None
            if len(data):
                return data
            if self.completed:
                return None
        if self.eof:
            return None
        return self.receive()

    cdef object _take(self):
        """take(), but broken framing gives None, with the ValueError in ``failed``."""
        cdef Py_ssize_t start = self.start
        cdef Py_ssize_t stop = self.end
        chunked = self._chunked
        if chunked is not None:
            try:
                out_start, out_end, self.start = chunked.decode(self.buffer, start, stop)
            except ValueError as exc:
                self.failed = exc
                return None
            if chunked.completed:
                self.completed = True
                self.leftover = chunked.leftover
            return self._view[out_start:out_end]
        if self.remaining >= 0:
            if stop > start + self.remaining:
                stop = start + self.remaining
            self.remaining -= stop - start
            if self.remaining == 0:
                self.completed = True
                self.leftover = stop < self.end
        self.start = stop
        return self._view[start:stop]

    def check(self):
        """Raise the exception given to ``interrupt()``, if any."""
        if self.interruption is not None:
            raise self.interruption

    def receive(self):
        """A future done when bytes arrive after ``end``, the stream ends (``eof``) or ``interrupt()`` is
        called; call ``check()`` after it (see the pure twin)."""
        if self.interruption is not None:
            raise self.interruption
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            return waiter
        if self._create_future is None:
            waiter = Future(loop=self._loop)
        else:
            waiter = self._create_future()
        if self.eof:
            waiter.set_result(None)
            return waiter
        if self._paused:
            self._compact()
            self._paused = False
            self._transport.resume_reading()
        self._waiter = waiter
        return waiter

    def interrupt(self, exc):
        """Wake the pending ``receive()``; ``check()`` and the next ``receive()`` raise ``exc``."""
        self.interruption = exc
        self._wake()

    def restore(self):
        """Give the connection back to its previous protocol (before it returns to a pool)."""
        previous = self._previous
        self._previous = None
        if previous is not None and not self.eof:
            self._transport.set_protocol(previous)
            if self._paused:
                self._paused = False
                self._transport.resume_reading()

    def abort(self):
        """Close the socket at once (nobody else knows it)."""
        self._transport.abort()

    cdef object _offer_landing(self):
        """A view into the sink's held line for the next read, or None (then the buffer is offered)."""
        cdef Py_ssize_t payload, head = 0
        chunked = self._chunked
        if chunked is not None:
            # The same read may take the framing up to the next chunk's data ("\r\n", the size in
            # hex, "\r\n"), as long as it was last time; with no chunk data next, the read takes only
            # that framing. A wrong guess costs a wake-up, nothing else.
            payload = chunked.payload_left
            if payload <= C_LAND_SIZE:
                head = self._chunk_head
        elif self.remaining >= 0:
            payload = self.remaining
            if payload == 0:
                return None
        else:
            payload = C_LAND_SIZE
        if payload > C_LAND_SIZE:
            payload = C_LAND_SIZE
        landing = self._sink._landing_view(payload + head)
        if landing is None:
            return None
        self._landing = landing
        self._landing_payload = payload
        self._offered = len(landing)
        return landing

    cdef int _landed(self, Py_ssize_t nbytes) except -1:
        """``nbytes`` came into the view ``_offer_landing()`` gave: the sink keeps what it can, and the
        rest (a line end and what follows, framing) is put in the buffer as if received there."""
        cdef Py_ssize_t payload = nbytes if nbytes < self._landing_payload else self._landing_payload
        cdef Py_ssize_t kept, rest
        landing = self._landing
        self._landing = None
        kept = self._sink._landed(payload)
        rest = nbytes - kept
        if rest:
            self.start = self.end = 0
            if PyByteArray_GET_SIZE(self.buffer) < rest:
                self.buffer = bytearray(rest + C_READ_SIZE)
                self._view = memoryview(self.buffer)
            self._view[:rest] = landing[kept:nbytes]
            self.end = rest
        if kept:
            self.landed += kept
            self.landed_at = self._loop.time()
            if self._chunked is not None:
                self._chunked.skip(kept)
            elif self.remaining >= 0:
                self.remaining -= kept
                if self.remaining == 0:
                    self.completed = True
                    self.leftover = rest > 0
        self._lands = kept == payload
        self._filled = nbytes == self._offered
        self._quiet = self._quiet + 1 if nbytes < C_INITIAL_SIZE else 0
        if rest and self._lands and self._chunked is not None and self._chunked.payload_left == 0:
            self._take_framing()
        if self.start < self.end or self.completed or self.failed is not None:
            self._wake()
        return 0

    cdef int _take_framing(self) except -1:
        """Parse the chunk framing at the start of the buffer (the CRLF after chunk data, a size line,
        trailers), one line at a time, up to the next chunk's data: with it parsed here, the consumer
        need not wake up, and the next read can go into the held line too. Never takes chunk data.
        The framing's length is the guess for the next read that ends a chunk's data."""
        cdef char* buf
        cdef const char* lf
        cdef Py_ssize_t first = self.start
        chunked = self._chunked
        while self.start < self.end:
            buf = PyByteArray_AS_STRING(self.buffer)
            lf = <const char*>memchr(buf + self.start, 10, self.end - self.start)
            if lf == NULL:
                self._chunk_head = C_CHUNK_HEAD  # longer than guessed, or not all here: guess long
                return 0
            try:
                _, _, self.start = chunked.decode(self.buffer, self.start, lf + 1 - buf)
            except ValueError as exc:
                self.failed = exc
                return 0
            if chunked.completed:
                self.completed = True
                self.leftover = self.start < self.end
                return 0
            if chunked.payload_left:
                self._chunk_head = self.start - first
                return 0
        return 0

    cdef int _compact(self) except -1:
        cdef Py_ssize_t start = self.start, end = self.end
        if start:
            self._view[: end - start] = self._view[start:end]
            self.start = 0
            self.end = end - start
        return 0

    cdef int _grow(self) except -1:
        cdef Py_ssize_t size = 2 * PyByteArray_GET_SIZE(self.buffer)
        if size > C_CAPACITY:
            size = C_CAPACITY
        if size < self.end + C_READ_SIZE:
            size = self.end + C_READ_SIZE
        grown = bytearray(size)
        grown[: self.end] = self._view[: self.end]
        self.buffer = grown
        self._view = memoryview(grown)
        return 0

    cdef int _wake(self) except -1:
        waiter = self._waiter
        self._waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        return 0


class BodyReceiver(ReceiverCore, asyncio.BufferedProtocol):
    """The protocol of a connection while its response body is read; ``restore()`` gives it back."""

    __slots__ = ()
