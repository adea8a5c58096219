"""The pure-Python event-stream decoder: the readable statement of the rules the compiled twin implements.

Spec: WHATWG HTML Living Standard, "Server-sent events", subsections "Parsing an event stream" and
"Interpreting an event stream". Step comments below quote it. ``ext/_decoder_c.pyx`` must behave exactly
like this module for every input and every chunking; ``tests/test_decoder_differential.py`` checks that.

The stream is split into lines on raw bytes and each piece is decoded on its own. That equals decoding the
whole stream first (as the spec says) because CR, LF and ``:`` are ASCII: a UTF-8 decoder never swallows
an ASCII byte into an invalid sequence, so the U+FFFD replacements come out the same.
"""

from __future__ import annotations

import operator
import re
import sys
from collections.abc import Callable, Collection
from typing import Any

from ._types import Event
from .exceptions import SSEParsingError

__all__ = ["SSEDecoder"]

_BOM = b"\xef\xbb\xbf"
_LINE_END = re.compile(rb"\r\n|\r|\n")
# Bytes are searched for an int ten times faster than for a one-byte bytes object.
_LF, _CR, _COLON, _NUL = 0x0A, 0x0D, 0x3A, 0x00
_SHOWN_LINE_CHARS = 80
_EVENT_TYPE_CACHE_SIZE = 64

Buffer = bytes | bytearray | memoryview


def _event_type_filter(event_types: Collection[str] | None) -> frozenset[str] | None:
    """Validate ``event_types`` and freeze it for fast lookups."""
    if event_types is None:
        return None
    if isinstance(event_types, str):
        raise TypeError("event_types must be a collection of str, not a str")
    types = frozenset(event_types)
    if not all(isinstance(name, str) for name in types):
        raise TypeError("event_types must contain only str")
    return types


def _size_limit(value: int) -> int:
    """Validate a size limit: a positive integer; anything above ``sys.maxsize`` means no limit."""
    limit = operator.index(value)
    if limit < 1:
        raise ValueError("max_line_size and max_event_size must be positive")
    return min(limit, sys.maxsize)


def _parse_retry(digits: bytes) -> int | None:
    """A ``retry:`` value of ASCII digits as an int; None when it has more digits than ``int()`` converts.

    Python refuses to convert more than ``sys.get_int_max_str_digits()`` digits (4,300 by default)
    because the conversion is quadratic. Such a delay (over 10**4300 ms) cannot be waited anyway: the
    field is ignored, as browsers ignore a value that overflows their integer type.
    """
    try:
        return int(digits)
    except ValueError:
        return None


def _shown(line: bytes) -> str:
    """The start of a line as it appears in error messages."""
    return line[: _SHOWN_LINE_CHARS * 4].decode("utf-8", "replace")[:_SHOWN_LINE_CHARS]


