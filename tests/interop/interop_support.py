"""Starting and stopping third-party servers for the interop tests, and reading streams from them.

Every server runs in its own process (a subprocess started by a session fixture), listens on a free
loopback port, is waited for with a bounded poll of its port and is stopped (SIGTERM, then SIGKILL)
when the session ends, also after a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from client_helpers import async_wait_until, wait_until
from servers import free_port, has_ipv6_loopback  # noqa: F401 - the interop fixtures take them from here

HERE = Path(__file__).resolve().parent
#: How long a server may take to accept connections, and to exit once told to.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0
#: The most one stream of a test may take (they take well under a second each).
STREAM_TIMEOUT = 10.0
#: Where Debian puts nginx (root's PATH has it, a user's often does not).
SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")


def missing(what: str) -> None:
    """Skip the test because ``what`` is not installed, or fail it under CI (``CI`` set), which
    installs every piece of third-party software these tests run."""
    message = f"{what} is not installed"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI is set: it must be installed there)", pytrace=False)
    pytest.skip(message)


def require_binary(name: str) -> str:
    """The path of the executable ``name`` (PATH, then the sbin folders); see :func:`missing`."""
    path = shutil.which(name)
    if path is None:
        path = next((str(Path(d, name)) for d in SBIN_DIRS if os.access(Path(d, name), os.X_OK)), None)
    if path is None:
        missing(f"the {name} executable")
    assert path is not None
    return path


def require_module(name: str) -> None:
    """Make sure the Python module ``name`` can be imported by a server subprocess; see :func:`missing`."""
    if importlib.util.find_spec(name) is None:
        missing(f"the Python module {name}")


def url_host(host: str) -> str:
    """``host`` as it goes in a URL (an IPv6 address in brackets)."""
    return f"[{host}]" if ":" in host else host


def _child_setup() -> None:  # pragma: no cover - runs in the child before exec
    # Linux: the server gets SIGTERM when the pytest process dies without running its teardown.
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    os.setsid()


@dataclass
class ServerProcess:
    """A running server subprocess and the ``(host, port)`` addresses it listens on."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    addresses: Sequence[tuple[str, int]] = field(default_factory=list)

    @property
    def port(self) -> int:
        """The port of the first address."""
        return self.addresses[0][1]

    def log_tail(self, size: int = 4000) -> str:
        """The end of the server's output (and of any log file it writes next to it)."""
        texts = []
        for path in sorted(self.log.parent.glob("*.log")):
            with contextlib.suppress(OSError):
                data = path.read_bytes()[-size:]
                texts.append(f"--- {path.name} ---\n{data.decode('utf-8', 'replace')}")
        return "\n".join(texts)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT; the whole process group (workers included)."""
        if self.proc.poll() is None:
            self._signal(terminate=True)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._signal(terminate=False)
                self.proc.wait(STOP_TIMEOUT)
        # Workers a server forked may outlive it in its group.
        self._signal(terminate=False)

    def _signal(self, terminate: bool) -> None:
        if not hasattr(os, "killpg"):  # Windows: no process groups to signal
            if self.proc.poll() is None and terminate:
                self.proc.terminate()
            elif self.proc.poll() is None:
                self.proc.kill()
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGTERM if terminate else signal.SIGKILL)

    def alive(self) -> bool:
        """The process has not exited."""
        return self.proc.poll() is None


@dataclass(frozen=True)
class Certs:
    """A test CA and one server certificate (127.0.0.1, ::1, localhost) as PEM files."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def client_context(self) -> ssl.SSLContext:
        """A client SSLContext that trusts the test CA only."""
        return ssl.create_default_context(cafile=str(self.ca_file))


@dataclass(frozen=True)
class Origin:
    """A running origin server: its base URL (no trailing slash) and process."""

    base: str
    server: ServerProcess

    def url(self, path: str) -> str:
        """The URL of ``path`` on this origin."""
        return self.base + path


@dataclass(frozen=True)
class Nginx:
    """The nginx origin: base URLs per listener (the ``*6`` ones None without IPv6 loopback)."""

    http: str
    https: str
    h2: str
    http6: str | None
    https6: str | None
    h2_6: str | None
    https_port: int
    https6_port: int | None
    server: ServerProcess


