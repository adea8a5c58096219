"""``aiosonic.sse_client``'s import path in sonicsse.

Code that imports the SSE client from aiosonic's module (``from aiosonic.sse_client import SSEClient,
SSEConnection``) switches to sonicsse by changing the package name alone.
"""

from .client import SSEClient
from .connection import SSEConnection
from .exceptions import SSEConnectionError, SSEParsingError

__all__ = ["SSEClient", "SSEConnection", "SSEConnectionError", "SSEParsingError"]
