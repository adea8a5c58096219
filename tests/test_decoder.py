"""The decoder rules (WHATWG "Interpreting an event stream"), on both implementations, in many chunkings."""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

import aiosonic.exceptions
import pytest

from sonicsse.exceptions import SSEParsingError

from decoder_helpers import CHUNKINGS, chunked, decode

BOM = b"\xef\xbb\xbf"


def ev(
    data: str, event: str | None = None, id: str | None = None, retry: int | None = None
) -> dict[str, Any]:
    return {"data": data, "event": event, "id": id, "retry": retry}


@pytest.fixture(params=CHUNKINGS)
def chunking(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# --- line ends -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_line_ends(decoder_cls: Any, chunking: str, eol: bytes) -> None:
    stream = eol.join([b"event: add", b"id: 1", b"data: a", b"data: b", b"", b"data: c", b"", b""])
    assert decode(decoder_cls(), stream, chunking) == [ev("a\nb", "add", "1"), ev("c")]


def test_mixed_line_ends(decoder_cls: Any, chunking: str) -> None:
    stream = b"data: 1\rdata: 2\r\ndata: 3\n\r\ndata: 4\r\r"
    assert decode(decoder_cls(), stream, chunking) == [ev("1\n2\n3"), ev("4")]


def test_crlf_split_across_chunks_is_one_line_end(decoder_cls: Any) -> None:
    decoder = decoder_cls()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\ndata: b\r") == []
    assert decoder.feed(b"\n\r") == [ev("a\nb")]
    assert decoder.feed(b"\n") == []  # the LF after the CR that dispatched is not another blank line
    assert decoder.feed(b"data: c\n\n") == [ev("c")]


def test_cr_at_chunk_end_then_blank_line(decoder_cls: Any) -> None:
    decoder = decoder_cls()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\r") == [ev("a")]


def test_lone_cr_then_lf_as_next_blank_line(decoder_cls: Any) -> None:
    # CR LF LF: the CRLF ends the data line, the LF is the blank line.
    assert decode(decoder_cls(), b"data: a\r\n\n", "1") == [ev("a")]


# --- BOM ---------------------------------------------------------------------------------------------------


def test_bom_stripped(decoder_cls: Any, chunking: str) -> None:
    assert decode(decoder_cls(), BOM + b"data: x\n\n", chunking) == [ev("x")]


def test_second_bom_is_data(decoder_cls: Any, chunking: str) -> None:
    # After the first BOM is stripped the second starts the field name, which is then unknown.
    assert decode(decoder_cls(), BOM + BOM + b"data: x\n\ndata: y\n\n", chunking) == [ev("y")]
    assert decode(decoder_cls(), b"data: " + BOM + b"x\n\n", chunking) == [ev("\ufeffx")]


def test_partial_bom_is_not_stripped(decoder_cls: Any, chunking: str) -> None:
    # EF BB is not a BOM: it is invalid UTF-8 that starts an unknown field name.
    assert decode(decoder_cls(), b"\xef\xbb\n\ndata: x\n\n", chunking) == [ev("x")]
    assert decode(decoder_cls(), b"\xefdata: x\n\ndata: y\n\n", chunking) == [ev("y")]


def test_short_stream_start_is_not_lost(decoder_cls: Any) -> None:
    decoder = decoder_cls()
    assert decoder.feed(b"\n") == []
    assert decoder.feed(b"\n") == []
    assert decoder.feed(b"d") == []
    assert decoder.feed(b"ata: x\n\n") == [ev("x")]


def test_bom_expected_again_after_reset(decoder_cls: Any) -> None:
    decoder = decoder_cls()
    assert decoder.feed(BOM + b"data: a\n\n") == [ev("a")]
    decoder.reset()
    assert decoder.feed(BOM[:1]) == []
    assert decoder.feed(BOM[1:] + b"data: b\n\n") == [ev("b")]


# --- fields ------------------------------------------------------------------------------------------------


def test_comments_ignored(decoder_cls: Any, chunking: str) -> None:
    stream = b": hello\n:\ndata: a\n: in between\ndata: b\n\n"
    assert decode(decoder_cls(), stream, chunking) == [ev("a\nb")]


def test_on_comment_gets_text_without_colon_and_one_space(decoder_cls: Any, chunking: str) -> None:
    comments: list[str] = []
    stream = b": hello\n:\n:  two\n:x\n: caf\xc3\xa9 \xff\n\n"
    assert decode(decoder_cls(on_comment=comments.append), stream, chunking) == []
    assert comments == ["hello", "", " two", "x", "café \ufffd"]


def test_one_leading_space_removed(decoder_cls: Any, chunking: str) -> None:
    stream = b"data:x\n\ndata: x\n\ndata:  x\n\ndata:\tx\n\ndata: x \n\n"
    assert decode(decoder_cls(), stream, chunking) == [ev("x"), ev("x"), ev(" x"), ev("\tx"), ev("x ")]


def test_only_first_colon_splits(decoder_cls: Any, chunking: str) -> None:
    assert decode(decoder_cls(), b"data: a:b: c\n\n", chunking) == [ev("a:b: c")]


def test_first_colon_splits_when_a_later_colon_has_the_space(decoder_cls: Any, chunking: str) -> None:
    # ": " first occurs after an earlier colon: the field still ends at the first colon.
    stream = b"event:x: y\nid:1: 2\ndata:a: b\ndata:: c\ndat:a: d\n\n"
    assert decode(decoder_cls(), stream, chunking) == [ev("a: b\n: c", "x: y", "1: 2")]
    comments: list[str] = []
    assert decode(decoder_cls(on_comment=comments.append), b":x: y\n: a: b\n\n", chunking) == []
    assert comments == ["x: y", "a: b"]


def test_line_without_colon_is_field_with_empty_value(decoder_cls: Any, chunking: str) -> None:
    assert decode(decoder_cls(), b"data\n\n", chunking) == [ev("")]
    assert decode(decoder_cls(), b"data\ndata\n\n", chunking) == [ev("\n")]
    assert decode(decoder_cls(), b"data: a\ndata\n\n", chunking) == [ev("a\n")]
    assert decode(decoder_cls(), b"data: a\nevent\n\n", chunking) == [ev("a")]
    assert decode(decoder_cls(), b"id: 5\nid\ndata: a\n\n", chunking) == [ev("a", id="")]


def test_raw_newline_inside_data_is_a_field_without_colon(decoder_cls: Any, chunking: str) -> None:
    # aiosonic glued "with two lines" onto the data; the spec makes it an unknown field.
    stream = b"id: 3\nevent: custom\ndata: test data\nwith two lines\n\n"
    assert decode(decoder_cls(), stream, chunking) == [ev("test data", "custom", "3")]


def test_unknown_fields_ignored(decoder_cls: Any, chunking: str) -> None:
    stream = b"foo: bar\nData: no\n data: no\ndata : no\ndata: yes\n\n"
    assert decode(decoder_cls(), stream, chunking) == [ev("yes")]


def test_event_without_data_not_dispatched_but_id_and_retry_apply(decoder_cls: Any, chunking: str) -> None:
    decoder = decoder_cls()
    assert decode(decoder, b"event: x\nid: 9\nretry: 1500\n\n", chunking) == []
    assert decoder.last_event_id == "9"
    assert decoder.retry == 1500
    # The event type of an undispatched block does not leak into the next event.
    assert decode(decoder, b"data: y\n\n", chunking) == [ev("y")]


def test_event_type(decoder_cls: Any, chunking: str) -> None:
    stream = b"event: a\ndata: 1\n\ndata: 2\n\nevent:\ndata: 3\n\nevent: a\nevent: b\ndata: 4\n\n"
    assert decode(decoder_cls(), stream, chunking) == [ev("1", "a"), ev("2"), ev("3"), ev("4", "b")]


def test_event_type_name_shared_between_events(decoder_cls: Any) -> None:
    events = decode(decoder_cls(), b"event: update\ndata: 1\n\nevent: update\ndata: 2\n\n")
    assert events[0]["event"] == events[1]["event"] == "update"
    assert events[0]["event"] is events[1]["event"]


def test_event_types_in_cycles_runs_and_past_the_recent_ones(decoder_cls: Any) -> None:
    """The compiled twin remembers a few recent names and guesses the next from the last: whatever the
    order (cycles, runs of one name, more names than it keeps, names of one length), each event shows
    its own type."""
    names = [f"type{i:02d}" for i in range(12)] + ["x", "update", "create", "délété"]
    order = names[:3] * 4 + [names[3]] * 5 + names + names[::-1] + names[5:10] * 3 + [names[0], names[11]] * 4
    stream = "".join(f"event: {name}\ndata: {k}\n\n" for k, name in enumerate(order)).encode()
    events = decode(decoder_cls(), stream)
    assert [e["event"] for e in events] == order
    assert [e["data"] for e in events] == [str(k) for k in range(len(order))]


def test_id_semantics(decoder_cls: Any, chunking: str) -> None:
    decoder = decoder_cls()
    stream = b"id: 1\ndata: a\n\ndata: b\n\nid\ndata: c\n\nid: x\x00y\ndata: d\n\n"
    events = decode(decoder, stream, chunking)
    # "id" is the event's own block's id: None without one, "" for a bare id, NUL ids ignored.
    assert events == [ev("a", id="1"), ev("b"), ev("c", id=""), ev("d")]
    assert decoder.last_event_id == ""


def test_last_event_id_persists_and_counts_only_completed_blocks(decoder_cls: Any) -> None:
    decoder = decoder_cls()
    assert decoder.last_event_id == ""
    decoder.feed(b"id: 1\ndata: a\n\ndata: b\n\n")
    assert decoder.last_event_id == "1"
    decoder.feed(b"id: 2\ndata: c\n")
    assert decoder.last_event_id == "1"  # the block with id 2 has not ended
    decoder.feed(b"\n")
    assert decoder.last_event_id == "2"


def test_on_comment_may_switch_decode_for_the_events_after_it(decoder_cls: Any, chunking: str) -> None:
    decoder = decoder_cls(on_comment=lambda text: setattr(decoder, "decode", text != "raw"))
    stream = b"data: a\n\n: raw\ndata: b\n\n: str\ndata: c\n\n"
    assert decode(decoder, stream, chunking) == [ev("a"), ev(b"b"), ev("c")]  # type: ignore[arg-type]


def test_on_comment_sees_the_last_event_id_of_the_events_before_it(decoder_cls: Any, chunking: str) -> None:
    seen: list[str] = []
    decoder = decoder_cls(on_comment=lambda _: seen.append(decoder.last_event_id))
    stream = (
        b": first\nid: 5\ndata: a\n\n: after 5\n"
        b"id: 6\n: 6 not dispatched yet\n\n"
        b"id: 7\ndata: b\n\n: after 7\n"
    )
    assert decode(decoder, stream, chunking) == [ev("a", id="5"), ev("b", id="7")]
    assert seen == ["", "5", "5", "7"]


def test_dispatched_places_each_comment_among_the_events(decoder_cls: Any, chunking: str) -> None:
    """Read from on_comment, ``dispatched`` is how many events of the running feed() precede the comment:
    with the events earlier feeds returned, the comment's place in the stream."""
    returned: list[dict[str, Any]] = []
    places: list[tuple[int, str]] = []
    decoder = decoder_cls(on_comment=lambda text: places.append((len(returned) + decoder.dispatched, text)))
    stream = b": first\ndata: a\n\n: after a\ndata: b\n\n: x\n: y\nid: 3\ndata: c\n\ndata: d\n\n: last\n"
    for piece in chunked(stream, chunking):
        returned.extend(decoder.feed(piece))
    assert [event["data"] for event in returned] == ["a", "b", "c", "d"]
    assert places == [(0, "first"), (1, "after a"), (2, "x"), (2, "y"), (4, "last")]


def test_dispatched_counts_only_the_events_feed_returns(decoder_cls: Any) -> None:
    """Events dropped by event_types or dedup, and blocks without data, take no place in the result."""
    places: list[tuple[int, str]] = []
    decoder = decoder_cls(
        dedup=True, event_types={"message"}, on_comment=lambda text: places.append((decoder.dispatched, text))
    )
    stream = (
        b"id: 1\ndata: a\n\n: one\nevent: other\ndata: x\n\n: two\nid: 1\ndata: again\n\n"
        b": three\nid: 9\n\n: four\ndata: b\n\n: five\n"
    )
    assert [event["data"] for event in decoder.feed(stream)] == ["a", "b"]
    assert places == [(1, "one"), (1, "two"), (1, "three"), (1, "four"), (2, "five")]


def test_dispatched_is_zero_outside_feed(decoder_cls: Any) -> None:
    seen: list[int] = []
    decoder = decoder_cls(max_line_size=16, on_comment=lambda text: seen.append(decoder.dispatched))
    assert decoder.dispatched == 0
    assert decoder.feed(b"data: a\n\ndata: b\n\n: c\n") == [ev("a"), ev("b")]
    assert seen == [2] and decoder.dispatched == 0
    # a feed that fails: the comments before the error count the events the error carries
    with pytest.raises(SSEParsingError) as info:
        decoder.feed(b"data: d\n\n: e\ndata: " + b"x" * 20 + b"\n")
    assert info.value.events == [ev("d")]
    assert seen == [2, 1] and decoder.dispatched == 0
    decoder.reset()
    assert decoder.feed(b": f\n") == [] and seen == [2, 1, 0]
    with pytest.raises(AttributeError):
        decoder.dispatched = 1


def test_dispatched_is_zero_after_on_comment_raised(decoder_cls: Any) -> None:
    def boom(text: str) -> None:
        raise RuntimeError(f"{text} {decoder.dispatched}")

    decoder = decoder_cls(on_comment=boom)
    with pytest.raises(RuntimeError, match="bad 1"):
        decoder.feed(b"data: a\n\n: bad\n")
    assert decoder.dispatched == 0


def test_last_event_id_initial_value(decoder_cls: Any) -> None:
    decoder = decoder_cls(last_event_id="42")
    assert decoder.last_event_id == "42"
    decoder.feed(b"data: a\n\n")
    assert decoder.last_event_id == "42"


def test_non_ascii_id(decoder_cls: Any, chunking: str) -> None:
    decoder = decoder_cls()
    assert decode(decoder, "id: ключ-é\ndata: a\n\n".encode(), chunking) == [ev("a", id="ключ-é")]
    assert decoder.last_event_id == "ключ-é"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"retry: 3000", 3000),
        (b"retry:0", 0),
        (b"retry: 007", 7),
        (b"retry: 123456789012345678901234567890", 123456789012345678901234567890),
        (b"retry: 12a", None),
        (b"retry: -1", None),
        (b"retry: 1.5", None),
        (b"retry: +1", None),
        (b"retry:  12", None),
        (b"retry: 12 ", None),
        (b"retry:", None),
        (b"retry", None),
        ("retry: ١٢".encode(), None),  # Arabic-Indic digits are not ASCII digits
    ],
)
def test_retry_only_when_all_ascii_digits(decoder_cls: Any, line: bytes, expected: int | None) -> None:
    decoder = decoder_cls()
    assert decode(decoder, line + b"\ndata: a\n\n") == [ev("a", retry=expected)]
    assert decoder.retry == expected


