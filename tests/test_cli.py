"""The command line, tested as a user runs it: real subprocesses against a loopback demo server.

Every run is bounded by a timeout; the server listens on 127.0.0.1 only and is stopped at the end.
Nothing is timed: a test that needs a child to have reached a point waits for what it writes there,
and "at once" is checked as "not retried" (the requests the server saw, the lines the CLI wrote).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

import sonicsse
from sonicsse._demo import CHAT_TEXT, DemoServer, chat_tokens, serve_in_thread

from client_helpers import wait_until
from servers import free_port

RUN_TIMEOUT = 60
POSIX = os.name == "posix"
needs_posix = pytest.mark.skipif(not POSIX, reason="needs POSIX signals and pseudo-terminals")

try:
    import uvloop  # noqa: F401

    LOOPS = ["asyncio", "uvloop"]
except ImportError:  # pragma: no cover - no uvloop on this platform
    LOOPS = ["asyncio"]

EVENTS_3 = [
    {"data": '{"n": 1}', "event": None, "id": "1", "retry": None},
    {"data": "update 2\nsecond line", "event": "update", "id": "2", "retry": None},
    {"data": "ping 3", "event": "ping", "id": "3", "retry": None},
]

TEXT_3 = """\
event: message
id: 1
data: {"n": 1}

event: update
id: 2
data: update 2
data: second line

event: ping
id: 3
data: ping 3

"""


@pytest.fixture(scope="module")
def server() -> Iterator[DemoServer]:
    with serve_in_thread(token_delay=0) as s:
        yield s


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("NO_COLOR", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def cli(
    *args: str, input: str | None = None, timeout: float = RUN_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """``python -m sonicsse ARGS`` with stdout and stderr captured separately."""
    return subprocess.run(
        [sys.executable, "-m", "sonicsse", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
        env=_env(),
    )


def console_script() -> str:
    """The installed ``sonicsse`` console script (next to this interpreter, or on PATH)."""
    here = Path(sys.executable).parent / ("sonicsse.exe" if os.name == "nt" else "sonicsse")
    found = str(here) if here.exists() else shutil.which("sonicsse")
    if found is None:
        pytest.skip("the sonicsse console script is not installed")
    return found


def spawn(*args: str, dev: bool = False, **popen: Any) -> subprocess.Popen[Any]:
    """``python -m sonicsse ARGS`` running in the background, stdout and stderr piped unless ``popen``
    says otherwise; ``dev``: in Python's development mode, which reports unclosed sockets and
    transports and never-awaited coroutines on stderr."""
    flags = ["-X", "dev"] if dev else []
    popen = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "env": _env(), **popen}
    return subprocess.Popen([sys.executable, *flags, "-m", "sonicsse", *args], **popen)


class Output:
    """What a child writes to one pipe, read by a thread as it comes: a test waits for a piece of it
    (rather than sleeping until it is probably there), and gets all of it at the end."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self.pipe = pipe
        self._data = bytearray()
        self._ended = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe: IO[bytes]) -> None:
        while data := pipe.read1(65536):  # type: ignore[attr-defined]
            with self._changed:
                self._data += data
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    @property
    def text(self) -> str:
        with self._changed:
            return self._data.decode(errors="replace")

    def wait_for(self, needle: str, timeout: float = RUN_TIMEOUT) -> str:
        """Everything written once ``needle`` was; fails when the pipe ends first (``timeout`` only
        bounds a hang)."""
        wanted = needle.encode()
        with self._changed:
            self._changed.wait_for(lambda: wanted in self._data or self._ended, timeout)
        text = self.text
        assert needle in text, f"{needle!r} never came; got {text!r}"
        return text

    def end(self) -> str:
        """Everything written, once the pipe ended (the child exited)."""
        self._thread.join(RUN_TIMEOUT)
        return self.text


