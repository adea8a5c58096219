"""sonicsse through real HTTP proxies: tinyproxy and proxy.py, each with and without Basic auth.

Plain-http URLs are forwarded (absolute-form requests); https URLs go through a CONNECT tunnel to a
TLS origin (nginx, hypercorn), on random high ports: never 443. Each test checks the exact content
and that the proxy's log shows the request, so a client that ignored ``proxy=`` and went direct
would fail.
"""

from __future__ import annotations

import uuid

import pytest

from sonicsse import SSEConnectionError

from .interop_support import (
    APP_PATHS,
    KINDS,
    Certs,
    Nginx,
    Origin,
    Proxy,
    assert_logged,
    check_stream,
    log_count,
    nginx_path,
    read_events,
)

pytestmark = pytest.mark.interop

#: nginx's locations for each framing of an HTTP/1.1 body.
FRAMINGS = {"length": "static", "chunked": "chunked", "close": "close"}


def probe() -> str:
    """Query parameters: a unique one, to find this request's line in the proxy's log, and ``batch``:
    the app sends its 10,000 small events 50 per chunk (static files and the big and token streams
    ignore it). Chunk sizes are test_interop_origins' business; here the proxies are."""
    return f"batch=50&probe={uuid.uuid4().hex}"


def connect_line(port: int) -> str:
    """What both proxies log for a CONNECT tunnel to 127.0.0.1:``port``."""
    return f"CONNECT 127.0.0.1:{port}"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("body", list(FRAMINGS))
async def test_forward_http(proxy: Proxy, nginx: Nginx, body: str, kind: str) -> None:
    """A plain-http URL through the proxy (forwarded): Content-Length, chunked and close-delimited
    bodies from nginx."""
    tag = probe()
    await check_stream(
        kind, f"{nginx.http}{nginx_path(FRAMINGS[body], kind)}?{tag}", client={"proxy": proxy.url}
    )
    await assert_logged(proxy.log, tag, 0, f"{proxy.name} did not forward the request")


@pytest.mark.parametrize("kind", KINDS)
async def test_forward_http10(proxy: Proxy, http10: Origin, kind: str) -> None:
    """The HTTP/1.0 close-delimited origin through the proxy."""
    tag = probe()
    await check_stream(kind, f"{http10.url(APP_PATHS[kind])}?{tag}", client={"proxy": proxy.url})
    await assert_logged(proxy.log, tag, 0, f"{proxy.name} did not forward the request")


@pytest.mark.parametrize("kind", KINDS)
async def test_forward_gzip(proxy: Proxy, nginx: Nginx, kind: str) -> None:
    """nginx's gzip through the proxy: the same events as uncompressed."""
    tag = probe()
    await check_stream(
        kind,
        f"{nginx.http}{nginx_path('gzip', kind)}?{tag}",
        client={"proxy": proxy.url},
        headers={"Accept-Encoding": "gzip"},
    )
    await assert_logged(proxy.log, tag, 0, f"{proxy.name} did not forward the request")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("body", list(FRAMINGS))
async def test_connect_nginx(proxy: Proxy, nginx: Nginx, certs: Certs, body: str, kind: str) -> None:
    """An https URL through a CONNECT tunnel to nginx over TLS, on a port other than 443."""
    line = connect_line(nginx.https_port)
    before = log_count(proxy.log, line)
    await check_stream(
        kind,
        f"{nginx.https}{nginx_path(FRAMINGS[body], kind)}?{probe()}",
        client={"proxy": proxy.url},
        ssl=certs.client_context(),
    )
    await assert_logged(proxy.log, line, before, f"{proxy.name} opened no tunnel")


@pytest.mark.parametrize("kind", KINDS)
async def test_connect_hypercorn(proxy: Proxy, hypercorn_tls: Origin, certs: Certs, kind: str) -> None:
    """A CONNECT tunnel to another TLS server (hypercorn, HTTP/1.1 by ALPN) on another port."""
    line = connect_line(hypercorn_tls.server.port)
    before = log_count(proxy.log, line)
    await check_stream(
        kind,
        f"{hypercorn_tls.url(APP_PATHS[kind])}?{probe()}",
        client={"proxy": proxy.url},
        ssl=certs.client_context(),
    )
    await assert_logged(proxy.log, line, before, f"{proxy.name} opened no tunnel")


@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize("credentials", ["none", "wrong"])
@pytest.mark.parametrize("proxy_name", ["tinyproxy_auth", "proxypy_auth"])
async def test_proxy_auth_refused(
    request: pytest.FixtureRequest, nginx: Nginx, certs: Certs, proxy_name: str, credentials: str, scheme: str
) -> None:
    """A proxy that requires Basic auth refuses missing or wrong credentials: that is an
    SSEConnectionError with the proxy's status, never an empty or short stream. (407, except
    tinyproxy's 401 to wrong credentials.)"""
    proxy: Proxy = request.getfixturevalue(proxy_name)
    port = proxy.server.port
    proxy_url = (
        f"http://127.0.0.1:{port}" if credentials == "none" else f"http://nobody:wrong@127.0.0.1:{port}"
    )
    if scheme == "http":
        url, extra = nginx.http + nginx_path("static", "events"), {}
    else:
        url, extra = nginx.https + nginx_path("static", "events"), {"ssl": certs.client_context()}
    with pytest.raises(SSEConnectionError) as info:
        await read_events(url, client={"proxy": proxy_url}, **extra)
    assert info.value.status in (401, 407), repr(info.value)