def test_retry_keeps_last_valid_value(decoder_cls: Any) -> None:
    decoder = decoder_cls()
    decode(decoder, b"retry: 10\n\nretry: x\ndata: a\n\n")
    assert decoder.retry == 10


def test_unterminated_event_at_end_is_not_dispatched(decoder_cls: Any, chunking: str) -> None:
    decoder = decoder_cls()
    assert decode(decoder, b"data: a\n\ndata: b\n", chunking) == [ev("a")]
    assert decode(decoder_cls(), b"data: a\n\ndata: b", chunking) == [ev("a")]


def test_invalid_utf8_becomes_replacement_character(decoder_cls: Any, chunking: str) -> None:
    stream = (
        b"data: a\xffb\xe2\x82\n\ndata: \xe2\x82\xac\xf0\x9f\x98\x80\n\nevent: \xc3\n\xed\xa0\x80data: z\n\n"
    )
    events = decode(decoder_cls(), stream, chunking)
    assert events == [ev("a\ufffdb\ufffd"), ev("€😀")]


def test_multibyte_split_across_chunks(decoder_cls: Any) -> None:
    stream = "data: ünïcödé €😀\n\n".encode()
    assert decode(decoder_cls(), stream, "1") == [ev("ünïcödé €😀")]


def test_nul_in_data_is_kept(decoder_cls: Any, chunking: str) -> None:
    assert decode(decoder_cls(), b"data: a\x00b\n\n", chunking) == [ev("a\x00b")]


