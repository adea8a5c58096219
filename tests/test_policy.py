"""The pure reconnection and status rules of sonicsse._policy."""

from __future__ import annotations

from datetime import datetime, timezone
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sonicsse import _policy
from sonicsse._policy import Action


@pytest.mark.parametrize(
    ("status", "ctype", "follow", "action"),
    [
        (200, "text/event-stream", False, Action.STREAM),
        (200, "text/event-stream; charset=utf-8", False, Action.STREAM),
        (200, "Text/Event-Stream", False, Action.STREAM),
        (200, "text/plain", False, Action.FAIL),
        (200, None, False, Action.FAIL),
        (200, "text/event-streamx", False, Action.FAIL),
        (204, None, False, Action.END),
        (301, None, True, Action.REDIRECT),
        (302, None, True, Action.REDIRECT),
        (303, None, True, Action.REDIRECT),
        (307, None, True, Action.REDIRECT),
        (308, None, True, Action.REDIRECT),
        (302, None, False, Action.FAIL),
        (304, None, True, Action.FAIL),
        (400, "text/plain", False, Action.FAIL),
        (401, None, False, Action.FAIL),
        (404, None, False, Action.FAIL),
        (408, None, False, Action.FAIL),
        (429, None, False, Action.RETRY),
        (500, None, False, Action.RETRY),
        (502, None, False, Action.RETRY),
        (503, None, False, Action.RETRY),
        (599, None, False, Action.RETRY),
        (201, "text/event-stream", False, Action.FAIL),
    ],
)
def test_classify_response(status: int, ctype: str | None, follow: bool, action: Action) -> None:
    assert _policy.classify_response(status, ctype, follow=follow)[0] is action


def test_classify_reasons_are_explanatory() -> None:
    assert "content type" in _policy.classify_response(200, "text/html", follow=False)[1]
    assert "follow=True" in _policy.classify_response(302, None, follow=False)[1]


@pytest.mark.parametrize(
    ("method", "last_id", "unsafe", "expected"),
    [
        ("GET", "", False, True),
        ("get", "", False, True),
        ("DELETE", "", False, True),
        ("PUT", "", False, True),
        ("POST", "", False, False),
        ("PATCH", "", False, False),
        ("POST", "7", False, True),
        ("POST", "", True, True),
    ],
)
def test_may_resume(method: str, last_id: str, unsafe: bool, expected: bool) -> None:
    assert _policy.may_resume(method, last_id, unsafe) is expected


def test_base_delay_server_retry_wins_and_is_capped() -> None:
    assert _policy.base_delay_ms(3000, None, 30000) == 3000
    assert _policy.base_delay_ms(3000, 100, 30000) == 100
    assert _policy.base_delay_ms(3000, 0, 30000) == 0
    assert _policy.base_delay_ms(3000, 86_400_000, 30000) == 30000
    assert _policy.base_delay_ms(60000, None, 30000) == 30000


def test_delay_after_delivered_stream_is_the_base() -> None:
    assert _policy.reconnect_delay(250, 30000, 0, rand=lambda: 0.99) == 0.25


def test_delay_backs_off_exponentially_with_jitter_up_to_cap() -> None:
    lows = [_policy.reconnect_delay(100, 30000, n, rand=lambda: 0.0) for n in range(1, 12)]
    highs = [_policy.reconnect_delay(100, 30000, n, rand=lambda: 1.0) for n in range(1, 12)]
    assert highs[:4] == [0.2, 0.4, 0.8, 1.6]
    assert lows[:4] == [0.1, 0.2, 0.4, 0.8]
    assert all(low <= high <= 30.0 for low, high in zip(lows, highs, strict=True))
    assert highs[-1] == 30.0 and lows[-1] == 15.0


@given(
    base=st.integers(0, 100_000),
    cap=st.integers(0, 100_000),
    failures=st.integers(0, 10_000),
    r=st.floats(0, 1),
    retry_after=st.none() | st.floats(0, 1e9),
)
def test_delay_bounds(base: int, cap: int, failures: int, r: float, retry_after: float | None) -> None:
    delay = _policy.reconnect_delay(base, cap, failures, retry_after, rand=lambda: r)
    assert 0 <= delay <= cap / 1000 + 1e-9
    assert delay >= min(base, cap) / 1000 - 1e-9


def test_retry_after_is_honoured_and_capped() -> None:
    assert _policy.reconnect_delay(10, 30000, 1, retry_after=2.0, rand=lambda: 0.0) == 2.0
    assert _policy.reconnect_delay(10, 5000, 1, retry_after=3600.0, rand=lambda: 0.0) == 5.0


