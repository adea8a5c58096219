"""The ``sonicsse`` command line: stream any SSE endpoint from the shell, or run the built-in demo.

``sonicsse URL [options]``
    Connect to ``URL`` and print its events (``curl -N`` for event streams, with reconnection).
``sonicsse demo [options]``
    Start the embedded demo server on 127.0.0.1, stream an LLM-style answer and a bulk burst from
    it and print a summary. No server of your own needed.
``sonicsse serve [--port PORT]``
    Run the demo server in the foreground, for the README's examples and your own experiments.

Exit codes: 0 at a clean end, 1 on a connection or parse error, 2 on a usage error, 130 on Ctrl-C.
``python -m sonicsse`` is the same program.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import logging
import os
import platform
import re
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from http import HTTPStatus
from typing import IO, Any, NoReturn, TextIO

from . import _policy
from ._proxy import parse_proxy_url
from ._types import Event
from ._version import __version__

__all__ = ["main"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143

DEFAULT_DEMO_EVENTS = 500_000
DEFAULT_SERVE_PORT = 8765
STATS_INTERVAL_TTY = 0.25
STATS_INTERVAL_PIPE = 1.0


# --------------------------------------------------------------------------------------------
# argument parsing


class _UsageError(Exception):
    """A usage error found after argparse (reported like argparse's own, exit code 2)."""


class _JsonOption(argparse.Action):
    """``--json`` alone selects JSON-lines output; ``--json BODY`` sends a JSON request body.

    The two meanings come from the two things people type: ``sonicsse URL --json | jq`` and the
    curl-style ``sonicsse URL --json '{"stream": true}'``.  A value that does not look like JSON
    (``{...}``, ``[...]``, ``@file``) is not a body: it is the URL that followed a bare ``--json``.
    """

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        value = None if values is None else str(values)
        if value is not None and (value[:1] in ("{", "[", "@") or _is_json_scalar(value)):
            namespace.json_body = value
            return
        if getattr(namespace, "output", "text") == "data":
            parser.error("argument --json: not allowed with argument --data-only")
        namespace.output = "json"
        namespace.bare_json = True
        if value is not None:
            namespace.url_after_json = value


def _is_json_scalar(value: str) -> bool:
    if "://" in value:
        return False
    try:
        json.loads(value)
    except ValueError:
        return False
    return True


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return value


def _add_common_output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-color", action="store_true", help="never use colors (also: NO_COLOR=1)")
    parser.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="event loop: uvloop when installed (auto, the default), or force one",
    )


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``sonicsse URL [options]``."""
    parser = argparse.ArgumentParser(
        prog="sonicsse",
        usage="sonicsse [options] URL\n       sonicsse demo [--events N] [--json] [--no-color]\n"
        "       sonicsse serve [--port PORT]",
        description="Stream Server-Sent Events from URL and print them, like curl -N. When the server "
        "ends the stream, sonicsse ends too (exit 0), unless the stream sent event ids: then it "
        "reconnects with Last-Event-ID, as a browser's EventSource does, to resume where it stopped "
        "(--reconnect: always reconnect; --no-reconnect: never). A dropped connection, a timeout or a "
        "5xx is retried once a stream was open; the first connection is not retried unless "
        "--max-retries is given. "
        "`sonicsse demo` runs the built-in demo; `sonicsse serve` runs the demo server.",
        epilog="exit codes: 0 clean end (server finished, -n reached, 204), 1 connection or parse "
        "error, 2 usage error, 130 interrupted (Ctrl-C)",
    )
    parser.add_argument("url", nargs="?", metavar="URL", help="the event stream's URL (http or https)")
    parser.add_argument(
        "--version", action="store_true", help="print the version and the decoder implementation, then exit"
    )

    req = parser.add_argument_group("request")
    req.add_argument("-X", "--method", help="HTTP method (default: GET, or POST when a body is given)")
    req.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="add a request header (repeatable)",
    )
    req.add_argument("-d", "--data", metavar="DATA", help="request body: a string, @file, or @- for stdin")
    req.add_argument(
        "--json",
        nargs="?",
        action=_JsonOption,
        metavar="BODY",
        dest="json_body",
        help="with a value ('{...}', '[...]' or @file): send it as a JSON body; "
        "alone: print events as JSON lines (see below)",
    )
    req.add_argument("--json-body", dest="json_body", metavar="BODY", help="send BODY as JSON (unambiguous)")
    req.add_argument("--last-event-id", metavar="ID", help="resume from this event id (Last-Event-ID header)")
    req.add_argument("--http2", action="store_true", help="use HTTP/2")
    req.add_argument("-k", "--insecure", action="store_true", help="do not verify the TLS certificate")
    req.add_argument("-L", "--follow", action="store_true", help="follow redirects")
    req.add_argument(
        "-x",
        "--proxy",
        metavar="URL",
        help="send requests through this http:// proxy ([user:password@]host:port); https goes through "
        "a CONNECT tunnel. Default: HTTPS_PROXY / HTTP_PROXY / ALL_PROXY, except NO_PROXY hosts",
    )
    req.add_argument(
        "--no-env-proxy",
        action="store_true",
        help="ignore the proxy environment variables (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY)",
    )

    rec = parser.add_argument_group("reconnection")
    when = rec.add_mutually_exclusive_group()
    when.add_argument(
        "--reconnect",
        action="store_true",
        help="reconnect whenever the server ends the stream, even if it sent no event id",
    )
    when.add_argument("--no-reconnect", action="store_true", help="stop when the stream ends or fails")
    rec.add_argument(
        "--retry-delay",
        type=_positive_int,
        default=3000,
        metavar="MS",
        help="base reconnect delay (default 3000)",
    )
    rec.add_argument(
        "--max-retries",
        type=_positive_int,
        metavar="N",
        help="retry failed attempts (the first connection too) and give up after N in a row "
        "(default: the first connection is not retried, later ones are retried for ever)",
    )
    rec.add_argument(
        "--read-timeout",
        type=_positive_float,
        default=300.0,
        metavar="S",
        help="no bytes for S seconds means the stream is dead (default 300)",
    )
    rec.add_argument(
        "--resume-unsafe",
        action="store_true",
        help="also reconnect POST/PATCH streams that sent no event id (re-sends the request)",
    )

    out = parser.add_argument_group("output")
    out.add_argument(
        "--event",
        action="append",
        default=[],
        metavar="TYPE",
        help="print only events of this type (repeatable)",
    )
    out.add_argument(
        "-n", "--max-events", type=_positive_int, metavar="N", help="stop after N printed events"
    )
    out.add_argument(
        "--done",
        metavar="TEXT",
        help="end cleanly at the event whose data is TEXT, e.g. '[DONE]' (not printed, no reconnect)",
    )
    mode = out.add_mutually_exclusive_group()
    mode.add_argument(
        "--jsonl", action="store_const", const="json", dest="output", help="print one JSON object per event"
    )
    mode.add_argument(
        "--data-only", action="store_const", const="data", dest="output", help="print only each event's data"
    )
    out.add_argument(
        "--stats", action="store_true", help="live rate line on stderr (events/s, MB/s, reconnects)"
    )
    out.add_argument(
        "-v", "--verbose", action="store_true", help="log connection attempts and reconnections on stderr"
    )
    _add_common_output(parser)
    parser.set_defaults(output="text", url_after_json=None, bare_json=False)
    return parser


def build_demo_parser() -> argparse.ArgumentParser:
    """The parser of ``sonicsse demo``."""
    parser = argparse.ArgumentParser(
        prog="sonicsse demo",
        description="Start the embedded SSE server on 127.0.0.1 and stream from it with SSEClient: an "
        "LLM-style token stream (printed as running text through iter_json) and a burst of bulk "
        "events, then print a summary.",
    )
    parser.add_argument(
        "--events",
        type=_positive_int,
        default=DEFAULT_DEMO_EVENTS,
        metavar="N",
        help=f"bulk events to stream (default {DEFAULT_DEMO_EVENTS:,})",
    )
    parser.add_argument("--json", action="store_true", help="print only a JSON summary on stdout")
    parser.add_argument(
        "--token-delay", type=float, default=20.0, metavar="MS", help="delay between chat tokens (default 20)"
    )
    _add_common_output(parser)
    return parser


def build_serve_parser() -> argparse.ArgumentParser:
    """The parser of ``sonicsse serve``."""
    parser = argparse.ArgumentParser(
        prog="sonicsse serve",
        description="Run the demo SSE server on 127.0.0.1 until Ctrl-C. Routes: /v1/chat/completions "
        "(GET or POST, OpenAI-style chunks then [DONE]), /bulk?n=N, /events?n=N&interval=MS "
        "(resumable with Last-Event-ID), /status/CODE.",
    )
    parser.add_argument(
        "--port",
        type=_positive_int,
        default=DEFAULT_SERVE_PORT,
        help=f"port on 127.0.0.1 (default {DEFAULT_SERVE_PORT}; 0 picks a free one)",
    )
    parser.add_argument(
        "--token-delay", type=float, default=20.0, metavar="MS", help="delay between chat tokens (default 20)"
    )
    _add_common_output(parser)
    return parser


# --------------------------------------------------------------------------------------------
# small helpers


def _use_color(stream: IO[str], disabled: bool) -> bool:
    if disabled or os.environ.get("NO_COLOR"):
        return False
    return stream.isatty()


class _Style:
    """ANSI styles, or nothing when colors are off."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def _wrap(self, code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.enabled else text

    def dim(self, text: str) -> str:
        return self._wrap("2", text)

    def bold(self, text: str) -> str:
        return self._wrap("1", text)

    def cyan(self, text: str) -> str:
        return self._wrap("36", text)

    def yellow(self, text: str) -> str:
        return self._wrap("33", text)

    def green(self, text: str) -> str:
        return self._wrap("32", text)

    def red(self, text: str) -> str:
        return self._wrap("31", text)