class SSEDecoder:
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

    __slots__ = (
        "_after_reset",
        "_bom_pending",
        "_data",
        "_decode",
        "_dedup",
        "_event_id",
        "_event_retry",
        "_event_type",
        "_event_types",
        "_failed",
        "_has_data",
        "_id_buffer",
        "_last_data",
        "_last_event_id",
        "_max_event_size",
        "_max_line_size",
        "_offset",
        "_on_comment",
        "_pending",
        "_result",
        "_retry",
        "_ring",
        "_ring_pos",
        "_ring_size",
        "_seen_ids",
        "_skip_lf",
        "_strict",
        "_type_cache",
    )

    def __init__(
        self,
        dedup: bool = False,
        strict: bool = False,
        last_event_id: str = "",
        on_comment: Callable[[str], Any] | None = None,
        max_line_size: int = 1 << 20,
        max_event_size: int = 16 << 20,
        dedup_window: int = 1024,
        event_types: Collection[str] | None = None,
        decode: bool = True,
    ) -> None:
        if not isinstance(last_event_id, str):
            raise TypeError("last_event_id must be a str")
        if "\0" in last_event_id:
            raise ValueError("last_event_id must not contain NUL")
        max_line_size = _size_limit(max_line_size)
        max_event_size = _size_limit(max_event_size)
        if dedup_window < 0:
            raise ValueError("dedup_window must not be negative")
        if dedup_window > sys.maxsize // 8:  # never allocatable (as a list of that size is not)
            raise MemoryError()
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
        self._retry: int | None = None
        # The window of recent ids grows as ids come (a stream without ids holds none), up to its size,
        # then ``_ring_pos`` goes round it, the oldest id first.
        self._ring: list[str] = []
        self._ring_size = dedup_window
        self._ring_pos = 0
        self._seen_ids: set[str] = set()
        self._last_data: str | bytes | None = None
        self._type_cache: dict[bytes, str] = {}
        self._after_reset = False
        self._result: list[Event] | None = None  # the list the running feed() returns; None outside feed()
        self._start_stream()

    def _start_stream(self) -> None:
        """The state at the start of a stream: at construction and at every :meth:`reset`."""
        self._pending = bytearray()  # the line not terminated yet
        self._skip_lf = False  # the last chunk ended in CR: an LF starting the next one ends nothing
        self._bom_pending = True  # the first bytes may still be a BOM
        self._offset = 0  # stream offset of the first byte of the pending line
        self._failed = False
        # "When a stream is parsed, a data buffer, an event type buffer, and a last event ID buffer must be
        # associated with it." The last event ID buffer restarts from the last completed block.
        self._data = bytearray()  # the data lines joined with LF: memory stays within max_event_size
        self._has_data = False
        self._event_type: str | None = None
        self._id_buffer = self._last_event_id
        self._event_id: str | None = None  # the id given in this block, reported as the event's "id"
        self._event_retry: int | None = None

    @property
    def last_event_id(self) -> str:
        """The spec's "last event ID string": the id to send as ``Last-Event-ID`` when resuming."""
        return self._last_event_id

    @property
    def decode(self) -> bool:
        """Whether event data is decoded to str (True) or returned as the raw bytes; may be changed."""
        return self._decode

    @decode.setter
    def decode(self, value: bool) -> None:
        self._decode = bool(value)

    @property
    def retry(self) -> int | None:
        """The last valid ``retry:`` value seen, in milliseconds, or None."""
        return self._retry

    @property
    def dispatched(self) -> int:
        """How many events the running :meth:`feed` has completed so far; 0 outside :meth:`feed`.

        Read from ``on_comment``, it is where the comment stands among the events that call returns: it
        follows the first ``dispatched`` of them and precedes the rest.
        """
        result = self._result
        return 0 if result is None else len(result)

    def reset(self) -> None:
        """Start a new stream (a reconnect): drop the partial line and event, expect a BOM again.

        ``last_event_id``, ``retry`` and the dedup memory are kept. Not allowed while :meth:`feed` runs
        (from ``on_comment``): the rest of that chunk belongs to the old stream.
        """
        if self._result is not None:
            raise RuntimeError("reset() cannot be called while feed() is running (e.g. from on_comment)")
        self._start_stream()
        self._after_reset = True

    def feed(self, chunk: Buffer) -> list[Event]:
        """Decode the next bytes of the stream and return the events they complete, in order.

        Raises:
            SSEParsingError: a line or an event went over its size limit, or (``strict=True``) the input
                is malformed. Its ``events`` attribute holds the events this call completed before that.
        """
        if self._failed:
            raise SSEParsingError("the decoder failed earlier; call reset() before feeding it again")
        if self._result is not None:
            raise RuntimeError("feed() cannot be called while feed() is running (e.g. from on_comment)")
        # Any buffer, also a non-contiguous one; never an int (bytes(3) would be three NULs) or a str.
        data = chunk if type(chunk) is bytes else memoryview(chunk).tobytes()
        events: list[Event] = []
        self._result = events
        try:
            self._feed(data, events)
        except SSEParsingError as exc:
            exc.events = events
            self._fail()
            raise
        except BaseException:
            self._fail()
            raise
        finally:
            self._result = None
        return events

    def _fail(self) -> None:
        self._failed = True
        self._pending = bytearray()
        self._data = bytearray()
        self._has_data = False

    def _feed(self, chunk: bytes, events: list[Event]) -> None:
        if not chunk:
            return
        if self._bom_pending:
            # "The stream must then be parsed by ... applying the UTF-8 decode algorithm", which strips
            # one leading BOM: hold the first bytes back until we know whether they are one.
            chunk = bytes(self._pending) + chunk
            self._pending.clear()
            if len(chunk) < len(_BOM) and _BOM.startswith(chunk):
                self._pending += chunk
                return
            self._bom_pending = False
            if chunk.startswith(_BOM):
                chunk = chunk[len(_BOM) :]
                self._offset += len(_BOM)
                if not chunk:
                    return
        if self._skip_lf:
            # A CR ended the last chunk; an LF here is the rest of that CRLF, not an empty line.
            self._skip_lf = False
            if chunk[0] == 0x0A:
                chunk = chunk[1:]
                self._offset += 1
                if not chunk:
                    return
        if self._pending:
            if _LF not in chunk and _CR not in chunk:
                self._hold(chunk)
                return
            self._pending += chunk
            buf = bytes(self._pending)
            self._pending.clear()
        else:
            buf = chunk

        # "Lines must be separated by either a U+000D CARRIAGE RETURN U+000A LINE FEED (CRLF) character
        # pair, a single U+000A LINE FEED (LF) character, or a single U+000D CARRIAGE RETURN (CR) character."
        lines = buf.splitlines()
        last = buf[-1]
        tail = b""
        if last == 0x0D:
            self._skip_lf = True
        elif last != 0x0A:
            tail = lines.pop()

        self._lines(lines, buf, events)
        self._offset += len(buf) - len(tail)
        if tail:
            self._hold(tail)

    def _hold(self, piece: bytes) -> None:
        """Keep bytes of a line whose end has not arrived yet, within ``max_line_size``."""
        if len(self._pending) + len(piece) > self._max_line_size:
            shown_bytes = _SHOWN_LINE_CHARS * 4
            self._line_too_long(bytes(self._pending[:shown_bytes]) + piece[:shown_bytes], self._offset)
        self._pending += piece

    def _line_too_long(self, line: bytes, offset: int) -> None:
        raise SSEParsingError(
            f"line longer than max_line_size ({self._max_line_size} bytes)", line=_shown(line), offset=offset
        )

    def _line_offset(self, buf: bytes, index: int) -> int:
        """The stream offset of line ``index`` of ``buf`` (only computed for error messages)."""
        start = 0
        for count, match in enumerate(_LINE_END.finditer(buf)):
            if count == index:
                break
            start = match.end()
        return self._offset + start

    def _malformed(self, reason: str, line: bytes, buf: bytes, index: int) -> None:
        raise SSEParsingError(reason, line=_shown(line), offset=self._line_offset(buf, index))

    def _lines(self, lines: list[bytes], buf: bytes, events: list[Event]) -> None:
        """Interpret complete lines. The per-line rules, and dedup, are written out in this one loop, with
        the decoder's state in locals (stored back at the end, however the loop ends), because a method
        call or an attribute access per line would double the cost."""
        max_line_size = self._max_line_size
        # No line is longer than the buffer that holds it: most buffers need no check per line.
        check_length = len(buf) > max_line_size
        strict = self._strict
        event_types, decode, dedup = self._event_types, self._decode, self._dedup
        type_cache = self._type_cache
        append = events.append
        # the block being read: data (the first data line, or all of them joined), type, id, retry
        data: bytes | bytearray | None = None if not self._has_data else self._data
        event_type, event_id, event_retry = self._event_type, self._event_id, self._event_retry
        id_buffer, last_event_id = self._id_buffer, self._last_event_id
        # dedup: the window of recent ids (a ring and a set), the data of the last event yielded, and
        # whether no event was yielded since the last reset
        ring, ring_pos, ring_size = self._ring, self._ring_pos, self._ring_size
        seen = self._seen_ids
        last_data, after_reset = self._last_data, self._after_reset
        try:
            for index, line in enumerate(lines):
                if not line:
                    # "If the line is empty (a blank line): Dispatch the event."
                    # "1. Set the last event ID string of the event source to the value of the last event
                    # ID buffer."
                    last_event_id = id_buffer
                    # "2. If the data buffer is an empty string, ... return." "3. If the data buffer's
                    # last character is a U+000A LINE FEED (LF) character, then remove the last character
                    # from the data buffer." (Never there: see data.) "5. Initialize event's type attribute
                    # to "message" ... If the event type buffer has a value other than the empty string,
                    # change the type of the newly created event to equal the value".
                    if data is not None and (event_types is None or (event_type or "message") in event_types):
                        if not decode:
                            text: Any = bytes(data)
                        else:
                            try:  # (decode() without arguments is the fastest call; valid UTF-8 is usual)
                                text = data.decode()
                            except UnicodeDecodeError:
                                text = data.decode("utf-8", "replace")
                        keep = True
                        if dedup:
                            # Drop the event if its own id is among the recent ones, or if it is the first
                            # since a reset, has no id and repeats the data of the last event yielded.
                            first_after_reset, after_reset = after_reset, False
                            if event_id:
                                keep = event_id not in seen
                                if keep and ring_size:  # remember it in the window, forgetting the oldest
                                    if len(ring) < ring_size:
                                        ring.append(event_id)
                                    else:
                                        seen.discard(ring[ring_pos])
                                        ring[ring_pos] = event_id
                                        ring_pos += 1
                                        if ring_pos == ring_size:
                                            ring_pos = 0
                                    seen.add(event_id)
                            elif first_after_reset:
                                keep = text != last_data
                            if keep:
                                last_data = text
                        if keep:
                            append({"data": text, "event": event_type, "id": event_id, "retry": event_retry})
                    data = event_type = event_id = event_retry = None
                    continue
                if check_length and len(line) > max_line_size:
                    self._line_too_long(line, self._line_offset(buf, index))
                if strict:
                    try:
                        line.decode("utf-8")
                    except UnicodeDecodeError:
                        self._malformed("invalid UTF-8", line, buf, index)
                # "If the line contains a U+003A COLON character (:): Collect the characters on the line
                # before the first U+003A COLON character (:), and let field be that string. Collect the
                # characters on the line after the first U+003A COLON character (:), and let value be that
                # string. If value starts with a U+0020 SPACE character, remove it from value."
                # Otherwise the whole line is the field name and the value is the empty string.
                # (Most lines read "name: value": split them at ": " in one step, unless a colon comes first.)
                name, colon, value = line.partition(b": ")
                if not colon or _COLON in name:
                    name, colon, value = line.partition(b":")
                    if value[:1] == b" ":
                        value = value[1:]
                if name == b"data":
                    # "Append the field value to the data buffer, then append a single U+000A LINE FEED
                    # (LF) character to the data buffer." (The LF goes between lines, which spares
                    # step 3 of dispatch; a single data line is kept as it is, without a copy.)
                    size = len(value) if data is None else len(data) + 1 + len(value)
                    if size > self._max_event_size:
                        raise SSEParsingError(
                            f"event data larger than max_event_size ({self._max_event_size} bytes)",
                            line=_shown(line),
                            offset=self._line_offset(buf, index),
                        )
                    if data is None:
                        data = value
                    else:
                        if type(data) is bytes:
                            data = bytearray(data)
                        data += b"\n"
                        data += value
                elif name == b"event":
                    # "Set the event type buffer to field value."
                    event_type = (type_cache.get(value) or self._intern_type(value)) if value else None
                elif name == b"id":
                    # "If the field value does not contain U+0000 NULL, then set the last event ID buffer
                    # to the field value. Otherwise, ignore the field."
                    if _NUL in value:
                        if strict:
                            self._malformed("id contains NUL", line, buf, index)
                    else:
                        try:
                            id_buffer = event_id = value.decode()
                        except UnicodeDecodeError:
                            id_buffer = event_id = value.decode("utf-8", "replace")
                elif not name:
                    # "If the line starts with a U+003A COLON character (:): Ignore the line."
                    if self._on_comment is not None:
                        # the callback may read last_event_id: it must be up to date
                        self._last_event_id = last_event_id
                        self._on_comment(value.decode("utf-8", "replace"))
                        decode = self._decode  # the one option a callback may change
                elif name == b"retry":
                    # "If the field value consists of only ASCII digits, then interpret the field value as
                    # an integer in base ten, and set the event stream's reconnection time to that
                    # integer. Otherwise, ignore the field."
                    if value.isdigit():
                        retry = _parse_retry(value)
                        if retry is not None:
                            self._retry = event_retry = retry
                        elif strict:
                            self._malformed("retry has too many digits", line, buf, index)
                    elif strict:
                        self._malformed("retry is not all ASCII digits", line, buf, index)
                elif strict and not colon:
                    # "Otherwise: The field is ignored." strict mode reports a line that names no field.
                    self._malformed("line has no colon and names no field", line, buf, index)
        finally:
            # the block goes on in the next chunk (or the decoder failed: the state no longer matters)
            self._has_data = data is not None
            self._data = data if type(data) is bytearray else bytearray(data or b"")
            self._event_type, self._event_id, self._event_retry = event_type, event_id, event_retry
            self._id_buffer, self._last_event_id = id_buffer, last_event_id
            self._ring_pos, self._last_data, self._after_reset = ring_pos, last_data, after_reset

    def _intern_type(self, raw: bytes) -> str:
        """Event type names repeat: share one str per name instead of decoding each time."""
        name = self._type_cache.get(raw)
        if name is None:
            name = raw.decode("utf-8", "replace")
            if len(self._type_cache) < _EVENT_TYPE_CACHE_SIZE:
                self._type_cache[raw] = name
        return name
