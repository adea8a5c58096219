"""What never reaches a log line or an error message: credentials in URLs and headers."""

from __future__ import annotations

import pytest

from sonicsse._logging import is_secret_name, redact_headers, redact_url
from sonicsse.exceptions import SSEConnectionError, SSEParsingError


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://127.0.0.1:8080/sse?n=3", "http://127.0.0.1:8080/sse?n=3"),
        ("http://user:pw@host:1/sse", "http://<redacted>@host:1/sse"),
        ("https://TOKEN@github.com/x", "https://<redacted>@github.com/x"),
        (
            "https://h/p?access_token=a&page=2&X-Amz-Signature=b&sig=c&api%5Fkey=d&code=e",
            "https://h/p?access_token=<redacted>&page=2&X-Amz-Signature=<redacted>&sig=<redacted>"
            "&api%5Fkey=<redacted>&code=<redacted>",
        ),
        ("https://h/p?flag&key", "https://h/p?flag&key"),  # names without values hide nothing
        ("not a url", "not a url"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    "name", ["Authorization", "Proxy-Authorization", "Cookie", "X-Api-Key", "X-Goog-Api-Key", "X-Auth-Token"]
)
def test_credential_headers_are_secret(name: str) -> None:
    assert is_secret_name(name)
    assert redact_headers({name: "s3cr3t"}) == {name: "<redacted>"}


@pytest.mark.parametrize("name", ["Accept", "Cache-Control", "Last-Event-ID", "Content-Type", "X-Trace"])
def test_ordinary_headers_are_shown(name: str) -> None:
    assert not is_secret_name(name)
    assert redact_headers({name: "v"}) == {name: "v"}


def test_error_messages_redact_the_url_but_keep_it_as_given() -> None:
    url = "http://me:pw-secret@h/sse?token=t-secret"
    for error in (
        SSEConnectionError("refused", method="GET", url=url),
        SSEParsingError("bad", method="GET", url=url),
    ):
        assert "secret" not in str(error)
        assert "GET http://<redacted>@h/sse?token=<redacted>" in str(error)
        assert error.url == url
