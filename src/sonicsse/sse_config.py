"""``aiosonic.sse_config``'s import path in sonicsse.

``RequestConfig`` is aiosonic's description of an SSE request; code written against aiosonic (its own
tests among it) builds one to call ``SSEConnection._parse_event``, which sonicsse keeps compatible.
"""

from ._seam import RequestConfig

__all__ = ["RequestConfig"]
