"""Proxy settings and the CONNECT exchange, without sockets: which requests go through which proxy,
``NO_PROXY`` matching, credentials never shown, and the tunnel's request and the proxy's answer."""

from __future__ import annotations

import pytest

from sonicsse._proxy import ProxyRoutes, ProxyURL, format_host, parse_proxy_url
from sonicsse._tunnel import ProxyError, connect_request, parse_answer

ENV_NAMES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


def test_parse_proxy_url_forms() -> None:
    assert parse_proxy_url("http://proxy.example:3128") == ProxyURL("proxy.example", 3128)
    assert parse_proxy_url("proxy.example") == ProxyURL("proxy.example", 80)  # http:// assumed
    proxy = parse_proxy_url("http://us%40er:p%3Ass@10.0.0.1:8080")
    assert (proxy.username, proxy.password) == ("us@er", "p:ss")  # percent-decoded
    assert proxy.authorization == "Basic dXNAZXI6cDpzcw=="
    assert proxy.url == "http://10.0.0.1:8080"
    assert str(proxy) == "http://<redacted>@10.0.0.1:8080" and "p:ss" not in repr(proxy)
    assert parse_proxy_url("http://[::1]:3128").url == "http://[::1]:3128"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://user:pw@proxy:443", "only http:// proxies"),
        ("socks5://user:pw@proxy:1080", "only http:// proxies"),
        ("http://user:pw@:3128", "no host"),
        ("http://user:pw@proxy:99999", "bad port"),
    ],
)
def test_bad_proxy_urls_are_refused_without_showing_credentials(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_proxy_url(url)
    assert "pw" not in str(info.value)


def test_explicit_proxy_applies_to_every_request(env: pytest.MonkeyPatch) -> None:
    env.setenv("NO_PROXY", "*")
    routes = ProxyRoutes("http://127.0.0.1:3128")
    assert routes.for_url("https", "api.example", 443) == ProxyURL("127.0.0.1", 3128)
    assert routes.for_url("http", "127.0.0.1", 80) == ProxyURL("127.0.0.1", 3128)


def test_environment_by_scheme_all_proxy_and_lower_case(env: pytest.MonkeyPatch) -> None:
    env.setenv("HTTPS_PROXY", "http://secure-proxy:1")
    env.setenv("ALL_PROXY", "http://all-proxy:2")
    routes = ProxyRoutes()
    assert routes.for_url("https", "a.example", 443) == ProxyURL("secure-proxy", 1)
    assert routes.for_url("http", "a.example", 80) == ProxyURL("all-proxy", 2)
    env.setenv("https_proxy", "http://lower:3")  # the lower-case form wins, as in urllib and httpx
    assert ProxyRoutes().for_url("https", "a.example", 443) == ProxyURL("lower", 3)


def test_environment_is_ignored_without_trust_env(env: pytest.MonkeyPatch) -> None:
    env.setenv("HTTPS_PROXY", "http://secure-proxy:1")
    routes = ProxyRoutes(trust_env=False)
    assert routes.for_url("https", "a.example", 443) is None
    assert routes.for_url("http", "a.example", 80) is None
    assert ProxyRoutes().for_url("https", "a.example", 443) is not None


def test_loopback_goes_through_the_proxy_without_no_proxy(env: pytest.MonkeyPatch) -> None:
    env.setenv("HTTP_PROXY", "http://proxy:1")
    routes = ProxyRoutes()
    assert routes.for_url("http", "127.0.0.1", 8080) is not None
    assert routes.for_url("http", "localhost", 8080) is not None


@pytest.mark.parametrize(
    ("no_proxy", "host", "port", "bypassed"),
    [
        ("*", "anything.example", 443, True),
        ("example.com", "example.com", 443, True),
        ("example.com", "api.example.com", 443, True),  # a suffix on a dot boundary
        (".example.com", "api.example.com", 443, True),
        ("example.com", "badexample.com", 443, False),
        ("example.com:8443", "example.com", 8443, True),
        ("example.com:8443", "example.com", 443, False),
        ("127.0.0.0/8", "127.0.0.2", 80, True),
        ("10.0.0.0/8, 192.168.1.7", "192.168.1.7", 80, True),
        ("10.0.0.0/8", "11.0.0.1", 80, False),
        ("::1", "::1", 80, True),
        ("[::1]", "::1", 80, True),
        ("fd00::/8", "fd12::1", 80, True),
        ("localhost", "127.0.0.1", 80, False),  # names are not resolved to match addresses
    ],
)
def test_no_proxy_matching(
    env: pytest.MonkeyPatch, no_proxy: str, host: str, port: int, bypassed: bool
) -> None:
    env.setenv("ALL_PROXY", "http://proxy:1")
    env.setenv("NO_PROXY", no_proxy)
    assert (ProxyRoutes().for_url("https", host, port) is None) is bypassed


def test_a_bad_proxy_variable_fails_when_the_routes_are_made(env: pytest.MonkeyPatch) -> None:
    env.setenv("HTTPS_PROXY", "socks5://proxy:1080")
    with pytest.raises(ValueError, match="only http:// proxies"):
        ProxyRoutes()


def test_connect_request_names_host_and_port_once() -> None:
    proxy = parse_proxy_url("http://user:pw@proxy:3128")
    request = connect_request(proxy, "api.example", 18443).decode()
    lines = request.split("\r\n")
    assert lines[0] == "CONNECT api.example:18443 HTTP/1.1"
    assert "Host: api.example:18443" in lines
    assert "Proxy-Authorization: Basic dXNlcjpwdw==" in lines
    assert request.endswith("\r\n\r\n")
    assert connect_request(ProxyURL("p", 1), "::1", 443).startswith(b"CONNECT [::1]:443 HTTP/1.1\r\n")
    assert connect_request(ProxyURL("p", 1), "bücher.example", 443).startswith(
        b"CONNECT xn--bcher-kva.example:443 "
    )
    assert b"Proxy-Authorization" not in connect_request(ProxyURL("p", 1), "a", 443)
    assert format_host("a", 1) == "a:1" and format_host("::1", 1) == "[::1]:1"


def test_proxy_answers() -> None:
    proxy = parse_proxy_url("http://user:pw@proxy:3128")
    parse_answer(b"HTTP/1.1 200 Connection established\r\n\r\n", proxy, "a:443")
    parse_answer(b"HTTP/1.0 200 OK\r\nProxy-Agent: x\r\n\r\n", proxy, "a:443")  # any 2xx opens it
    with pytest.raises(ProxyError) as info:
        parse_answer(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n", proxy, "a:443")
    assert info.value.status == 407 and info.value.permanent
    assert "user and password" in str(info.value) and "pw" not in str(info.value).replace("password", "")
    with pytest.raises(ProxyError) as info:
        parse_answer(b"HTTP/1.1 502 Bad Gateway\r\n\r\n", proxy, "a:443")
    assert info.value.status == 502 and not info.value.permanent
    with pytest.raises(ProxyError, match="did not answer CONNECT a:443 with HTTP") as info:
        parse_answer(b"SSH-2.0-OpenSSH\r\n\r\n", proxy, "a:443")
    assert info.value.status is None and not info.value.permanent
