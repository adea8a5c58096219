"""In-band error recognition: the shapes LLM APIs use, and ordinary events left alone."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sonicsse._inband import error_from_event, is_retryable
from sonicsse.exceptions import SSEConnectionError, SSEServerError


def ev(data: Any, event: str | None = None) -> Any:
    return {"data": data, "event": event, "id": None, "retry": None}


ANTHROPIC = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
OPENAI = {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}


def test_error_event_with_json_body() -> None:
    error = error_from_event(ev(json.dumps(ANTHROPIC), "error"), "error", url="http://h/", method="POST")
    assert isinstance(error, SSEServerError) and isinstance(error, SSEConnectionError)
    assert (error.error_type, error.message, error.retryable) == ("overloaded_error", "Overloaded", True)
    assert error.payload == ANTHROPIC
    assert error.status == 200
    assert "overloaded_error" in str(error) and "POST http://h/" in str(error)


def test_error_event_with_non_json_body() -> None:
    error = error_from_event(ev("upstream exploded", "error"), "error")
    assert error is not None
    assert (error.payload, error.error_type, error.message, error.retryable) == (None, None, None, False)
    assert error.event["data"] == "upstream exploded"


def test_data_chunk_with_error_member() -> None:
    error = error_from_event(ev(json.dumps(OPENAI)), "error")
    assert error is not None
    assert (error.error_type, error.message, error.retryable) == ("requests", "Rate limit reached", False)


def test_error_as_plain_string() -> None:
    error = error_from_event(ev('{"error": "model not found"}'), "error")
    assert error is not None and error.message == "model not found" and not error.retryable


@pytest.mark.parametrize(
    "data",
    [
        '{"choices": [{"delta": {"content": "error"}}]}',
        '{"choices": [{"delta": {"content": "\\"error\\""}}]}',
        '{"error": null, "choices": []}',
        "[DONE]",
        'not json but mentions "error"',
        b'{"choices": []}',
    ],
)
def test_ordinary_events_are_not_errors(data: Any) -> None:
    assert error_from_event(ev(data), "error") is None


def test_bytes_data() -> None:
    error = error_from_event(ev(json.dumps(ANTHROPIC).encode(), "error"), "error")
    assert error is not None and error.error_type == "overloaded_error"


@pytest.mark.parametrize(
    ("error_type", "retryable"),
    [
        ("overloaded_error", True),
        ("rate_limit_error", True),
        ("rate_limit_exceeded", True),
        ("timeout_error", True),
        ("invalid_request_error", False),
        ("authentication_error", False),
        (None, False),
    ],
)
def test_retryable_types(error_type: str | None, retryable: bool) -> None:
    assert is_retryable(error_type) is retryable
