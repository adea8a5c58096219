"""Helpers for the decoder tests: chunkings, a decode-everything call, and a de-chunk-everything one."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

CHUNKINGS = ["whole", "1", "2", "7", "random"]


def chunked(stream: bytes, chunking: str, seed: int = 0) -> Iterator[bytes]:
    """``stream`` cut the way ``chunking`` names: whole, in n-byte pieces, or at random cut points."""
    if chunking == "whole":
        yield stream
        return
    if chunking == "random":
        rng = random.Random(seed)
        pos = 0
        while pos < len(stream):
            size = rng.choice([1, 1, 2, 3, 5, 8, 64, 1000])
            yield stream[pos : pos + size]
            pos += size
        return
    size = int(chunking)
    for pos in range(0, len(stream), size):
        yield stream[pos : pos + size]


def decode(decoder: Any, stream: bytes, chunking: str = "whole") -> list[dict[str, Any]]:
    """Every event ``decoder`` yields for ``stream`` cut as ``chunking`` says."""
    events: list[dict[str, Any]] = []
    for chunk in chunked(stream, chunking):
        events.extend(decoder.feed(chunk))
    return events


def dechunk_all(decoder: Any, pieces: list[bytes]) -> tuple[bytes, str | None]:
    """Give a ``ChunkedDecoder`` ``pieces`` as a BodyReceiver would: an unparsed tail comes again, with
    the next bytes.

    Returns the payload and the error message that ended decoding (None when none did).
    """
    payload = bytearray()
    pending = b""
    for piece in pieces:
        buf = bytearray(b"\xee" * 3 + pending + piece + b"\xee" * 5)  # bytes around the region stay put
        start, end = 3, 3 + len(pending) + len(piece)
        try:
            out_start, out_end, stop = decoder.decode(buf, start, end)
        except ValueError as exc:
            return bytes(payload), str(exc)
        assert buf[:3] == b"\xee" * 3 and buf[end:] == b"\xee" * 5
        assert start <= stop <= end
        if out_end >= 0:
            assert start <= out_start < out_end <= stop
            payload += buf[out_start:out_end]
        else:
            assert out_start == -1
        pending = bytes(buf[stop:end])
        if decoder.completed:
            return bytes(payload), None
    try:  # an error found after good payload is raised by the next call
        decoder.decode(bytearray(pending), 0, len(pending))
    except ValueError as exc:
        return bytes(payload), str(exc)
    return bytes(payload), None