def _loop_name() -> str:
    loop = asyncio.get_running_loop()
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def _uvloop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The uvloop loop factory to use, or None for the default asyncio loop."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise _UsageError(
                "--loop uvloop: uvloop is not installed (pip install 'sonicsse[uvloop]')"
            ) from None
        return None
    return uvloop.new_event_loop


def _run(main: Callable[[], Awaitable[int]], loop_choice: str) -> int:
    """Run ``main`` on uvloop when available (else asyncio); SIGINT/SIGTERM cancel it cleanly.

    Cancellation unwinds every ``async with`` (closing the stream's socket) before the exit code
    130 (SIGINT) or 143 (SIGTERM) is returned.
    """
    factory = _uvloop_factory(loop_choice)

    async def guarded() -> int:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        received: list[int] = []

        def on_signal(code: int) -> None:
            received.append(code)
            task.cancel()

        installed = []
        for signum, code in ((signal.SIGINT, EXIT_INTERRUPTED), (signal.SIGTERM, EXIT_TERMINATED)):
            try:
                loop.add_signal_handler(signum, on_signal, code)
                installed.append(signum)
            except (NotImplementedError, RuntimeError, ValueError):  # Windows, or not the main thread
                pass
        try:
            return await main()
        except asyncio.CancelledError:
            if received:
                return received[0]
            raise
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)

    try:
        if factory is None:
            return asyncio.run(guarded())
        if sys.version_info >= (3, 11):
            with asyncio.Runner(loop_factory=factory) as runner:
                return runner.run(guarded())
        import uvloop  # pragma: no cover - Python 3.10

        return uvloop.run(guarded())  # pragma: no cover
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _fail(message: str) -> int:
    sys.stderr.write(f"sonicsse: error: {_one_line(message)}\n")
    sys.stderr.flush()
    return EXIT_ERROR


