"""Calling the user's callbacks (``on_open``, ``on_retry``, ``on_error``): plain or coroutine functions."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

__all__ = ["call_hook"]


async def call_hook(callback: Callable[..., Any] | None, *args: Any) -> None:
    """Call ``callback(*args)``, awaiting it when it is a coroutine function (or returns an awaitable)."""
    if callback is None:
        return
    result = callback(*args)
    if inspect.isawaitable(result):
        await result
