"""Selects the implementation of the hot path: the compiled modules when they are built, else their
pure-Python twins, which behave identically. All of them are taken from the same side.

``SONICSSE_NO_EXTENSIONS=1`` in the environment forces the pure twins.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

__all__ = ["IMPLEMENTATION", "BodyReceiver", "ChunkedDecoder", "EventIterator", "SSEDecoder"]

IMPLEMENTATION: str

if TYPE_CHECKING or os.environ.get("SONICSSE_NO_EXTENSIONS"):
    from ._chunked_py import ChunkedDecoder
    from ._events_py import EventIterator
    from ._parser_py import SSEDecoder
    from ._receiver_py import BodyReceiver

    IMPLEMENTATION = "py"
else:
    try:
        from ._chunked_c import ChunkedDecoder
        from ._events_c import EventIterator
        from ._parser_c import SSEDecoder
        from ._receiver_c import BodyReceiver

        IMPLEMENTATION = "c"
    except ImportError:
        from ._chunked_py import ChunkedDecoder
        from ._events_py import EventIterator
        from ._parser_py import SSEDecoder
        from ._receiver_py import BodyReceiver

        IMPLEMENTATION = "py"
