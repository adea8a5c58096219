"""Calling user callbacks (plain or coroutine functions) and logging without leaking secrets."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["SECRET_HEADERS", "call_hook", "logger", "redact_headers"]

#: The package's logger: connects and closes at INFO, retries at INFO with delay and cause, details at DEBUG.
logger = logging.getLogger("sonicsse")

#: Header names whose values never reach a log line.
SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "api-key", "x-auth-token"}
)


async def call_hook(callback: Callable[..., Any] | None, *args: Any) -> None:
    """Call ``callback(*args)``, awaiting it when it is a coroutine function (or returns an awaitable)."""
    if callback is None:
        return
    result = callback(*args)
    if inspect.isawaitable(result):
        await result


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``headers`` fit for logs: credentials and cookies replaced by ``"<redacted>"``."""
    return {
        name: "<redacted>" if name.lower() in SECRET_HEADERS else value for name, value in headers.items()
    }
