"""What a user meets when a stream cannot be opened: messages a person reads, with the original exception
chained; failures that retrying cannot fix raised at once; every retried failure logged as a warning and
given to ``on_error``."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl

import pytest
from aiosonic.exceptions import ConnectionDisconnected, ConnectTimeout, ReadTimeout

from sonicsse import SSEClient, SSEConnectionError
from sonicsse._errors import describe_failure
from sonicsse._tunnel import ProxyError

from servers import HandlerServer, ScriptServer, free_port, head, sse_chunked

pytestmark = pytest.mark.usefixtures("client_decoder")  # the client tests run on both twins' hot path


def _ssl_error(reason: str) -> ssl.SSLError:
    exc = ssl.SSLError(1, f"[SSL: {reason}] {reason.lower()}")
    exc.reason = reason
    return exc


@pytest.mark.parametrize(
    ("exc", "url", "expected"),
    [
        (ConnectionRefusedError(111, "no"), "http://127.0.0.1:87/e", "connection refused by 127.0.0.1:87"),
        (socket.gaierror(-2, "Name unknown"), "https://no.invalid/e", 'cannot resolve host "no.invalid"'),
        (
            _ssl_error("WRONG_VERSION_NUMBER"),
            "https://127.0.0.1:8765/e",
            "did not answer TLS (is it http://?)",
        ),
        (ConnectTimeout(), "https://127.0.0.1:8765/e", "server speaks plain http"),
        (ConnectTimeout(), "http://10.9.9.9/e", "could not connect to 10.9.9.9:80 in time"),
        (ReadTimeout(), "http://h:1/e", "h:1 accepted the connection but sent no response in time"),
        (ConnectionDisconnected(), "http://h:1/e", "h:1 closed the connection before answering"),
        (ConnectionResetError(104, "reset"), "http://[::1]:9/e", "connection reset by [::1]:9"),
        (ProxyError("proxy http://p:1 refused CONNECT h:443: 403", 403), "https://h/", "refused CONNECT"),
        (RuntimeError("odd"), "http://h:1/", "request to h:1 failed: RuntimeError: odd"),
    ],
)
def test_failure_messages_say_what_where_and_why(exc: BaseException, url: str, expected: str) -> None:
    message = describe_failure(exc, url)
    assert expected in message
    assert "Error(" not in message  # no Python reprs


async def test_refused_connection_is_retried_visibly_then_given_up(caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://127.0.0.1:{free_port()}/sse"
    errors: list[BaseException] = []
    caplog.set_level(logging.WARNING, logger="sonicsse")
    async with SSEClient() as client:
        with pytest.raises(SSEConnectionError) as info:
            await client.connect(url, retry_delay=1, max_retries=2, on_error=errors.append)
    assert "gave up after 3 failed attempts" in str(info.value)
    assert "connection refused by 127.0.0.1" in str(info.value)
    assert isinstance(info.value.__cause__, ConnectionRefusedError)  # the original, chained
    assert len(errors) == 3 and all("connection refused" in str(e) for e in errors)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # the attempts that were followed by another, once each
    assert all("connection refused" in r.getMessage() and "retrying in" in r.getMessage() for r in warnings)


async def test_https_to_a_plain_http_server_is_not_retried() -> None:
    async def plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    async with HandlerServer(plain) as server, SSEClient() as client:
        with pytest.raises(SSEConnectionError, match=r"did not answer TLS \(is it http://\?\)") as info:
            await client.connect(f"https://127.0.0.1:{server.port}/sse")  # reconnect=True by default
    assert isinstance(info.value.__cause__, ssl.SSLError)
    assert server.connections == 1


async def test_a_redirect_to_a_url_that_cannot_be_requested_is_not_retried() -> None:
    redirect = [head(302, None, [("Location", "ftp://files.example/x")], framing="length"), "close"]
    async with ScriptServer([redirect]) as origin, SSEClient() as client:
        with pytest.raises(SSEConnectionError, match="unsupported URL scheme 'ftp'") as info:
            await client.connect(origin.url(), follow=True)
    assert isinstance(info.value, ValueError) and info.value.status == 302
    assert len(origin.requests) == 1


async def test_a_clean_end_is_logged_at_info_not_as_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sonicsse")
    steps = [sse_chunked(b"id: 1\ndata: a\n\n"), [b"HTTP/1.1 204 No Content\r\n\r\n"]]
    async with ScriptServer(steps) as srv:
        async with SSEClient() as client:
            async with client.connect(srv.url(), retry_delay=1) as conn:
                assert [e["data"] async for e in conn] == ["a"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("the stream ended; reconnecting" in r.getMessage() for r in caplog.records)