def reap(proc: subprocess.Popen[Any], *readers: Output) -> str:
    """Kill ``proc`` unless it ended, wait for it and close its pipes; gives what it wrote on stderr.
    ``readers``: the :class:`Output` readers of some of its pipes (they take the rest first)."""
    proc.kill()
    proc.wait()
    read = {id(reader.pipe): reader.end() for reader in readers}
    err = read.get(id(proc.stderr))
    if err is None and proc.stderr is not None and not proc.stderr.closed:
        data = proc.stderr.read()
        err = data.decode(errors="replace") if isinstance(data, bytes) else data
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
    return err or ""


def requests_to(server: DemoServer, path: str) -> list[Any]:
    return [r for r in server.requests if r.path == path]


# -- version, help, demo ------------------------------------------------------------------------


def test_version_prints_version_and_implementation() -> None:
    r = cli("--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"sonicsse {sonicsse.__version__} ")
    assert f"decoder: {sonicsse.IMPLEMENTATION}" in r.stdout
    assert r.stderr == ""


def test_help_exits_0() -> None:
    r = cli("--help")
    assert r.returncode == 0
    for option in (
        "--method",
        "--header",
        "--data",
        "--json",
        "--last-event-id",
        "--no-reconnect",
        "--stats",
    ):
        assert option in r.stdout


def test_demo_via_console_script() -> None:
    """The README's first command, as typed: `sonicsse demo`."""
    r = subprocess.run(
        [console_script(), "demo", "--events", "20000", "--token-delay", "0"],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        env=_env(),
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert CHAT_TEXT in r.stdout
    assert "20,000 events" in r.stdout
    assert f"decoder: {sonicsse.IMPLEMENTATION}" in r.stdout
    assert "\x1b[" not in r.stdout  # not a terminal: no colors
    assert r.stderr == ""


@pytest.mark.parametrize("loop", LOOPS)
def test_demo_json_summary(loop: str) -> None:
    r = cli("demo", "--json", "--events", "30000", "--token-delay", "0", "--loop", loop)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)  # nothing else on stdout
    assert summary["decoder"] == sonicsse.IMPLEMENTATION
    assert summary["loop"] == loop
    assert summary["chat"]["text"] == CHAT_TEXT
    assert summary["bulk"]["events"] == 30000
    assert summary["bulk"]["bytes"] > 30000 * 40
    assert summary["bulk"]["events_per_second"] > 0


def test_demo_uses_uvloop_when_installed() -> None:
    r = cli("demo", "--json", "--events", "1000", "--token-delay", "0")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["loop"] == LOOPS[-1]


@needs_posix
def test_demo_no_color_on_a_terminal() -> None:
    """On a terminal the demo is colored, unless --no-color."""

    def run_on_pty(*extra: str) -> str:
        import pty

        master, slave = pty.openpty()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "sonicsse", "demo", "--events", "1000", "--token-delay", "0", *extra],
                stdout=slave,
                stderr=slave,
                env=_env(),
            )
            os.close(slave)
            out = _read_all(master, proc, timeout=RUN_TIMEOUT)
            assert proc.wait(timeout=10) == 0
            return out
        finally:
            os.close(master)

    assert "\x1b[" in run_on_pty()
    assert "\x1b[" not in run_on_pty("--no-color")


def _read_all(fd: int, proc: subprocess.Popen[Any], timeout: float) -> str:
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    return b"".join(chunks).decode(errors="replace")


# -- output modes -------------------------------------------------------------------------------


@pytest.mark.parametrize("loop", LOOPS)
def test_text_output(server: DemoServer, loop: str) -> None:
    r = cli(f"{server.url}/events?n=3", "--no-reconnect", "--loop", loop)
    assert r.returncode == 0, r.stderr
    assert r.stdout == TEXT_3
    assert r.stderr == ""


@pytest.mark.parametrize("where", ["--jsonl", "--json-last", "--json-first"])
def test_json_lines_output(server: DemoServer, where: str) -> None:
    url = f"{server.url}/events?n=3"
    if where == "--jsonl":
        args = [url, "--jsonl", "--no-reconnect"]
    elif where == "--json-last":
        args = [url, "--no-reconnect", "--json"]
    else:  # a bare --json before the URL: the URL is not taken for a JSON body
        args = ["--no-reconnect", "--json", url]
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    assert [json.loads(line) for line in r.stdout.splitlines()] == EVENTS_3
    assert requests_to(server, "/events")[-1].method == "GET"
    # a bare --json is the former spelling of --jsonl: it still works, and says so
    assert ("deprecated: use --jsonl" in r.stderr) is (where != "--jsonl")


