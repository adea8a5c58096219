# cython: language_level=3, embedsignature=True, boundscheck=False, wraparound=False, cdivision=True
# cython: freethreading_compatible=True
# Free-threading: the module keeps no mutable global state (only constants), and every decoder's state
# lives in its own instance, which, like a file object, belongs to one stream and one task at a time.
"""The compiled event-stream decoder: ``sonicsse._decoder_py.SSEDecoder`` at C speed.

It must behave exactly like the pure twin (which quotes the WHATWG steps) for every input and chunking.
Each chunk is scanned once with memchr; complete lines inside a chunk are processed in place, and only
an unterminated tail is copied (into ``_line``). Data bytes collect in ``_data`` and become one str per
event, so the only Python objects made per event are the ones the event dict holds. A long ASCII data
line that arrives over several chunks is copied straight into the str that becomes its data (``_text``):
one copy of a 1 MiB event instead of two.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from cpython.object cimport PyObject
from cpython.pyport cimport PY_SSIZE_T_MAX
from cpython.ref cimport Py_XDECREF
from cpython.unicode cimport PyUnicode_1BYTE_KIND, PyUnicode_DATA, PyUnicode_GET_LENGTH, PyUnicode_KIND
from libc.string cimport memchr, memcmp, memcpy, memset

from sonicsse._decoder_py import _event_type_filter, _parse_retry, _size_limit
from sonicsse.exceptions import SSEParsingError

cdef extern from "Python.h":
    object PyUnicode_DecodeUTF8(const char *s, Py_ssize_t size, const char *errors)
    bytes PyUnicode_AsASCIIString(object unicode)
    PyObject* PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar) except NULL
    int PyUnicode_Resize(PyObject** unicode, Py_ssize_t length) except -1
    dict PyDict_Copy(object d)
    int PyDict_SetItem(object d, object key, object value) except -1

cdef extern from *:
    """
    /* Copy n bytes and tell whether they are all ASCII (1) or not (0; dst then holds a partial copy).
       Block by block, so the check reads from L1 what the copy just wrote; the OR loop vectorises. */
    static int sonicsse_copy_ascii(char *dst, const char *src, Py_ssize_t n) {
        while (n > 0) {
            Py_ssize_t block = n < 4096 ? n : 4096;
            unsigned char seen = 0;
            memcpy(dst, src, (size_t)block);
            for (Py_ssize_t i = 0; i < block; i++)
                seen |= (unsigned char)dst[i];
            if (seen & 0x80)
                return 0;
            dst += block;
            src += block;
            n -= block;
        }
        return 1;
    }
    #define sonicsse_text_data(op) ((char *)PyUnicode_DATA(op))
    """
    bint copy_ascii "sonicsse_copy_ascii" (char* dst, const char* src, Py_ssize_t n) noexcept
    char* text_data "sonicsse_text_data" (PyObject* text) noexcept  # the characters of a 1-byte str

# Every event dict is a copy of this template with its values replaced: copying a small clean dict
# clones its key table in one memcpy, cheaper than building the table key by key.
cdef dict EVENT_TEMPLATE = {"data": None, "event": None, "id": None, "retry": None}

cdef const char* BOM = b"\xef\xbb\xbf"
cdef Py_ssize_t SHOWN_LINE_CHARS = 80
cdef Py_ssize_t EVENT_TYPE_CACHE_SIZE = 64
cdef enum:
    RECENT_TYPES = 8
# A data line held over this many bytes is built in place as its str (``_text``): shorter lines gain
# nothing from it, and most lines split by a chunk boundary end in the next chunk.
cdef Py_ssize_t TEXT_MIN = 1 << 15
# A long line starts with room for twice what it holds, or for as much as the last long line held, up to
# this: streams repeat event sizes, and each reallocation on the way up can copy the line and fault in
# new pages (without it, 1 MiB events cost 1.8x more end to end). Capped, so that a short line after a
# huge one does not reserve the huge one's size while it is held.
cdef Py_ssize_t TEXT_HINT_MAX = 1 << 20
cdef const char* DATA_HEAD = b"data: "


cdef struct Buf:
    char* ptr
    Py_ssize_t len
    Py_ssize_t cap


cdef int buf_reserve(Buf* b, Py_ssize_t extra) except -1:
    cdef Py_ssize_t need = b.len + extra
    cdef Py_ssize_t cap
    cdef char* ptr
    if need <= b.cap:
        return 0
    cap = b.cap * 2 if b.cap else 256
    while cap < need:
        cap *= 2
    ptr = <char*>PyMem_Realloc(b.ptr, cap)
    if ptr == NULL:
        raise MemoryError()
    b.ptr = ptr
    b.cap = cap
    return 0


cdef inline int buf_append(Buf* b, const char* p, Py_ssize_t n) except -1:
    if n == 0:
        return 0
    if b.len + n > b.cap:
        buf_reserve(b, n)
    memcpy(b.ptr + b.len, p, n)
    b.len += n
    return 0


cdef void buf_free(Buf* b) noexcept:
    PyMem_Free(b.ptr)
    b.ptr = NULL
    b.len = 0
    b.cap = 0


cdef str shown(const char* p, Py_ssize_t n):
    """The start of a line as it appears in error messages."""
    if n > SHOWN_LINE_CHARS * 4:
        n = SHOWN_LINE_CHARS * 4
    return PyUnicode_DecodeUTF8(p, n, "replace")[:SHOWN_LINE_CHARS]


cdef class SSEDecoder:
    """Incremental decoder of a ``text/event-stream`` body.

    Feed it the body's bytes as they arrive, in chunks of any size; each :meth:`feed` returns the events
    that the chunk completed, as dicts with the keys ``data``, ``event``, ``id`` and ``retry``.

    Args:
        dedup: drop an event whose own non-empty id is among the last ``dedup_window`` ids yielded, and,
            right after :meth:`reset`, the first event if it has no id and repeats the data of the last
            event yielded before the reset. Equal data within one connection is never dropped.
        strict: raise :class:`SSEParsingError` on malformed input instead of ignoring it as the spec
            says: a ``retry`` that is not all ASCII digits, an ``id`` containing NUL, invalid UTF-8, and a
            line without a colon that names no known field.
        last_event_id: the last event ID to start from (e.g. restored from a checkpoint).
        on_comment: called with each comment's text (without the colon and one leading space), from
            inside :meth:`feed`; :attr:`dispatched` then tells how many of the events it returns precede
            the comment.
        max_line_size: the longest line accepted, in bytes; a longer one raises in every mode.
        max_event_size: the most data one event may carry, in bytes; more raises in every mode.
        dedup_window: how many recent event ids dedup remembers.
        event_types: when given, only events of these types are returned (an event without an ``event:``
            field has the type ``"message"``); the others are dropped before their data is decoded.
            Their ``id`` and ``retry`` still take effect.
        decode: False returns each event's ``data`` as the raw ``bytes`` (no UTF-8 decoding).

    After :meth:`feed` raises, call :meth:`reset` before feeding more bytes.
    """

    cdef Buf _line          # the line not terminated yet (at stream start: the undecided BOM bytes)
    cdef Buf _data          # this block's data lines, joined with LF, from _data_start on
    # A long ASCII data line held over several chunks, as the str it will be: instead of _line, the
    # first data line of a block. Its value fills the first _text_len of its _text_cap characters;
    # the line's _text_head bytes before the value are "data:" or "data: ".
    cdef PyObject* _text
    cdef Py_ssize_t _text_len
    cdef Py_ssize_t _text_cap
    cdef Py_ssize_t _text_head
    cdef Py_ssize_t _text_hint  # the length of the last such line: the next one starts with that room
    cdef object _data_text      # str | None: a finished _text, this block's data so far
    cdef bint _held_plain       # the line in _line is not to become a _text (checked once per line)
    cdef Py_ssize_t _data_start
    cdef bint _has_data
    cdef bint _skip_lf
    cdef bint _bom_pending
    cdef bint _failed
    # The list the running feed() returns (None outside feed()): reset() and feed() from a callback
    # would corrupt the scan; its length is ``dispatched``.
    cdef list _result
    cdef bint _strict
    cdef bint _dedup
    cdef bint _after_reset
    cdef bint _decode
    cdef frozenset _event_types
    cdef Py_ssize_t _offset
    cdef Py_ssize_t _max_line_size
    cdef Py_ssize_t _max_event_size
    cdef object _on_comment
    cdef object _event_type     # str | None: this block's event type
    cdef bint _block_id         # this block gave an id: its own id is the id buffer's value
    cdef object _event_retry    # int | None: the retry given in this block
    # The id buffer and the last event ID string, each a str or, while *_lazy, the raw bytes in *_raw:
    # every event of a stream usually carries a new id, and an id that no delivered event shows (an
    # event filtered out by event_types, a block without data) need not become a str unless read.
    cdef str _id_buffer
    cdef Buf _id_raw
    cdef bint _id_lazy
    cdef str _last_event_id
    cdef Buf _last_raw
    cdef bint _last_lazy
    cdef object _retry
    cdef list _type_raws        # recent event types, raw and decoded: streams repeat a few names
    cdef list _type_strs
    cdef Py_ssize_t _type_next  # the slot the next new name takes once all are used
    cdef Py_ssize_t _type_last  # the slot of the last name seen
    cdef Py_ssize_t _type_after[RECENT_TYPES]  # per slot: the slot of the name that came next, last time
    cdef dict _type_cache
    cdef list _ring
    cdef Py_ssize_t _ring_pos
    cdef Py_ssize_t _ring_size
    cdef bint _ascending        # every id in the window is a canonical decimal of <= 18 digits, each larger
                                # than the last
    # While _ascending the window is kept as numbers, not in _ring: no str is held (and freed, cache-cold,
    # a window later) per event.
    cdef long long* _numbers    # the window's ids in _ring's slot order
    cdef Py_ssize_t _numbered   # how many slots of _numbers hold an id
    cdef Py_ssize_t _capacity   # the slots allocated in _numbers (and _ring, once it is used): the window
                                # grows as ids come, so a stream without ids holds none
    cdef long long _last_number  # the largest id of the window (-1 before the first)
    cdef set _seen_ids
    cdef object _last_data

    def __cinit__(self):
        self._line.ptr = NULL
        self._line.len = self._line.cap = 0
        self._data.ptr = NULL
        self._data.len = self._data.cap = 0
        self._id_raw.ptr = NULL
        self._id_raw.len = self._id_raw.cap = 0
        self._last_raw.ptr = NULL
        self._last_raw.len = self._last_raw.cap = 0
        self._text = NULL
        self._numbers = NULL

    def __dealloc__(self):
        self._drop_text()
        PyMem_Free(self._numbers)
        buf_free(&self._line)
        buf_free(&self._data)
        buf_free(&self._id_raw)
        buf_free(&self._last_raw)

    def __init__(
        self,
        dedup=False,
        strict=False,
        last_event_id="",
        on_comment=None,
        max_line_size=1 << 20,
        max_event_size=16 << 20,
        dedup_window=1024,
        event_types=None,
        decode=True,
    ):
        cdef long long* numbers
        if not isinstance(last_event_id, str):
            raise TypeError("last_event_id must be a str")
        if "\0" in last_event_id:
            raise ValueError("last_event_id must not contain NUL")
        max_line_size = _size_limit(max_line_size)
        max_event_size = _size_limit(max_event_size)
        if dedup_window < 0:
            raise ValueError("dedup_window must not be negative")
        if on_comment is not None and not callable(on_comment):
            raise TypeError("on_comment must be callable")
        self._event_types = _event_type_filter(event_types)
        self._decode = bool(decode)
        self._dedup = bool(dedup)
        self._strict = bool(strict)
        self._on_comment = on_comment
        self._max_line_size = max_line_size
        self._max_event_size = max_event_size
        self._last_event_id = last_event_id
        self._last_lazy = False
        self._retry = None
        # A window too large to ever allocate is refused now, as a list of that size is; the slots are
        # allocated as ids come (_grow_window), so the sizes computed there cannot overflow.
        if dedup_window > PY_SSIZE_T_MAX // <Py_ssize_t>sizeof(long long):
            raise MemoryError()
        self._capacity = 0
        self._numbered = 0
        self._last_number = -1
        self._ring = None
        self._ring_pos = 0
        self._ring_size = dedup_window
        self._ascending = True
        self._seen_ids = None  # made when an id breaks the ascending numbers (_remember_id)
        self._last_data = None
        self._type_cache = {}
        self._type_raws = None  # made on the first event type (_intern_type): many streams send none
        self._type_strs = None
        self._type_next = 0
        self._type_last = 0
        memset(self._type_after, 0, sizeof(self._type_after))
        self._after_reset = False
        self._result = None
        self._start_stream()

    cdef int _start_stream(self) except -1:
        self._line.len = 0
        self._drop_text()
        self._data_text = None
        self._held_plain = False
        self._data.len = 0
        self._data_start = 0
        self._has_data = False
        self._skip_lf = False
        self._bom_pending = True
        self._offset = 0
        self._failed = False
        self._event_type = None
        self._id_buffer = self._resolved_last_event_id()
        self._id_lazy = False
        self._block_id = False
        self._event_retry = None
        return 0

    cdef str _resolved_last_event_id(self):
        if self._last_lazy:
            self._last_event_id = PyUnicode_DecodeUTF8(self._last_raw.ptr, self._last_raw.len, "replace")
            self._last_lazy = False
        return self._last_event_id

    @property
    def last_event_id(self):
        """The spec's "last event ID string": the id to send as ``Last-Event-ID`` when resuming."""
        return self._resolved_last_event_id()

    @property
    def decode(self):
        """Whether event data is decoded to str (True) or returned as the raw bytes; may be changed."""
        return self._decode

    @decode.setter
    def decode(self, value):
        self._decode = bool(value)

    @property
    def retry(self):
        """The last valid ``retry:`` value seen, in milliseconds, or None."""
        return self._retry

    @property
    def dispatched(self):
        """How many events the running :meth:`feed` has completed so far; 0 outside :meth:`feed`.

        Read from ``on_comment``, it is where the comment stands among the events that call returns: it
        follows the first ``dispatched`` of them and precedes the rest.
        """
        return 0 if self._result is None else PyList_GET_SIZE(self._result)

    def reset(self):
        """Start a new stream (a reconnect): drop the partial line and event, expect a BOM again.

        ``last_event_id``, ``retry`` and the dedup memory are kept. Not allowed while :meth:`feed` runs
        (from ``on_comment``): the rest of that chunk belongs to the old stream.
        """
        if self._result is not None:
            raise RuntimeError("reset() cannot be called while feed() is running (e.g. from on_comment)")
        self._start_stream()
        self._after_reset = True

    def feed(self, chunk):
        """Decode the next bytes of the stream and return the events they complete, in order.

        Raises:
            SSEParsingError: a line or an event went over its size limit, or (``strict=True``) the input
                is malformed. Its ``events`` attribute holds the events this call completed before that.
        """
        cdef Py_buffer view
        cdef list events = []
        if self._failed:
            raise SSEParsingError("the decoder failed earlier; call reset() before feeding it again")
        if self._result is not None:
            raise RuntimeError("feed() cannot be called while feed() is running (e.g. from on_comment)")
        try:
            PyObject_GetBuffer(chunk, &view, PyBUF_SIMPLE)
        except BufferError:
            chunk = memoryview(chunk).tobytes()  # a non-contiguous buffer: one contiguous copy
            PyObject_GetBuffer(chunk, &view, PyBUF_SIMPLE)
        self._result = events
        try:
            self._feed(<const char*>view.buf, view.len, events)
        except SSEParsingError as exc:
            exc.events = events
            self._fail()
            raise
        except BaseException:
            self._fail()
            raise
        finally:
            self._result = None
            PyBuffer_Release(&view)
        return events

    cdef void _fail(self) noexcept:
        self._failed = True
        self._drop_text()
        self._data_text = None
        buf_free(&self._line)
        buf_free(&self._data)
        self._data_start = 0
        self._has_data = False

    cdef int _feed(self, const char* p, Py_ssize_t n, list events) except -1:
        cdef Py_ssize_t take, held
        cdef bytes start
        if n == 0:
            return 0
        if self._bom_pending:
            # Hold the first bytes back until we know whether they are a BOM (the UTF-8 decode strips one).
            take = 3 - self._line.len
            if take > n:
                take = n
            buf_append(&self._line, p, take)
            p += take
            n -= take
            held = self._line.len
            if held < 3 and memcmp(self._line.ptr, BOM, held) == 0:
                return 0
            self._bom_pending = False
            self._line.len = 0
            if held == 3 and memcmp(self._line.ptr, BOM, 3) == 0:
                self._offset += 3
            else:
                # Not a BOM: the held bytes start the stream. Scan them with the rest in one piece (one
                # copy per stream) so errors see the same lines as the pure twin.
                start = PyBytes_FromStringAndSize(NULL, held + n)
                memcpy(PyBytes_AS_STRING(start), self._line.ptr, held)
                memcpy(PyBytes_AS_STRING(start) + held, p, n)
                return self._scan(PyBytes_AS_STRING(start), held + n, events)
        if n:
            self._scan(p, n, events)
        return 0

    cdef int _scan(self, const char* p, Py_ssize_t n, list events) except -1:
        cdef const char* end = p + n
        cdef const char* next_lf
        cdef const char* next_cr
        cdef const char* eol
        cdef const char* after
        cdef Py_ssize_t pending
        # Only the first line of a chunk can end a line held from the chunks before.
        cdef bint held = self._held_len() != 0
        if self._skip_lf:
            # A CR ended the last chunk; an LF here is the rest of that CRLF, not an empty line.
            self._skip_lf = False
            if p[0] == b'\n':
                p += 1
                self._offset += 1
                if p == end:
                    return 0
        # Both searches move forward only, so each byte is looked at once per terminator kind.
        next_lf = <const char*>memchr(p, b'\n', end - p)
        if next_lf == NULL:
            next_lf = end
        next_cr = <const char*>memchr(p, b'\r', end - p)
        if next_cr == NULL:
            next_cr = end
        while True:
            if next_lf < p:
                next_lf = <const char*>memchr(p, b'\n', end - p)
                if next_lf == NULL:
                    next_lf = end
            if next_cr < p:
                next_cr = <const char*>memchr(p, b'\r', end - p)
                if next_cr == NULL:
                    next_cr = end
            eol = next_lf if next_lf < next_cr else next_cr
            if eol == end:
                break
            if eol[0] == b'\r':
                if eol + 1 < end:
                    after = eol + 2 if eol[1] == b'\n' else eol + 1
                else:
                    after = end
                    self._skip_lf = True
            else:
                after = eol + 1
            if held:
                held = False
                self._offset += self._end_held_line(p, eol - p, events) + (after - p)
            else:
                if eol - p > self._max_line_size:
                    self._line_too_long(p, eol - p)
                self._process_line(p, eol - p, events)
                self._offset += after - p
            p = after
            if p == end:
                return 0
        # Keep the unterminated tail for the next chunk, within max_line_size.
        pending = self._held_len()
        if pending + (end - p) > self._max_line_size:
            if pending:
                self._pending_too_long(p, end - p)
            self._line_too_long(p, end - p)
        if self._text != NULL:
            self._text_append(p, end - p)
        elif pending + (end - p) < TEXT_MIN or self._held_plain or not self._text_start(p, end - p):
            buf_append(&self._line, p, end - p)
        return 0

    cdef inline Py_ssize_t _held_len(self) noexcept:
        """How many bytes of a line not terminated yet are held (in ``_text`` or in ``_line``)."""
        return self._text_head + self._text_len if self._text != NULL else self._line.len

    cdef Py_ssize_t _end_held_line(self, const char* p, Py_ssize_t n, list events) except -1:
        """Process the held line, completed by ``p[:n]``; returns how many bytes were held."""
        cdef Py_ssize_t pending = self._held_len()
        if pending + n > self._max_line_size:
            self._pending_too_long(p, n)
        if self._text != NULL:
            self._text_append(p, n)
            if self._text != NULL:
                self._text_done()
                return pending
            # a non-ASCII byte: the line went back to _line
        else:
            buf_append(&self._line, p, n)
        self._line.len = 0
        self._held_plain = False
        self._process_line(self._line.ptr, pending + n, events)
        return pending

    # -- a long data line built in place as its str ------------------------------------------------

    cdef bint _text_start(self, const char* p, Py_ssize_t n) except -1:
        """Hold ``_line`` + ``p[:n]`` (no line end in it) as ``_text`` if it is the first data line of
        the block and all ASCII; False (nothing changed) if not."""
        cdef char head[6]
        cdef Py_ssize_t held = self._line.len
        cdef Py_ssize_t k, in_line, value_len, cap
        self._held_plain = True  # until it is known to qualify: a line is tried once
        if not self._decode or self._has_data or self._strict:
            return False
        for k in range(6):  # the line's first bytes, wherever they are
            head[k] = self._line.ptr[k] if k < held else p[k - held]
        if memcmp(head, DATA_HEAD, 5) != 0:
            return False
        self._text_head = 6 if head[5] == b' ' else 5
        value_len = held + n - self._text_head
        cap = self._text_hint if self._text_hint < TEXT_HINT_MAX else TEXT_HINT_MAX
        if cap < 2 * value_len:
            cap = 2 * value_len
        if cap > self._max_line_size:
            cap = self._max_line_size
        self._text = PyUnicode_New(cap, 127)
        self._text_cap = cap
        self._text_len = 0
        in_line = held - self._text_head if held > self._text_head else 0
        if in_line and not copy_ascii(text_data(self._text), self._line.ptr + self._text_head,
                                      in_line):
            self._drop_text()
            return False
        k = self._text_head - held if held < self._text_head else 0
        if not copy_ascii(text_data(self._text) + in_line, p + k, n - k):
            self._drop_text()
            return False
        self._text_len = value_len
        self._line.len = 0
        self._held_plain = False
        return True

    cdef int _text_append(self, const char* p, Py_ssize_t n) except -1:
        """Add ``p[:n]`` to the held ``_text``; a non-ASCII byte moves the whole line back to ``_line``."""
        cdef Py_ssize_t cap
        if self._text_len + n > self._text_cap:
            cap = 2 * self._text_cap
            if cap > self._max_line_size:  # the caller made sure the line fits in it
                cap = self._max_line_size
            if cap < self._text_len + n:
                cap = self._text_len + n
            PyUnicode_Resize(&self._text, cap)
            self._text_cap = cap
        if copy_ascii(text_data(self._text) + self._text_len, p, n):
            self._text_len += n
            return 0
        self._text_to_line()
        self._held_plain = True
        buf_append(&self._line, p, n)
        return 0

    cdef int _text_to_line(self) except -1:
        """Move the held line from ``_text`` back to ``_line`` as the bytes it came as."""
        self._line.len = 0
        buf_append(&self._line, DATA_HEAD, self._text_head)
        buf_append(&self._line, text_data(self._text), self._text_len)
        self._drop_text()
        return 0

    cdef int _text_done(self) except -1:
        """The held data line ended: it is the block's data so far (the data branch of _process_line)."""
        cdef PyObject* text
        cdef bytes start
        if self._text_len > self._max_event_size:
            start = self._text_start_bytes()
            raise SSEParsingError(
                f"event data larger than max_event_size ({self._max_event_size} bytes)",
                line=shown(PyBytes_AS_STRING(start), PyBytes_GET_SIZE(start)),
                offset=self._offset,
            )
        PyUnicode_Resize(&self._text, self._text_len)
        text = self._text
        self._text = NULL
        self._data_text = <object>text
        Py_XDECREF(text)  # _data_text holds it now
        self._text_hint = self._text_len
        self._text_len = self._text_cap = 0
        self._has_data = True
        return 0

    cdef bytes _text_start_bytes(self):
        """The held line's first bytes: all that an error message shows of it."""
        cdef Py_ssize_t n = self._text_len if self._text_len < SHOWN_LINE_CHARS * 4 else SHOWN_LINE_CHARS * 4
        return DATA_HEAD[:self._text_head] + text_data(self._text)[:n]

    cdef void _drop_text(self) noexcept:
        Py_XDECREF(self._text)
        self._text = NULL
        self._text_len = self._text_cap = 0

    cdef int _data_text_to_data(self) except -1:
        """Another data line follows a long one: the block's data continues as bytes in ``_data``."""
        cdef str text = self._data_text
        self._data_text = None
        self._data.len = 0
        self._data_start = 0
        buf_append(&self._data, <const char*>PyUnicode_DATA(text), PyUnicode_GET_LENGTH(text))
        return 0

    cdef int _line_too_long(self, const char* p, Py_ssize_t n) except -1:
        raise SSEParsingError(
            f"line longer than max_line_size ({self._max_line_size} bytes)",
            line=shown(p, n),
            offset=self._offset,
        )

    cdef int _pending_too_long(self, const char* p, Py_ssize_t n) except -1:
        # Show the start of the whole line: the held bytes plus enough of the new ones.
        cdef bytes start
        if self._text != NULL:
            start = self._text_start_bytes()
            self._line_too_long(PyBytes_AS_STRING(start), PyBytes_GET_SIZE(start))
        buf_append(&self._line, p, n if n < SHOWN_LINE_CHARS * 4 else SHOWN_LINE_CHARS * 4)
        self._line_too_long(self._line.ptr, self._line.len)

    cdef int _malformed(self, str reason, const char* p, Py_ssize_t n) except -1:
        raise SSEParsingError(reason, line=shown(p, n), offset=self._offset)

    cdef int _process_line(self, const char* p, Py_ssize_t n, list events) except -1:
        cdef const char* colon
        cdef const char* value
        cdef Py_ssize_t name_len, value_len, size
        cdef object retry
        cdef Buf spare
        if n == 0:
            return self._dispatch(events)
        if self._strict:
            try:
                PyUnicode_DecodeUTF8(p, n, NULL)
            except UnicodeDecodeError:
                self._malformed("invalid UTF-8", p, n)
        if p[0] == b':':
            if self._on_comment is not None:
                if n > 1 and p[1] == b' ':
                    self._on_comment(PyUnicode_DecodeUTF8(p + 2, n - 2, "replace"))
                else:
                    self._on_comment(PyUnicode_DecodeUTF8(p + 1, n - 1, "replace"))
            return 0
        # The usual fields are found by their prefix: no search for the colon (the name has none).
        if n >= 5 and memcmp(p, b"data:", 5) == 0:
            colon = p + 4
        elif n >= 3 and memcmp(p, b"id:", 3) == 0:
            colon = p + 2
        elif n >= 6 and memcmp(p, b"event:", 6) == 0:
            colon = p + 5
        else:
            colon = <const char*>memchr(p, b':', n)
        if colon != NULL:
            name_len = colon - p
            value = colon + 1
            value_len = n - name_len - 1
            if value_len and value[0] == b' ':
                value += 1
                value_len -= 1
        else:
            name_len = n
            value = p + n
            value_len = 0
        if name_len == 4 and memcmp(p, b"data", 4) == 0:
            if self._data_text is not None:
                self._data_text_to_data()
            size = self._data.len - self._data_start + value_len + (1 if self._has_data else 0)
            if size > self._max_event_size:
                raise SSEParsingError(
                    f"event data larger than max_event_size ({self._max_event_size} bytes)",
                    line=shown(p, n),
                    offset=self._offset,
                )
            if self._has_data:
                buf_append(&self._data, b"\n", 1)
                buf_append(&self._data, value, value_len)
            elif p == self._line.ptr:
                # The first data line of the event arrived over several chunks and sits in _line: hand
                # that buffer over instead of copying it (a 1 MiB event then costs one copy less).
                spare = self._data
                self._data = self._line
                self._line = spare
                self._line.len = 0
                self._data_start = value - p
                self._data.len = self._data_start + value_len
            else:
                buf_append(&self._data, value, value_len)
            self._has_data = True
        elif name_len == 5 and memcmp(p, b"event", 5) == 0:
            self._event_type = self._intern_type(value, value_len) if value_len else None
        elif name_len == 2 and memcmp(p, b"id", 2) == 0:
            if memchr(value, 0, value_len) != NULL:
                if self._strict:
                    self._malformed("id contains NUL", p, n)
            else:
                self._id_raw.len = 0
                buf_append(&self._id_raw, value, value_len)
                self._id_lazy = True
                self._block_id = True
        elif name_len == 5 and memcmp(p, b"retry", 5) == 0:
            if value_len and all_digits(value, value_len):
                retry = parse_digits(value, value_len)
                if retry is not None:
                    self._event_retry = self._retry = retry
                elif self._strict:
                    self._malformed("retry has too many digits", p, n)
            elif self._strict:
                self._malformed("retry is not all ASCII digits", p, n)
        elif self._strict and colon == NULL:
            self._malformed("line has no colon and names no field", p, n)
        return 0

    cdef str _intern_type(self, const char* p, Py_ssize_t n):
        cdef bytes raw
        cdef str name
        cdef Py_ssize_t i
        cdef list raws = self._type_raws
        cdef Py_ssize_t count
        cdef Py_ssize_t guess = self._type_after[self._type_last]
        if raws is None:
            raws = self._type_raws = []
            self._type_strs = []
        count = PyList_GET_SIZE(raws)
        # A few names recur: compare the raw bytes with the recent ones before making any object
        # (borrowed items, and a byte loop: these names are short, a memcmp call costs more). The name
        # that followed the last one the time before is tried first: streams repeat one name, or cycle.
        if guess < count:
            if raw_is(PyList_GET_ITEM(raws, guess), p, n):
                self._type_last = guess
                return <str>PyList_GET_ITEM(self._type_strs, guess)
        for i in range(count):
            if raw_is(PyList_GET_ITEM(raws, i), p, n):
                self._type_after[self._type_last] = i
                self._type_last = i
                return <str>PyList_GET_ITEM(self._type_strs, i)
        raw = PyBytes_FromStringAndSize(p, n)
        name = self._type_cache.get(raw)
        if name is None:
            name = PyUnicode_DecodeUTF8(p, n, "replace")
            if len(self._type_cache) < EVENT_TYPE_CACHE_SIZE:
                self._type_cache[raw] = name
        if count < RECENT_TYPES:
            i = count
            raws.append(raw)
            self._type_strs.append(name)
        else:
            i = self._type_next
            raws[i] = raw
            self._type_strs[i] = name
            self._type_next = (i + 1) % RECENT_TYPES
        self._type_after[self._type_last] = i
        self._type_last = i
        return name

    cdef int _dispatch(self, list events) except -1:
        cdef object data = None
        cdef object event_type, event_retry
        cdef object event_id = None
        cdef dict event
        cdef bint first_after_reset
        cdef bint block_id = self._block_id
        event_type = self._event_type
        event_retry = self._event_retry
        self._event_type = None
        self._block_id = False
        self._event_retry = None
        if not self._has_data:
            self._last_event_id_from_id_buffer()
            return 0
        self._has_data = False
        if self._event_types is None or (
            (event_type if event_type is not None else "message") in self._event_types
        ):
            if self._data_text is not None:
                data = self._data_text
                if not self._decode:  # decode was switched off while the line came in
                    data = PyUnicode_AsASCIIString(data)
            elif self._decode:
                data = PyUnicode_DecodeUTF8(
                    self._data.ptr + self._data_start, self._data.len - self._data_start, "replace"
                )
            else:
                data = PyBytes_FromStringAndSize(
                    self._data.ptr + self._data_start, self._data.len - self._data_start
                )
        self._data_text = None
        self._data.len = 0
        self._data_start = 0
        if data is None:
            self._last_event_id_from_id_buffer()
            return 0
        if self._id_lazy:  # the event shows its id: the id buffer becomes a str now
            self._id_buffer = PyUnicode_DecodeUTF8(self._id_raw.ptr, self._id_raw.len, "replace")
            self._id_lazy = False
        self._last_event_id = self._id_buffer
        self._last_lazy = False
        if block_id:
            event_id = self._id_buffer
        if self._dedup:
            first_after_reset = self._after_reset
            self._after_reset = False
            if event_id:
                if self._ring_size and not self._remember_id(event_id):
                    return 0
            elif first_after_reset and data == self._last_data:
                return 0
            self._last_data = data
        event = PyDict_Copy(EVENT_TEMPLATE)
        PyDict_SetItem(event, "data", data)
        if event_type is not None:
            PyDict_SetItem(event, "event", event_type)
        if event_id is not None:
            PyDict_SetItem(event, "id", event_id)
        if event_retry is not None:
            PyDict_SetItem(event, "retry", event_retry)
        events.append(event)
        return 0

    cdef int _last_event_id_from_id_buffer(self) except -1:
        """At a blank line that dispatches nothing: the last event ID string takes the id buffer's value,
        kept raw while the id buffer is raw."""
        if self._id_lazy:
            self._last_raw.len = 0
            buf_append(&self._last_raw, self._id_raw.ptr, self._id_raw.len)
            self._last_lazy = True
        else:
            self._last_event_id = self._id_buffer
            self._last_lazy = False
        return 0

    cdef int _remember_id(self, str event_id) except -1:
        """Add an id to the window; 0 when it was already there (a duplicate), else 1."""
        cdef set seen
        cdef Py_ssize_t before, i
        cdef object evicted
        cdef long long number
        if self._ring_pos == self._capacity:  # the window is not full yet: it grows
            self._grow_window()
        if self._ascending:
            # Most streams number their events: an id larger than every id in the window cannot be
            # in it, so no set is needed until an id breaks the pattern.
            number = decimal_value(event_id)
            if number > self._last_number:  # (-1 when the id is no canonical decimal of <= 18 digits)
                self._last_number = number
                self._numbers[self._ring_pos] = number
                if self._numbered < self._ring_size:
                    self._numbered += 1
                self._ring_pos += 1
                if self._ring_pos == self._ring_size:
                    self._ring_pos = 0
                return 1
            self._ascending = False
            # The numbers' decimal strings are the ids themselves: they were canonical.
            self._ring = [None] * self._capacity
            for i in range(self._numbered):  # (the slots from 0 on: _numbered < _ring_size before a wrap)
                self._ring[i] = str(self._numbers[i])
            self._seen_ids = {known for known in self._ring if known is not None}
        seen = self._seen_ids
        before = len(seen)
        seen.add(event_id)  # one hash lookup answers "seen before?" and remembers it
        if len(seen) == before:
            return 0
        evicted = self._ring[self._ring_pos]
        if evicted is not None:
            seen.discard(evicted)
        self._ring[self._ring_pos] = event_id
        self._ring_pos += 1
        if self._ring_pos == self._ring_size:
            self._ring_pos = 0
        return 1

    cdef int _grow_window(self) except -1:
        """Double the window's slots (16 at first), up to the window's size."""
        cdef Py_ssize_t capacity = self._capacity
        cdef Py_ssize_t grown = capacity * 2 if capacity else 16
        cdef long long* numbers
        if grown > self._ring_size:
            grown = self._ring_size
        numbers = <long long*>PyMem_Realloc(self._numbers, <size_t>grown * sizeof(long long))
        if numbers == NULL:
            raise MemoryError()
        self._numbers = numbers
        if self._ring is not None:
            self._ring.extend([None] * (grown - capacity))
        self._capacity = grown
        return 0


