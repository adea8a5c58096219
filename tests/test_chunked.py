"""HTTP/1.1 chunked decoding in place, compiled and pure: same behaviour, every chunking of the wire."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sonicsse import _chunked_py

from conftest import NO_EXTENSIONS
from decoder_helpers import dechunk_all as feed

MAX_LINE = _chunked_py.MAX_LINE


def splits(wire: bytes, *cuts: int) -> list[bytes]:
    bounds = [0, *cuts, len(wire)]
    return [wire[a:b] for a, b in itertools.pairwise(bounds)]


def frame(*chunks: bytes, trailer: bytes = b"\r\n") -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n" + trailer


SSE = frame(b"data: a\n\n", b"data: bb\r\n\r\n", b"id: 7\ndata: " + b"x" * 300 + b"\n\n")
SSE_PAYLOAD = b"data: a\n\ndata: bb\r\n\r\nid: 7\ndata: " + b"x" * 300 + b"\n\n"


def test_whole_body_in_one_read(chunked_cls: Any) -> None:
    decoder = chunked_cls()
    assert feed(decoder, [SSE]) == (SSE_PAYLOAD, None)
    assert decoder.completed and not decoder.leftover


def test_every_single_split_point(chunked_cls: Any) -> None:
    for cut in range(len(SSE) + 1):
        decoder = chunked_cls()
        assert feed(decoder, splits(SSE, cut)) == (SSE_PAYLOAD, None), cut
        assert decoder.completed


def test_byte_by_byte(chunked_cls: Any) -> None:
    decoder = chunked_cls()
    assert feed(decoder, [SSE[i : i + 1] for i in range(len(SSE))]) == (SSE_PAYLOAD, None)
    assert decoder.completed


def test_payload_is_gathered_at_the_start_of_the_region(chunked_cls: Any) -> None:
    buf = bytearray(frame(b"ab", b"cd", b"ef"))
    out_start, out_end, stop = chunked_cls().decode(buf, 0, len(buf))
    assert bytes(buf[out_start:out_end]) == b"abcdef"
    assert out_start == 3  # the first piece stays where it is; the others move down to it
    assert stop == len(buf)


def test_extensions_case_whitespace_and_bare_lf(chunked_cls: Any) -> None:
    wire = b'A;name=value;x\r\n0123456789\r\n \t5 \r\nhello\n1f ; q="a;b"\n' + b"y" * 31 + b"\r\n0\n\n"
    decoder = chunked_cls()
    assert feed(decoder, [wire]) == (b"0123456789hello" + b"y" * 31, None)
    assert decoder.completed


def test_trailers_are_skipped_and_bytes_after_the_end_are_reported(chunked_cls: Any) -> None:
    decoder = chunked_cls()
    wire = frame(b"abc", trailer=b"Expires: never\r\nX-A: b\r\n\r\nHTTP/1.1 200 OK\r\n")
    assert feed(decoder, [wire]) == (b"abc", None)
    assert decoder.completed and decoder.leftover


def test_a_completed_decoder_stops_parsing(chunked_cls: Any) -> None:
    decoder = chunked_cls()
    buf = bytearray(frame(b"abc") + b"5\r\nmore!\r\n")
    out_start, out_end, stop = decoder.decode(buf, 0, len(buf))
    assert bytes(buf[out_start:out_end]) == b"abc" and decoder.completed
    assert stop == len(frame(b"abc"))
    assert decoder.decode(buf, stop, len(buf)) == (-1, -1, stop)


def test_zero_copy_for_a_chunk_spanning_reads(chunked_cls: Any) -> None:
    decoder = chunked_cls()
    big = b"z" * 10_000
    wire = frame(big)
    assert feed(decoder, splits(wire, 10, 4000, 9000)) == (big, None)


@pytest.mark.parametrize(
    "size_line",
    [b"g", b"", b" ", b"0x10", b"-1", b"+1", b"1_0", b"1 0", b"f" * 16, b";ext", b"\x00"],
)
def test_bad_chunk_sizes(chunked_cls: Any, size_line: bytes) -> None:
    payload, error = feed(chunked_cls(), [size_line + b"\r\nabc\r\n0\r\n\r\n"])
    assert payload == b""
    assert error is not None and error.startswith("broken chunked framing: bad chunk size")


def test_the_largest_chunk_size_is_fifteen_hex_digits(chunked_cls: Any) -> None:
    decoder = chunked_cls()
    assert feed(decoder, [b"f" * 15 + b"\r\nabc"]) == (b"abc", None)
    assert not decoder.completed


def test_no_crlf_after_chunk_data(chunked_cls: Any) -> None:
    payload, error = feed(chunked_cls(), [b"3\r\nabcX\r\n0\r\n\r\n"])
    assert payload == b"abc"  # the good bytes first
    assert error == "broken chunked framing: no CRLF after chunk data"


def test_an_error_after_good_payload_comes_with_the_next_call(chunked_cls: Any) -> None:
    decoder = chunked_cls()
    buf = bytearray(b"3\r\nabc\r\nzz\r\n")
    out_start, out_end, _ = decoder.decode(buf, 0, len(buf))
    assert bytes(buf[out_start:out_end]) == b"abc"
    for _ in range(2):
        with pytest.raises(ValueError, match="bad chunk size b'zz\\\\r'"):
            decoder.decode(bytearray(b"1\r\nx\r\n"), 0, 6)


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (b"1" * (MAX_LINE + 1), "chunk size line too long"),
        (b"1;" + b"e" * MAX_LINE, "chunk size line too long"),
        (b"0\r\nX-Trailer: " + b"t" * MAX_LINE, "trailer line too long"),
        (b"1\r\nx" + b" " * (MAX_LINE + 1), "no CRLF after chunk data"),
    ],
)
def test_framing_lines_are_bounded(chunked_cls: Any, wire: bytes, message: str) -> None:
    payload, error = feed(chunked_cls(), [wire])
    assert error == f"broken chunked framing: {message}"
    # and the same when the line arrives byte by byte
    payload2, error2 = feed(chunked_cls(), [wire[i : i + 1] for i in range(len(wire))])
    assert (payload2, error2) == (payload, error)


def test_a_framing_line_just_within_the_bound_is_fine(chunked_cls: Any) -> None:
    wire = b"3;" + b"e" * (MAX_LINE - 10) + b"\r\nabc\r\n0\r\n\r\n"
    assert feed(chunked_cls(), [wire[:100], wire[100:]]) == (b"abc", None)


def test_the_region_must_lie_in_the_buffer(chunked_cls: Any) -> None:
    for start, end in [(-1, 2), (2, 1), (0, 9)]:
        with pytest.raises(ValueError, match="within the buffer"):
            chunked_cls().decode(bytearray(8), start, end)


def test_the_buffer_must_be_writable(chunked_cls: Any) -> None:
    with pytest.raises(TypeError):
        chunked_cls().decode(b"3\r\nabc\r\n", 0, 8)


# -- the two twins agree on anything --------------------------------------------------------------

chunk_data = st.binary(max_size=40) | st.sampled_from([b"\r\n", b"\n", b"0\r\n\r\n", b"data: x\n\n"])
ends = st.sampled_from([b"\r\n", b"\n", b" \r\n", b"\t\n"])
size_fmt = st.sampled_from([b"%x", b"%X", b"%04x", b" %x ", b"%x;e=1", b'%x ;a;b="c"'])


@st.composite
def wires(draw: st.DrawFn) -> tuple[bytes, bytes | None]:
    """A chunked body and its payload; or a body with one byte changed, cut short, or garbage, and None."""
    chunks = draw(st.lists(chunk_data.filter(bool), max_size=6))
    parts = []
    for data in chunks:
        parts.append(draw(size_fmt) % len(data) + draw(ends) + data + draw(ends))
    trailers = draw(st.lists(st.sampled_from([b"A: b", b"X-Y:", b"T: \xff"]), max_size=2))
    parts.append(b"0" + draw(ends) + b"".join(t + draw(ends) for t in trailers) + draw(ends))
    wire = b"".join(parts)
    mutation = draw(st.sampled_from(["none", "flip", "cut", "garbage"]))
    if mutation == "flip" and wire:
        i = draw(st.integers(0, len(wire) - 1))
        wire = wire[:i] + bytes([draw(st.integers(0, 255))]) + wire[i + 1 :]
    elif mutation == "cut" and wire:
        wire = wire[: draw(st.integers(0, len(wire) - 1))]
    elif mutation == "garbage":
        wire = draw(st.binary(max_size=80))
    return wire, b"".join(chunks) if mutation == "none" else None


@pytest.mark.skipif(NO_EXTENSIONS, reason="built with SONICSSE_NO_EXTENSIONS: no compiled twin")
@settings(max_examples=600, deadline=None)
@given(wires(), st.lists(st.integers(0, 400), max_size=6))
def test_compiled_and_pure_twins_agree(wire_and_payload: tuple[bytes, bytes | None], cuts: list[int]) -> None:
    from sonicsse import _chunked_c

    wire, payload = wire_and_payload
    pieces = splits(wire, *sorted(c for c in cuts if c <= len(wire)))
    c_decoder, py_decoder = _chunked_c.ChunkedDecoder(), _chunked_py.ChunkedDecoder()
    c_result, py_result = feed(c_decoder, pieces), feed(py_decoder, pieces)
    assert c_result == py_result
    assert (c_decoder.completed, c_decoder.leftover) == (py_decoder.completed, py_decoder.leftover)
    if payload is not None:  # well formed: the whole payload, and the end of the body
        assert py_result == (payload, None)
        assert py_decoder.completed and not py_decoder.leftover
    # the same whole, in one read
    assert feed(_chunked_c.ChunkedDecoder(), [wire]) == feed(_chunked_py.ChunkedDecoder(), [wire])
