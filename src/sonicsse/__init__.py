"""sonicsse: the fastest, spec-correct Server-Sent Events client for asyncio."""

from __future__ import annotations

from ._impl import IMPLEMENTATION, SSEDecoder
from ._seam import make_http_client
from ._types import Event
from ._version import __version__
from .checkpoint import CheckpointStore, FileCheckpoint
from .client import PendingConnection, SSEClient, SSEConnect
from .connection import SSEConnection, SSEStats
from .exceptions import (
    SSECheckpointError,
    SSEConnectionError,
    SSEError,
    SSEInvalidURLError,
    SSEParsingError,
    SSEServerError,
)

__all__ = [
    "IMPLEMENTATION",
    "CheckpointStore",
    "Event",
    "FileCheckpoint",
    "PendingConnection",
    "SSECheckpointError",
    "SSEClient",
    "SSEConnect",
    "SSEConnection",
    "SSEConnectionError",
    "SSEDecoder",
    "SSEError",
    "SSEInvalidURLError",
    "SSEParsingError",
    "SSEServerError",
    "SSEStats",
    "__version__",
    "make_http_client",
]
