"""The sans-IO stream core (``sonicsse._core.StreamCore``): every decision of a stream, without sockets.

Facts go in (a request failed, a response head came, a stream opened or ended, the clock reads ``now``),
decisions come out (retry or raise, the wait, the next request of a redirect, the deadline due).
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sonicsse import SSEConnectionError, SSEInvalidURLError
from sonicsse._core import Follow, Retryable, StreamCore, Wait, resume_point
from sonicsse._options import ConnectOptions
from sonicsse._policy import MIN_BACKOFF_MS, Action
from sonicsse._tunnel import ProxyError

URL = "https://api.example.com/v1/stream"


def core(**options: Any) -> StreamCore:
    return StreamCore(ConnectOptions(url=options.pop("url", URL), **options))


def event(data: str, id: str | None = None) -> dict[str, Any]:
    return {"data": data, "event": None, "id": id, "retry": None}


# -- the wait before the next attempt -------------------------------------------------------------


def test_after_a_stream_that_delivered_the_wait_is_the_base_delay() -> None:
    c = core(retry_delay=3000)
    c.stream_opened(200, now=0.0)
    c.count(2, now=1.0)
    assert c.stream_ended(None, None, last_event_id="") is None
    assert c.next_wait(server_retry=None, rand=lambda: 0.0) == Wait(3.0, 1, None, None)


def test_the_servers_retry_replaces_retry_delay_and_is_capped() -> None:
    c = core(retry_delay=3000, max_retry_delay=10_000)
    assert c.next_wait(server_retry=250).delay == 0.25
    assert c.next_wait(server_retry=60_000).delay == 10.0


def test_failures_back_off_with_jitter_and_the_reason_is_kept() -> None:
    c = core(retry_delay=1000, max_retry_delay=30_000)
    cause = ConnectionResetError("reset")
    for expected_attempt in (2, 3, 4):
        c.stream_opened(200, now=0.0)
        assert c.stream_ended("connection lost", cause, last_event_id="") is None
        wait = c.next_wait(server_retry=None, rand=lambda: 1.0)
        assert (
            wait.attempt == expected_attempt - 1 + 1
            and wait.reason == "connection lost"
            and wait.cause is cause
        )
    assert c.failures == 3
    assert c.next_wait(None, rand=lambda: 1.0).delay == 8.0  # 1 s doubled per failure
    assert c.next_wait(None, rand=lambda: 0.0).delay == 4.0  # jitter: [d/2, d]


@settings(max_examples=300, deadline=None)
@given(
    retry_delay=st.integers(0, 120_000),
    server_retry=st.none() | st.integers(0, 10**9),
    max_retry_delay=st.integers(0, 120_000),
    failures=st.integers(0, 200),
    retry_after=st.none() | st.floats(0, 10**6, allow_nan=False),
    rand=st.floats(0, 1),
)
def test_the_retry_schedule_stays_within_its_bounds(
    retry_delay: int,
    server_retry: int | None,
    max_retry_delay: int,
    failures: int,
    retry_after: float | None,
    rand: float,
) -> None:
    c = core(retry_delay=retry_delay, max_retry_delay=max_retry_delay)
    c.failures = failures
    c.retry_after = retry_after
    delay = c.next_wait(server_retry, rand=lambda: rand).delay
    base = min(retry_delay if server_retry is None else server_retry, max_retry_delay) / 1000
    cap = max_retry_delay / 1000
    assert base <= delay + 1e-9
    assert delay <= max(cap, base) + 1e-9  # never past the cap (the base is capped too)
    if failures == 0 and retry_after is None:
        assert delay == pytest.approx(base)
    if failures > 0:
        floor = min(max(base * 1000, MIN_BACKOFF_MS) * 2.0 ** min(failures, 62), max_retry_delay) / 2000
        assert delay >= min(floor, cap) - 1e-9
    if retry_after is not None:
        assert delay >= min(retry_after, cap) - 1e-9


@settings(max_examples=100, deadline=None)
@given(failures=st.integers(1, 60), rand=st.floats(0, 1))
def test_more_failures_never_wait_less_at_the_same_jitter(failures: int, rand: float) -> None:
    c = core(retry_delay=100, max_retry_delay=30_000)
    c.failures = failures
    shorter = c.next_wait(None, rand=lambda: rand).delay
    c.failures = failures + 1
    assert c.next_wait(None, rand=lambda: rand).delay >= shorter


def test_giving_up_after_max_retries_chains_the_last_failure() -> None:
    c = core(max_retries=1)
    first = Retryable("503 Service Unavailable", status=503, body="busy", unprocessed=True)
    assert c.attempt_failed(first, last_event_id="") is None
    c.next_wait(None)
    assert c.attempt_failed(Retryable("refused", unprocessed=True), last_event_id="") is None
    with pytest.raises(SSEConnectionError, match="gave up after 2 failed attempts: refused") as caught:
        c.next_wait(None)
    assert c.finished
    assert isinstance(caught.value.__cause__, SSEConnectionError)  # an HTTP failure: its own error


# -- which failures are retried --------------------------------------------------------------------


def test_a_post_that_reached_the_server_is_not_sent_again_without_an_id() -> None:
    c = core(method="POST")
    error = c.attempt_failed(Retryable("connection lost"), last_event_id="")
    assert isinstance(error, SSEConnectionError) and c.finished


def test_a_post_the_server_surely_did_not_process_is_sent_again() -> None:
    assert core(method="POST").attempt_failed(Retryable("refused", unprocessed=True), "") is None


def test_a_post_with_an_event_id_resumes() -> None:
    assert core(method="POST").attempt_failed(Retryable("connection lost"), last_event_id="7") is None


def test_without_reconnect_the_first_failure_is_raised() -> None:
    c = core(reconnect=False)
    error = c.attempt_failed(Retryable("503", status=503, unprocessed=True), "")
    assert error is not None and error.status == 503 and c.finished


def test_a_stream_that_ended_with_events_resets_the_failure_count() -> None:
    c = core()
    c.failures = 5
    c.stream_opened(200, now=0.0)
    c.count(1, now=0.5)
    c.stream_ended("dropped", None, "")
    assert c.failures == 0
    c.stream_opened(200, now=1.0)
    c.stream_ended("dropped", None, "")
    assert c.failures == 1


def test_a_stream_end_after_close_or_restart_decides_nothing() -> None:
    for flag in ("closed", "restart"):
        c = core()
        setattr(c, flag, True)
        assert c.stream_ended("dropped", None, "") is None
        assert c.failures == 0 and not c.finished


def test_a_failed_stream_that_cannot_resume_is_raised() -> None:
    c = core(method="POST")
    c.stream_opened(200, now=0.0)
    error = c.stream_ended("no data for 5 s (read_timeout)", TimeoutError(), last_event_id="")
    assert error is not None and "stream failed: no data for 5 s" in str(error) and c.finished


def test_a_clean_end_that_cannot_resume_just_finishes() -> None:
    c = core(reconnect=False)
    assert c.stream_ended(None, None, "") is None and c.finished


def test_leaving_the_iteration_restarts_only_a_resumable_stream() -> None:
    c = core()
    c.left("")
    assert c.restart and not c.finished
    c = core(method="POST")
    c.left("")
    assert c.finished and not c.restart


@pytest.mark.parametrize(
    ("exc", "kind", "unprocessed"),
    [
        (ConnectionRefusedError(111, "refused"), Retryable, True),
        (socket.gaierror(-2, "Name or service not known"), Retryable, True),
        (ConnectionResetError(104, "reset"), Retryable, False),
        (ssl.SSLEOFError(8, "EOF"), Retryable, False),
        (ProxyError("503 from proxy", status=503), Retryable, True),
        (ValueError("invalid literal for int() with base 10: 'abc'"), Retryable, False),
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), Retryable, False),
    ],
)
def test_request_failures_that_a_later_attempt_may_not_have(
    exc: Exception, kind: type, unprocessed: bool
) -> None:
    c = core()
    outcome = c.request_failed(exc, URL)
    assert isinstance(outcome, kind) and not c.finished
    assert isinstance(outcome, Retryable) and outcome.unprocessed is unprocessed


@pytest.mark.parametrize(
    "exc",
    [
        ssl.SSLCertVerificationError(1, "certificate verify failed"),
        ProxyError("407 Proxy Authentication Required", status=407),
    ],
)
def test_request_failures_retrying_cannot_fix(exc: Exception) -> None:
    c = core()
    outcome = c.request_failed(exc, URL)
    assert isinstance(outcome, SSEConnectionError) and c.finished


def test_an_invalid_argument_comes_back_as_it_is() -> None:
    exc = TypeError("data must be bytes")
    assert core().request_failed(exc, URL) is exc


# -- responses that are not a stream ----------------------------------------------------------------


def test_503_with_retry_after_is_retried_after_it() -> None:
    outcome = core().refused(
        Action.RETRY, "server error", 503, "Service Unavailable", {"retry-after": "7"}, "busy", URL, now=0.0
    )
    assert isinstance(outcome, Retryable)
    assert (outcome.status, outcome.retry_after, outcome.unprocessed, outcome.body) == (
        503,
        7.0,
        True,
        "busy",
    )


def test_a_client_error_is_permanent() -> None:
    c = core()
    outcome = c.refused(Action.FAIL, "client error", 404, "Not Found", {}, None, URL + "/moved", now=0.0)
    assert isinstance(outcome, SSEConnectionError) and c.finished
    assert (outcome.status, outcome.url) == (404, URL + "/moved")


def test_a_redirect_off_the_origin_drops_credentials_and_a_303_the_body() -> None:
    headers = {
        "Authorization": "Bearer s3cret",
        "Content-Type": "application/json",
        "Accept": "text/event-stream",
    }
    follow = core(method="POST").redirect(303, "POST", URL, headers, "https://cdn.example.net/stream")
    assert follow == Follow("GET", "https://cdn.example.net/stream", {"Accept": "text/event-stream"}, False)


def test_a_same_origin_307_keeps_method_body_and_credentials() -> None:
    headers = {"Authorization": "Bearer s3cret", "Content-Type": "application/json"}
    follow = core(method="POST").redirect(307, "POST", URL, headers, "/v2/stream")
    assert follow == Follow("POST", "https://api.example.com/v2/stream", headers, True)


def test_a_redirect_that_cannot_be_followed_is_permanent() -> None:
    c = core()
    with pytest.raises(SSEConnectionError, match="without a Location"):
        c.redirect(302, "GET", URL, {}, None)
    assert c.finished
    with pytest.raises(SSEInvalidURLError, match="cannot be requested"):
        core().redirect(302, "GET", URL, {}, "ftp://files.example.com/")


# -- timers, stats, checkpoints --------------------------------------------------------------------


def test_the_earliest_deadline_wins() -> None:
    c = core(read_timeout=30.0, first_event_timeout=5.0, event_timeout=60.0)
    c.stream_opened(200, now=100.0)
    assert c.deadline(now=101.0, waiting_since=101.0) == (
        105.0,
        "no event 5 s after connecting (first_event_timeout)",
    )
    c.count(1, now=102.0)
    assert c.deadline(now=103.0, waiting_since=103.0) == (133.0, "no data for 30 s (read_timeout)")
    c = core(read_timeout=None, event_timeout=10.0)
    c.stream_opened(200, now=0.0)
    c.count(1, now=4.0)
    assert c.deadline(now=5.0, waiting_since=0.0) == (14.0, "no event for 10 s (event_timeout)")


def test_no_deadline_once_only_a_passed_first_event_timeout_was_set() -> None:
    c = core(read_timeout=None, first_event_timeout=5.0)
    c.stream_opened(200, now=0.0)
    c.count(1, now=1.0)
    assert c.deadline(now=2.0, waiting_since=2.0) is None


def test_stats_count_events_bytes_and_reconnects() -> None:
    c = core()
    c.created = 10.0
    c.stream_opened(200, now=10.5)
    c.count(3, now=11.0)
    c.bytes += 120
    c.stream_opened(200, now=12.0)
    stats = c.stats(now=15.0)
    assert (stats.events, stats.bytes, stats.reconnects) == (3, 120, 1)
    assert stats.time_to_first_event == 1.0 and stats.time_since_last_event == 4.0


def test_the_checkpoint_saves_each_resume_point_once() -> None:
    c = core()
    assert c.checkpoint_due() is None
    c.delivered([event("a", "1"), event("b", "2")], partial=False, last_event_id="2")
    assert c.checkpoint_due() == "2"
    c.saved_id = "2"
    assert c.checkpoint_due() is None
    # a read cut by a sentinel: the resume point is the last id delivered, not the decoder's
    c.delivered([event("c", "3"), event("d")], partial=True, last_event_id="9")
    assert c.checkpoint_due() == "3"


def test_resume_point_without_ids_keeps_the_one_before() -> None:
    assert resume_point([event("x"), event("y")], before="4") == "4"
