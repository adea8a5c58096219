"""Deterministic workload generators shared by the server, the clients and the micro-benchmarks.

Every workload is a list of events (``data``, ``event``, ``id``) serialised to an SSE body, cut into
the writes the server makes, then framed as an HTTP/1.1 body (chunked, close-delimited or with a
Content-Length). The same function always gives the same bytes, so the client side can check
exact event counts and total data length.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

__all__ = [
    "PACED_WIDTH",
    "WORKLOADS",
    "Spec",
    "Workload",
    "build",
    "bulk_data",
    "frame_chunk",
    "make_events",
    "paced_frame",
    "serialise",
    "split_writes",
    "token_data",
]

WRITE_SIZE = 64 * 1024
LARGE_DATA = (1 << 20) - 16  # the data line ("data: " + data) stays below a 1 MiB line limit
PACED_WIDTH = 19  # digits of the zero-padded monotonic_ns send timestamp that starts paced data

EventTuple = tuple[str, "str | None", "str | None"]  # (data, event, id)

_WORDS = ("The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", ".", "\\n", " 42")
_ACTIONS = ("update", "create", "delete")


@dataclass(frozen=True)
class Spec:
    """How a workload is built: its events, line ends, write pattern and HTTP framing."""

    kind: str  # "tokens" | "bulk" | "large" | "repeats"
    base: int  # event count at scale 1
    minimum: int  # event count never below this
    eol: str = "\n"
    per_event_writes: bool = False  # one event per write (and per HTTP chunk) instead of 64 KiB writes
    framing: str = "chunked"  # "chunked" | "close" | "length"


WORKLOADS: dict[str, Spec] = {
    "tokens": Spec("tokens", 200_000, 50, per_event_writes=True),
    "bulk": Spec("bulk", 500_000, 100),
    "large": Spec("large", 64, 2),
    "crlf": Spec("bulk", 500_000, 100, eol="\r\n"),
    "cr": Spec("bulk", 500_000, 100, eol="\r"),
    "close-delimited": Spec("bulk", 500_000, 100, framing="close"),
    "content-length": Spec("bulk", 500_000, 100, framing="length"),
    "repeats": Spec("repeats", 1_000, 10, per_event_writes=True),
}


@dataclass(frozen=True)
class Workload:
    """A built workload: the HTTP response as the server writes it, and what a client must receive."""

    name: str
    events: int
    data_len: int
    head: bytes  # status line and headers
    writes: tuple[bytes, ...]  # the framed body, one item per server write

    @property
    def response_bytes(self) -> int:
        """Total bytes of the response on the wire (what the raw floor must read)."""
        return len(self.head) + sum(len(w) for w in self.writes)


def token_data(i: int) -> str:
    """One OpenAI-style ``chat.completion.chunk`` JSON document (~170 B)."""
    word = _WORDS[i % len(_WORDS)]
    return (
        '{"id":"chatcmpl-9x7Qb3LmNq","object":"chat.completion.chunk","created":1700000000,'
        '"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"' + word + '"},'
        '"finish_reason":null}]}'
    )


def bulk_data(i: int) -> str:
    """One small ingestion record (~90 B of JSON)."""
    return (
        f'{{"seq":{i},"user":"user-{i % 9973:04d}","action":"{_ACTIONS[i % 3]}",'
        f'"value":{(i * 7919) % 100000},"ts":{1700000000000 + i}}}'
    )


def event_count(spec: Spec, scale: float) -> int:
    """The number of events of a workload at this scale."""
    return max(spec.minimum, int(spec.base * scale))


def make_events(kind: str, n: int) -> list[EventTuple]:
    """The ``n`` events of a workload kind as (data, event, id) tuples."""
    if kind == "tokens":
        return [(token_data(i), None, None) for i in range(n)]
    if kind == "bulk":
        return [(bulk_data(i), _ACTIONS[i % 3], str(i)) for i in range(n)]
    if kind == "large":
        return [((chr(ord("a") + i % 26)) * LARGE_DATA, None, str(i)) for i in range(n)]
    if kind == "repeats":
        return [("", None, None)] * n
    raise ValueError(f"unknown workload kind {kind!r}")


def serialise(events: list[EventTuple], eol: str = "\n") -> list[bytes]:
    """Each event as its SSE wire form (``id``, ``event``, ``data`` lines and a blank line)."""
    out = []
    for data, event, eid in events:
        parts = []
        if eid is not None:
            parts.append(f"id: {eid}{eol}")
        if event is not None:
            parts.append(f"event: {event}{eol}")
        parts.append(f"data: {data}{eol}{eol}")
        out.append("".join(parts).encode())
    return out


def split_writes(body: bytes, size: int = WRITE_SIZE) -> list[bytes]:
    """Cut a body into fixed-size writes (events straddle write boundaries)."""
    return [body[i : i + size] for i in range(0, len(body), size)]


def frame_chunk(payload: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return b"%x\r\n%b\r\n" % (len(payload), payload)


def _head(framing: str, body_len: int) -> bytes:
    lines = ["HTTP/1.1 200 OK", "Content-Type: text/event-stream", "Cache-Control: no-cache"]
    if framing == "chunked":
        lines.append("Transfer-Encoding: chunked")
    elif framing == "length":
        lines.append(f"Content-Length: {body_len}")
    else:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@lru_cache(maxsize=16)
def build(name: str, scale: float) -> Workload:
    """Build a named workload at a scale, exactly as the server sends it."""
    spec = WORKLOADS[name]
    events = make_events(spec.kind, event_count(spec, scale))
    wire = serialise(events, spec.eol)
    body = b"".join(wire)
    pieces = wire if spec.per_event_writes else split_writes(body)
    if spec.framing == "chunked":
        writes = [frame_chunk(p) for p in pieces]
        writes.append(b"0\r\n\r\n")
    else:
        writes = list(pieces)
    data_len = sum(len(e[0]) for e in events)
    return Workload(name, len(events), data_len, _head(spec.framing, len(body)), tuple(writes))


def paced_frame(ts_ns: int, i: int) -> bytes:
    """One paced event as a chunk: the data starts with the zero-padded send timestamp."""
    payload = f"data: {ts_ns:0{PACED_WIDTH}d} {token_data(i)}\n\n".encode()
    return frame_chunk(payload)