@dataclass(frozen=True)
class Proxy:
    """A running HTTP proxy: its URL (with the credentials it requires, if any) and process."""

    name: str
    url: str
    auth: bool
    server: ServerProcess
    log: Path


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait_listening(server: ServerProcess) -> bool:
    """Wait until every address accepts connections; False when the process exited first."""
    deadline = time.monotonic() + START_TIMEOUT
    for host, port in server.addresses:
        ok = wait_until(
            lambda h=host, p=port: _accepts(h, p) or not server.alive(), deadline - time.monotonic()
        )
        if not ok:
            server.stop()
            pytest.fail(f"{server.name} did not listen on {host}:{port} in time\n{server.log_tail()}")
        if not server.alive():
            return False
    return True


def start_server(
    name: str,
    workdir: Path,
    command: Any,
    hosts: Sequence[str] = ("127.0.0.1",),
    *,
    attempts: int = 3,
    env: dict[str, str] | None = None,
) -> ServerProcess:
    """Start a server in a subprocess and wait until it accepts connections on every address.

    ``command(ports)`` gives the argv (and may write config files) for one free port per entry of
    ``hosts``. When the process exits before listening (most likely a port taken in between), it is
    tried again with new ports, ``attempts`` times in all; then the test fails with its output.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"{name}.out.log"
    child_env = {**os.environ, **(env or {})}
    for key in [k for k in child_env if k.lower().endswith("_proxy")]:
        del child_env[key]
    child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    child_env["PYTHONUNBUFFERED"] = "1"
    for _ in range(attempts):
        ports = [free_port(h) for h in hosts]
        argv = [str(a) for a in command(ports)]
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                argv,
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=child_env,
                preexec_fn=_child_setup if sys.platform.startswith("linux") else None,
                start_new_session=not sys.platform.startswith("linux"),
            )
        server = ServerProcess(name, proc, log, list(zip(hosts, ports, strict=True)))
        try:
            if _wait_listening(server):
                return server
        except BaseException:
            server.stop()
            raise
        server.stop()
    pytest.fail(f"{name} exited before listening, {attempts} times: {' '.join(argv)}\n{server.log_tail()}")


@contextlib.contextmanager
def running(server: ServerProcess) -> Iterator[ServerProcess]:
    """Yield the server and stop it afterwards. A server that died while in use is an error of the
    session's teardown, with its output: the failures it caused have their explanation."""
    try:
        yield server
    finally:
        died = not server.alive()
        server.stop()
    if died:
        pytest.fail(
            f"{server.name} exited while in use (code {server.proc.returncode})\n{server.log_tail()}",
            pytrace=False,
        )