def _one_line(text: str, limit: int = 500) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _describe_error(exc: BaseException, method: str, url: str, *, first_attempt: bool = False) -> str:
    """One line: method, URL, status (with its reason phrase) and what went wrong."""
    e_method = getattr(exc, "method", None) or method
    e_url = getattr(exc, "url", None) or url
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", None)
    if not isinstance(reason, str) or not reason:
        reason = str(exc) or type(exc).__name__
    if first_attempt:
        # The first connection is given exactly one attempt: "gave up after 1 ..." says nothing.
        head, sep, rest = reason.partition(": ")
        if sep and head.startswith("gave up after"):
            reason = rest
    parts = [f"{e_method} {e_url}"]
    if isinstance(status, int) and str(status) not in reason:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        parts.append(f"{status} {phrase}".strip())
    parts.append(reason)
    body = getattr(exc, "body", None)
    if isinstance(body, str) and body.strip() and body.strip() not in reason:
        parts.append(f"server said {body.strip()[:120]!r}")
    return ": ".join(parts)


def _human_bytes(n: float) -> str:
    """``532 B``, ``12.3 kB``, ``4.56 MB``, ``1.23 GB``."""
    if n < 1000:
        return f"{n:.0f} B"
    for unit in ("kB", "MB", "GB"):
        n /= 1000
        if n < 1000 or unit == "GB":
            return f"{n:,.1f} {unit}" if unit == "kB" else f"{n:,.2f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def _stat(conn: Any, name: str) -> Any:
    stats = getattr(conn, "stats", None)
    if stats is None:
        return None
    if isinstance(stats, dict):
        return stats.get(name)
    return getattr(stats, name, None)


