"""Fault injection on real loopback servers: every scenario ends in exactly the events sent, or a typed error.

The resumable source below sends events with ids 1..N and honours ``Last-Event-ID``; its first response
carries the fault. Once the client holds every id, the source answers 204, which ends the iteration. So
an outcome is the exact list of ids the user saw: any loss or duplicate shows. The outcomes of the
scenarios that ran are printed as a table after the test results (see ``conftest.py``).
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from sonicsse import SSEClient
from sonicsse.exceptions import SSEConnectionError, SSEParsingError

from servers import CLOSE, DROP, LAST_CHUNK, STALL, Request, ScriptServer, chunk, free_port, head

N = 12
ALL_IDS = list(range(1, N + 1))
FAST = {"retry_delay": 20, "max_retry_delay": 200}


def events(first: int, last: int) -> bytes:
    return b"".join(b"id: %d\ndata: event %d\n\n" % (i, i) for i in range(first, last + 1))


NO_CONTENT = head(204, None, framing="length", length=0)


def resumable(first_response: Sequence[Any]) -> Callable[[int, Request], Sequence[Any]]:
    """Ids 1..N, resuming after ``Last-Event-ID``; ``first_response`` is the faulty first answer."""

    def script(n: int, request: Request) -> Sequence[Any]:
        last = int(request.headers.get("last-event-id") or 0)
        if last >= N:
            return [NO_CONTENT]
        if n == 0:
            return first_response
        return [head(), chunk(events(last + 1, N)), LAST_CHUNK]

    return script


def one_byte_at_a_time(data: bytes) -> list[Any]:
    steps: list[Any] = []
    for i in range(len(data)):
        steps += [data[i : i + 1], 0.0005]
    return steps


@dataclass
class Scenario:
    name: str
    script: Callable[[int, Request], Sequence[Any]]
    expected: list[int] | type[Exception]
    options: dict[str, Any] = field(default_factory=dict)


SCENARIOS = [
    Scenario(
        "dropped (RST) mid-line", resumable([head(), chunk(events(1, 5) + b"id: 6\ndata: ev"), DROP]), ALL_IDS
    ),
    Scenario(
        "dropped (RST) mid-event",
        resumable([head(), chunk(events(1, 5) + b"id: 6\ndata: x\n"), DROP]),
        ALL_IDS,
    ),
    Scenario(
        "closed (FIN) mid-event, chunked",
        resumable([head(), chunk(events(1, 5) + b"id: 6\n"), CLOSE]),
        ALL_IDS,
    ),
    Scenario(
        "closed mid-event, close-delimited",
        resumable([head(framing="close"), events(1, 5) + b"id: 6\ndata: ev", CLOSE]),
        ALL_IDS,
    ),
    Scenario(
        "stall past read_timeout",
        resumable([head(), chunk(events(1, 5)), STALL]),
        ALL_IDS,
        {"read_timeout": 0.3},
    ),
    Scenario(
        "500 then OK",
        resumable([head(500, "text/plain", framing="length", length=4), b"oops"]),
        ALL_IDS,
    ),
    Scenario(
        "503 with Retry-After seconds",
        resumable([head(503, "text/plain", [("Retry-After", "0")], framing="length", length=0)]),
        ALL_IDS,
    ),
    Scenario(
        "429 with Retry-After date",
        resumable(
            [
                head(
                    429,
                    "text/plain",
                    [
                        (
                            "Retry-After",
                            email.utils.format_datetime(datetime.datetime.now(datetime.timezone.utc)),
                        )
                    ],
                    framing="length",
                    length=0,
                )
            ]
        ),
        ALL_IDS,
    ),
    Scenario("204 at once", resumable([NO_CONTENT]), []),
    Scenario(
        "wrong content type",
        resumable([head(200, "text/html", framing="length", length=6), b"<html>"]),
        SSEConnectionError,
    ),
    Scenario(
        "garbage and binary bytes between events",
        resumable(
            [
                head(),
                chunk(b"\x00\xff\xfe garbage\n" + events(1, 3) + b"\x89PNG\r\n\x1a\n\x00\x00binary\n\n"),
                chunk(bytes(range(256)).replace(b"\n", b"").replace(b"\r", b"") + b"\n\n" + events(4, N)),
                LAST_CHUNK,
            ]
        ),
        ALL_IDS,
    ),
    Scenario(
        "garbage without line end past max_line_size",
        resumable([head(), chunk(events(1, 2) + b"\xff" * 4096), STALL]),
        SSEParsingError,
        {"max_line_size": 1024},
    ),
    Scenario(
        "one byte at a time",
        resumable([head(framing="close"), *one_byte_at_a_time(events(1, N)), CLOSE]),
        ALL_IDS,
    ),
    Scenario(
        "malformed response head (Content-Length: abc), then OK",
        resumable([head(framing="length").replace(b"Content-Length: 0", b"Content-Length: abc"), CLOSE]),
        ALL_IDS,
    ),
    Scenario(
        "status line that is not UTF-8, then OK",
        resumable([b"HTTP/1.1 200 \xff\xfe\r\n\r\n", CLOSE]),
        ALL_IDS,
    ),
    Scenario(
        "endless chunked trailer line",
        resumable([head(), chunk(events(1, 4)), b"0\r\n", *[b"X" * 8192] * 8, STALL]),
        ALL_IDS,
    ),
    Scenario(
        "garbage where a chunk should end",
        resumable([head(), b"%x\r\n" % len(events(1, 4)) + events(1, 4) + b"garbage", STALL]),
        ALL_IDS,
    ),
    Scenario(
        "accepts and never answers",
        lambda n, request: [STALL],
        SSEConnectionError,
        {"read_timeout": 0.3, "max_retries": 2},
    ),
]

OUTCOMES: dict[str, str] = {}


def describe(outcome: list[int] | BaseException) -> str:
    if isinstance(outcome, BaseException):
        return f"{type(outcome).__name__}: {outcome}"[:110]
    if outcome == ALL_IDS:
        return f"ids 1..{N}: 0 lost, 0 duplicated"
    return f"ids {outcome}"


async def collect(url: str, **options: Any) -> list[int] | BaseException:
    """The ids the user sees, or the error that ended the stream; a hang shows as TimeoutError."""
    seen: list[int] = []

    async def consume() -> None:
        async with SSEClient() as client, client.connect(url, **{**FAST, **options}) as conn:
            async for event in conn:
                seen.append(int(event["id"]))

    try:
        await asyncio.wait_for(consume(), 15)
    except (SSEConnectionError, SSEParsingError, TimeoutError) as exc:
        return exc
    return seen


async def run_scenario(scenario: Scenario) -> list[int] | BaseException:
    async with ScriptServer(scenario.script) as server:
        outcome = await collect(server.url(), **scenario.options)
    OUTCOMES[scenario.name] = describe(outcome)
    return outcome


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
async def test_fault_scenario(scenario: Scenario) -> None:
    outcome = await run_scenario(scenario)
    if isinstance(scenario.expected, list):
        assert outcome == scenario.expected
    else:
        assert isinstance(outcome, scenario.expected)
        if isinstance(outcome, SSEConnectionError):
            assert "127.0.0.1" in str(outcome)  # the message names the URL


async def test_connection_dropped_in_a_long_data_line_resumes_with_that_event_whole() -> None:
    """A long data line held over several reads (the compiled decoder builds it in place as its str)
    is dropped with the connection; the replayed event arrives whole, and nothing of the partial one
    shows in any event."""
    long = bytes(b"0123456789abcdef"[i % 16] for i in range(150_000))

    def script(n: int, request: Request) -> Sequence[Any]:
        last = int(request.headers.get("last-event-id") or 0)
        if last >= N:
            return [NO_CONTENT]
        if n == 0:
            partial = b"id: 3\ndata: " + long[:40_000]
            return [head(), chunk(events(1, 2)), chunk(partial), 0.01, chunk(long[40_000:90_000]), 0.01, DROP]
        rest = b"id: 3\ndata: " + long + b"\n\n" + events(4, N)
        return [head(), *(chunk(rest[i : i + 30_000]) for i in range(0, len(rest), 30_000)), LAST_CHUNK]

    seen: list[dict[str, Any]] = []
    async with ScriptServer(script) as server, SSEClient() as client:
        async with client.connect(server.url(), **FAST) as conn:
            async for event in conn:
                seen.append(event)
    assert [int(event["id"]) for event in seen] == ALL_IDS
    assert seen[2]["data"] == long.decode()
    assert [event["data"] for event in seen[3:]] == [f"event {i}" for i in range(4, N + 1)]


async def test_a_content_length_past_the_largest_int64_is_read_until_the_connection_ends() -> None:
    """aiosonic passes any Content-Length through. One past 2**63 - 1 is held as that largest length by
    both twins (the compiled receiver keeps it in a C integer): the events arrive, then the early end."""
    seen: list[int] = []
    script = lambda n, request: [head(framing="length", length=10**20), events(1, 5), CLOSE]  # noqa: E731
    async with ScriptServer(script) as server, SSEClient() as client:
        with pytest.raises(SSEConnectionError, match="bytes of the body missing"):
            async with client.connect(server.url(), reconnect=False) as conn:
                async for event in conn:
                    seen.append(int(event["id"]))
    assert seen == [1, 2, 3, 4, 5]


async def test_never_answering_server_fails_within_the_timeout() -> None:
    async with ScriptServer(lambda n, request: [STALL]) as server:
        outcome = await collect(server.url(), read_timeout=0.3, reconnect=False)
    assert isinstance(outcome, SSEConnectionError)
    assert "GET" in str(outcome)


async def test_refused_while_reconnecting_then_server_returns() -> None:
    port = free_port()
    refused = asyncio.Event()

    def on_error(exc: BaseException) -> None:
        if "connection refused" in str(exc):
            refused.set()

    def first(n: int, request: Request) -> Sequence[Any]:
        return [head(framing="close"), events(1, 5), CLOSE]

    def second(n: int, request: Request) -> Sequence[Any]:
        last = int(request.headers.get("last-event-id") or 0)
        if last >= N:
            return [NO_CONTENT, CLOSE]
        return [head(framing="close"), events(last + 1, N), CLOSE]

    async with ScriptServer(first, port=port) as first_server:
        task = asyncio.create_task(collect(first_server.url(), max_retry_delay=100, on_error=on_error))
        await first_server.wait_requests(1)
    # The port is closed now: the client's reconnects are refused until the server comes back.
    await asyncio.wait_for(refused.wait(), 10)
    async with ScriptServer(second, port=port) as second_server:
        outcome = await task
    OUTCOMES["refused while reconnecting, then back"] = describe(outcome)
    assert outcome == ALL_IDS
    assert second_server.requests[0].headers.get("last-event-id") == "5"


@pytest.fixture(scope="module")
def tls_ca() -> Any:
    trustme = pytest.importorskip("trustme")
    return trustme.CA()


def tls_server(ca: Any) -> ScriptServer:
    """An https server (a certificate of ``ca`` for 127.0.0.1) of events 1..3, close-delimited."""
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    return ScriptServer([[head(framing="close"), events(1, 3), CLOSE]], ssl=server_context)


async def test_tls_self_signed_is_refused_by_default(tls_ca: Any) -> None:
    async with tls_server(tls_ca) as server:
        outcome = await collect(server.url(), reconnect=False)
    OUTCOMES["TLS, self-signed, verify=True"] = describe(outcome)
    assert isinstance(outcome, SSEConnectionError)
    assert "certificate" in str(outcome).lower() or "ssl" in str(outcome).lower()


async def test_tls_with_custom_context_works(tls_ca: Any) -> None:
    context = ssl.create_default_context()
    tls_ca.configure_trust(context)
    async with tls_server(tls_ca) as server:
        outcome = await collect(server.url(), reconnect=False, ssl=context)
    OUTCOMES["TLS, custom ssl= context trusting the CA"] = describe(outcome)
    assert outcome == [1, 2, 3]


async def test_redirect_to_other_origin_drops_credentials() -> None:
    async with ScriptServer(lambda n, request: [head(), chunk(events(1, 3)), LAST_CHUNK]) as target:
        location = target.url("/moved")
        redirect = [head(302, None, [("Location", location)], framing="length", length=0)]
        async with ScriptServer(lambda n, request: redirect) as origin:
            credentials = {
                "Authorization": "Bearer secret",
                "Cookie": "session=1",
                "X-Api-Key": "sk-secret",
                "X-Trace": "kept",
            }
            outcome = await collect(origin.url(), headers=credentials, follow=True, reconnect=False)
            assert origin.requests[0].headers["authorization"] == "Bearer secret"
        forwarded = target.requests[0].headers
    OUTCOMES["redirect to another origin"] = describe(outcome) + "; credentials not forwarded"
    assert outcome == [1, 2, 3]
    assert "authorization" not in forwarded
    assert "cookie" not in forwarded
    assert "x-api-key" not in forwarded
    assert forwarded.get("x-trace") == "kept"
