"""What every ``sonicsse`` command shares: exit codes, usage errors, colours, the event-loop runner."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import IO, Any, NoReturn

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class UsageError(Exception):
    """A usage error found after argparse (reported like argparse's own, exit code 2)."""


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return value


def add_common_output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-color", action="store_true", help="never use colors (also: NO_COLOR=1)")
    parser.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="event loop: uvloop when installed (auto, the default), or force one",
    )


def use_color(stream: IO[str], disabled: bool) -> bool:
    if disabled or os.environ.get("NO_COLOR"):
        return False
    return stream.isatty()


class Style:
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


def loop_name() -> str:
    loop = asyncio.get_running_loop()
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def uvloop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The uvloop loop factory to use, or None for the default asyncio loop."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise UsageError(
                "--loop uvloop: uvloop is not installed (pip install 'sonicsse[uvloop]')"
            ) from None
        return None
    return uvloop.new_event_loop


def run(main: Callable[[], Awaitable[int]], loop_choice: str) -> int:
    """Run ``main`` on uvloop when available (else asyncio); SIGINT/SIGTERM cancel it cleanly.

    Cancellation unwinds every ``async with`` (closing the stream's socket) before the exit code
    130 (SIGINT) or 143 (SIGTERM) is returned.
    """
    factory = uvloop_factory(loop_choice)

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


def fail(message: str) -> int:
    sys.stderr.write(f"sonicsse: error: {one_line(message)}\n")
    sys.stderr.flush()
    return EXIT_ERROR


def one_line(text: str, limit: int = 500) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def human_bytes(n: float) -> str:
    """``532 B``, ``12.3 kB``, ``4.56 MB``, ``1.23 GB``."""
    if n < 1000:
        return f"{n:.0f} B"
    for unit in ("kB", "MB", "GB"):
        n /= 1000
        if n < 1000 or unit == "GB":
            return f"{n:,.1f} {unit}" if unit == "kB" else f"{n:,.2f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def stat(conn: Any, name: str) -> Any:
    stats = getattr(conn, "stats", None)
    if stats is None:
        return None
    if isinstance(stats, dict):
        return stats.get(name)
    return getattr(stats, name, None)


def usage_error(parser: argparse.ArgumentParser, message: str) -> NoReturn:
    parser.error(message)  # prints usage + message, exits 2