def test_empty_and_blank_only_streams(decoder_cls: Any, chunking: str) -> None:
    decoder = decoder_cls()
    assert decoder.feed(b"") == []
    assert decode(decoder, b"\n\n\r\n\r\r", chunking) == []


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_accepts_bytes_like(decoder_cls: Any, kind: Any) -> None:
    decoder = decoder_cls()
    assert decoder.feed(kind(b"data: a\n")) == []
    assert decoder.feed(kind(b"\n")) == [ev("a")]


def test_large_event(decoder_cls: Any) -> None:
    payload = b"x" * (1 << 20)
    stream = (b"data: " + payload + b"\n\n") * 3
    events = decode(decoder_cls(max_line_size=2 << 20), stream, "random")
    assert [len(e["data"]) for e in events] == [1 << 20] * 3


def test_many_data_lines(decoder_cls: Any) -> None:
    stream = b"data: ab\n" * 10_000 + b"\n"
    (event,) = decode(decoder_cls(), stream)
    assert event["data"] == "\n".join(["ab"] * 10_000)


# --- reset -------------------------------------------------------------------------------------------------


def test_reset_drops_partial_line_and_event_keeps_id_and_retry(decoder_cls: Any) -> None:
    decoder = decoder_cls()
    decoder.feed(b"retry: 500\nid: 1\ndata: a\n\nid: 2\ndata: cut")
    assert decoder.last_event_id == "1"
    decoder.reset()
    assert decoder.last_event_id == "1"
    assert decoder.retry == 500
    # the cut-off block's id 2 does not count: the id buffer restarts from the last completed block
    assert decoder.feed(b"data: b\n\n") == [ev("b")]
    assert decoder.last_event_id == "1"
    assert decoder.feed(b"id: 3\ndata: c\n\n") == [ev("c", id="3")]