cdef long long decimal_value(str text) noexcept:
    """The value of a canonical decimal (ASCII digits, no leading zero but "0") of at most 18 digits, else -1."""
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(text)
    cdef const char* p
    cdef long long value = 0
    cdef Py_ssize_t i
    if n == 0 or n > 18 or PyUnicode_KIND(text) != PyUnicode_1BYTE_KIND:
        return -1
    p = <const char*>PyUnicode_DATA(text)
    if p[0] == b'0' and n > 1:
        return -1
    for i in range(n):
        if p[i] < b'0' or p[i] > b'9':
            return -1
        value = value * 10 + (p[i] - 48)
    return value


cdef inline bint raw_is(PyObject* raw, const char* p, Py_ssize_t n) noexcept:
    """Whether the bytes object ``raw`` holds ``p[:n]`` (a byte loop: names are short)."""
    cdef const char* known = PyBytes_AS_STRING(<object>raw)
    cdef Py_ssize_t i
    if PyBytes_GET_SIZE(<object>raw) != n:
        return False
    for i in range(n):
        if known[i] != p[i]:
            return False
    return True


cdef inline bint all_digits(const char* p, Py_ssize_t n) noexcept:
    cdef Py_ssize_t i
    for i in range(n):
        if p[i] < b'0' or p[i] > b'9':
            return False
    return True


cdef object parse_digits(const char* p, Py_ssize_t n):
    cdef long long value = 0
    cdef Py_ssize_t i
    if n > 18:
        return _parse_retry(PyBytes_FromStringAndSize(p, n))
    for i in range(n):
        value = value * 10 + (p[i] - 48)
    return value
