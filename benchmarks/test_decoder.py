"""Decoder micro-benchmarks (pytest-benchmark): sonicsse's twins against httpx-sse's and aiosonic's parsers.

    pytest benchmarks/test_decoder.py --benchmark-only
    SONICSSE_NO_EXTENSIONS=1 pytest benchmarks/test_decoder.py --benchmark-only   # the `c` case skips
    BENCH_EVENTS=10000 BENCH_ROUNDS=3 pytest benchmarks/test_decoder.py --benchmark-only   # quicker

Every decoder gets the same bytes in the same chunks and produces event objects; the peers pay their
real per-chunk costs: httpx-sse decodes UTF-8 incrementally, splits lines with its ``SSELineDecoder``
and feeds its ``SSEDecoder`` line by line (what ``aiter_sse`` does); aiosonic grows a bytes buffer,
splits it on blank lines and calls ``SSEConnection._parse_event`` on each decoded block (what its
``__aiter__`` does, minus the dedup). The ``floor`` only builds the 4-key dicts from ready strings.
The summary printed at the end gives ns/event and the issue-4 ratios.
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from benchmarks.workloads import serialise, split_writes, token_data

N_SMALL = int(os.environ.get("BENCH_EVENTS", "100000"))
N_LARGE = max(2, N_SMALL // 6250)  # 16 events of 1 MiB at the default size
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
LARGE = (1 << 20) - 16

Workload = tuple[list[bytes], list[str]]  # (chunks, the data of every event)
RESULTS: dict[tuple[str, str], tuple[float, int]] = {}  # (workload, impl) -> (median s, events)


def _small(eol: str, per_event: bool) -> Workload:
    events = [(token_data(i), None, None) for i in range(N_SMALL)]
    wire = serialise(events, eol)
    chunks = wire if per_event else split_writes(b"".join(wire))
    return chunks, [e[0] for e in events]


def _large() -> Workload:
    events = [(chr(97 + i % 26) * LARGE, None, str(i)) for i in range(N_LARGE)]
    return split_writes(b"".join(serialise(events))), [e[0] for e in events]


WORKLOADS: dict[str, Callable[[], Workload]] = {
    "small-64k": lambda: _small("\n", False),
    "small-per-event": lambda: _small("\n", True),
    "large-1MiB": _large,
    "crlf-64k": lambda: _small("\r\n", False),
}


def _compiled() -> Any:
    if os.environ.get("SONICSSE_NO_EXTENSIONS"):
        pytest.skip("SONICSSE_NO_EXTENSIONS=1: the compiled decoder is not used")
    try:
        from sonicsse._decoder_c import SSEDecoder
    except ImportError:
        pytest.skip("sonicsse._decoder_c is not built")
    return SSEDecoder


def _pure() -> Any:
    from sonicsse._decoder_py import SSEDecoder

    return SSEDecoder


def run_sonicsse(cls: Any, chunks: list[bytes], _: list[str]) -> int:
    """sonicsse: one ``feed()`` per chunk."""
    decoder = cls()
    n = 0
    for chunk in chunks:
        n += len(decoder.feed(chunk))
    return n


def run_httpx_sse(chunks: list[bytes], _: list[str]) -> int:
    """httpx-sse: incremental UTF-8 text, its SSE line splitter, its decoder line by line."""
    from httpx_sse._decoders import SSEDecoder, SSELineDecoder

    text = codecs.getincrementaldecoder("utf-8")(errors="replace")
    lines, decoder = SSELineDecoder(), SSEDecoder()
    events = []
    for chunk in chunks:
        for line in lines.decode(text.decode(chunk)):
            sse = decoder.decode(line.rstrip("\n"))
            if sse is not None:
                events.append(sse)
    return len(events)


def run_aiosonic(chunks: list[bytes], _: list[str]) -> int:
    """aiosonic: ``buffer += chunk``, split on ``\\n\\n``, ``_parse_event(block.decode())``."""
    from aiosonic.sse_client import SSEConnection

    parse = SSEConnection._parse_event
    buffer = b""
    events = []
    for chunk in chunks:
        buffer += chunk
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            events.append(parse(None, block.decode()))  # type: ignore[arg-type]
    return len(events)


def run_floor(_: list[bytes], datas: list[str]) -> int:
    """Floor: only build the 4-key event dicts from ready strings, in lists of 512 (like ``feed()``'s)."""
    n = 0
    for i in range(0, len(datas), 512):
        events = [{"data": d, "event": None, "id": None, "retry": None} for d in datas[i : i + 512]]
        n += len(events)
    return n


IMPLS: dict[str, Callable[[], Callable[[list[bytes], list[str]], int]]] = {
    "c": lambda: lambda ch, d: run_sonicsse(_compiled(), ch, d),
    "py": lambda: lambda ch, d: run_sonicsse(_pure(), ch, d),
    "httpx-sse": lambda: run_httpx_sse,
    "aiosonic": lambda: run_aiosonic,
    "floor": lambda: run_floor,
}


@pytest.fixture(scope="module", params=list(WORKLOADS))
def workload(request: pytest.FixtureRequest) -> Iterator[tuple[str, Workload]]:
    """Each workload, built once per module."""
    yield request.param, WORKLOADS[request.param]()


@pytest.mark.parametrize("impl", list(IMPLS))
def test_decode(benchmark: Any, workload: tuple[str, Workload], impl: str) -> None:
    """Decode a whole workload; sonicsse must deliver every event, peers' counts are recorded."""
    name, (chunks, datas) = workload
    if impl == "c":
        _compiled()
    fn = IMPLS[impl]()
    count = benchmark.pedantic(fn, args=(chunks, datas), rounds=ROUNDS, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(events=count, expected=len(datas))
    RESULTS[(name, impl)] = (benchmark.stats.stats.median, count)
    if impl in ("c", "py", "floor"):
        assert count == len(datas)


def summary_lines() -> list[str]:
    """ns/event per workload and implementation, and the issue-4 ratios (printed by conftest)."""
    if not RESULTS:
        return []
    impls = [i for i in IMPLS if any(k[1] == i for k in RESULTS)]
    out = [
        "decoder ns/event (median round; FAIL = wrong event count)",
        "| workload | " + " | ".join(impls) + " |",
    ]
    out.append("|---|" + "---:|" * len(impls))
    for wl in WORKLOADS:
        cells = []
        for impl in impls:
            if (wl, impl) not in RESULTS:
                cells.append("–")
                continue
            t, n = RESULTS[(wl, impl)]
            expected = RESULTS.get((wl, "floor"), (0.0, n))[1]
            cells.append(f"{t / max(1, expected) * 1e9:,.0f}" + ("" if n == expected else f" FAIL ({n} ev)"))
        out.append(f"| {wl} | " + " | ".join(cells) + " |")
    out += _ratios()
    return out


def _ratios() -> list[str]:
    def r(wl: str, a: str, b: str) -> str:
        if (wl, a) in RESULTS and (wl, b) in RESULTS:
            return f"{RESULTS[(wl, b)][0] / RESULTS[(wl, a)][0]:.1f}×"
        return "–"

    out = ["", "issue-4 targets: c ≥ 10× httpx-sse, ≥ 5× py on small events; c ≤ 3× the dict floor (64 KiB)"]
    for wl in ("small-64k", "small-per-event"):
        out.append(
            f"{wl}: c vs httpx-sse {r(wl, 'c', 'httpx-sse')}, c vs py {r(wl, 'c', 'py')}, "
            f"c vs aiosonic {r(wl, 'c', 'aiosonic')}"
        )
    if ("small-64k", "c") in RESULTS and ("small-64k", "floor") in RESULTS:
        ratio = RESULTS[("small-64k", "c")][0] / RESULTS[("small-64k", "floor")][0]
        out.append(f"small-64k: c costs {ratio:.2f}× the dict floor per event")
    return out
