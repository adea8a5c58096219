"""sonicsse: the fastest, spec-correct Server-Sent Events client for asyncio."""

from __future__ import annotations

from ._parser import IMPLEMENTATION, SSEDecoder
from ._types import Event
from ._version import __version__
from .exceptions import SSEConnectionError, SSEError, SSEParsingError, SSEServerError

__all__ = [
    "IMPLEMENTATION",
    "Event",
    "SSEConnectionError",
    "SSEDecoder",
    "SSEError",
    "SSEParsingError",
    "SSEServerError",
    "__version__",
]
