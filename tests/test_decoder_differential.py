"""Differential property tests: the compiled twin, the pure twin and a spec-literal reference agree.

Random byte streams made of the pieces that matter to the grammar (field names, colons, spaces, CR, LF,
CRLF, BOM, NUL, invalid and multi-byte UTF-8) are cut at random points and fed to both decoders; the
events, ``last_event_id`` and ``retry`` must equal what the reference below computes from the whole stream.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sonicsse import _decoder_py
from sonicsse.exceptions import SSEParsingError

from conftest import NO_EXTENSIONS
from spec_reference import BOM, reference

IMPLEMENTATIONS: list[Any] = [_decoder_py.SSEDecoder]
if not NO_EXTENSIONS:
    from sonicsse import _decoder_c

    IMPLEMENTATIONS.insert(0, _decoder_c.SSEDecoder)

PIECES = [
    *(b"data", b"data:", b"data: ", b"event:", b"event: ", b"id:", b"id: ", b"retry:", b"retry: "),
    *(b":", b": ", b" ", b"  ", b"\r", b"\n", b"\r\n", b"\n\n", b"\r\n\r\n", BOM, b"\0"),
    *(b"\xff", b"\xe2\x82", b"\xe2\x82\xac", b"\xf0\x9f\x98\x80", "é".encode()),
    *(b"0", b"12", b"007", b"x", b"hello", b"a b", b"dat", b"ta", b"DATA"),
]

streams = st.lists(st.sampled_from(PIECES), max_size=60).map(b"".join) | st.binary(max_size=200)


@st.composite
def cut(draw: st.DrawFn, stream: bytes) -> list[bytes]:
    points = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    bounds = [0, *points, len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(bounds)]


@st.composite
def chunked_streams(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    stream = draw(streams)
    return stream, draw(cut(stream))


def run(cls: Any, chunks: list[bytes], **options: Any) -> tuple[list[dict[str, Any]], Any, str, Any]:
    """Feed every chunk; return the events, the error (as comparable fields) and the final state."""
    decoder = cls(**options)
    events: list[dict[str, Any]] = []
    error = None
    for chunk in chunks:
        try:
            events.extend(decoder.feed(chunk))
        except SSEParsingError as exc:
            events.extend(exc.events)
            error = (exc.reason, exc.offset, exc.line)
            break
    return events, error, decoder.last_event_id, decoder.retry


# SONICSSE_HYPOTHESIS_EXAMPLES raises the budget for a long local run.
SETTINGS = settings(
    max_examples=int(os.environ.get("SONICSSE_HYPOTHESIS_EXAMPLES", "600")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@SETTINGS
@given(chunked_streams(), st.sampled_from(["", "7", "é"]))
def test_both_decoders_match_the_spec_reference(case: tuple[bytes, list[bytes]], initial_id: str) -> None:
    stream, chunks = case
    expected_events, expected_id, expected_retry = reference(stream, initial_id)
    for cls in IMPLEMENTATIONS:
        events, error, last_event_id, retry = run(cls, chunks, last_event_id=initial_id)
        assert error is None
        assert events == expected_events, cls
        assert last_event_id == expected_id, cls
        assert retry == expected_retry, cls


@SETTINGS
@given(chunked_streams())
def test_both_decoders_place_comments_among_the_events_as_the_reference_does(
    case: tuple[bytes, list[bytes]],
) -> None:
    """``dispatched``, read from on_comment, puts every comment where the stream has it among the events."""
    stream, chunks = case
    expected: list[tuple[int, str]] = []
    expected_events = reference(stream, comments=expected)[0]
    for cls in IMPLEMENTATIONS:
        assert comment_places(cls, chunks) == (expected_events, expected), cls


def comment_places(cls: Any, chunks: list[bytes]) -> tuple[list[dict[str, Any]], list[tuple[int, str]]]:
    """The events, and each comment with the number of events before it in the stream."""
    events: list[dict[str, Any]] = []
    places: list[tuple[int, str]] = []
    decoder = cls(on_comment=lambda text: places.append((len(events) + decoder.dispatched, text)))
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
        assert decoder.dispatched == 0
    return events, places


# Big ASCII blocks among the grammar pieces: the compiled twin builds a data line held over 32 KiB in place
# as its str, and falls back to the plain path for non-ASCII bytes, a later data line, limits and so on.
LONG_BLOCKS = [
    *(b"x" * 20_000, b"0123456789" * 1_500, b"data: " + b"y" * 33_000, b"data:" + b"z" * 40_000),
    *(b"v" * 34_000 + "é".encode() + b"v" * 1_000, b"\ndata: " + b"u" * 35_000 + b"\n"),
    b"\ndata: " + b"t" * 33_000 + b"\xe2\x82\xac" + b"t" * 33_000,
]
long_pieces = st.sampled_from(PIECES) | st.sampled_from(LONG_BLOCKS)


@st.composite
def long_chunked_streams(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    """A stream with long lines, in pieces of one random size (so a long line is held at many chunk
    ends), or at random points."""
    stream = draw(st.lists(long_pieces, max_size=24).map(b"".join))
    size = draw(st.sampled_from([0, 1, 1000, 4096, 16_384, 65_536]) | st.integers(1, 70_000))
    if size == 0:
        return stream, draw(cut(stream))
    return stream, [stream[i : i + size] for i in range(0, len(stream), size)]


@settings(SETTINGS, max_examples=max(SETTINGS.max_examples // 3, 1))
@given(long_chunked_streams(), st.sampled_from([{}, {"max_line_size": 50_000}, {"max_event_size": 40_000}]))
def test_both_decoders_match_the_spec_reference_on_long_lines(
    case: tuple[bytes, list[bytes]], limits: dict[str, int]
) -> None:
    stream, chunks = case
    outcomes = [run(cls, chunks, **limits) for cls in IMPLEMENTATIONS]
    assert all(outcome == outcomes[0] for outcome in outcomes)
    # and right (the check above is empty in a build with one twin):
    events, error, last_event_id, retry = outcomes[0]
    expected_events, expected_id, expected_retry = reference(stream)
    if error is None:  # within the limits: the spec's events and state
        assert (events, last_event_id, retry) == (expected_events, expected_id, expected_retry)
    else:  # only a limit stops a stream, and what came before it is the spec's
        assert limits and next(iter(limits)) in error[0], error
        assert events == expected_events[: len(events)]


@pytest.mark.skipif(NO_EXTENSIONS, reason="needs the compiled decoder")
@SETTINGS
@given(
    chunked_streams(),
    st.booleans(),
    st.integers(1, 40),
    st.integers(1, 40),
    st.sampled_from([{}, {"decode": False}, {"event_types": {"message"}}, {"event_types": {"x", "é"}}]),
)
def test_twins_agree_on_errors_and_limits(
    case: tuple[bytes, list[bytes]], strict: bool, max_line_size: int, max_event_size: int, extra: Any
) -> None:
    _, chunks = case
    options = {"strict": strict, "max_line_size": max_line_size, "max_event_size": max_event_size, **extra}
    assert run(IMPLEMENTATIONS[0], chunks, **options) == run(IMPLEMENTATIONS[1], chunks, **options)


@pytest.mark.skipif(NO_EXTENSIONS, reason="needs the compiled decoder")
@SETTINGS
@given(st.lists(chunked_streams(), min_size=1, max_size=4), st.integers(0, 3))
def test_twins_agree_on_dedup_across_resets(
    connections: list[tuple[bytes, list[bytes]]], window: int
) -> None:
    outcomes = []
    for cls in IMPLEMENTATIONS:
        decoder = cls(dedup=True, dedup_window=window)
        events = []
        for _, chunks in connections:
            for chunk in chunks:
                events.extend(decoder.feed(chunk))
            decoder.reset()
        outcomes.append((events, decoder.last_event_id, decoder.retry))
    assert outcomes[0] == outcomes[1]


@pytest.mark.parametrize("cls", IMPLEMENTATIONS)
def test_reference_agrees_on_known_tricky_stream(cls: Any) -> None:
    stream = BOM + b"data: a\r\rid: 1\x00\r\nid: 2\nretry: 1x\nretry: 9\n\n\xffdata: b\n\ndata: c"
    expected = reference(stream)
    assert expected[0] == [{"data": "a", "event": None, "id": None, "retry": None}]
    assert run(cls, [stream[i : i + 1] for i in range(len(stream))])[::2] == (expected[0], expected[1])


numeric_ids = st.lists(
    st.one_of(
        st.integers(0, 30).map(str),
        st.integers(10**18 - 3, 10**18 + 3).map(str),  # where ids stop fitting the compiled twin's numbers
        st.sampled_from(
            ["9223372036854775807", "9223372036854775808", "18446744073709551621"]
        ),  # 2**63, 2**64
        st.sampled_from(["007", "00", "x", "", "1e3", "\u0661"]),
    ),
    max_size=40,
)


@pytest.mark.skipif(NO_EXTENSIONS, reason="needs the compiled decoder")
@SETTINGS
@given(numeric_ids, st.integers(0, 5), st.sets(st.integers(0, 40), max_size=4))
def test_twins_agree_on_dedup_of_numbered_streams(ids: list[str], window: int, resets: set[int]) -> None:
    """Mostly ascending numeric ids (the compiled twin's fast path), with replays and resets."""
    outcomes = []
    for cls in IMPLEMENTATIONS:
        decoder = cls(dedup=True, dedup_window=window)
        kept = []
        for index, event_id in enumerate(ids):
            if index in resets:
                decoder.reset()
            kept += [e["id"] for e in decoder.feed(f"id: {event_id}\ndata: d\n\n".encode())]
        outcomes.append(kept)
    assert outcomes[0] == outcomes[1]


@pytest.mark.skipif(NO_EXTENSIONS, reason="the fuzzer compares the compiled twins with the pure ones")
@pytest.mark.parametrize("target", ["decoder", "chunked"])
def test_the_fuzzer_runs_and_finds_no_difference(target: str) -> None:
    import subprocess
    import sys
    from pathlib import Path

    harness = Path(__file__).with_name("fuzz") / "fuzz_decoder.py"
    cmd = [sys.executable, str(harness), "--seconds", "1", "--no-atheris", "--seed", "7", "--target", target]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.rstrip().endswith("crashes: 0, differences: 0")
