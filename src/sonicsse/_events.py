"""Selects the event iterator behind ``async for event in connection``: compiled when built, else pure.

``SONICSSE_NO_EXTENSIONS=1`` in the environment forces the pure twin, as for the decoder.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

__all__ = ["EventIterator"]

if TYPE_CHECKING or os.environ.get("SONICSSE_NO_EXTENSIONS"):
    from ._events_py import EventIterator
else:
    try:
        from ._events_c import EventIterator
    except ImportError:
        from ._events_py import EventIterator
