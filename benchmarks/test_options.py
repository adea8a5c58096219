"""Micro-benchmarks of the decoder options: what ``decode=False``, orjson and ``event_types``
save on the same bytes (in memory, compiled decoder; the pure twin with ``SONICSSE_NO_EXTENSIONS=1``).

    pytest benchmarks/test_options.py --benchmark-only

- ``tokens``: 100,000 OpenAI-style chunks, each parsed as JSON, as ``iter_json()`` does: str data and
  ``json.loads`` (the path without orjson), raw bytes and ``json.loads``, raw bytes and ``orjson.loads``.
- ``bulk``: 100,000 small records, decoded to str or kept as bytes (``decode=False``).
- ``firehose``: 100,000 events of which 90 % have a type that ``event_types`` filters out, against the
  same stream unfiltered: the filtered events never become Python objects.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import pytest

from benchmarks.workloads import bulk_data, serialise, split_writes, token_data

N = int(os.environ.get("BENCH_EVENTS", "100000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
RESULTS: dict[str, float] = {}  # case -> median seconds


def _decoder_cls() -> Any:
    from sonicsse import SSEDecoder

    return SSEDecoder


def _chunks(events: list[tuple[str, str | None, str | None]]) -> list[bytes]:
    return split_writes(b"".join(serialise(events)))


TOKENS = _chunks([(token_data(i), None, None) for i in range(N)])
BULK = _chunks([(bulk_data(i), "update", str(i)) for i in range(N)])
FIREHOSE = _chunks([(bulk_data(i), "keep" if i % 10 == 0 else "noise", str(i)) for i in range(N)])


def _parse_all(chunks: list[bytes], loads: Callable[[Any], Any], **options: Any) -> int:
    decoder = _decoder_cls()(**options)
    n = 0
    for chunk in chunks:
        for event in decoder.feed(chunk):
            loads(event["data"])
            n += 1
    return n


def _decode_all(chunks: list[bytes], **options: Any) -> int:
    decoder = _decoder_cls()(**options)
    n = 0
    for chunk in chunks:
        n += len(decoder.feed(chunk))
    return n


def _orjson_loads() -> Callable[[Any], Any]:
    orjson = pytest.importorskip("orjson")
    loads: Callable[[Any], Any] = orjson.loads
    return loads


CASES: dict[str, tuple[Callable[[], int], int]] = {
    "tokens: str + json.loads": (lambda: _parse_all(TOKENS, json.loads), N),
    "tokens: bytes + json.loads": (lambda: _parse_all(TOKENS, json.loads, decode=False), N),
    "tokens: bytes + orjson.loads": (lambda: _parse_all(TOKENS, _orjson_loads(), decode=False), N),
    "bulk: str": (lambda: _decode_all(BULK, dedup=True), N),
    "bulk: bytes (decode=False)": (lambda: _decode_all(BULK, dedup=True, decode=False), N),
    "firehose: unfiltered": (lambda: _decode_all(FIREHOSE, dedup=True), N),
    "firehose: event_types keeps 10 %": (
        lambda: _decode_all(FIREHOSE, dedup=True, event_types={"keep"}),
        N // 10,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_option(benchmark: Any, case: str) -> None:
    run, expected = CASES[case]
    if "orjson" in case:
        _orjson_loads()  # skip before timing when orjson is not installed
    count = benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    assert count == expected
    RESULTS[case] = benchmark.stats.stats.median


def summary_lines() -> list[str]:
    """ns per event of the stream for every case, and the savings (printed by conftest)."""
    if not RESULTS:
        return []
    from sonicsse import IMPLEMENTATION

    out = [f"decoder options, ns per event of the stream (decoder: {IMPLEMENTATION})", "| case | ns/event |"]
    out.append("|---|---:|")
    out += [f"| {case} | {seconds / N * 1e9:,.0f} |" for case, seconds in RESULTS.items()]

    def ratio(a: str, b: str) -> str:
        return f"{RESULTS[a] / RESULTS[b]:.2f}×" if a in RESULTS and b in RESULTS else "–"

    str_json, orjson_bytes = "tokens: str + json.loads", "tokens: bytes + orjson.loads"
    filtered, unfiltered = "firehose: event_types keeps 10 %", "firehose: unfiltered"
    out += [
        "",
        f"tokens: bytes + orjson costs {ratio(orjson_bytes, str_json)} of str + json.loads, "
        f"bytes + json.loads {ratio('tokens: bytes + json.loads', str_json)}",
        f"bulk: decode=False costs {ratio('bulk: bytes (decode=False)', 'bulk: str')} of the str path",
        f"firehose: filtering 90 % out costs {ratio(filtered, unfiltered)} of the unfiltered stream",
    ]
    return out
