# cython: language_level=3
# cython: freethreading_compatible=True
# Free-threading: the only mutable global state is the list of spare buffers, used with single list calls
# (a pop from an empty list is caught); each receiver belongs to one connection, driven by one event loop.
"""The compiled twin of ``sonicsse._receiver_py``: a response body received into one reusable buffer.

Same buffer, flow control, framing and wake-ups as the pure twin (see its docstring for the why of
each). The event loop calls ``get_buffer()`` and ``buffer_updated()`` once per socket read, and the
consumer calls ``poll()`` once per read and ``receive()`` once per read it waits for: with 1,000 streams
each call finds the stream's state cold in the cache, and as Python functions they were a large part of
what a read cost beyond the socket.
"""

import asyncio

from cpython.bytearray cimport PyByteArray_GET_SIZE
from cpython.pyport cimport PY_SSIZE_T_MAX

cdef enum:
    C_READ_SIZE = 1 << 16
    C_INITIAL_SIZE = 1 << 12
    C_CAPACITY = 1 << 18
    C_QUIET_READS = 64
    C_TLS_RECORD = 1 << 14
    C_SPARE_BUFFERS = 256

READ_SIZE = C_READ_SIZE
INITIAL_SIZE = C_INITIAL_SIZE
CAPACITY = C_CAPACITY
QUIET_READS = C_QUIET_READS
TLS_RECORD = C_TLS_RECORD
SPARE_BUFFERS = C_SPARE_BUFFERS
cdef list _spare = []  # views of C_INITIAL_SIZE buffers given up by waiting streams (see the pure twin)
cdef bytearray _NO_BUFFER = bytearray()
cdef object _NO_VIEW = memoryview(_NO_BUFFER)
MAX_LENGTH = PY_SSIZE_T_MAX

cdef object Future = asyncio.Future
cdef object get_running_loop = asyncio.get_running_loop
# A loop whose create_future() is asyncio's own makes the same future as Future(loop=loop), which is
# called directly; any other create_future() is used (uvloop's, or one a subclass or an instrumenting
# tool put on the loop or its class).
cdef object BASE_CREATE_FUTURE = asyncio.BaseEventLoop.create_future


def takes_size_hints(transport):
    """Whether ``get_buffer()`` must honour the size hints of ``transport``'s reads: unless it is known
    to be a plain socket (it names its socket and no TLS context), as a TLS layer's are needs. A plain
    socket's hint is the event loop's read size (uvloop passes libuv's 64 KiB on every read)."""
    get_extra_info = getattr(transport, "get_extra_info", None)
    if get_extra_info is None:
        return True
    try:
        return get_extra_info("sslcontext") is not None or get_extra_info("socket") is None
    except Exception:
        return True


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
    cdef object _chunked
    cdef object _view
    cdef object _loop
    cdef bint _own_futures  # the loop's create_future() is its own (else Future(loop=self._loop) is the same)
    cdef object _waiter
    cdef object _transport
    cdef object _previous
    cdef Py_ssize_t _offered
    cdef Py_ssize_t _quiet
    cdef bint _paused
    cdef bint _filled
    cdef bint _hints  # honour get_buffer()'s size hint (see takes_size_hints)

    def __init__(self, transport, previous, initial=b"", bint eof=False):
        cdef Py_ssize_t size = C_INITIAL_SIZE
        cdef Py_ssize_t n = len(initial)
        while size < 2 * n:  # the bytes aiosonic read with the head (often the first event)
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
        self._chunked = None
        self._loop = get_running_loop()
        # Not the bound method itself: one object less per stream for the cyclic GC to visit.
        self._own_futures = getattr(self._loop.create_future, "__func__", None) is not BASE_CREATE_FUTURE
        self._waiter = None
        self._paused = False
        self._offered = 0
        self._filled = False
        self._quiet = 0
        self._transport = transport
        self._previous = previous
        self._hints = takes_size_hints(transport)
        if not eof:
            transport.set_protocol(self)
            if not transport.is_reading():
                transport.resume_reading()

    # -- protocol callbacks (the event loop) ------------------------------------------------------

    def get_buffer(self, sizehint):
        cdef Py_ssize_t end
        cdef Py_ssize_t room
        if PyByteArray_GET_SIZE(self.buffer) == 0:  # given up while the stream waited (start == end == 0)
            try:
                self._view = _spare.pop()
            except IndexError:
                self._view = memoryview(bytearray(C_INITIAL_SIZE))
            self.buffer = self._view.obj
        end = self.end
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
                # Doubling (a 5 KiB event takes 8 KiB, not 68); past C_CAPACITY, a read's worth more.
                self._grow(1 if PyByteArray_GET_SIZE(self.buffer) < C_CAPACITY else C_READ_SIZE)
                room = PyByteArray_GET_SIZE(self.buffer) - end
        cdef Py_ssize_t offered = room if room < C_READ_SIZE else C_READ_SIZE
        cdef Py_ssize_t hint = sizehint
        if hint > offered and self._hints:
            # A TLS layer asks for room for everything it has decrypted: uvloop's reads what does not
            # fit on a later turn of the loop, and drops it if the peer's FIN comes in between.
            hint += C_TLS_RECORD  # the decrypted record in hand may come on top
            if hint > room:
                self._grow(hint)
                room = PyByteArray_GET_SIZE(self.buffer) - end
            offered = hint
        self._offered = offered
        return self._view[end : end + offered]

    def buffer_updated(self, Py_ssize_t nbytes):
        cdef Py_ssize_t size = PyByteArray_GET_SIZE(self.buffer)
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
        if not self._own_futures:
            waiter = Future(loop=self._loop)
        else:
            waiter = self._loop.create_future()
        if self.eof:
            waiter.set_result(None)
            return waiter
        if self._paused:
            self._compact()
            self._paused = False
            self._transport.resume_reading()
        elif self.start == self.end and PyByteArray_GET_SIZE(self.buffer) == C_INITIAL_SIZE:
            if len(_spare) < C_SPARE_BUFFERS:
                _spare.append(self._view)
            self.buffer = _NO_BUFFER
            self._view = _NO_VIEW
            self.start = self.end = 0
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

    cdef int _compact(self) except -1:
        cdef Py_ssize_t start = self.start, end = self.end
        if start:
            self._view[: end - start] = self._view[start:end]
            self.start = 0
            self.end = end - start
        return 0

    cdef int _grow(self, Py_ssize_t room) except -1:
        # A larger buffer, with at least ``room`` bytes after ``end``.
        cdef Py_ssize_t size = 2 * PyByteArray_GET_SIZE(self.buffer)
        if size > C_CAPACITY:
            size = C_CAPACITY
        if size < self.end + room:
            size = self.end + room
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