def test_data_only_output(server: DemoServer) -> None:
    r = cli(f"{server.url}/events?n=3", "--data-only", "--no-reconnect")
    assert r.returncode == 0, r.stderr
    assert r.stdout == '{"n": 1}\nupdate 2\nsecond line\nping 3\n'


def test_done_ends_at_the_sentinel_without_reconnecting(server: DemoServer) -> None:
    """The demo's chat route ends its GET stream after [DONE] without a 204: without --done the CLI
    would reconnect (as EventSource does); with it the run ends there, exit 0."""
    r = cli(f"{server.url}/v1/chat/completions", "--data-only", "--done", "[DONE]", "--retry-delay", "60000")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines and "[DONE]" not in lines
    assert all(json.loads(line)["object"] == "chat.completion.chunk" for line in lines)


def test_event_filter(server: DemoServer) -> None:
    r = cli(f"{server.url}/events?n=9", "--jsonl", "--no-reconnect", "--event", "ping", "--event", "message")
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()]
    assert [e["id"] for e in events] == ["1", "3", "4", "6", "7", "9"]
    assert {e["event"] for e in events} == {None, "ping"}


@pytest.mark.parametrize("loop", LOOPS)
def test_max_events_stops_an_endless_stream(server: DemoServer, loop: str) -> None:
    r = cli(f"{server.url}/events?n=0&interval=20", "--data-only", "-n", "4", "--loop", loop)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ['{"n": 1}', "update 2", "second line", "ping 3", '{"n": 4}']


def test_max_events_counts_after_the_filter(server: DemoServer) -> None:
    r = cli(f"{server.url}/events?n=0", "--jsonl", "--event", "ping", "-n", "2")
    assert r.returncode == 0, r.stderr
    assert [json.loads(line)["id"] for line in r.stdout.splitlines()] == ["3", "6"]


def test_stats_go_to_stderr_only(server: DemoServer) -> None:
    r = cli(f"{server.url}/bulk?n=5000", "--jsonl", "--no-reconnect", "--stats")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 5000
    assert all(json.loads(line)["event"] == "tick" for line in lines)
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("total: 5,000 events")
    assert "events/s" in last and "reconnects" in last and "\r" not in r.stderr


@needs_posix
def test_stats_update_in_place_on_a_terminal(server: DemoServer) -> None:
    import pty

    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sonicsse", f"{server.url}/events?n=0&interval=50", "--stats", "-n", "20"],
            stdout=subprocess.DEVNULL,
            stderr=slave,
            env=_env(),
        )
        os.close(slave)
        err = _read_all(master, proc, timeout=RUN_TIMEOUT)
        assert proc.wait(timeout=10) == 0
    finally:
        os.close(master)
    assert err.count("\r\x1b[K") >= 2  # rewritten in place several times
    assert re.search(r"\r\x1b\[Ktotal: \d+ events .* 0 reconnects", err), err


# -- requests -------------------------------------------------------------------------------