def _read_body(value: str) -> bytes:
    """``-d`` / ``--json`` values: a literal string, ``@file``, or ``@-`` for stdin."""
    if value.startswith("@"):
        name = value[1:]
        if name == "-":
            return sys.stdin.buffer.read()
        try:
            with open(name, "rb") as f:
                return f.read()
        except OSError as e:
            raise _UsageError(f"cannot read {name!r}: {e.strerror or e}") from None
    return value.encode()


def _parse_headers(items: Iterable[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition(":")
        name = name.strip()
        if not sep or not name or any(c in name for c in " \t\r\n") or any(c in value for c in "\r\n"):
            raise _UsageError(f"-H/--header: expected 'Name: value', got {item!r}")
        headers[name] = value.strip()
    return headers


# --------------------------------------------------------------------------------------------
# output


class _Printer:
    """Writes events to stdout in one of the output modes, one flush per batch."""

    def __init__(self, mode: str, out: TextIO, style: _Style) -> None:
        self.mode = mode
        self.out = out
        self.style = style

    def format(self, event: Event) -> str:
        """The text printed for one event."""
        if self.mode == "json":
            return json.dumps(event, ensure_ascii=False) + "\n"
        if self.mode == "data":
            return event["data"] + "\n"
        s = self.style
        lines = [f"{s.dim('event:')} {s.bold(s.cyan(event['event'] or 'message'))}"]
        if event["id"] is not None:
            lines.append(f"{s.dim('id:')} {s.yellow(event['id'])}")
        if event["retry"] is not None:
            lines.append(f"{s.dim('retry:')} {event['retry']}")
        data_tag = s.dim("data:")
        lines.extend(f"{data_tag} {line}" for line in event["data"].split("\n"))
        return "\n".join(lines) + "\n\n"

    def write(self, events: Sequence[Event]) -> None:
        """Print ``events`` and flush."""
        if events:
            self.out.write("".join(self.format(e) for e in events))
            self.out.flush()


class _StatsLine:
    """The ``--stats`` line on stderr: rewritten in place on a TTY, one line per second otherwise."""

    def __init__(self, err: TextIO, numbers: Callable[[], tuple[int, int, int]]) -> None:
        self.err = err
        self._numbers = numbers
        self.tty = err.isatty()
        self.start = time.perf_counter()
        self._last_time = self.start
        self._last_events = 0
        self._last_bytes = 0
        self._shown = ""

    def render(self, final: bool = False) -> str:
        """One stats line: the rates since the previous line (or, when final, over the whole run)."""
        now = time.perf_counter()
        events, nbytes, reconnects = self._numbers()
        if final:
            span, d_events, d_bytes = now - self.start, events, nbytes
        else:
            span, d_events, d_bytes = (
                now - self._last_time,
                events - self._last_events,
                nbytes - self._last_bytes,
            )
        self._last_time, self._last_events, self._last_bytes = now, events, nbytes
        span = max(span, 1e-9)
        label = "total" if final else "stats"
        return (
            f"{label}: {events:,} event{'s' if events != 1 else ''}  {d_events / span:,.0f} events/s  "
            f"{_human_bytes(d_bytes / span)}/s  {_human_bytes(nbytes)}  "
            f"{reconnects} reconnect{'s' if reconnects != 1 else ''}  {now - self.start:,.1f} s"
        )

    def show(self, final: bool = False) -> None:
        """Write the line: in place on a TTY, as a new line otherwise."""
        line = self.render(final)
        if self.tty:
            self._shown = "" if final else line
            self.err.write("\r\x1b[K" + line + ("\n" if final else ""))
        else:
            self.err.write(line + "\n")
        self.err.flush()

    def around(self, write: Callable[[], None]) -> None:
        """Call ``write`` (output to stdout) with the line lifted off a shared terminal, then put it back."""
        if not (self.tty and self._shown):
            write()
            return
        self.err.write("\r\x1b[K")
        self.err.flush()
        try:
            write()
        finally:
            self.err.write(self._shown)
            self.err.flush()

    async def run(self) -> None:
        """Refresh the line until cancelled."""
        interval = STATS_INTERVAL_TTY if self.tty else STATS_INTERVAL_PIPE
        while True:
            await asyncio.sleep(interval)
            self.show()


# --------------------------------------------------------------------------------------------
# sonicsse URL


class _Totals:
    """Counters summed over the connections one ``sonicsse URL`` run opened (usually one)."""

    def __init__(self) -> None:
        self.current: Any = None
        self._events = 0
        self._bytes = 0
        self._reconnects = 0

    def retire(self, conn: Any) -> None:
        """``conn`` is done and a new connection takes over: keep its counts (+1 reconnect)."""
        self._events += _stat(conn, "events") or 0
        self._bytes += _stat(conn, "bytes") or 0
        self._reconnects += (_stat(conn, "reconnects") or 0) + 1
        self.current = None

    def numbers(self) -> tuple[int, int, int]:
        """events, bytes, reconnects so far."""
        conn = self.current
        return (
            self._events + (_stat(conn, "events") or 0),
            self._bytes + (_stat(conn, "bytes") or 0),
            self._reconnects + (_stat(conn, "reconnects") or 0),
        )


async def _stream(args: argparse.Namespace, request: dict[str, Any]) -> int:
    """``sonicsse URL``: print the stream's events until it ends, ``-n`` is reached or an error.

    Like curl, the first connection is not retried: a server that cannot be reached or answers with
    an error ends the run at once (exit 1). Once a stream was open, reconnection follows the
    options (``--max-retries``, default: never give up), with ``Last-Event-ID``.
    """
    from . import client as _client_mod
    from .exceptions import SSEConnectionError, SSEError

    # aiosonic's own errors, should one ever get past the client unwrapped.
    aiosonic_error: type[BaseException] = getattr(
        importlib.import_module("aiosonic.exceptions"), "AiosonicError", SSEError
    )

    method: str = request["method"]
    url: str = request["url"]
    style = _Style(_use_color(sys.stdout, args.no_color))
    printer = _Printer(args.output, sys.stdout, style)
    wanted = set(args.event)
    limit: int | None = args.max_events
    printed = 0
    totals = _Totals()
    stats_task: asyncio.Task[None] | None = None
    stats_line: _StatsLine | None = None
    if args.stats:
        stats_line = _StatsLine(sys.stderr, totals.numbers)
        stats_task = asyncio.ensure_future(stats_line.run())
    fail_fast = request["reconnect"] and request.get("max_retries") is None
    shared_terminal = stats_line is not None and stats_line.tty and sys.stdout.isatty()

    async def end_unless_resumable(attempt: int, delay: float, cause: BaseException | None) -> None:
        """Called before each reconnection: when the server ended the stream cleanly (``cause`` None)
        and sent no event id, there is nothing to resume, so the run ends there, as curl's would."""
        current = totals.current
        if cause is None and not args.reconnect and current is not None and not current.last_event_id:
            await current.close()

    def emit(batch: list[Event]) -> None:
        if shared_terminal and stats_line is not None:
            stats_line.around(lambda: printer.write(batch))
        else:
            printer.write(batch)

    try:
        if limit == 0:
            return EXIT_OK
        try:
            client = _client_mod.SSEClient(proxy=args.proxy, trust_env=not args.no_env_proxy)
        except ValueError as e:  # a proxy variable of the environment that is not an http:// proxy URL
            return _fail(f"proxy: {e}")
        async with client:
            while True:
                kwargs = dict(request)
                if wanted:
                    kwargs["event_types"] = wanted  # dropped in the decoder, before any object is built
                if fail_fast:
                    kwargs["max_retries"] = 0
                kwargs["on_retry"] = end_unless_resumable
                conn: Any = None
                try:
                    async with client.connect(**kwargs) as conn:
                        totals.current = conn
                        async for batch in conn.iter_batches():
                            if limit is not None and printed + len(batch) >= limit:
                                batch = batch[: limit - printed]
                                emit(batch)
                                printed += len(batch)
                                return EXIT_OK
                            emit(batch)
                            printed += len(batch)
                    return EXIT_OK
                except SSEConnectionError:
                    # A failed reconnect of the first connection (retried at most once): that stream
                    # worked, so from now on keep trying by the normal policy on a new connection.
                    if not (
                        fail_fast
                        and conn is not None
                        and (_stat(conn, "events") or 0) > 0
                        and _policy.may_resume(method, conn.last_event_id, bool(request.get("resume_unsafe")))
                    ):
                        raise
                    fail_fast = False
                    retries = request.get("max_retries")
                    logging.getLogger("sonicsse").debug(
                        "sonicsse: the stream was interrupted; reconnecting (%s)",
                        "never giving up" if retries is None else f"at most {retries} failed attempts",
                    )
                    if conn.last_event_id:
                        request["last_event_id"] = conn.last_event_id
                    totals.retire(conn)
    except BrokenPipeError:
        # The reader went away (`sonicsse URL | head`): stop quietly.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except (SSEError, aiosonic_error, OSError, asyncio.TimeoutError) as e:
        first = fail_fast and totals.current is None
        return _fail(_describe_error(e, method, url, first_attempt=first))
    finally:
        if stats_task is not None:
            stats_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stats_task
        if stats_line is not None:
            stats_line.show(final=True)


def _build_request(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of ``SSEClient.connect()`` for the command line's options."""
    url: str | None = args.url
    if args.url_after_json is not None:
        if url is not None:
            raise _UsageError(
                f"--json: {args.url_after_json!r} is not a JSON body and a URL was already given"
            )
        url = args.url_after_json
    if not url:
        raise _UsageError("the following arguments are required: URL")
    if "://" not in url:
        typo = re.match(r"(https?)(?::/*|/+)(?=[^/])", url, re.IGNORECASE)
        if typo is not None:  # "http//host", "http:/host": a mistyped scheme, not a host named "http"
            fixed = f"{typo.group(1).lower()}://{url[typo.end():]}"
            raise _UsageError(f"{url}: not a URL; did you mean {fixed}?")
        url = "http://" + url
    problem = _policy.url_problem(url)  # the library's own rule, so both refuse the same URLs
    if problem is not None:
        raise _UsageError(f"{url}: {problem}")
    if args.proxy is not None:
        try:
            parse_proxy_url(args.proxy)
        except ValueError as e:
            raise _UsageError(f"-x/--proxy: {e}") from None
    if args.data is not None and args.json_body is not None:
        raise _UsageError("-d/--data and --json BODY cannot be combined")
    if args.bare_json and args.output != "json":
        raise _UsageError("argument --data-only: not allowed with argument --json (JSON-lines output)")
    headers = _parse_headers(args.header)
    request: dict[str, Any] = {"url": url, "headers": headers}
    if args.json_body is not None:
        raw = _read_body(args.json_body) if args.json_body.startswith("@") else args.json_body.encode()
        try:
            request["json"] = json.loads(raw)
        except ValueError as e:
            raise _UsageError(f"--json: not valid JSON: {e}") from None
    elif args.data is not None:
        request["data"] = _read_body(args.data)
    has_body = "json" in request or "data" in request
    request["method"] = (args.method or ("POST" if has_body else "GET")).upper()
    request["reconnect"] = not args.no_reconnect
    request["retry_delay"] = args.retry_delay
    request["max_retries"] = args.max_retries
    request["read_timeout"] = args.read_timeout
    request["follow"] = args.follow
    request["http2"] = args.http2
    request["verify"] = not args.insecure
    if args.last_event_id is not None:
        request["last_event_id"] = args.last_event_id
    if args.resume_unsafe:
        request["resume_unsafe"] = True
    if args.done is not None:
        request["done"] = args.done
    return request


def _version_text() -> str:
    from importlib.metadata import version

    from . import IMPLEMENTATION
    from ._impl import NO_EXTENSIONS

    extras = []
    for dist in ("aiosonic", "uvloop"):
        with contextlib.suppress(Exception):  # not installed
            extras.append(f"{dist} {version(dist)}")
    if IMPLEMENTATION == "c":
        decoder = "compiled C"
    elif NO_EXTENSIONS:
        decoder = "pure Python: SONICSSE_NO_EXTENSIONS is set"
    else:
        decoder = "pure Python: the compiled extension is not installed (no compiler at build time?)"
    return (
        f"sonicsse {__version__} (decoder: {IMPLEMENTATION}, {decoder}; "
        f"{', '.join([*extras, f'Python {platform.python_version()}'])})"
    )


def _main_stream(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        sys.stdout.write(_version_text() + "\n")
        return EXIT_OK
    try:
        request = _build_request(args)
        _uvloop_factory(args.loop)
    except _UsageError as e:
        _usage_error(parser, str(e))
    # Failed attempts that are retried are warnings, one line each on stderr; -v adds the details.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("sonicsse")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    return _run(lambda: _stream(args, request), args.loop)


def _usage_error(parser: argparse.ArgumentParser, message: str) -> NoReturn:
    parser.error(message)  # prints usage + message, exits 2


# --------------------------------------------------------------------------------------------
# sonicsse demo


async def _demo(args: argparse.Namespace) -> int:
    from . import IMPLEMENTATION
    from . import client as _client_mod
    from ._demo import DemoServer
    from .exceptions import SSEError

    out = sys.stdout
    quiet = args.json
    style = _Style(_use_color(out, args.no_color))
    loop_name = _loop_name()

    def say(text: str = "", end: str = "\n") -> None:
        if not quiet:
            out.write(text + end)
            out.flush()

    summary: dict[str, Any] = {"version": __version__, "decoder": IMPLEMENTATION, "loop": loop_name}
    try:
        async with DemoServer(token_delay=max(0.0, args.token_delay) / 1000) as server:
            summary["server"] = server.url
            say(
                style.dim(
                    f"sonicsse {__version__} demo: embedded SSE server on {server.url} "
                    f"(decoder: {IMPLEMENTATION}, loop: {loop_name})"
                )
            )
            # The embedded server is on loopback: never through the environment's proxy.
            async with _client_mod.SSEClient(trust_env=False) as client:
                # 1. An LLM-style answer: POST, OpenAI-style JSON chunks, [DONE] at the end.
                say()
                say(style.bold("1. LLM token stream") + style.dim("  POST /v1/chat/completions, iter_json()"))
                say()
                text: list[str] = []
                t0 = time.perf_counter()
                first_token: float | None = None
                async with client.connect(
                    f"{server.url}/v1/chat/completions",
                    method="POST",
                    json={
                        "model": "sonicsse-demo",
                        "stream": True,
                        "messages": [{"role": "user", "content": "Say hello."}],
                    },
                ) as conn:
                    async for chunk in conn.iter_json():
                        content = chunk["choices"][0]["delta"].get("content")
                        if content:
                            if first_token is None:
                                first_token = time.perf_counter() - t0
                            text.append(content)
                            say(style.green(content), end="")
                    chat_events = _stat(conn, "events")
                    chat_bytes = _stat(conn, "bytes")
                chat_time = time.perf_counter() - t0
                say()
                say()
                summary["chat"] = {
                    "text": "".join(text),
                    "tokens": len(text),
                    "events": chat_events if isinstance(chat_events, int) else len(text) + 2,
                    "bytes": chat_bytes if isinstance(chat_bytes, int) else None,
                    "seconds": round(chat_time, 4),
                    "first_token_seconds": round(first_token, 4) if first_token is not None else None,
                }

                # 2. A bulk burst: iter_batches(), one list of events per socket read.
                n = args.events
                say(style.bold("2. Bulk burst") + style.dim(f"  GET /bulk?n={n}, iter_batches()"))
                received = 0
                batches = 0
                t0 = time.perf_counter()
                async with client.connect(f"{server.url}/bulk?n={n}", reconnect=False) as conn:
                    async for batch in conn.iter_batches():
                        received += len(batch)
                        batches += 1
                    bulk_bytes = _stat(conn, "bytes")
                bulk_time = max(time.perf_counter() - t0, 1e-9)
                nbytes = bulk_bytes if isinstance(bulk_bytes, int) else None
                summary["bulk"] = {
                    "events": received,
                    "batches": batches,
                    "bytes": nbytes,
                    "seconds": round(bulk_time, 4),
                    "events_per_second": round(received / bulk_time),
                    "mb_per_second": round(nbytes / bulk_time / 1e6, 2) if nbytes is not None else None,
                }
    except (SSEError, OSError) as e:
        return _fail(f"demo failed: {e}")

    if quiet:
        out.write(json.dumps(summary) + "\n")
        out.flush()
        return EXIT_OK if summary["bulk"]["events"] == args.events else EXIT_ERROR
    bulk = summary["bulk"]
    mb = f"{bulk['bytes'] / 1e6:,.1f} MB" if bulk["bytes"] is not None else "? MB"
    rate_mb = f", {bulk['mb_per_second']:,.1f} MB/s" if bulk["mb_per_second"] is not None else ""
    say(
        f"   {bulk['events']:,} events, {mb} in {bulk['seconds']:.2f} s: "
        + style.bold(f"{bulk['events_per_second']:,} events/s")
        + rate_mb
    )
    say()
    chat = summary["chat"]
    say(style.bold("Summary"))
    say(f"   chat:    {chat['events']} events ({chat['tokens']} tokens) in {chat['seconds']:.2f} s")
    say(f"   bulk:    {bulk['events']:,} events, {mb}, {bulk['events_per_second']:,} events/s")
    impl = "c (compiled)" if IMPLEMENTATION == "c" else "py (pure Python)"
    say(f"   decoder: {impl}    loop: {loop_name}")
    say()
    say(
        style.dim(
            "Next: `sonicsse serve` keeps this server running; then try "
            "`sonicsse http://127.0.0.1:8765/events`."
        )
    )
    if bulk["events"] != args.events:
        return _fail(f"demo: expected {args.events} bulk events, got {bulk['events']}")
    return EXIT_OK


def _main_demo(argv: Sequence[str]) -> int:
    parser = build_demo_parser()
    args = parser.parse_args(argv)
    try:
        _uvloop_factory(args.loop)
    except _UsageError as e:
        _usage_error(parser, str(e))
    return _run(lambda: _demo(args), args.loop)


# --------------------------------------------------------------------------------------------
# sonicsse serve


async def _serve(args: argparse.Namespace) -> int:
    from ._demo import DemoServer

    server = DemoServer(args.port, token_delay=max(0.0, args.token_delay) / 1000)
    try:
        await server.start()
    except OSError as e:
        return _fail(f"cannot listen on 127.0.0.1:{args.port}: {e.strerror or e}")
    style = _Style(_use_color(sys.stdout, args.no_color))
    base = server.url
    sys.stdout.write(
        f"{style.bold('sonicsse demo server')} on {base}  (Ctrl-C to stop)\n"
        f"  {base}/v1/chat/completions   GET or POST: OpenAI-style chunks, then [DONE]\n"
        f"  {base}/events?n=10           numbered events, resumable with Last-Event-ID\n"
        f"  {base}/bulk?n=100000         a burst of small events\n"
        f"  {base}/status/404            any status\n"
        f"Try: sonicsse {base}/events   or   SONICSSE_DEMO_URL={base} python example.py\n"
    )
    sys.stdout.flush()
    try:
        await server.serve_forever()
    except asyncio.CancelledError:
        raise
    return EXIT_OK


def _main_serve(argv: Sequence[str]) -> int:
    parser = build_serve_parser()
    args = parser.parse_args(argv)
    code = _run(lambda: _serve(args), args.loop)
    # Ctrl-C is how a foreground server is meant to stop.
    return EXIT_OK if code in (EXIT_INTERRUPTED, EXIT_TERMINATED) else code


# --------------------------------------------------------------------------------------------
# entry point


def _never_fail_to_encode() -> None:
    """Event data is any Unicode: on a console or pipe that is not UTF-8 (Windows), escape what it
    cannot show instead of dying with UnicodeEncodeError."""
    for stream in (sys.stdout, sys.stderr):
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
        reconfigure = getattr(stream, "reconfigure", None)
        if encoding != "utf8" and reconfigure is not None:
            with contextlib.suppress(Exception):
                reconfigure(errors="backslashreplace")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``sonicsse`` command line with ``argv`` (default: ``sys.argv[1:]``).

    Returns the exit code: 0 clean end, 1 connection or parse error, 2 usage error, 130 Ctrl-C.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    _never_fail_to_encode()
    try:
        if args and args[0] == "demo":
            return _main_demo(args[1:])
        if args and args[0] == "serve":
            return _main_serve(args[1:])
        return _main_stream(args)
    except SystemExit as e:  # argparse: --help (0) and usage errors (2)
        return e.code if isinstance(e.code, int) else (EXIT_OK if e.code is None else EXIT_USAGE)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
