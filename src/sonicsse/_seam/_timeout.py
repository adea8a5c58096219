"""A timeout around one awaitable, without a task of its own where asyncio allows."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

if sys.version_info >= (3, 11):

    async def within(awaitable: Any, timeout: float | None) -> Any:
        """``asyncio.wait_for`` without the task it makes of a coroutine (one per stream opened)."""
        async with asyncio.timeout(timeout):
            return await awaitable

else:
    within = asyncio.wait_for