def test_reset_forgets_pending_cr(decoder_cls: Any) -> None:
    decoder = decoder_cls()
    decoder.feed(b"data: a\r")
    decoder.reset()
    assert decoder.feed(b"\ndata: b\n\n") == [ev("b")]


# --- dedup -------------------------------------------------------------------------------------------------


def test_dedup_off_by_default_keeps_everything(decoder_cls: Any) -> None:
    decoder = decoder_cls()
    assert decode(decoder, b"id: 1\ndata: a\n\nid: 1\ndata: a\n\n") == [ev("a", id="1")] * 2
    decoder.reset()
    assert decoder.feed(b"data: a\n\n") == [ev("a")]


def test_dedup_drops_repeated_ids(decoder_cls: Any, chunking: str) -> None:
    stream = b"id: 1\ndata: a\n\nid: 2\ndata: b\n\nid: 1\ndata: a\n\nid: 3\ndata: c\n\n"
    events = decode(decoder_cls(dedup=True), stream, chunking)
    assert events == [ev("a", id="1"), ev("b", id="2"), ev("c", id="3")]


def test_dedup_keeps_equal_data_within_a_connection(decoder_cls: Any, chunking: str) -> None:
    stream = b"data: \n\n" * 5 + b"data: the\n\n" * 3
    assert decode(decoder_cls(dedup=True), stream, chunking) == [ev("")] * 5 + [ev("the")] * 3


def test_dedup_empty_id_never_dropped(decoder_cls: Any) -> None:
    events = decode(decoder_cls(dedup=True), b"id\ndata: a\n\nid\ndata: b\n\n")
    assert events == [ev("a", id=""), ev("b", id="")]


def test_dedup_after_reset_drops_replayed_last_event(decoder_cls: Any) -> None:
    decoder = decoder_cls(dedup=True)
    assert decoder.feed(b"data: a\n\ndata: b\n\n") == [ev("a"), ev("b")]
    decoder.reset()
    # the server replays its last event on the new connection: dropped once, the rest kept
    assert decoder.feed(b"data: b\n\ndata: b\n\ndata: c\n\n") == [ev("b"), ev("c")]
    decoder.reset()
    assert decoder.feed(b"data: x\n\n") == [ev("x")]


def test_dedup_after_reset_replay_with_id_uses_id_rule(decoder_cls: Any) -> None:
    decoder = decoder_cls(dedup=True)
    decoder.feed(b"id: 1\ndata: a\n\n")
    decoder.reset()
    assert decoder.feed(b"id: 1\ndata: a\n\nid: 2\ndata: a\n\n") == [ev("a", id="2")]


def test_dedup_window_is_bounded(decoder_cls: Any) -> None:
    decoder = decoder_cls(dedup=True, dedup_window=2)
    stream = b"".join(b"id: %d\ndata: x\n\n" % i for i in (1, 2, 3, 1, 3))
    # id 1 left the window of the last two ids when 3 arrived; 3 is still in it
    assert [e["id"] for e in decode(decoder, stream)] == ["1", "2", "3", "1"]


def test_dedup_window_zero_keeps_ids(decoder_cls: Any) -> None:
    decoder = decoder_cls(dedup=True, dedup_window=0)
    assert len(decode(decoder, b"id: 1\ndata: x\n\nid: 1\ndata: y\n\n")) == 2


