"""What ``sonicsse URL`` prints: events in three formats, the ``--stats`` line, and one-line errors."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from http import HTTPStatus
from typing import Any, TextIO

from ._cli_support import Style, human_bytes, stat
from ._types import Event

STATS_INTERVAL_TTY = 0.25
STATS_INTERVAL_PIPE = 1.0


def describe_error(exc: BaseException, method: str, url: str, *, first_attempt: bool = False) -> str:
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


class Printer:
    """Writes events to stdout in one of the output modes, one flush per batch."""

    def __init__(self, mode: str, out: TextIO, style: Style) -> None:
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


class StatsLine:
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
            f"{human_bytes(d_bytes / span)}/s  {human_bytes(nbytes)}  "
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


class Totals:
    """Counters summed over the connections one ``sonicsse URL`` run opened (usually one)."""

    def __init__(self) -> None:
        self.current: Any = None
        self._events = 0
        self._bytes = 0
        self._reconnects = 0

    def retire(self, conn: Any) -> None:
        """``conn`` is done and a new connection takes over: keep its counts (+1 reconnect)."""
        self._events += stat(conn, "events") or 0
        self._bytes += stat(conn, "bytes") or 0
        self._reconnects += (stat(conn, "reconnects") or 0) + 1
        self.current = None

    def numbers(self) -> tuple[int, int, int]:
        """events, bytes, reconnects so far."""
        conn = self.current
        return (
            self._events + (stat(conn, "events") or 0),
            self._bytes + (stat(conn, "bytes") or 0),
            self._reconnects + (stat(conn, "reconnects") or 0),
        )