def test_post_with_json_body_and_headers(server: DemoServer) -> None:
    before = len(requests_to(server, "/v1/chat/completions"))
    r = cli(
        f"{server.url}/v1/chat/completions",
        "-H",
        "Authorization: Bearer sk-test",
        "-H",
        "X-Trace:  abc ",
        "--json",
        '{"model": "m1", "stream": true}',
        "--data-only",
    )
    assert r.returncode == 0, r.stderr
    req = requests_to(server, "/v1/chat/completions")[-1]
    assert req.method == "POST"
    assert json.loads(req.body) == {"model": "m1", "stream": True}
    assert req.headers["authorization"] == "Bearer sk-test"
    assert req.headers["x-trace"] == "abc"
    assert req.headers["accept"] == "text/event-stream"
    lines = r.stdout.splitlines()
    assert lines[-1] == "[DONE]"  # a POST stream without ids ends with the response: no re-send
    chunks = [json.loads(line) for line in lines[:-1]]
    assert all(c["model"] == "m1" for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == CHAT_TEXT
    assert len(requests_to(server, "/v1/chat/completions")) == before + 1


def test_data_from_file_and_method(server: DemoServer, tmp_path: Path) -> None:
    body = tmp_path / "body.json"
    body.write_bytes(b'{"model": "from-file"}')
    r = cli(f"{server.url}/v1/chat/completions", "-X", "put", "-d", f"@{body}", "-n", "1", "--jsonl")
    assert r.returncode == 0, r.stderr
    req = requests_to(server, "/v1/chat/completions")[-1]
    assert req.method == "PUT"
    assert req.body == b'{"model": "from-file"}'


def test_data_from_stdin(server: DemoServer) -> None:
    r = cli(f"{server.url}/v1/chat/completions", "-d", "@-", "-n", "1", input='{"model": "stdin"}')
    assert r.returncode == 0, r.stderr
    req = requests_to(server, "/v1/chat/completions")[-1]
    assert (req.method, req.body) == ("POST", b'{"model": "stdin"}')


def test_last_event_id_resumes(server: DemoServer) -> None:
    r = cli(f"{server.url}/events?n=6", "--last-event-id", "4", "--jsonl", "--no-reconnect")
    assert r.returncode == 0, r.stderr
    assert [json.loads(line)["id"] for line in r.stdout.splitlines()] == ["5", "6"]
    assert requests_to(server, "/events")[-1].headers["last-event-id"] == "4"


def test_reconnects_with_last_event_id_until_204(server: DemoServer) -> None:
    """The server drops the connection every 2 events; each event is printed once; 204 ends it (exit 0)."""
    r = cli(f"{server.url}/events?n=7&drop=2", "--jsonl", "--retry-delay", "20", "--stats")
    assert r.returncode == 0, r.stderr
    assert [json.loads(line)["id"] for line in r.stdout.splitlines()] == ["1", "2", "3", "4", "5", "6", "7"]
    assert "3 reconnects" in r.stderr.strip().splitlines()[-1]  # 4 streams, then the 204


def test_a_finished_stream_without_ids_ends_the_run(server: DemoServer) -> None:
    """Like curl: the server ended the stream and sent no event id, so there is nothing to resume."""
    before = len(requests_to(server, "/bulk"))
    r = cli(f"{server.url}/bulk?n=3", "--jsonl")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 3  # printed once, not replayed
    assert len(requests_to(server, "/bulk")) == before + 1
    assert r.stderr == ""


def test_a_finished_chat_answer_ends_the_run(server: DemoServer) -> None:
    before = len(requests_to(server, "/v1/chat/completions"))
    r = cli(f"{server.url}/v1/chat/completions", "--data-only")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines().count("[DONE]") == 1  # one answer, not replayed
    assert len(requests_to(server, "/v1/chat/completions")) == before + 1


def test_reconnect_flag_reconnects_a_stream_without_ids(server: DemoServer) -> None:
    before = len(requests_to(server, "/bulk"))
    r = cli(f"{server.url}/bulk?n=3", "--jsonl", "--reconnect", "--retry-delay", "10", "-n", "7")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 7
    assert len(requests_to(server, "/bulk")) == before + 3  # three streams of 3 events for 7 printed


def test_help_says_when_it_reconnects() -> None:
    text = " ".join(cli("--help").stdout.split())
    assert "When the server ends the stream, sonicsse ends too (exit 0), unless the stream sent event" in text
    assert "--reconnect" in text and "--no-reconnect" in text


def test_follow_redirects(server: DemoServer) -> None:
    url = f"{server.url}/redirect?to=/events%3Fn%3D2"
    r = cli(url, "-L", "--data-only", "--no-reconnect")
    assert r.returncode == 0, r.stderr
    assert r.stdout == '{"n": 1}\nupdate 2\nsecond line\n'
    r = cli(url, "--no-reconnect")
    assert r.returncode == 1
    assert "302" in r.stderr


# -- exit codes ---------------------------------------------------------------------------------


def test_204_is_a_clean_end(server: DemoServer) -> None:
    r = cli(f"{server.url}/status/204")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")


@pytest.mark.parametrize("status", [404, 401])
def test_http_error_exits_1_with_one_line(server: DemoServer, status: int) -> None:
    before = len(requests_to(server, f"/status/{status}"))
    r = cli(f"{server.url}/status/{status}")
    assert r.returncode == 1
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"sonicsse: error: GET {server.url}/status/{status}: ")
    assert str(status) in lines[0]
    assert len(requests_to(server, f"/status/{status}")) == before + 1  # not retried