# --- strict mode -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stream", "reason"),
    [
        (b"data: ok\n\nretry: abc\n\n", "retry is not all ASCII digits"),
        (b"data: ok\n\nid: a\x00b\n\n", "id contains NUL"),
        (b"data: ok\n\ndata: \xff\n\n", "invalid UTF-8"),
        (b"data: ok\n\n: \xff\n\n", "invalid UTF-8"),
        (b"data: ok\n\nmalformed event\n\n", "line has no colon and names no field"),
    ],
)
def test_strict_raises_with_reason_line_and_offset(
    decoder_cls: Any, chunking: str, stream: bytes, reason: str
) -> None:
    decoder = decoder_cls(strict=True)
    received: list[dict[str, Any]] = []
    with pytest.raises(SSEParsingError) as info:
        for chunk in chunked(stream, chunking):
            received.extend(decoder.feed(chunk))
    exc = info.value
    received.extend(exc.events)
    assert received == [ev("ok")]  # nothing valid before the bad line is lost
    assert exc.reason == reason
    assert exc.offset == len(b"data: ok\n\n")
    assert exc.line is not None and reason in str(exc) and "offset 10" in str(exc)
    assert isinstance(exc, aiosonic.exceptions.SSEParsingError)


def test_strict_accepts_valid_streams(decoder_cls: Any, chunking: str) -> None:
    stream = BOM + b": c\nevent: e\nid: 1\nretry: 5\ndata: a\ndata\nunknown: x\n\nid\ndata: b\n\n"
    assert decode(decoder_cls(strict=True), stream, chunking) == [ev("a\n", "e", "1", 5), ev("b", id="")]


def test_strict_error_line_truncated(decoder_cls: Any) -> None:
    with pytest.raises(SSEParsingError) as info:
        decoder_cls(strict=True).feed(b"retry: " + b"x" * 500 + b"\n")
    assert info.value.line is not None and len(info.value.line) == 80


def test_feed_after_error_needs_reset(decoder_cls: Any) -> None:
    decoder = decoder_cls(strict=True)
    with pytest.raises(SSEParsingError):
        decoder.feed(b"retry: x\n")
    with pytest.raises(SSEParsingError, match="reset"):
        decoder.feed(b"data: a\n\n")
    decoder.reset()
    assert decoder.feed(b"data: a\n\n") == [ev("a")]


def test_on_comment_exception_propagates(decoder_cls: Any) -> None:
    def boom(text: str) -> None:
        raise RuntimeError(text)

    decoder = decoder_cls(on_comment=boom)
    with pytest.raises(RuntimeError, match="bad"):
        decoder.feed(b": bad\n")


# --- long data lines ---------------------------------------------------------------------------------------
# The compiled twin builds a data line held over 32 KiB straight into its str; these lines cross that
# threshold in every chunking, with the cases that make it fall back to the plain path.

LONG = 40_000


def long_value(size: int, seed: int = 0) -> bytes:
    """``size`` ASCII bytes that are not all alike (colons and spaces included, no line ends)."""
    alphabet = b"0123456789 abcdefghij:klmnop{}qrstuvwxyz,"
    return bytes(alphabet[(i * 7 + seed) % len(alphabet)] for i in range(size))


@pytest.mark.parametrize("head", [b"data:", b"data: ", b"data:  "], ids=["no-space", "space", "two-spaces"])
@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_long_data_lines(decoder_cls: Any, chunking: str, head: bytes, eol: bytes) -> None:
    a, b = long_value(LONG), long_value(3 * LONG, 1)
    stream = eol.join([b"id: 1", head + a, b"", b"event: big", head + b, b"", b"data: c", b"", b""])
    value = (b" " if head == b"data:  " else b"").decode()
    assert decode(decoder_cls(), stream, chunking) == [
        ev(value + a.decode(), id="1"),
        ev(value + b.decode(), "big"),
        ev("c"),
    ]


@pytest.mark.parametrize("at", [0, 100, 35_000, LONG - 1], ids=["first", "early", "late", "last"])
@pytest.mark.parametrize("bad", [b"\xff", "é".encode(), "😀".encode()], ids=["invalid", "2-byte", "4-byte"])
def test_long_data_line_with_non_ascii(decoder_cls: Any, chunking: str, at: int, bad: bytes) -> None:
    value = long_value(LONG)
    value = value[:at] + bad + value[at:]
    stream = b"data: " + value + b"\n\n" + b"data: " + long_value(LONG, 2) + b"\n\n"
    assert decode(decoder_cls(), stream, chunking) == [
        ev(value.decode("utf-8", "replace")),
        ev(long_value(LONG, 2).decode()),  # the next long line is built in place again
    ]


@pytest.mark.parametrize(
    "lines",
    [["short", "long"], ["long", "short"], ["long", "long"]],
    ids=["short-long", "long-short", "long-long"],
)
def test_long_data_line_joins_other_data_lines(decoder_cls: Any, chunking: str, lines: list[str]) -> None:
    values = [long_value(LONG, i) if kind == "long" else b"s" for i, kind in enumerate(lines)]
    stream = b"".join(b"data: " + value + b"\n" for value in values) + b"\n"
    assert decode(decoder_cls(), stream, chunking) == [ev("\n".join(v.decode() for v in values))]


def test_long_lines_of_other_fields(decoder_cls: Any, chunking: str) -> None:
    value = long_value(LONG)
    comments: list[str] = []
    stream = b": " + value + b"\nid: " + value + b"\nevent: " + value + b"\nfoo: " + value + b"\ndata: x\n\n"
    decoder = decoder_cls(on_comment=comments.append)
    assert decode(decoder, stream, chunking) == [ev("x", value.decode(), value.decode())]
    assert comments == [value.decode()]


