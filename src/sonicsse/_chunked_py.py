"""The pure-Python twin of ``sonicsse._chunked_c``: HTTP/1.1 chunked transfer coding, undone in place.

The grammar both twins accept (RFC 9112 section 7.1, leniently where servers are known to differ):

- a size line is hex digits (1 to 15), then optional extensions after ``;``; spaces, tabs and CRs around
  the digits are ignored, and a line may end in LF alone;
- the chunk data is followed by an empty line (CRLF or LF; spaces, tabs and CRs on it are ignored);
- a zero size ends the data; trailer lines follow, up to an empty line, which ends the body;
- a size line, chunk end or trailer line longer than ``MAX_LINE`` bytes is an error (never buffered).
"""

from __future__ import annotations

__all__ = ["MAX_LINE", "ChunkedDecoder"]

#: Longest chunk-size, chunk-end or trailer line held while its end has not arrived.
MAX_LINE = 4096
_BLANK = b" \t\r"
_HEX = b"0123456789abcdefABCDEF"


def _size(line: bytes | bytearray) -> int:
    digits = line.split(b";", 1)[0].strip(_BLANK)
    if not digits or len(digits) > 15 or digits.translate(None, _HEX):
        raise ValueError(f"broken chunked framing: bad chunk size {bytes(line[:40])!r}")
    return int(digits, 16)


class ChunkedDecoder:
    """Undo chunked framing in the buffer it is given, one socket read at a time.

    ``decode(buffer, start, end)`` gathers the payload of the chunks in ``buffer[start:end]`` at the
    start of that region (moving it over the framing) and returns ``(out_start, out_end, stop)``: the
    payload is ``buffer[out_start:out_end]`` (``-1, -1`` when there is none), and parsing stopped at
    ``stop``, where a partial framing line begins that the next call must be given again, with what
    followed it. ``completed`` turns true at the end of the body; ``leftover`` when bytes followed it.

    Broken framing raises ``ValueError``; when payload came before the break in the same call, that
    payload is returned first and the error is raised by the next call.
    """

    def __init__(self) -> None:
        self.completed = False
        self.leftover = False
        self._state = 0  # 0 size line, 1 data, 2 empty line after the data, 3 trailers
        self._left = 0
        self._failed: ValueError | None = None

    def decode(self, buffer: bytearray, start: int, end: int) -> tuple[int, int, int]:
        if self._failed is not None:
            raise self._failed
        if type(buffer) is not bytearray:  # as the compiled twin's ``bytearray buffer not None`` argument
            name = type(buffer).__name__
            raise TypeError(f"Argument 'buffer' has incorrect type (expected bytearray, got {name})")
        if not 0 <= start <= end <= len(buffer):
            raise ValueError("start and end must lie within the buffer, start <= end")
        out_start = out_end = -1
        find = buffer.find
        pos = start
        state = self._state
        left = self._left
        try:
            while pos < end and not self.completed:
                if state == 0:  # size line
                    nl = find(b"\n", pos, end)
                    if nl < 0:
                        if end - pos > MAX_LINE:
                            raise ValueError("broken chunked framing: chunk size line too long")
                        break
                    size = _size(buffer[pos:nl])
                    pos = nl + 1
                    if size == 0:
                        state = 3
                        continue
                    stop = pos + size
                    if stop + 2 <= end and buffer[stop] == 13 and buffer[stop + 1] == 10:
                        # The whole chunk is here: SSE servers often write one small chunk per event.
                        piece_end = stop
                        state_after = 0
                        next_pos = stop + 2
                    else:
                        piece_end = min(stop, end)
                        left = size - (piece_end - pos)
                        state_after = 1 if left else 2
                        next_pos = piece_end
                elif state == 1:  # chunk data
                    piece_end = min(pos + left, end)
                    left -= piece_end - pos
                    state_after = 1 if left else 2
                    next_pos = piece_end
                elif state == 2:  # the empty line after the data
                    nl = find(b"\n", pos, end)
                    if nl < 0:
                        if buffer[pos:end].strip(_BLANK) or end - pos > MAX_LINE:
                            raise ValueError("broken chunked framing: no CRLF after chunk data")
                        break
                    if buffer[pos:nl].strip(_BLANK):
                        raise ValueError("broken chunked framing: no CRLF after chunk data")
                    pos = nl + 1
                    state = 0
                    continue
                else:  # 3: trailer lines, up to the empty line ending the body
                    nl = find(b"\n", pos, end)
                    if nl < 0:
                        if end - pos > MAX_LINE:
                            raise ValueError("broken chunked framing: trailer line too long")
                        break
                    line_empty = not buffer[pos:nl].strip(_BLANK)
                    pos = nl + 1
                    if line_empty:
                        self.completed = True
                        self.leftover = pos < end
                    continue
                # gather buffer[pos:piece_end] after the payload so far (the first piece stays put)
                if piece_end == pos:
                    pass
                elif out_end < 0:
                    out_start, out_end = pos, piece_end
                else:
                    buffer[out_end : out_end + piece_end - pos] = buffer[pos:piece_end]
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
        return out_start, out_end, pos