def test_wrong_content_type_exits_1(server: DemoServer) -> None:
    r = cli(f"{server.url}/text")
    assert r.returncode == 1
    assert len(r.stderr.splitlines()) == 1
    assert "text/plain" in r.stderr


@pytest.mark.parametrize("extra", [[], ["--no-reconnect"], ["-X", "POST"]])
def test_connection_refused_exits_1_at_once(extra: list[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}/events"
    r = cli(url, *extra)
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr  # a retried failure would have said "retrying in" first
    assert url in lines[0]
    assert "refused" in lines[0].lower()
    assert "gave up" not in lines[0]


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["http://127.0.0.1:1/", "-H", "no colon here"],
        ["http://127.0.0.1:1/", "--json", "{not json"],
        ["http://127.0.0.1:1/", "-n", "-1"],
        ["http://127.0.0.1:1/", "--bogus"],
        ["ftp://127.0.0.1:1/"],
        ["http://127.0.0.1:99999/"],
        ["http://127.0.0.1:abc/"],
        ["http://not a url/"],
        ["http://127.0.0.1:1/", "-d", "x", "--json", "{}"],
        ["http://127.0.0.1:1/", "-d", "@/nonexistent/body"],
        ["http://127.0.0.1:1/", "--jsonl", "--data-only"],
        ["http://127.0.0.1:1/", "--json", "--data-only"],
        ["http://127.0.0.1:1/", "--data-only", "--json"],
        ["demo", "--events", "many"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    r = cli(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "usage:" in r.stderr
    assert "Traceback" not in r.stderr
    assert len([line for line in r.stderr.splitlines() if "error:" in line]) == 1
    assert r.stdout == ""


@needs_posix
def test_broken_pipe_is_quiet(server: DemoServer) -> None:
    """`sonicsse URL | head -n 1`: the reader goes away; no traceback."""
    proc = spawn(f"{server.url}/events?n=0&interval=10", "--data-only")
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline() == b'{"n": 1}\n'
    proc.stdout.close()
    try:
        code = proc.wait(timeout=RUN_TIMEOUT)
    finally:
        err = reap(proc)
    assert code == 0, err
    assert "Traceback" not in err


@needs_posix
@pytest.mark.parametrize("loop", LOOPS)
def test_sigint_exits_130_and_closes_the_socket(loop: str) -> None:
    """Ctrl-C: exit 130, the server sees the connection close, nothing leaks."""
    with serve_in_thread(token_delay=0) as server:
        proc = spawn(f"{server.url}/events?n=0&interval=100", "--data-only", "--loop", loop, dev=True)
        assert proc.stdout is not None and proc.stderr is not None
        try:
            assert proc.stdout.readline() == b'{"n": 1}\n'
            assert server.active_connections == 1
            proc.send_signal(signal.SIGINT)
            code = proc.wait(timeout=10)  # it ends on its own (the stream is endless)
        finally:
            err = reap(proc)
        assert code == 130, err
        for leak in ("Traceback", "Unclosed", "unclosed", "never awaited", "Task was destroyed"):
            assert leak not in err, err
        assert wait_until(lambda: server.active_connections == 0, timeout=10)
        assert len(server.requests) == 1  # closed, not reconnected


@needs_posix
def test_serve_runs_until_ctrl_c() -> None:
    proc = spawn("serve", "--port", "0", "--no-color", text=True)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        first = proc.stdout.readline()
        assert first.startswith("sonicsse demo server on http://127.0.0.1:")
        url = first.split()[4]
        r = cli(f"{url}/events?n=2", "--data-only", "--no-reconnect")
        assert r.returncode == 0, r.stderr
        assert r.stdout == '{"n": 1}\nupdate 2\nsecond line\n'
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        reap(proc)


def test_serve_port_in_use_exits_1() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = cli("serve", "--port", str(port))
    assert r.returncode == 1
    assert f"127.0.0.1:{port}" in r.stderr


# -- transport and reconnection options -----------------------------------------------------------


def test_insecure_accepts_a_self_signed_certificate() -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    with serve_in_thread(token_delay=0, ssl=ctx) as server:
        assert server.url.startswith("https://")
        r = cli(f"{server.url}/events?n=3", "--no-reconnect")
        assert r.returncode == 1
        assert "certificate" in r.stderr.lower() or "ssl" in r.stderr.lower(), r.stderr
        r = cli(f"{server.url}/events?n=3", "--no-reconnect", "--insecure")
        assert r.returncode == 0, r.stderr
        assert r.stdout == TEXT_3


def test_read_timeout_ends_a_stalled_stream(server: DemoServer) -> None:
    """The next event would come in 10,000 s: the 0.5 s read timeout ends the run (it would hang)."""
    r = cli(
        f"{server.url}/events?n=0&interval=10000", "--read-timeout", "0.5", "--no-reconnect", "--data-only"
    )
    assert r.returncode == 1
    assert r.stdout == '{"n": 1}\n'
    assert "read_timeout" in r.stderr or "no data" in r.stderr, r.stderr


def test_json_body_from_file(server: DemoServer, tmp_path: Path) -> None:
    body = tmp_path / "request.json"
    body.write_text('{"model": "file-model", "stream": true}')
    r = cli(f"{server.url}/v1/chat/completions", "--json", f"@{body}", "-n", "1", "--jsonl")
    assert r.returncode == 0, r.stderr
    req = requests_to(server, "/v1/chat/completions")[-1]
    assert (req.method, json.loads(req.body)) == ("POST", {"model": "file-model", "stream": True})


@needs_posix
def test_survives_a_server_restart_and_resumes() -> None:
    """Once a stream was open, a dead server is retried (forever by default) and the stream resumes."""
    with serve_in_thread(token_delay=0) as first:
        port = first.port
        proc = spawn(f"{first.url}/events?n=0&interval=30", "--jsonl", "--retry-delay", "50", "--verbose")
        assert proc.stdout is not None and proc.stderr is not None
        stderr = Output(proc.stderr)
        try:
            assert json.loads(proc.stdout.readline())["id"] == "1"
        except BaseException:
            reap(proc, stderr)
            raise
    try:
        # The first server is gone: its connection dropped, new ones are refused until the second
        # server listens. The CLI says so and carries on.
        needle = f"failed: connection refused by 127.0.0.1:{port}"
        refused = next(line for line in stderr.wait_for(needle).splitlines() if needle in line)
        assert "retrying in" in refused, refused
        assert proc.poll() is None, "gave up although a stream had been open"
        with serve_in_thread(port, token_delay=0) as second:
            seen: list[str] = []
            while len(seen) < 3:
                seen.append(json.loads(proc.stdout.readline())["id"])
            resumed = second.requests[0].headers.get("last-event-id")
            assert resumed is not None and int(resumed) >= 1
            assert str(int(resumed) + 1) in seen
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=10) == 130
    finally:
        err = reap(proc, stderr)
    assert "Traceback" not in err
    assert "retrying" in err or "reconnecting" in err, err


def test_max_retries_gives_up_after_the_server_is_gone() -> None:
    with serve_in_thread(token_delay=0) as server:
        url = f"{server.url}/events?n=0&interval=30"
        proc = spawn(url, "--data-only", "--retry-delay", "20", "--max-retries", "2", text=True)
        assert proc.stdout is not None and proc.stderr is not None
        try:
            assert proc.stdout.readline() == '{"n": 1}\n'
        except BaseException:
            reap(proc)
            raise
    try:  # the server has stopped: every attempt is refused
        code = proc.wait(timeout=30)
    finally:
        err = reap(proc)
    assert code == 1, err
    *retries, last = err.splitlines()
    assert "gave up after 3 failed attempts" in last and url in last and "connection refused" in last
    # every failure that was retried said so, once: the dropped stream, then the refused attempts
    assert len(retries) == 3 and all("failed:" in line and "retrying in" in line for line in retries)
    assert "connection refused" in retries[-1]


def test_json_body_before_the_url(server: DemoServer) -> None:
    """`--json '{...}' URL`: a value that looks like JSON is the body, and the URL stays the URL."""
    r = cli("--json", '{"model": "first"}', f"{server.url}/v1/chat/completions", "--jsonl", "-n", "1")
    assert r.returncode == 0, r.stderr
    req = requests_to(server, "/v1/chat/completions")[-1]
    assert (req.method, json.loads(req.body)) == ("POST", {"model": "first"})
    assert json.loads(r.stdout)["event"] is None  # JSON lines, as --jsonl asked


@needs_posix
def test_sigint_during_the_demo_exits_130() -> None:
    proc = spawn("demo", "--token-delay", "200", "--no-color")
    assert proc.stdout is not None and proc.stderr is not None
    stdout = Output(proc.stdout)
    try:
        assert "demo: embedded SSE server on http://127.0.0.1:" in stdout.wait_for("\n")
        stdout.wait_for(chat_tokens()[0])  # inside the token stream
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 130
    finally:
        err = reap(proc, stdout)
    assert "Traceback" not in err


def test_parse_error_exits_1(server: DemoServer) -> None:
    """A line over the client's limit is a parse error: the events before it are printed, then exit 1."""
    r = cli(f"{server.url}/huge", "--data-only")
    assert r.returncode == 1
    assert r.stdout == "small\n"
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"sonicsse: error: GET {server.url}/huge: ")
    assert "line" in lines[0]


@contextlib.contextmanager
def _async_cm_in_thread(factory: Callable[[], Any]) -> Iterator[Any]:
    """Enter an async context manager on an event loop of its own, in a background thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    cm = factory()
    try:
        value = asyncio.run_coroutine_threadsafe(cm.__aenter__(), loop).result(10)
        try:
            yield value
        finally:
            asyncio.run_coroutine_threadsafe(cm.__aexit__(None, None, None), loop).result(10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_http2_insecure() -> None:
    """`--http2 -k` against an HTTP/2-only TLS server (tests/servers.py's H2Server, self-signed)."""
    pytest.importorskip("trustme")
    pytest.importorskip("h2")
    from servers import H2Server

    pieces = [b"id: 1\ndata: over h2\n\n", b"event: note\ndata: second\n\n"]
    with _async_cm_in_thread(lambda: H2Server(pieces)) as srv:
        r = cli(srv.url(), "--http2", "--insecure", "--no-reconnect", "--jsonl")
        assert r.returncode == 0, r.stderr
        assert [json.loads(line) for line in r.stdout.splitlines()] == [
            {"data": "over h2", "event": None, "id": "1", "retry": None},
            {"data": "second", "event": "note", "id": None, "retry": None},
        ]
        assert srv.requests[0][":method"] == "GET"


@pytest.mark.parametrize("encoding", ["utf-8", "ascii"])
def test_non_ascii_data_never_crashes_the_output(server: DemoServer, encoding: str) -> None:
    url = f"{server.url}/echo?data=caf%C3%A9%20%E2%9C%93&event=n%C3%B8te"
    r = subprocess.run(
        [sys.executable, "-m", "sonicsse", url, "--no-reconnect"],
        capture_output=True,
        timeout=RUN_TIMEOUT,
        env={**_env(), "PYTHONIOENCODING": encoding},
    )
    assert r.returncode == 0, r.stderr
    if encoding == "utf-8":
        assert r.stdout.decode() == "event: nøte\ndata: café ✓\n\n"
    else:  # a console that cannot show it: escaped, not a UnicodeEncodeError
        assert r.stdout.decode() == "event: n\\xf8te\ndata: caf\\xe9 \\u2713\n\n"
