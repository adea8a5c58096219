"""The benchmark SSE server: a separate process on uvloop that writes pre-framed bytes.

Routes (one request per connection, the connection closes after the response):

- ``GET /w/<workload>``: the workload built at ``--scale`` (see ``benchmarks.workloads``), written as
  prepared; the server does no per-event work.
- ``GET /paced?n=N&interval_us=U``: N token events, one every U µs (absolute deadlines), each data
  starting with the server's ``time.monotonic_ns()`` at the write, zero-padded to 19 digits.

With ``--certfile`` it serves https (``tls_files`` makes a throw-away CA and a certificate for 127.0.0.1
with ``trustme``; clients trust the CA's file).

Started by ``benchmarks.e2e`` and ``benchmarks.concurrency``; prints ``READY <port>`` when listening.
Run it alone with ``python -m benchmarks.server --workloads bulk --scale 0.01``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast
from urllib.parse import parse_qs, urlsplit

from .workloads import WORKLOADS, Workload, build, paced_frame

SEND_BUFFER = 4 << 20
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def raise_fd_limit() -> int:
    """Raise the soft open-files limit to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            return hard
    return soft


def pin_cpu(which: str) -> None:
    """Pin this process to the last CPU ("server") or to the first one ("client") when ≥ 2 CPUs."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) >= 2:
        os.sched_setaffinity(0, {cpus[-1] if which == "server" else cpus[0]})


@contextlib.contextmanager
def server_process(cmd: list[str]) -> Iterator[int]:
    """Run a benchmark server (a ``python -m benchmarks...`` command that prints ``READY <port>`` and stops
    when its stdin ends) in its own process; yields its port; always stops it."""
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(cmd, cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("READY "):
            raise RuntimeError(f"benchmark server {cmd[2:]} did not start: {line!r}")
        yield int(line.split()[1])
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def tls_files(directory: str) -> tuple[str, str]:
    """A throw-away CA (``trustme``) and a certificate it signs for 127.0.0.1, written to ``directory``.

    Returns (the CA's PEM file, which clients trust; the server's key and certificate chain PEM file).
    """
    try:
        import trustme
    except ImportError as exc:
        raise SystemExit("--tls needs trustme: pip install trustme") from exc
    ca = trustme.CA()
    ca_file, cert_file = os.path.join(directory, "ca.pem"), os.path.join(directory, "server.pem")
    ca.cert_pem.write_to_path(ca_file)
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(cert_file)
    return ca_file, cert_file


class _Conn(asyncio.Protocol):
    """One client connection: reads the request head, then streams one response."""

    def __init__(self, workloads: dict[str, Workload]) -> None:
        self._workloads = workloads
        self._buf = b""
        self._transport: asyncio.Transport | None = None
        self._started = False
        self._closed = False
        self._resume: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        # Keep a few writes queued in the transport, so the kernel always has bytes to send.
        self._transport.set_write_buffer_limits(high=SEND_BUFFER)

    def data_received(self, data: bytes) -> None:
        if self._started:
            return
        self._buf += data
        if b"\r\n\r\n" not in self._buf:
            return
        self._started = True
        target = self._buf.split(b" ", 2)[1].decode("latin-1")
        self._task = asyncio.get_running_loop().create_task(self._serve(target))

    def pause_writing(self) -> None:
        self._resume = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        if self._resume is not None and not self._resume.done():
            self._resume.set_result(None)
        self._resume = None

    async def _write(self, data: bytes) -> bool:
        """Write with flow control; False once the peer is gone."""
        assert self._transport is not None
        if self._closed:
            return False
        self._transport.write(data)
        if self._resume is not None:
            await self._resume
        return not self._closed

    async def _serve(self, target: str) -> None:
        assert self._transport is not None
        url = urlsplit(target)
        try:
            if url.path == "/paced":
                query = parse_qs(url.query)
                await self._paced(int(query["n"][0]), int(query["interval_us"][0]) / 1e6)
            elif url.path.startswith("/w/") and url.path[3:] in self._workloads:
                await self._workload(self._workloads[url.path[3:]])
            else:
                self._transport.write(_NOT_FOUND)
        finally:
            self._transport.close()

    async def _workload(self, wl: Workload) -> None:
        if not await self._write(wl.head):
            return
        for piece in wl.writes:
            if not await self._write(piece):
                return

    async def _paced(self, n: int, interval: float) -> None:
        head = (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        if not await self._write(head):
            return
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(n):
            delay = start + i * interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if not await self._write(paced_frame(time.monotonic_ns(), i)):
                return
        await self._write(b"0\r\n\r\n")


async def serve(
    port: int, workloads: dict[str, Workload], watch_stdin: bool, tls: ssl.SSLContext | None = None
) -> None:
    """Listen on 127.0.0.1 (https with ``tls``) and serve until killed or, with ``watch_stdin``, until
    stdin closes."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Conn(workloads), "127.0.0.1", port, backlog=4096, ssl=tls)
    bound = server.sockets[0].getsockname()[1]
    print(f"READY {bound}", flush=True)
    if not watch_stdin:
        await asyncio.Event().wait()
    # The parent keeps our stdin open; EOF means it is gone, so never outlive it.
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await reader.read()
    server.close()


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, build the workloads, pin, and serve."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--watch-stdin", action="store_true", help="exit when stdin closes (parent gone)")
    parser.add_argument("--certfile", default=None, help="serve https with this key + certificate PEM")
    args = parser.parse_args(argv)
    raise_fd_limit()
    if not args.no_pin:
        pin_cpu("server")
    names = [w for w in args.workloads.split(",") if w]
    workloads = {name: build(name, args.scale) for name in names}
    tls = None
    if args.certfile:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.certfile)
    try:
        import uvloop

        uvloop.run(serve(args.port, workloads, args.watch_stdin, tls))
    except ImportError:
        asyncio.run(serve(args.port, workloads, args.watch_stdin, tls))


if __name__ == "__main__":
    main()
