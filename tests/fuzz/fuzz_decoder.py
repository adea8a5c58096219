"""Long-running differential fuzzer for the two decoder implementations.

    python tests/fuzz/fuzz_decoder.py --seconds 1800
    python tests/fuzz/fuzz_decoder.py --seconds 600 --target chunked   # the two chunked decoders

Each input is cut into chunks and decoded under options taken from its first bytes (strict, tiny limits,
dedup with resets, raw bytes, event-type filters) by the compiled and the pure decoder: both must return
the same events, raise the same errors at the same offsets and end in the same state. Inputs decoded with
default options must also match the spec-literal reference. Any crash or difference stops the run with a
non-zero exit and the input that caused it.

With atheris installed (``pip install atheris``) the inputs are coverage-guided (libFuzzer); without it a
seeded random generator built from the grammar's pieces is used. Either way the last line says how many
inputs ran, and how many crashes and differences were found.

``--target chunked`` fuzzes the HTTP chunked decoders instead: each input is a wire cut into reads, and
both twins must return the same payload, the same error and end in the same state.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sonicsse import _chunked_c, _chunked_py, _decoder_c, _decoder_py
from sonicsse.exceptions import SSEParsingError

from decoder_helpers import dechunk_all
from spec_reference import reference

TOKENS = [
    b"data",
    b"data:",
    b"data: ",
    b"event: ",
    b"id: ",
    b"retry: ",
    b":",
    b" ",
    b"\r",
    b"\n",
    b"\r\n",
    b"\n\n",
    b"\xef\xbb\xbf",
    b"\0",
    b"\xff",
    b"\xe2\x82",
    b"\xe2\x82\xac",
    b"\xf0\x9f\x98\x80",
    b"12",
    b"x",
]
OPTION_SETS: list[dict[str, Any]] = [
    {},
    {"strict": True},
    {"max_line_size": 7, "max_event_size": 11},
    {"strict": True, "max_line_size": 16, "max_event_size": 5},
    {"dedup": True, "dedup_window": 2},
    {"decode": False},
    {"event_types": {"message"}},
    {"event_types": {"x", "\ufffd"}, "decode": False, "dedup": True},
    {"on_comment": None, "last_event_id": "7"},
]


def split(payload: bytes, cuts: bytes) -> list[bytes]:
    """Cut ``payload`` at the offsets the ``cuts`` bytes give (each one moves 0-31 bytes ahead)."""
    chunks, position = [], 0
    for byte in cuts:
        step = byte & 31
        chunks.append(payload[position : position + step])
        position += step
    chunks.append(payload[position:])
    return chunks


def outcome(cls: Any, chunks: list[bytes], options: dict[str, Any], reset_every: int) -> tuple[Any, ...]:
    """Everything observable about one decoder run."""
    comments: list[str] = []
    decoder = cls(**{**options, "on_comment": comments.append})
    events: list[Any] = []
    error = None
    for index, chunk in enumerate(chunks):
        try:
            events.extend(decoder.feed(chunk))
        except SSEParsingError as exc:
            events.extend(exc.events)
            error = (exc.reason, exc.offset, exc.line)
            decoder.reset()
        if reset_every and index % reset_every == reset_every - 1:
            decoder.reset()
    return events, error, comments, decoder.last_event_id, decoder.retry


def check(data: bytes) -> None:
    """Decode one fuzzer input with both twins (and the reference when it applies); raise on a difference."""
    if len(data) < 3:
        return
    options = OPTION_SETS[data[0] % len(OPTION_SETS)]
    reset_every = data[1] % 4 if options.get("dedup") else 0
    cut_count = data[2] % 16
    cuts, payload = data[3 : 3 + cut_count], data[3 + cut_count :]
    chunks = split(payload, cuts)
    compiled = outcome(_decoder_c.SSEDecoder, chunks, options, reset_every)
    pure = outcome(_decoder_py.SSEDecoder, chunks, options, reset_every)
    if compiled != pure:
        raise AssertionError(f"twins differ on {data!r}:\n  c:  {compiled!r}\n  py: {pure!r}")
    if not options or options == {"on_comment": None, "last_event_id": "7"}:
        events, last_event_id, retry = reference(payload, options.get("last_event_id", ""))
        if (pure[0], pure[3], pure[4]) != (events, last_event_id, retry) or pure[1] is not None:
            raise AssertionError(f"decoders differ from the spec reference on {data!r}")


CHUNKED_TOKENS = [b"0", b"1", b"a", b"F", b"10", b"\r\n", b"\n", b"\r", b" ", b"\t", b";", b"=", b"x", b"\0"]


def check_chunked(data: bytes) -> None:
    """De-chunk one fuzzer input with both twins; raise on a difference."""
    if not data:
        return
    cut_count = data[0] % 16
    pieces = split(data[1 + cut_count :], data[1 : 1 + cut_count])
    c_decoder, py_decoder = _chunked_c.ChunkedDecoder(), _chunked_py.ChunkedDecoder()
    compiled = (dechunk_all(c_decoder, pieces), c_decoder.completed, c_decoder.leftover)
    pure = (dechunk_all(py_decoder, pieces), py_decoder.completed, py_decoder.leftover)
    if compiled != pure:
        raise AssertionError(f"chunked twins differ on {data!r}:\n  c:  {compiled!r}\n  py: {pure!r}")


def random_input(rng: random.Random, tokens: list[bytes] = TOKENS) -> bytes:
    head = bytes([rng.randrange(256), rng.randrange(256), rng.randrange(256)])
    cuts = bytes(rng.randrange(256) for _ in range(head[2] % 16))
    if rng.random() < 0.2:
        body = rng.randbytes(rng.randrange(200))
    else:
        body = b"".join(rng.choice(tokens) for _ in range(rng.randrange(80)))
    return head + cuts + body


def run_random(seconds: float, seed: int, chunked: bool) -> int:
    rng = random.Random(seed)
    deadline = time.monotonic() + seconds
    runs = 0
    target, tokens = (check_chunked, CHUNKED_TOKENS) if chunked else (check, TOKENS)
    while time.monotonic() < deadline:
        for _ in range(1000):
            target(random_input(rng, tokens))
        runs += 1000
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to fuzz")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random generator (no atheris)")
    parser.add_argument(
        "--no-atheris", action="store_true", help="use the random generator even with atheris"
    )
    parser.add_argument("--target", choices=["decoder", "chunked"], default="decoder", help="what to fuzz")
    args, libfuzzer_args = parser.parse_known_args()
    try:
        if args.no_atheris:
            raise ImportError
        import atheris
    except ImportError:
        started = time.monotonic()
        try:
            runs = run_random(args.seconds, args.seed, args.target == "chunked")
        except AssertionError as exc:
            print(exc, file=sys.stderr)
            print("result: crashes: 1, differences: 1", file=sys.stderr)
            return 1
        elapsed = time.monotonic() - started
        print(f"random generator: {runs} inputs in {elapsed:.0f} s, crashes: 0, differences: 0")
        return 0
    dictionary = Path(__file__).with_name("sse.dict")
    argv = [sys.argv[0], f"-max_total_time={int(args.seconds)}", f"-dict={dictionary}", *libfuzzer_args]
    atheris.instrument_all()
    atheris.Setup(argv, check_chunked if args.target == "chunked" else check)
    atheris.Fuzz()  # prints "Done N runs in S second(s)"; exits non-zero with the input on a difference
    return 0


if __name__ == "__main__":
    sys.exit(main())