def test_long_data_line_of_a_filtered_event_type(decoder_cls: Any, chunking: str) -> None:
    value = long_value(LONG)
    stream = b"data: " + value + b"\nevent: skip\nid: 1\n\ndata: " + value + b"\nevent: keep\n\n"
    decoder = decoder_cls(event_types={"keep"})
    assert decode(decoder, stream, chunking) == [ev(value.decode(), "keep")]
    assert decoder.last_event_id == "1"


@pytest.mark.parametrize("switch", [False, True], ids=["bytes", "switched-mid-line"])
def test_long_data_line_as_bytes(decoder_cls: Any, switch: bool) -> None:
    value = long_value(LONG)
    decoder = decoder_cls(decode=switch)
    assert decoder.feed(b"data: " + value[: LONG // 2]) == []
    decoder.decode = False
    assert decoder.feed(value[LONG // 2 :] + b"\n\n") == [ev(value)]  # type: ignore[arg-type]


def test_long_data_line_dropped_by_reset(decoder_cls: Any) -> None:
    value = long_value(LONG)
    decoder = decoder_cls()
    assert decoder.feed(b"data: " + value) == []
    decoder.reset()
    assert decoder.feed(b"data: " + value[:10] + b"\n\n") == [ev(value[:10].decode())]
    assert decoder.feed(b"data: " + value) == []  # an unterminated line at the end of a stream is dropped
    decoder.reset()
    assert decoder.feed(b"data: x\n\n") == [ev("x")]


def test_long_data_line_in_strict_mode(decoder_cls: Any, chunking: str) -> None:
    value = long_value(LONG)
    assert decode(decoder_cls(strict=True), b"data: " + value + b"\n\n", chunking) == [ev(value.decode())]
    with pytest.raises(SSEParsingError, match="invalid UTF-8"):
        decode(decoder_cls(strict=True), b"data: " + value + b"\xff\n\n", chunking)


def test_long_data_line_limits(decoder_cls: Any, chunking: str) -> None:
    value = long_value(LONG)
    stream = b"data: a\n\ndata: " + value + b"\n\n"
    with pytest.raises(SSEParsingError, match="max_line_size") as info:
        decode(decoder_cls(max_line_size=LONG), stream, chunking)
    assert info.value.offset == len(b"data: a\n\n")
    assert info.value.line == ("data: " + value.decode())[:80]
    assert decode(decoder_cls(max_line_size=LONG + 6), stream, chunking)[1] == ev(value.decode())
    with pytest.raises(SSEParsingError, match="max_event_size") as info:
        decode(decoder_cls(max_event_size=LONG - 1), stream, chunking)
    assert info.value.offset == len(b"data: a\n\n")
    assert info.value.line == ("data: " + value.decode())[:80]
    assert decode(decoder_cls(max_event_size=LONG), stream, chunking)[1] == ev(value.decode())


def test_held_long_line_after_a_huge_event_reserves_little(decoder_cls: Any) -> None:
    """A long line held after an 8 MiB event does not reserve the 8 MiB event's size (the compiled twin
    sizes a line it builds in place from the last one, within a cap)."""
    decoder = decoder_cls(max_line_size=16 << 20)
    huge = b"data: " + long_value(8 << 20) + b"\n\n"
    for pos in range(0, len(huge), 1 << 20):
        decoder.feed(huge[pos : pos + (1 << 20)])
    gc.collect()
    tracemalloc.start()
    try:
        assert decoder.feed(b"data: " + long_value(LONG)) == []
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < (1 << 20) + 4 * LONG


def test_long_data_lines_of_changing_sizes(decoder_cls: Any) -> None:
    sizes = [LONG, 5 * LONG, LONG, 2 * LONG, 3 * LONG]
    stream = b"".join(b"data: " + long_value(size, size) + b"\n\n" for size in sizes)
    events = decode(decoder_cls(), stream, "random")
    assert events == [ev(long_value(size, size).decode()) for size in sizes]


# --- limits ------------------------------------------------------------------------------------------------


def test_line_limit(decoder_cls: Any, chunking: str) -> None:
    decoder = decoder_cls(max_line_size=10)
    assert decode(decoder, b"data: 1234\n\n", chunking) == [ev("1234")]  # 10 bytes: allowed
    with pytest.raises(SSEParsingError, match="max_line_size") as info:
        decode(decoder, b"data: 12345\n\n", chunking)
    assert info.value.offset == len(b"data: 1234\n\n")
    assert info.value.line is not None and info.value.line.startswith("data: 1234")


def test_line_limit_applies_to_unterminated_tail(decoder_cls: Any) -> None:
    decoder = decoder_cls(max_line_size=10)
    with pytest.raises(SSEParsingError, match="max_line_size"):
        decoder.feed(b"data: 123456789")


def test_event_limit(decoder_cls: Any, chunking: str) -> None:
    decoder = decoder_cls(max_event_size=5)
    assert decode(decoder, b"data: ab\ndata: cd\n\n", chunking) == [ev("ab\ncd")]  # 5 bytes: allowed
    with pytest.raises(SSEParsingError, match="max_event_size") as info:
        decode(decoder, b"data: ab\ndata: cde\n\n", chunking)
    assert info.value.offset == len(b"data: ab\ndata: cd\n\ndata: ab\n")


@pytest.mark.parametrize("chunk_size", [64 << 10, 1 << 20])
def test_64_mib_without_newline_raises_with_bounded_memory(decoder_cls: Any, chunk_size: int) -> None:
    limit = 1 << 20
    decoder = decoder_cls(max_line_size=limit)
    chunk = b"a" * chunk_size
    gc.collect()
    tracemalloc.start()
    try:
        fed = 0
        with pytest.raises(SSEParsingError, match="max_line_size"):
            while fed < 64 << 20:
                decoder.feed(chunk)
                fed += chunk_size
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert fed <= limit  # it raised as soon as the line went past the limit
    # the held line never grows past the limit (plus the buffer's doubling slack and the error message)
    assert peak < 2 * limit + (256 << 10)


def test_constructor_validation(decoder_cls: Any) -> None:
    with pytest.raises(ValueError):
        decoder_cls(max_line_size=0)
    with pytest.raises(ValueError):
        decoder_cls(max_event_size=0)
    with pytest.raises(ValueError):
        decoder_cls(dedup_window=-1)
    with pytest.raises(ValueError):
        decoder_cls(last_event_id="a\x00")
    with pytest.raises(TypeError):
        decoder_cls(last_event_id=5)
    with pytest.raises(TypeError):
        decoder_cls(on_comment=5)


def test_event_dict_has_exactly_the_seed_keys(decoder_cls: Any) -> None:
    (event,) = decoder_cls().feed(b"data: a\n\n")
    assert type(event) is dict
    assert list(event) == ["data", "event", "id", "retry"]


# --- event type filter and raw bytes ---------------------------------------------------------------------


def test_event_types_filter(decoder_cls: Any, chunking: str) -> None:
    decoder = decoder_cls(event_types={"keep", "message"})
    stream = (
        b"event: keep\ndata: 1\n\n"
        b"event: drop\nid: 7\nretry: 99\ndata: 2\n\n"
        b"data: 3\n\n"
        b"data: 4\nevent: drop\n\n"  # the type may come after the data
    )
    assert decode(decoder, stream, chunking) == [ev("1", "keep"), ev("3")]
    # a dropped event's id and retry still take effect, so a resume does not replay it
    assert decoder.last_event_id == "7"
    assert decoder.retry == 99


def test_event_types_without_message(decoder_cls: Any) -> None:
    decoder = decoder_cls(event_types=["delta"])
    assert decode(decoder, b"data: plain\n\nevent: delta\ndata: d\n\n") == [ev("d", "delta")]


def test_event_types_must_be_strings(decoder_cls: Any) -> None:
    with pytest.raises(TypeError):
        decoder_cls(event_types="message")
    with pytest.raises(TypeError):
        decoder_cls(event_types=[b"message"])


def test_decode_false_gives_raw_bytes(decoder_cls: Any, chunking: str) -> None:
    stream = b"event: e\nid: 1\ndata: caf\xc3\xa9\ndata: \xff\n\n"
    events = decode(decoder_cls(decode=False), stream, chunking)
    assert events == [{"data": b"caf\xc3\xa9\n\xff", "event": "e", "id": "1", "retry": None}]


def test_decode_false_dedup_after_reset(decoder_cls: Any) -> None:
    decoder = decoder_cls(decode=False, dedup=True)
    assert decoder.feed(b"data: a\n\n") == [{"data": b"a", "event": None, "id": None, "retry": None}]
    decoder.reset()
    events = decoder.feed(b"data: a\n\ndata: b\n\n")
    assert events == [{"data": b"b", "event": None, "id": None, "retry": None}]


def test_decode_can_be_switched_between_events(decoder_cls: Any) -> None:
    decoder = decoder_cls()
    assert decoder.decode is True
    assert decoder.feed(b"data: a\n\ndata: b") == [ev("a")]
    decoder.decode = False
    assert decoder.feed(b"\n\n") == [{"data": b"b", "event": None, "id": None, "retry": None}]


@pytest.mark.parametrize(
    ("ids", "kept"),
    [
        (["1", "2", "3", "2", "4"], ["1", "2", "3", "4"]),  # an older numeric id is a replay
        (["9", "10", "9", "11"], ["9", "10", "11"]),  # numeric, not lexicographic, order
        (["1", "01", "1", "a", "1"], ["1", "01", "a"]),  # "01" is another id than "1"
        (["5", "x", "6", "x", "5"], ["5", "x", "6"]),
        (["3", "3"], ["3"]),
        (["1", "2", "3", "4", "1"], ["1", "2", "3", "4", "1"]),  # 1 left the window of 3
        (["2", "1", "3", "2"], ["2", "1", "3"]),
        # 18 digits, then 19 (beyond a 64-bit number): the window still holds the 18-digit id
        (
            ["999999999999999998", "999999999999999999", "1000000000000000000", "999999999999999998"],
            ["999999999999999998", "999999999999999999", "1000000000000000000"],
        ),
        (
            ["1000000000000000001", "1000000000000000000", "1000000000000000001"],
            ["1000000000000000001", "1000000000000000000"],
        ),
        # 2**64 + 5 would wrap to 5 in 64 bits, and 2**63 - 1 is the largest 64-bit number
        (
            ["18446744073709551621", "18446744073709551621", "9223372036854775807", "9223372036854775807"],
            ["18446744073709551621", "9223372036854775807"],
        ),
    ],
)
def test_dedup_window_over_numeric_and_other_ids(decoder_cls: Any, ids: list[str], kept: list[str]) -> None:
    decoder = decoder_cls(dedup=True, dedup_window=3)
    stream = b"".join(b"id: %s\ndata: x\n\n" % i.encode() for i in ids)
    assert [e["id"] for e in decode(decoder, stream)] == kept


def test_a_decoder_initialised_again_starts_a_new_window(decoder_cls: Any) -> None:
    """``__init__`` on a used decoder gives it a fresh dedup window; one that fails (a window too large
    to allocate) leaves a working decoder behind."""

    def kept(decoder: Any, ids: list[int]) -> list[str]:
        stream = b"".join(b"id: %d\ndata: x\n\n" % i for i in ids)
        return [e["id"] for e in decoder.feed(stream)]

    decoder = decoder_cls(dedup=True, dedup_window=4)
    assert kept(decoder, [1, 2, 3, 2]) == ["1", "2", "3"]
    decoder.__init__(dedup=True, dedup_window=2)
    assert kept(decoder, [1, 2, 3, 1, 3]) == ["1", "2", "3", "1"]
    with pytest.raises(MemoryError):
        decoder.__init__(dedup=True, dedup_window=2**61)
    assert len(kept(decoder, list(range(10, 3010)))) == 3000
    assert kept(decoder, [3009]) == []


def test_a_failed_initialisation_writes_nothing_out_of_bounds(decoder_cls: Any) -> None:
    """The same failed ``__init__``, under Python's debug allocator, which aborts the process when a
    write went past the end of a block (the compiled twin keeps dedup's numbers in C memory)."""
    import os
    import subprocess
    import sys

    script = (
        f"from {decoder_cls.__module__} import SSEDecoder\n"
        "d = SSEDecoder(dedup=True)\n"
        "try:\n    d.__init__(dedup=True, dedup_window=2**61)\nexcept MemoryError:\n    pass\n"
        "d.feed(b''.join(b'id: %d\\ndata: x\\n\\n' % i for i in range(3000)))\n"
        "del d\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONMALLOC": "debug"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert (out.returncode, out.stdout) == (0, "ok\n"), out.stderr[-2000:]


def test_retry_with_more_digits_than_int_converts_is_ignored(decoder_cls: Any) -> None:
    """Python refuses to turn over 4,300 digits into an int (the conversion is quadratic): no ValueError
    escapes, the field is ignored (no wait that long could happen anyway), strict mode names it."""
    huge = b"9" * 5000
    decoder = decoder_cls()
    assert decoder.feed(b"retry: 10\n\nretry: " + huge + b"\ndata: a\n\n") == [ev("a")]
    assert decoder.retry == 10
    longest = b"1" + b"0" * 4299  # exactly the default limit still converts
    assert decoder.feed(b"retry: " + longest + b"\ndata: b\n\n") == [ev("b", retry=int(longest))]
    with pytest.raises(SSEParsingError, match="too many digits"):
        decoder_cls(strict=True).feed(b"retry: " + huge + b"\n")


def test_reset_from_inside_feed_is_refused(decoder_cls: Any) -> None:
    """reset() (or feed()) from on_comment would mix the old chunk's rest into the new stream."""
    decoder = decoder_cls(on_comment=lambda text: decoder.reset())
    with pytest.raises(RuntimeError, match="while feed"):
        decoder.feed(b":ping\n" + b"x" * 4000)
    decoder.reset()  # allowed again once feed() has returned
    assert decoder.feed(b"data: ok\n\n") == [ev("ok")]
    reentrant = decoder_cls(on_comment=lambda text: reentrant.feed(b"data: x\n\n"))
    with pytest.raises(RuntimeError, match="while feed"):
        reentrant.feed(b":ping\n")


def test_any_buffer_is_accepted_and_other_types_are_refused(decoder_cls: Any) -> None:
    decoder = decoder_cls()
    strided = memoryview(b"dxaxtxax:x xax\nx\nx")[::2]  # non-contiguous: b"data: a\n\n"
    assert decoder.feed(strided) == [ev("a")]
    assert decoder.feed(bytearray(b"data: b\n\n")) == [ev("b")]
    for wrong in (3, "data: c\n\n", None):
        with pytest.raises(TypeError):
            decoder.feed(wrong)
    assert decoder.feed(b"data: c\n\n") == [ev("c")]  # a refused argument does not fail the decoder


@pytest.mark.parametrize("limit", [1.5, "10", None])
def test_size_limits_must_be_integers(decoder_cls: Any, limit: Any) -> None:
    with pytest.raises(TypeError):
        decoder_cls(max_line_size=limit)


def test_size_limit_beyond_the_address_space_means_no_limit(decoder_cls: Any) -> None:
    decoder = decoder_cls(max_line_size=1 << 70, max_event_size=1 << 70)
    assert decoder.feed(b"data: " + b"x" * 100 + b"\n\n") == [ev("x" * 100)]


def test_decoders_in_parallel_threads_do_not_interfere(decoder_cls: Any) -> None:
    """One decoder per thread, all at once (on a free-threaded build, truly in parallel): the module
    keeps no shared mutable state, so each gives what it gives alone."""
    import concurrent.futures

    stream = b"".join(
        b"id: %d\r\nevent: t%d\ndata: %s\r\r" % (i, i % 5, ("x\u00e9" * (i % 40)).encode())
        for i in range(3000)
    )

    def run(seed: int) -> list[dict[str, Any]]:
        decoder = decoder_cls(dedup=True, dedup_window=64)
        events: list[dict[str, Any]] = []
        pos = 0
        step = 1 + seed
        while pos < len(stream):
            events += decoder.feed(stream[pos : pos + step])
            pos += step
            step = step * 7 % 97 + 1
        return events

    alone = run(0)
    assert len(alone) == 3000
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(run, range(8)))
    assert all(result == alone for result in results)
