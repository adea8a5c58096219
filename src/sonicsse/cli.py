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
import json
import logging
import os
import platform
import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from . import _policy
from ._cli_demo import main_demo, main_serve
from ._cli_output import Printer, StatsLine, Totals, describe_error
from ._cli_support import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    Style,
    UsageError,
    add_common_output,
    fail,
    positive_float,
    positive_int,
    run,
    stat,
    usage_error,
    use_color,
    uvloop_factory,
)
from ._proxy import parse_proxy_url
from ._types import Event
from ._version import __version__

__all__ = ["main"]

# --------------------------------------------------------------------------------------------
# argument parsing


class _JsonOption(argparse.Action):
    """``--json BODY`` sends BODY (``{...}``, ``[...]``, a JSON scalar or ``@file``) as a JSON request body,
    as curl's ``--json`` does.

    ``--json`` without a body (alone, or followed by the URL) is the former spelling of ``--jsonl``: still
    accepted, with a deprecation warning on stderr.
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
        sys.stderr.write(
            "sonicsse: warning: --json without a JSON body is deprecated: use --jsonl for JSON-lines output "
            "(--json BODY sends a JSON request body)\n"
        )
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
        help="send BODY ('{...}', '[...]' or @file) as a JSON request body (POST unless -X says otherwise)",
    )
    req.add_argument("--json-body", dest="json_body", metavar="BODY", help="the same as --json BODY")
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
        type=positive_int,
        default=3000,
        metavar="MS",
        help="base reconnect delay (default 3000)",
    )
    rec.add_argument(
        "--max-retries",
        type=positive_int,
        metavar="N",
        help="retry failed attempts (the first connection too) and give up after N in a row "
        "(default: the first connection is not retried, later ones are retried for ever)",
    )
    rec.add_argument(
        "--read-timeout",
        type=positive_float,
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
    out.add_argument("-n", "--max-events", type=positive_int, metavar="N", help="stop after N printed events")
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
    add_common_output(parser)
    parser.set_defaults(output="text", url_after_json=None, bare_json=False)
    return parser


# --------------------------------------------------------------------------------------------
# small helpers


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
            raise UsageError(f"cannot read {name!r}: {e.strerror or e}") from None
    return value.encode()


def _parse_headers(items: Iterable[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition(":")
        name = name.strip()
        if not sep or not name or any(c in name for c in " \t\r\n") or any(c in value for c in "\r\n"):
            raise UsageError(f"-H/--header: expected 'Name: value', got {item!r}")
        headers[name] = value.strip()
    return headers


# --------------------------------------------------------------------------------------------
# sonicsse URL


async def _stream(args: argparse.Namespace, request: dict[str, Any]) -> int:
    """``sonicsse URL``: print the stream's events until it ends, ``-n`` is reached or an error.

    Like curl, the first connection is not retried: a server that cannot be reached or answers with
    an error ends the run at once (exit 1). Once a stream was open, reconnection follows the
    options (``--max-retries``, default: never give up), with ``Last-Event-ID``.
    """
    from . import client as _client_mod
    from ._seam import AiosonicError
    from .exceptions import SSEConnectionError, SSEError

    # aiosonic's own errors, should one ever get past the client unwrapped.
    aiosonic_error: type[BaseException] = AiosonicError

    method: str = request["method"]
    url: str = request["url"]
    style = Style(use_color(sys.stdout, args.no_color))
    printer = Printer(args.output, sys.stdout, style)
    wanted = set(args.event)
    limit: int | None = args.max_events
    printed = 0
    totals = Totals()
    stats_task: asyncio.Task[None] | None = None
    stats_line: StatsLine | None = None
    if args.stats:
        stats_line = StatsLine(sys.stderr, totals.numbers)
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
            return fail(f"proxy: {e}")
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
                        and (stat(conn, "events") or 0) > 0
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
        return fail(describe_error(e, method, url, first_attempt=first))
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
            raise UsageError(
                f"--json: {args.url_after_json!r} is not a JSON body and a URL was already given"
            )
        url = args.url_after_json
    if not url:
        raise UsageError("the following arguments are required: URL")
    if "://" not in url:
        typo = re.match(r"(https?)(?::/*|/+)(?=[^/])", url, re.IGNORECASE)
        if typo is not None:  # "http//host", "http:/host": a mistyped scheme, not a host named "http"
            fixed = f"{typo.group(1).lower()}://{url[typo.end() :]}"
            raise UsageError(f"{url}: not a URL; did you mean {fixed}?")
        url = "http://" + url
    problem = _policy.url_problem(url)  # the library's own rule, so both refuse the same URLs
    if problem is not None:
        raise UsageError(f"{url}: {problem}")
    if args.proxy is not None:
        try:
            parse_proxy_url(args.proxy)
        except ValueError as e:
            raise UsageError(f"-x/--proxy: {e}") from None
    if args.data is not None and args.json_body is not None:
        raise UsageError("-d/--data and --json BODY cannot be combined")
    if args.bare_json and args.output != "json":
        raise UsageError("argument --data-only: not allowed with argument --json (JSON-lines output)")
    headers = _parse_headers(args.header)
    request: dict[str, Any] = {"url": url, "headers": headers}
    if args.json_body is not None:
        raw = _read_body(args.json_body) if args.json_body.startswith("@") else args.json_body.encode()
        try:
            request["json"] = json.loads(raw)
        except ValueError as e:
            raise UsageError(f"--json: not valid JSON: {e}") from None
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
        uvloop_factory(args.loop)
    except UsageError as e:
        usage_error(parser, str(e))
    # Failed attempts that are retried are warnings, one line each on stderr; -v adds the details.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("sonicsse")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    return run(lambda: _stream(args, request), args.loop)


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
            return main_demo(args[1:])
        if args and args[0] == "serve":
            return main_serve(args[1:])
        return _main_stream(args)
    except SystemExit as e:  # argparse: --help (0) and usage errors (2)
        return e.code if isinstance(e.code, int) else (EXIT_OK if e.code is None else EXIT_USAGE)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
