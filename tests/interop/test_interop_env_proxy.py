"""Proxies from the environment: ``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``, ``NO_PROXY``.

With no ``proxy=`` and ``trust_env=True`` (the default), SSEClient takes its proxy from the
environment. Whether a request went through tinyproxy is seen, for plain http, in the ``Via``
header tinyproxy adds (the app's ``/headers`` echoes the request's headers), and, for https, in
tinyproxy's log of CONNECT requests (written when it receives one, before it answers: by the time
the client has read the stream, the line is there).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from .interop_content import expected_small
from .interop_support import Certs, Nginx, Origin, Proxy, assert_same, free_port, log_count, read_events

pytestmark = pytest.mark.interop

#: The static file of 10,000 small events on nginx's https listener.
STATIC_EVENTS = "/static/events.sse"


async def request_via(url: str, **client: Any) -> str | None:
    """The ``Via`` header the origin (the app's ``/headers``) saw, or None."""
    events = await read_events(url, client=client)
    assert len(events) == 1, events
    info = json.loads(events[0]["data"])
    via: str | None = info["headers"].get("via")
    return via


async def tunnelled(nginx: Nginx, certs: Certs, watched: Proxy, **client: Any) -> bool:
    """Read nginx's https static stream (exact content); True when it went through a CONNECT tunnel
    of the ``watched`` proxy."""
    line = f"CONNECT 127.0.0.1:{nginx.https_port}"
    before = log_count(watched.log, line)
    events = await read_events(nginx.https + STATIC_EVENTS, client=client, ssl=certs.client_context())
    assert_same(events, expected_small())
    return log_count(watched.log, line) > before


def dead_proxy() -> str:
    """The URL of a proxy that is not there (nothing listens on its port)."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "ALL_PROXY"])
async def test_env_proxy_http(
    monkeypatch: pytest.MonkeyPatch, tinyproxy: Proxy, uvicorn_h11: Origin, variable: str
) -> None:
    """``HTTP_PROXY`` (or ``ALL_PROXY``) sends a plain-http request through the proxy."""
    monkeypatch.setenv(variable, tinyproxy.url)
    via = await request_via(uvicorn_h11.url("/headers"))
    assert via is not None and "tinyproxy" in via


@pytest.mark.parametrize("variable", ["HTTPS_PROXY", "ALL_PROXY"])
async def test_env_proxy_https(
    monkeypatch: pytest.MonkeyPatch, tinyproxy: Proxy, nginx: Nginx, certs: Certs, variable: str
) -> None:
    """``HTTPS_PROXY`` (or ``ALL_PROXY``) sends an https request through a CONNECT tunnel."""
    monkeypatch.setenv(variable, tinyproxy.url)
    assert await tunnelled(nginx, certs, tinyproxy)


async def test_env_proxy_with_credentials(
    monkeypatch: pytest.MonkeyPatch, tinyproxy_auth: Proxy, uvicorn_h11: Origin, nginx: Nginx, certs: Certs
) -> None:
    """Credentials in the variable's URL answer a proxy that requires Basic auth, for forwarding and
    for CONNECT alike."""
    monkeypatch.setenv("HTTP_PROXY", tinyproxy_auth.url)
    monkeypatch.setenv("HTTPS_PROXY", tinyproxy_auth.url)
    via = await request_via(uvicorn_h11.url("/headers"))
    assert via is not None and "tinyproxy" in via
    assert await tunnelled(nginx, certs, tinyproxy_auth)


async def test_trust_env_false(
    monkeypatch: pytest.MonkeyPatch, tinyproxy: Proxy, uvicorn_h11: Origin, nginx: Nginx, certs: Certs
) -> None:
    """``trust_env=False`` ignores the proxy variables: both requests go direct."""
    for variable in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(variable, tinyproxy.url)
    assert await request_via(uvicorn_h11.url("/headers"), trust_env=False) is None
    assert not await tunnelled(nginx, certs, tinyproxy, trust_env=False)


@pytest.mark.parametrize("no_proxy", ["127.0.0.1", "localhost,127.0.0.1", "*"])
async def test_no_proxy(
    monkeypatch: pytest.MonkeyPatch,
    tinyproxy: Proxy,
    uvicorn_h11: Origin,
    nginx: Nginx,
    certs: Certs,
    no_proxy: str,
) -> None:
    """A host in ``NO_PROXY`` (or ``*``) is reached directly, over http and https."""
    for variable in ("HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(variable, tinyproxy.url)
    monkeypatch.setenv("NO_PROXY", no_proxy)
    assert await request_via(uvicorn_h11.url("/headers")) is None
    assert not await tunnelled(nginx, certs, tinyproxy)


async def test_http_proxy_is_not_for_https(
    monkeypatch: pytest.MonkeyPatch, tinyproxy: Proxy, nginx: Nginx, certs: Certs
) -> None:
    """``HTTP_PROXY`` is for http URLs only: an https request with only it set goes direct."""
    monkeypatch.setenv("HTTP_PROXY", dead_proxy())
    assert not await tunnelled(nginx, certs, tinyproxy)


async def test_explicit_proxy_wins(
    monkeypatch: pytest.MonkeyPatch, tinyproxy: Proxy, uvicorn_h11: Origin, nginx: Nginx, certs: Certs
) -> None:
    """``proxy=`` is used whatever the environment says (here: a proxy that is not there)."""
    for variable in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(variable, dead_proxy())
    via = await request_via(uvicorn_h11.url("/headers"), proxy=tinyproxy.url)
    assert via is not None and "tinyproxy" in via
    assert await tunnelled(nginx, certs, tinyproxy, proxy=tinyproxy.url)
