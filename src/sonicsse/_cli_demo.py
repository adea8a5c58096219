"""``sonicsse demo`` (the embedded server, an LLM-style stream and a bulk burst, a summary) and
``sonicsse serve`` (the demo server in the foreground)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from ._cli_support import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
    Style,
    UsageError,
    add_common_output,
    fail,
    loop_name,
    positive_int,
    run,
    stat,
    usage_error,
    use_color,
    uvloop_factory,
)
from ._version import __version__

DEFAULT_DEMO_EVENTS = 500_000
DEFAULT_SERVE_PORT = 8765


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
        type=positive_int,
        default=DEFAULT_DEMO_EVENTS,
        metavar="N",
        help=f"bulk events to stream (default {DEFAULT_DEMO_EVENTS:,})",
    )
    parser.add_argument("--json", action="store_true", help="print only a JSON summary on stdout")
    parser.add_argument(
        "--token-delay", type=float, default=20.0, metavar="MS", help="delay between chat tokens (default 20)"
    )
    add_common_output(parser)
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
        type=positive_int,
        default=DEFAULT_SERVE_PORT,
        help=f"port on 127.0.0.1 (default {DEFAULT_SERVE_PORT}; 0 picks a free one)",
    )
    parser.add_argument(
        "--token-delay", type=float, default=20.0, metavar="MS", help="delay between chat tokens (default 20)"
    )
    add_common_output(parser)
    return parser


async def _demo(args: argparse.Namespace) -> int:
    from . import IMPLEMENTATION
    from . import client as _client_mod
    from ._demo import DemoServer
    from .exceptions import SSEError

    out = sys.stdout
    quiet = args.json
    style = Style(use_color(out, args.no_color))
    loop = loop_name()

    def say(text: str = "", end: str = "\n") -> None:
        if not quiet:
            out.write(text + end)
            out.flush()

    summary: dict[str, Any] = {"version": __version__, "decoder": IMPLEMENTATION, "loop": loop}
    try:
        async with DemoServer(token_delay=max(0.0, args.token_delay) / 1000) as server:
            summary["server"] = server.url
            say(
                style.dim(
                    f"sonicsse {__version__} demo: embedded SSE server on {server.url} "
                    f"(decoder: {IMPLEMENTATION}, loop: {loop})"
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
                    chat_events = stat(conn, "events")
                    chat_bytes = stat(conn, "bytes")
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
                    bulk_bytes = stat(conn, "bytes")
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
        return fail(f"demo failed: {e}")

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
    say(f"   decoder: {impl}    loop: {loop}")
    say()
    say(
        style.dim(
            "Next: `sonicsse serve` keeps this server running; then try "
            "`sonicsse http://127.0.0.1:8765/events`."
        )
    )
    if bulk["events"] != args.events:
        return fail(f"demo: expected {args.events} bulk events, got {bulk['events']}")
    return EXIT_OK


def main_demo(argv: Sequence[str]) -> int:
    parser = build_demo_parser()
    args = parser.parse_args(argv)
    try:
        uvloop_factory(args.loop)
    except UsageError as e:
        usage_error(parser, str(e))
    return run(lambda: _demo(args), args.loop)


# --------------------------------------------------------------------------------------------
# sonicsse serve


async def _serve(args: argparse.Namespace) -> int:
    from ._demo import DemoServer

    server = DemoServer(args.port, token_delay=max(0.0, args.token_delay) / 1000)
    try:
        await server.start()
    except OSError as e:
        return fail(f"cannot listen on 127.0.0.1:{args.port}: {e.strerror or e}")
    style = Style(use_color(sys.stdout, args.no_color))
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


def main_serve(argv: Sequence[str]) -> int:
    parser = build_serve_parser()
    args = parser.parse_args(argv)
    code = run(lambda: _serve(args), args.loop)
    # Ctrl-C is how a foreground server is meant to stop.
    return EXIT_OK if code in (EXIT_INTERRUPTED, EXIT_TERMINATED) else code
