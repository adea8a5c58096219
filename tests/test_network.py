"""Real network paths over loopback: https through CONNECT proxies, plain http through forwarding
proxies, proxy settings from the environment, TLS settings and the pool, IPv6, ``ssl=`` with http,
compression by default, and the body handover (and its fallback) reading exactly the right bytes.

Every test runs on both loops and both implementations of the hot path.
"""

from __future__ import annotations

import base64
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import aiosonic
import pytest
import trustme

import sonicsse._seam
from sonicsse import SSEClient, SSEConnectionError, SSEInvalidURLError

from servers import (
    CLOSE,
    LAST_CHUNK,
    ScriptServer,
    TunnelProxy,
    chunk,
    free_port,
    gzip_chunks,
    has_ipv6_loopback,
    head,
    sse_chunked,
    sse_close,
    sse_length,
)

pytestmark = pytest.mark.usefixtures("client_decoder")  # every test on the compiled and on the pure hot path

EVENTS = 2000
AUTH = "Basic " + base64.b64encode(b"user:s3cret").decode()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_ssl(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "::1", "localhost").configure_cert(context)
    return context


@pytest.fixture(scope="module")
def client_ssl(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def _pieces(count: int = EVENTS) -> list[bytes]:
    """``count`` events with ids, cut in pieces that do not follow event boundaries."""
    body = b"".join(b"id: %d\ndata: event %d\n\n" % (i, i) for i in range(count))
    return [body[i : i + 1500] for i in range(0, len(body), 1500)]


FRAMINGS = {"chunked": sse_chunked, "length": sse_length, "close": sse_close}


async def _read_all(conn: Any) -> list[str]:
    return [event["data"] async for event in conn]


def _expected(count: int = EVENTS) -> list[str]:
    return [f"event {i}" for i in range(count)]


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


# -- https through a CONNECT proxy ----------------------------------------------------------------------


@pytest.mark.parametrize("framing", FRAMINGS)
@pytest.mark.parametrize("auth", [None, AUTH], ids=["open", "basic-auth"])
async def test_https_through_connect_proxy_is_exact(
    framing: str, auth: str | None, server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    steps = FRAMINGS[framing](*_pieces())
    async with ScriptServer([steps], ssl=server_ssl) as origin, TunnelProxy(auth=auth) as proxy:
        proxy_url = proxy.url.replace("://", "://user:s3cret@") if auth else proxy.url
        async with SSEClient(proxy=proxy_url, trust_env=False) as client:
            conn = await client.connect(origin.url(), ssl=client_ssl, reconnect=False)
            assert await _read_all(conn) == _expected()
            await conn.close()
    line, headers = proxy.heads[0]
    # any port, named once (aiosonic would write 127.0.0.1:PORT:PORT)
    assert line == f"CONNECT 127.0.0.1:{origin.port} HTTP/1.1"
    assert headers.get("proxy-authorization") == auth
    assert origin.requests[0].path == "/sse"  # origin form inside the tunnel


async def test_post_iter_json_through_connect_proxy(
    server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    tokens = [b'data: {"choices":[{"delta":{"content":"tok%d"}}]}\n\n' % i for i in range(200)]
    steps = sse_chunked(*tokens, b"data: [DONE]\n\n")
    async with ScriptServer([steps], ssl=server_ssl) as origin, TunnelProxy() as proxy:
        async with SSEClient(proxy=proxy.url, trust_env=False) as client:
            async with client.connect(
                origin.url("/v1/chat"), method="POST", json={"stream": True}, ssl=client_ssl
            ) as conn:
                got = [value["choices"][0]["delta"]["content"] async for value in conn.iter_json()]
    assert got == [f"tok{i}" for i in range(200)]
    assert origin.requests[0].method == "POST" and b'"stream"' in origin.requests[0].body


async def test_large_events_through_connect_proxy(
    server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    payloads = [bytes([65 + i]) * (1 << 20) for i in range(4)]
    steps = sse_length(*(b"data: " + p + b"\n\n" for p in payloads))
    async with ScriptServer([steps], ssl=server_ssl) as origin, TunnelProxy() as proxy:
        async with SSEClient(proxy=proxy.url, trust_env=False) as client:
            async with client.connect(origin.url(), ssl=client_ssl, reconnect=False) as conn:
                got = await _read_all(conn)
    assert [len(d) for d in got] == [1 << 20] * 4
    assert [d[:1] for d in got] == ["A", "B", "C", "D"] and all(d == d[0] * len(d) for d in got)


async def test_proxy_refusal_407_is_an_error_with_its_status_and_no_retry(
    server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    async with ScriptServer([sse_chunked(b"data: x\n\n")], ssl=server_ssl) as origin:
        async with TunnelProxy(auth=AUTH) as proxy:
            wrong = proxy.url.replace("://", "://user:wrong-password@")
            async with SSEClient(proxy=wrong, trust_env=False) as client:
                with pytest.raises(SSEConnectionError) as info:
                    await client.connect(origin.url(), ssl=client_ssl)  # reconnect=True by default
    assert info.value.status == 407
    assert "407" in str(info.value) and "wrong-password" not in str(info.value)
    assert len(proxy.heads) == 1  # not retried: new attempts would meet the same refusal
    assert origin.requests == []


async def test_body_cut_short_through_proxy_is_an_error_not_an_end(
    server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    body = b"".join(_pieces(100))
    steps = [head(framing="length", length=len(body) + 500), body, CLOSE]
    async with ScriptServer([steps], ssl=server_ssl) as origin, TunnelProxy() as proxy:
        async with SSEClient(proxy=proxy.url, trust_env=False) as client:
            conn = await client.connect(origin.url(), ssl=client_ssl, reconnect=False)
            got = []
            with pytest.raises(SSEConnectionError, match="bytes of the body missing"):
                async for event in conn:
                    got.append(event["data"])
    assert got == _expected(100)


# -- plain http through a forwarding proxy, and proxies from the environment ------------------------


@pytest.mark.parametrize("framing", FRAMINGS)
async def test_http_through_forwarding_proxy_is_exact(framing: str) -> None:
    steps = FRAMINGS[framing](*_pieces())
    async with ScriptServer([steps]) as origin, TunnelProxy(auth=AUTH) as proxy:
        proxy_url = proxy.url.replace("://", "://user:s3cret@")
        async with SSEClient(proxy=proxy_url, trust_env=False) as client:
            async with client.connect(origin.url("/sse?x=1"), reconnect=False) as conn:
                assert await _read_all(conn) == _expected()
    line, headers = proxy.heads[0]
    assert line == f"GET {origin.url('/sse?x=1')} HTTP/1.1"  # the absolute URL goes to the proxy
    assert headers["proxy-authorization"] == AUTH
    assert origin.requests[0].path == "/sse?x=1"


async def test_environment_proxy_is_used_bypassed_by_no_proxy_and_by_trust_env_false(
    monkeypatch: pytest.MonkeyPatch, no_proxy_env: None
) -> None:
    steps = sse_chunked(b"data: hi\n\n")
    async with ScriptServer([steps]) as origin, TunnelProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        async with SSEClient() as client:  # with no NO_PROXY, loopback goes through the proxy too
            async with client.connect(origin.url(), reconnect=False) as conn:
                assert await _read_all(conn) == ["hi"]
        assert len(proxy.heads) == 1
        async with SSEClient(trust_env=False) as client:
            async with client.connect(origin.url(), reconnect=False) as conn:
                assert await _read_all(conn) == ["hi"]
        monkeypatch.setenv("no_proxy", "localhost,127.0.0.0/8")
        async with SSEClient() as client:
            async with client.connect(origin.url(), reconnect=False) as conn:
                assert await _read_all(conn) == ["hi"]
        assert len(proxy.heads) == 1  # neither of the last two went through the proxy
        assert len(origin.requests) == 3


async def test_environment_https_proxy_tunnels(
    monkeypatch: pytest.MonkeyPatch,
    no_proxy_env: None,
    server_ssl: ssl.SSLContext,
    client_ssl: ssl.SSLContext,
) -> None:
    async with ScriptServer([sse_chunked(b"data: hi\n\n")], ssl=server_ssl) as origin:
        async with TunnelProxy() as proxy:
            monkeypatch.setenv("https_proxy", proxy.url)
            async with SSEClient() as client:
                async with client.connect(origin.url(), ssl=client_ssl, reconnect=False) as conn:
                    assert await _read_all(conn) == ["hi"]
    assert proxy.heads[0][0].startswith("CONNECT 127.0.0.1:")


def test_proxy_settings_are_checked_when_the_client_is_made(
    monkeypatch: pytest.MonkeyPatch, no_proxy_env: None
) -> None:
    with pytest.raises(ValueError, match=r"only http:// proxies.*") as info:
        SSEClient(proxy="socks5://user:pw@127.0.0.1:1080")
    assert "pw" not in str(info.value)
    monkeypatch.setenv("HTTPS_PROXY", "ftp://127.0.0.1:1")
    with pytest.raises(ValueError, match="only http:// proxies"):
        SSEClient()
    SSEClient(trust_env=False)  # the environment is not read at all
    with pytest.raises(TypeError, match="http_client"):
        SSEClient(aiosonic.HTTPClient(), proxy="http://127.0.0.1:3128")


# -- a borrowed aiosonic client with its own proxy: the handover takes the TLS transport -------------


@pytest.mark.parametrize("framing", FRAMINGS)
async def test_aiosonic_own_proxy_reads_plaintext_not_ciphertext(
    framing: str, server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    """aiosonic's own CONNECT path leaves its reader on the raw socket after ``start_tls``: the body
    must be read through the TLS transport. (aiosonic names the CONNECT target right only for ports 443
    and 80, so the URL says 443 and the proxy tunnels to the origin's real port. A body that ends with
    the connection comes without ``Connection: close`` here: with it, aiosonic's own connection class
    closes the socket before the body can be read, which sonicsse reports as an error.)"""
    unannounced_close = [head(framing="none"), *_pieces(), CLOSE]
    steps = unannounced_close if framing == "close" else FRAMINGS[framing](*_pieces())
    steps.insert(1, 0.05)  # the body arrives after the handover, through the TLS layer
    async with ScriptServer([steps], ssl=server_ssl) as origin:
        async with TunnelProxy(connect_port=origin.port) as proxy:
            http = aiosonic.HTTPClient(proxy=aiosonic.Proxy(proxy.url))
            async with SSEClient(http) as client:
                async with client.connect("https://127.0.0.1/sse", ssl=client_ssl, reconnect=False) as conn:
                    assert await _read_all(conn) == _expected()
            await http.aclose()
    assert proxy.heads[0][0] == "CONNECT 127.0.0.1:443 HTTP/1.1"
    assert len(origin.requests) == 1


# -- TLS settings and the pool --------------------------------------------------------------------------


async def test_verify_false_socket_is_never_reused_by_a_verifying_request(server_ssl: ssl.SSLContext) -> None:
    steps = sse_chunked(b"data: one\n\n")
    async with ScriptServer([steps, steps], ssl=server_ssl) as origin:
        async with SSEClient() as client:
            async with client.connect(
                origin.url(), verify=False, keep_connection=True, reconnect=False
            ) as conn:
                assert await _read_all(conn) == ["one"]
            with pytest.raises(SSEConnectionError, match="certificate verification failed"):
                await client.connect(origin.url(), reconnect=False)
    assert len(origin.requests) == 1


async def test_same_tls_settings_reuse_the_pooled_socket(
    server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    steps = sse_chunked(b"data: one\n\n")
    async with ScriptServer([steps, steps], ssl=server_ssl) as origin:
        async with SSEClient() as client:
            for _ in range(2):
                async with client.connect(
                    origin.url(), ssl=client_ssl, keep_connection=True, reconnect=False
                ) as conn:
                    assert await _read_all(conn) == ["one"]
    assert [r.conn_id for r in origin.requests] == [0, 0]


async def test_ssl_context_with_http_url_and_redirect_to_https(
    server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    async with ScriptServer([sse_chunked(b"data: secure\n\n")], ssl=server_ssl) as secure:
        redirect = [head(302, None, [("Location", secure.url())], framing="length"), "close"]
        async with ScriptServer([sse_chunked(b"data: plain\n\n"), redirect]) as plain:
            async with SSEClient() as client:
                async with client.connect(plain.url(), ssl=client_ssl, reconnect=False) as conn:
                    assert await _read_all(conn) == ["plain"]
                async with client.connect(plain.url(), ssl=client_ssl, follow=True, reconnect=False) as conn:
                    assert await _read_all(conn) == ["secure"]


# -- IPv6 -----------------------------------------------------------------------------------------------


ipv6 = pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback on this machine")


@ipv6
@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
async def test_ipv6_literal_url(tls: bool, server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext) -> None:
    steps = sse_chunked(*_pieces(100))
    async with ScriptServer([steps], host="::1", ssl=server_ssl if tls else None) as origin:
        assert origin.url().startswith(("http://[::1]:", "https://[::1]:"))
        async with SSEClient() as client:
            async with client.connect(origin.url(), ssl=client_ssl if tls else None, reconnect=False) as conn:
                assert await _read_all(conn) == _expected(100)
    assert origin.requests[0].headers["host"] == f"[::1]:{origin.port}"


# -- compression by default ------------------------------------------------------------------------------


async def test_gzip_is_asked_for_by_default_and_decoded_incrementally() -> None:
    pieces = gzip_chunks([b"data: %d\n\n" % i for i in range(50)])
    steps: list[Any] = [head(headers=[("Content-Encoding", "gzip")]), *(chunk(p) for p in pieces), LAST_CHUNK]
    async with ScriptServer([steps, sse_chunked(b"data: plain\n\n")]) as origin:
        async with SSEClient() as client:
            async with client.connect(origin.url(), reconnect=False) as conn:
                assert await _read_all(conn) == [str(i) for i in range(50)]
            async with client.connect(
                origin.url(), headers={"Accept-Encoding": "identity"}, reconnect=False
            ) as conn:
                assert await _read_all(conn) == ["plain"]
    assert origin.requests[0].headers["accept-encoding"] == "gzip, deflate"
    assert origin.requests[1].headers["accept-encoding"] == "identity"


# -- close-delimited bodies from an HTTP/1.0 server with a borrowed HTTPClient --------------------------


class _HTTP10Handler(BaseHTTPRequestHandler):
    """The stdlib's HTTP/1.0 server: no length, no chunking, no ``Connection: close`` header."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for piece in _pieces(10_000):
            self.wfile.write(piece)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def http10_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HTTP10Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/sse"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("borrowed", [False, True], ids=["own-client", "borrowed-client"])
async def test_close_delimited_http10_body_is_read_to_its_end(borrowed: bool, http10_url: str) -> None:
    http = aiosonic.HTTPClient() if borrowed else None
    async with SSEClient(http) as client:
        async with client.connect(http10_url, reconnect=False) as conn:
            assert await _read_all(conn) == _expected(10_000)
    if http is not None:
        await http.aclose()


# -- the handover: exact on its fast path, and exact when it falls back to aiosonic's reader ----------


@pytest.fixture
def handovers(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """Why ``_seam.handover`` refused each body (None: the socket was handed over)."""
    said: list[str | None] = []
    real = sonicsse._seam.handover

    def spy(reader: Any, writer: Any) -> Any:
        taken = real(reader, writer)
        said.append(taken if isinstance(taken, str) else None)
        return taken

    monkeypatch.setattr(sonicsse._seam, "handover", spy)
    return said


@pytest.fixture
def forced_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sonicsse._seam, "handover", lambda reader, writer: "forced by a test")


@pytest.mark.parametrize("framing", FRAMINGS)
@pytest.mark.parametrize("tls", [False, True], ids=["http", "https-tunnel"])
async def test_fast_path_takes_the_socket(
    framing: str,
    tls: bool,
    handovers: list[str | None],
    server_ssl: ssl.SSLContext,
    client_ssl: ssl.SSLContext,
) -> None:
    steps = FRAMINGS[framing](*_pieces())
    async with ScriptServer([steps], ssl=server_ssl if tls else None) as origin, TunnelProxy() as proxy:
        async with SSEClient(proxy=proxy.url if tls else None, trust_env=False) as client:
            kwargs: dict[str, Any] = {"ssl": client_ssl} if tls else {}
            async with client.connect(origin.url(), reconnect=False, **kwargs) as conn:
                assert await _read_all(conn) == _expected()
    assert handovers == [None]


@pytest.mark.parametrize("framing", FRAMINGS)
@pytest.mark.parametrize("tls", [False, True], ids=["http", "https-tunnel"])
async def test_fallback_reader_is_exact(
    framing: str,
    tls: bool,
    forced_fallback: None,
    server_ssl: ssl.SSLContext,
    client_ssl: ssl.SSLContext,
) -> None:
    steps = FRAMINGS[framing](*_pieces())
    origin_ssl = server_ssl if tls else None
    async with ScriptServer([steps, steps], ssl=origin_ssl) as origin, TunnelProxy() as proxy:
        async with SSEClient(proxy=proxy.url if tls else None, trust_env=False) as client:
            kwargs: dict[str, Any] = {"ssl": client_ssl} if tls else {}
            async with client.connect(origin.url(), reconnect=False, **kwargs) as conn:
                assert await _read_all(conn) == _expected()
            if framing != "close":  # a body read to its end leaves a socket the pool can reuse
                async with client.connect(
                    origin.url(), reconnect=False, keep_connection=True, **kwargs
                ) as conn:
                    assert await _read_all(conn) == _expected()


async def test_fallback_reader_large_events(forced_fallback: None) -> None:
    payload = b"x" * (3 << 20)
    async with ScriptServer([sse_length(b"data: ", payload, b"\n\ndata: end\n\n")]) as origin:
        async with SSEClient() as client:
            async with client.connect(origin.url(), reconnect=False) as conn:
                got = await _read_all(conn)
    assert [len(d) for d in got] == [3 << 20, 3] and got[1] == "end"


class _FixedResolver:
    """Answers every name with the given addresses (aiosonic's connection-info dicts), in that order."""

    def __init__(self, *addresses: tuple[str, int]) -> None:
        self.addresses = addresses

    async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[dict[str, Any]]:
        return [
            {
                "hostname": host,
                "host": address,
                "port": fixed_port or port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": socket.IPPROTO_TCP,
                "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            }
            for address, fixed_port in self.addresses
        ]

    async def close(self) -> None:
        pass


@ipv6
async def test_a_name_with_only_an_ipv6_address_connects_and_unreachable_addresses_are_skipped() -> None:
    """The addresses of a name are tried in the resolver's order until one connects: a name whose only
    address is IPv6, and a name whose first address refuses the connection."""
    refused_port = free_port()
    async with ScriptServer([sse_chunked(b"data: six\n\n")], host="::1") as origin:
        for resolver in (_FixedResolver(("::1", 0)), _FixedResolver(("127.0.0.1", refused_port), ("::1", 0))):
            async with SSEClient(trust_env=False) as client:
                client.http_client.connector.resolver = resolver
                url = f"http://only-six.test:{origin.port}/sse"
                async with client.connect(url, reconnect=False) as conn:
                    assert await _read_all(conn) == ["six"]
    assert [r.headers["host"] for r in origin.requests] == [f"only-six.test:{origin.port}"] * 2


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:99999/sse", "http://127.0.0.1:abc/sse", "not a url", "ftp://h/"]
)
async def test_an_invalid_url_is_a_typed_error_at_once(url: str) -> None:
    async with SSEClient() as client:
        with pytest.raises(SSEInvalidURLError) as info:
            client.connect(url)  # raised by connect() itself: nothing is sent, nothing is retried
    assert isinstance(info.value, SSEConnectionError) and isinstance(info.value, ValueError)
    assert info.value.status is None


@pytest.fixture(scope="module")
def tls_close_without_notify_url(server_ssl: ssl.SSLContext) -> Iterator[str]:
    """An https origin that sends a 4 MiB close-delimited body at once, then closes its socket without
    TLS close_notify (as many servers do): the TLS layer sees the FIN with data still to decrypt."""
    body = b"".join(b"id: %d\ndata: " % i + bytes([65 + i]) * (1 << 20) + b"\n\n" for i in range(4))
    head_bytes = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                with server_ssl.wrap_socket(raw, server_side=True) as tls:
                    request = b""
                    while b"\r\n\r\n" not in request:
                        request += tls.recv(4096)
                    tls.sendall(head_bytes + body)
                    tls.shutdown(socket.SHUT_RDWR)  # FIN, no close_notify
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{listener.getsockname()[1]}/sse"
    finally:
        stop.set()
        listener.close()
        thread.join(5)


async def test_tls_close_delimited_body_is_read_to_its_last_byte(
    tls_close_without_notify_url: str, client_ssl: ssl.SSLContext
) -> None:
    async with SSEClient() as client:
        for _ in range(5):  # the loss, when there was one, hit about every other read
            async with client.connect(tls_close_without_notify_url, ssl=client_ssl, reconnect=False) as conn:
                got = [(event["id"], len(event["data"])) async for event in conn]
            assert got == [(str(i), 1 << 20) for i in range(4)]
