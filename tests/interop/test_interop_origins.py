"""sonicsse against real servers, directly: every body framing each one produces, exact content.

Each kind of stream is checked against what the server was told to send: 10,000 small events
(``events``), 4 events of 1 MiB (``big``), and a POST read with ``iter_json()`` (200 OpenAI-style
token chunks, then ``[DONE]``). The response's framing is asserted too, so each test reads the body
framing it claims to.
"""

from __future__ import annotations

import json

import pytest

from .interop_content import expected_big
from .interop_support import (
    APP_PATHS,
    KINDS,
    NGINX_LOCATIONS,
    Certs,
    Nginx,
    Origin,
    assert_same,
    check_stream,
    framing,
    nginx_path,
    read_events,
)

pytestmark = pytest.mark.interop


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("body", ["chunked", "length"])
@pytest.mark.parametrize("server", ["uvicorn_h11", "uvicorn_httptools"])
async def test_uvicorn(request: pytest.FixtureRequest, server: str, body: str, kind: str) -> None:
    """uvicorn + sse-starlette: a streamed response is chunked, ``?framing=length`` a whole body."""
    origin: Origin = request.getfixturevalue(server)
    query = "?framing=length" if body == "length" else ""
    headers = await check_stream(kind, origin.url(APP_PATHS[kind] + query))
    assert framing(headers) == body


@pytest.mark.parametrize("kind", KINDS)
async def test_http10_close_delimited(http10: Origin, kind: str) -> None:
    """http.server's HTTP/1.0 response: no length, no chunking, no ``Connection`` header; the server's
    close ends the body."""
    headers = await check_stream(kind, http10.url(APP_PATHS[kind]))
    assert framing(headers) == "close"
    assert "connection" not in headers


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("location", list(NGINX_LOCATIONS))
@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_nginx(nginx: Nginx, certs: Certs, scheme: str, location: str, kind: str) -> None:
    """nginx as the origin: a static file (Content-Length), proxy_pass unbuffered (chunked), the same
    with ``chunked_transfer_encoding off`` (close-delimited), and gzip of both (identical events)."""
    body, encoding = NGINX_LOCATIONS[location]
    base = nginx.http if scheme == "http" else nginx.https
    extra: dict[str, object] = {"ssl": certs.client_context()} if scheme == "https" else {}
    if encoding:
        extra["headers"] = {"Accept-Encoding": encoding}
    headers = await check_stream(kind, base + nginx_path(location, kind), **extra)
    assert framing(headers) == body
    assert headers.get("content-encoding") == encoding


@pytest.mark.parametrize("kind", KINDS)
async def test_hypercorn_http2(hypercorn_tls: Origin, certs: Certs, kind: str) -> None:
    """hypercorn over TLS with HTTP/2 (ALPN h2): DATA frames, no HTTP/1.1 framing at all."""
    await check_stream(kind, hypercorn_tls.url(APP_PATHS[kind]), ssl=certs.client_context(), http2=True)


@pytest.mark.parametrize("kind", KINDS)
async def test_hypercorn_http11_tls(hypercorn_tls: Origin, certs: Certs, kind: str) -> None:
    """The same hypercorn over TLS without ``http2``: HTTP/1.1, chunked."""
    headers = await check_stream(kind, hypercorn_tls.url(APP_PATHS[kind]), ssl=certs.client_context())
    assert framing(headers) == "chunked"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("location", ["static", "chunked"])
async def test_nginx_http2(nginx: Nginx, certs: Certs, location: str, kind: str) -> None:
    """nginx's HTTP/2 listener: a static file and an unbuffered proxy_pass."""
    await check_stream(kind, nginx.h2 + nginx_path(location, kind), ssl=certs.client_context(), http2=True)


async def test_http2_negotiated(hypercorn_tls: Origin, nginx: Nginx, certs: Certs) -> None:
    """``http2=True`` really speaks HTTP/2 to both servers (the app and nginx report the version)."""
    events = await read_events(hypercorn_tls.url("/headers"), ssl=certs.client_context(), http2=True)
    assert json.loads(events[0]["data"])["http_version"] == "2"
    events = await read_events(nginx.h2 + "/peer", ssl=certs.client_context(), http2=True)
    assert [e["data"] for e in events] == ["127.0.0.1 HTTP/2.0"]


#: Reads of the TLS close-delimited big stream in one test: its failure (the end of the body lost
#: at the server's close) does not happen on every read.
REPEATS = 8


async def test_tls_close_delimited_repeated(nginx: Nginx, certs: Certs) -> None:
    """A close-delimited body over TLS ends with the server's close: every byte that came before it
    is delivered, read after read (the last MiB-sized event is the first thing lost otherwise)."""
    for attempt in range(REPEATS):
        events = await read_events(nginx.https + nginx_path("close", "big"), ssl=certs.client_context())
        assert_same(events, expected_big(), f"events (read {attempt + 1} of {REPEATS})")