def test_failed_attempts_back_off_even_from_a_zero_base_delay() -> None:
    """A server's `retry: 0` (or retry_delay=0) must not turn a failing server into a request storm."""
    assert _policy.reconnect_delay(0, 30000, 0) == 0.0  # after a stream that delivered events
    lows = [_policy.reconnect_delay(0, 30000, n, rand=lambda: 0.0) for n in range(1, 5)]
    assert lows == [0.1, 0.2, 0.4, 0.8]
    assert _policy.reconnect_delay(0, 0, 3) == 0.0  # max_retry_delay=0 is the caller's explicit wish


def test_parse_retry_after() -> None:
    now = 1_700_000_000.0
    assert _policy.parse_retry_after(None, now) is None
    assert _policy.parse_retry_after("", now) is None
    assert _policy.parse_retry_after("120", now) == 120.0
    assert _policy.parse_retry_after(" 5 ", now) == 5.0
    assert _policy.parse_retry_after("-5", now) is None
    assert _policy.parse_retry_after("soon", now) is None
    assert _policy.parse_retry_after("\u00b2", now) is None  # "²": str.isdigit() says yes, float() no
    assert _policy.parse_retry_after("\uff15", now) is None  # a full-width 5
    date = format_datetime(datetime.fromtimestamp(now + 30, tz=timezone.utc), usegmt=True)
    assert _policy.parse_retry_after(date, now) == pytest.approx(30, abs=1)
    past = format_datetime(datetime.fromtimestamp(now - 30, tz=timezone.utc), usegmt=True)
    assert _policy.parse_retry_after(past, now) == 0.0


def test_build_headers_defaults_user_wins_and_last_event_id() -> None:
    assert _policy.build_headers(None, "") == {
        "Accept": "text/event-stream",
        "Cache-Control": "no-cache",
        "Accept-Encoding": "gzip, deflate",
    }
    headers = _policy.build_headers({"accept": "*/*", "Authorization": "Bearer x"}, "42")
    assert headers == {
        "accept": "*/*",
        "Authorization": "Bearer x",
        "Cache-Control": "no-cache",
        "Accept-Encoding": "gzip, deflate",
        "Last-Event-ID": "42",
    }
    # an explicit Accept-Encoding wins, including identity (no compression)
    assert _policy.build_headers({"accept-encoding": "identity"}, "") == {
        "accept-encoding": "identity",
        "Accept": "text/event-stream",
        "Cache-Control": "no-cache",
    }
    pairs = _policy.build_headers([("X-A", "1"), ("last-event-id", "old")], "")
    assert "last-event-id" not in {k.lower() for k in pairs}
    assert _policy.build_headers(None, "é-ü")["Last-Event-ID"] == "é-ü"
    assert "Last-Event-ID" not in _policy.build_headers(None, "bad\x01id")
    assert _policy.build_headers(None, "tab\tok")["Last-Event-ID"] == "tab\tok"


def test_header_value_ok() -> None:
    assert _policy.header_value_ok("abc é")
    assert not _policy.header_value_ok("a\nb")
    assert not _policy.header_value_ok("a\x7f")


@pytest.mark.parametrize(
    ("status", "method", "location", "expected"),
    [
        (302, "GET", "/b", ("GET", "http://h/b", True)),
        (301, "POST", "http://o/x", ("GET", "http://o/x", False)),
        (302, "POST", "/b", ("GET", "http://h/b", False)),
        (303, "PUT", "/b", ("GET", "http://h/b", False)),
        (307, "POST", "/b", ("POST", "http://h/b", True)),
        (308, "POST", "b", ("POST", "http://h/a/b", True)),
        (302, "GET", None, None),
        (302, "GET", "  ", None),
    ],
)
def test_redirect_request(
    status: int, method: str, location: str | None, expected: tuple[str, str, bool] | None
) -> None:
    assert _policy.redirect_request(status, method, "http://h/a/c", location) == expected


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://127.0.0.1:99999/", "invalid port '99999'"),
        ("http://127.0.0.1:abc/", "invalid port 'abc'"),
        ("http://h:0/", "invalid port '0'"),
        ("not a url", "spaces or control characters"),
        ("http://not a url/", "spaces or control characters"),
        ("ftp://example.com/", "unsupported URL scheme 'ftp'"),
        ("localhost:8080/events", "no scheme"),
        ("/events", "no scheme"),
        ("http:///events", "no host"),
        ("", "empty"),
    ],
)
def test_url_problem_names_what_is_wrong(url: str, problem: str) -> None:
    found = _policy.url_problem(url)
    assert found is not None and problem in found


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8765/events?n=3", "https://[::1]/x", "HTTPS://Example.com:443", "http://h:65535"],
)
def test_url_problem_accepts_requestable_urls(url: str) -> None:
    assert _policy.url_problem(url) is None