def _short(value: Any, limit: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit // 2]}...{text[-limit // 2 :]} ({len(text)} chars)"


def assert_same(got: Sequence[Any], expected: Sequence[Any], what: str = "events") -> None:
    """``got == expected``, reported as a count and the first difference (not a diff of megabytes)."""
    if list(got) == list(expected):
        return
    index = next(
        (i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b),
        min(len(got), len(expected)),
    )
    lines = [f"{len(got)} {what} read, {len(expected)} expected; first difference at index {index}"]
    if index < len(got):
        lines.append(f"  read:     {_short(got[index])}")
    if index < len(expected):
        lines.append(f"  expected: {_short(expected[index])}")
    pytest.fail("\n".join(lines), pytrace=False)


#: The kinds of stream every origin serves: the paths of the app's routes, and of nginx's static files.
KINDS = ("events", "big", "tokens")
APP_PATHS = {"events": "/events", "big": "/big", "tokens": "/v1/chat/completions"}
STATIC_PATHS = {"events": "/static/events.sse", "big": "/static/big.sse", "tokens": "/static/tokens.sse"}

#: nginx's locations (see conftest.NGINX_CONF): the framing of their bodies and their content encoding.
NGINX_LOCATIONS: dict[str, tuple[str, str | None]] = {
    "static": ("length", None),
    "chunked": ("chunked", None),
    "close": ("close", None),
    "gzip": ("chunked", "gzip"),
    "gzip-static": ("chunked", "gzip"),
}


def nginx_path(location: str, kind: str) -> str:
    """The path of the ``kind`` stream under an nginx location (see conftest.NGINX_CONF)."""
    if location == "static":
        return STATIC_PATHS[kind]
    if location == "gzip-static":
        return "/gzip-" + STATIC_PATHS[kind].lstrip("/")
    return f"/{location}{APP_PATHS[kind]}"


async def read_events(
    url: str,
    *,
    client: dict[str, Any] | None = None,
    heads: list[dict[str, str]] | None = None,
    **connect: Any,
) -> list[Any]:
    """Every event of the stream at ``url`` until the server ends it (no reconnection).

    ``client``: keyword arguments of ``SSEClient`` (``proxy``, ``trust_env``); ``connect``: those of
    ``connect()`` (``ssl``, ``http2``, ``headers``...); ``heads`` receives the response headers (names
    in lower case).
    """
    from sonicsse import SSEClient

    events: list[Any] = []

    async def read() -> None:
        async with SSEClient(**(client or {})) as sse:
            async with sse.connect(url, reconnect=False, on_open=_recorder(heads), **connect) as conn:
                async for event in conn:
                    events.append(event)

    await _bounded(read(), url, events)
    return events


async def read_json(
    url: str,
    *,
    client: dict[str, Any] | None = None,
    heads: list[dict[str, str]] | None = None,
    **connect: Any,
) -> list[Any]:
    """Every value ``iter_json()`` yields for the stream at ``url`` (it ends at ``[DONE]``)."""
    from sonicsse import SSEClient

    values: list[Any] = []

    async def read() -> None:
        async with SSEClient(**(client or {})) as sse:
            async with sse.connect(url, reconnect=False, on_open=_recorder(heads), **connect) as conn:
                async for value in conn.iter_json():
                    values.append(value)

    await _bounded(read(), url, values)
    return values


async def _bounded(reading: Coroutine[Any, Any, None], url: str, got: list[Any]) -> None:
    """Run ``reading``, failing the test after STREAM_TIMEOUT seconds: a client that hangs fails
    fast and says where, instead of waiting for aiosonic's own 60-second request timeout."""
    try:
        await asyncio.wait_for(reading, STREAM_TIMEOUT)
    except asyncio.TimeoutError:
        pytest.fail(
            f"no end of the stream at {url} after {STREAM_TIMEOUT} s ({len(got)} read)", pytrace=False
        )


def _recorder(heads: list[dict[str, str]] | None) -> Any:
    def on_open(status: int, headers: Any) -> None:
        if heads is not None:
            heads.append({str(k).lower(): str(v) for k, v in headers.items()})

    return on_open


async def check_stream(
    kind: str, url: str, *, client: dict[str, Any] | None = None, **connect: Any
) -> dict[str, str]:
    """Read the ``kind`` stream ("events", "big" or "tokens": POST + ``iter_json()``) at ``url`` and
    assert it is exactly what the server was told to send. Returns the response headers."""
    from .interop_content import CHAT_REQUEST, expected_big, expected_small, expected_tokens

    heads: list[dict[str, str]] = []
    if kind == "tokens":
        values = await read_json(url, client=client, heads=heads, method="POST", json=CHAT_REQUEST, **connect)
        assert_same(values, expected_tokens(), "token values")
    else:
        events = await read_events(url, client=client, heads=heads, **connect)
        assert_same(events, expected_small() if kind == "events" else expected_big())
    assert len(heads) == 1, heads
    return heads[0]


def framing(headers: dict[str, str]) -> str:
    """How an HTTP/1.x response's body is delimited: "chunked", "length" or "close"."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return "chunked"
    if "content-length" in headers:
        return "length"
    return "close"


def _tail(path: Path, size: int = 3000) -> str:
    try:
        return path.read_text("utf-8", "replace")[-size:]
    except FileNotFoundError:
        return "(no log file)"


def log_count(path: Path, needle: str) -> int:
    """How many lines of the log file at ``path`` contain ``needle`` (0 while it does not exist)."""
    try:
        text = path.read_text("utf-8", "replace")
    except FileNotFoundError:
        return 0
    return sum(needle in line for line in text.splitlines())


async def assert_logged(path: Path, needle: str, before: int, what: str, timeout: float = 10.0) -> None:
    """Wait (bounded) until the log at ``path`` has more lines with ``needle`` than ``before``: the
    proxy saw the request. proxy.py writes its access line when the client's connection closes,
    which the event loop does after the client closed it: the wait yields to the loop."""
    if not await async_wait_until(lambda: log_count(path, needle) > before, timeout):
        pytest.fail(f"{what}: no new line with {needle!r} in {path.name}\n{_tail(path)}", pytrace=False)


def assert_not_logged(path: Path, needle: str, before: int, what: str) -> None:
    """The log at ``path`` has no new line with ``needle``: the request did not go through the proxy.
    (A log line is written during the request, or when its connection closed, which it has by now:
    :func:`assert_logged` on a later request through the same proxy bounds the wait.)"""
    count = log_count(path, needle)
    if count != before:
        pytest.fail(f"{what}: {count - before} new line(s) with {needle!r} in {path.name}", pytrace=False)
