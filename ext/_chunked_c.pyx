# cython: language_level=3
# cython: freethreading_compatible=True
# Free-threading: the module keeps no mutable global state (only constants set at import), and each decoder
# belongs to one response body.
"""The compiled twin of ``sonicsse._chunked_py``: HTTP/1.1 chunked transfer coding, undone in place.

Same grammar and behaviour as the pure twin (see its docstring). Token streams arrive as one small chunk
per event, so this loop runs once per event: in C it costs a ``memchr`` and a ``memmove``.
"""

from cpython.buffer cimport PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from libc.string cimport memchr, memmove

cdef extern from *:
    """
    #define SONICSSE_MAX_LINE 4096
    """
    const Py_ssize_t SONICSSE_MAX_LINE

MAX_LINE = SONICSSE_MAX_LINE


cdef inline bint blank(const unsigned char* p, Py_ssize_t n) noexcept:
    cdef Py_ssize_t i
    for i in range(n):
        if p[i] != 32 and p[i] != 9 and p[i] != 13:
            return False
    return True


cdef inline int hex_value(unsigned char c) noexcept:
    if 48 <= c <= 57:
        return c - 48
    if 97 <= c <= 102:
        return c - 87
    if 65 <= c <= 70:
        return c - 55
    return -1


cdef long long chunk_size(const unsigned char* p, Py_ssize_t n) except -2:
    """The size of a size line (without its LF); -1 when it is malformed."""
    cdef Py_ssize_t i = 0
    cdef Py_ssize_t stop
    cdef long long size = 0
    cdef int digit
    cdef const unsigned char* semi = <const unsigned char*>memchr(p, 59, n)  # ';'
    stop = (semi - p) if semi != NULL else n
    while i < stop and (p[i] == 32 or p[i] == 9 or p[i] == 13):
        i += 1
    while stop > i and (p[stop - 1] == 32 or p[stop - 1] == 9 or p[stop - 1] == 13):
        stop -= 1
    if stop == i or stop - i > 15:
        return -1
    while i < stop:
        digit = hex_value(p[i])
        if digit < 0:
            return -1
        size = (size << 4) | digit
        i += 1
    return size


cdef class ChunkedDecoder:
    """Undo chunked framing in the buffer it is given, one socket read at a time (see the pure twin)."""

    cdef public bint completed
    cdef public bint leftover
    cdef int _state  # 0 size line, 1 data, 2 empty line after the data, 3 trailers
    cdef unsigned long long _left
    cdef object _failed

    def __init__(self):
        self.completed = False
        self.leftover = False
        self._state = 0
        self._left = 0
        self._failed = None

    def decode(self, bytearray buffer not None, Py_ssize_t start, Py_ssize_t end):
        cdef Py_buffer view
        if self._failed is not None:
            raise self._failed
        PyObject_GetBuffer(buffer, &view, PyBUF_WRITABLE)
        try:
            if not 0 <= start <= end <= view.len:
                raise ValueError("start and end must lie within the buffer, start <= end")
            return self._decode(<unsigned char*>view.buf, start, end)
        finally:
            PyBuffer_Release(&view)

    cdef tuple _decode(self, unsigned char* buf, Py_ssize_t start, Py_ssize_t end):
        cdef Py_ssize_t out_start = -1
        cdef Py_ssize_t out_end = -1
        cdef Py_ssize_t pos = start
        cdef Py_ssize_t piece_end, next_pos, nl
        cdef unsigned long long size, left = self._left
        cdef long long parsed
        cdef int state = self._state
        cdef int state_after
        cdef const unsigned char* found
        try:
            while pos < end and not self.completed:
                if state == 0:  # size line
                    found = <const unsigned char*>memchr(buf + pos, 10, end - pos)
                    if found == NULL:
                        if end - pos > SONICSSE_MAX_LINE:
                            raise ValueError("broken chunked framing: chunk size line too long")
                        break
                    nl = found - buf
                    parsed = chunk_size(buf + pos, nl - pos)
                    if parsed < 0:
                        line = bytes(buf[pos:nl if nl - pos <= 40 else pos + 40])
                        raise ValueError(f"broken chunked framing: bad chunk size {line!r}")
                    size = <unsigned long long>parsed
                    pos = nl + 1
                    if size == 0:
                        state = 3
                        continue
                    if <unsigned long long>(end - pos) >= size + 2 and buf[pos + size] == 13 \
                            and buf[pos + size + 1] == 10:
                        # The whole chunk is here: SSE servers often write one small chunk per event.
                        piece_end = pos + <Py_ssize_t>size
                        state_after = 0
                        next_pos = piece_end + 2
                    else:
                        piece_end = end if <unsigned long long>(end - pos) < size else pos + <Py_ssize_t>size
                        left = size - <unsigned long long>(piece_end - pos)
                        state_after = 1 if left else 2
                        next_pos = piece_end
                elif state == 1:  # chunk data
                    piece_end = end if <unsigned long long>(end - pos) < left else pos + <Py_ssize_t>left
                    left -= <unsigned long long>(piece_end - pos)
                    state_after = 1 if left else 2
                    next_pos = piece_end
                elif state == 2:  # the empty line after the data
                    found = <const unsigned char*>memchr(buf + pos, 10, end - pos)
                    if found == NULL:
                        if not blank(buf + pos, end - pos) or end - pos > SONICSSE_MAX_LINE:
                            raise ValueError("broken chunked framing: no CRLF after chunk data")
                        break
                    nl = found - buf
                    if not blank(buf + pos, nl - pos):
                        raise ValueError("broken chunked framing: no CRLF after chunk data")
                    pos = nl + 1
                    state = 0
                    continue
                else:  # 3: trailer lines, up to the empty line ending the body
                    found = <const unsigned char*>memchr(buf + pos, 10, end - pos)
                    if found == NULL:
                        if end - pos > SONICSSE_MAX_LINE:
                            raise ValueError("broken chunked framing: trailer line too long")
                        break
                    nl = found - buf
                    if blank(buf + pos, nl - pos):
                        self.completed = True
                        self.leftover = nl + 1 < end
                    pos = nl + 1
                    continue
                # gather buf[pos:piece_end] after the payload so far (the first piece stays put)
                if piece_end == pos:
                    pass
                elif out_end < 0:
                    out_start = pos
                    out_end = piece_end
                else:
                    memmove(buf + out_end, buf + pos, piece_end - pos)
                    out_end += piece_end - pos
                pos = next_pos
                state = state_after
        except ValueError as exc:
            if out_end < 0:
                raise
            self._failed = exc
        finally:
            self._state = state
            self._left = left
        return (out_start, out_end, pos)
