"""ConnectOptions: every option of ``SSEClient.connect()`` with its default, written once.

``connect()`` keeps aiosonic's signature (its defaults are read from this class), the connection and its
sans-IO core read their settings from one frozen instance, and the command line builds one too.
"""

from __future__ import annotations

import dataclasses
import json as _json
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from ssl import SSLContext
from typing import Any

from ._seam import Timeouts
from ._types import CommentCallback, Event
from .checkpoint import CheckpointStore

__all__ = [
    "DEFAULTS",
    "DEFAULT_MAX_EVENT_SIZE",
    "DEFAULT_MAX_LINE_SIZE",
    "ConnectOptions",
    "HeaderPairs",
    "HeadersArg",
]

HeaderPairs = Mapping[str, str] | Iterable[tuple[str, str]]
#: ``headers=``: a mapping or pairs, or a callable (sync or async) giving them before every attempt.
HeadersArg = HeaderPairs | Callable[[], HeaderPairs | Awaitable[HeaderPairs]] | None

# A client reads real APIs, which put multi-megabyte values (base64 images, tool results) on one line:
# a line may be as long as the largest event (the bare decoder keeps its stricter 1 MiB line default).
DEFAULT_MAX_EVENT_SIZE = 16 << 20
DEFAULT_MAX_LINE_SIZE = DEFAULT_MAX_EVENT_SIZE


@dataclass(frozen=True, slots=True)
class ConnectOptions:
    """The options of one stream, as ``SSEClient.connect()`` documents them.

    The first sixteen are aiosonic's ``connect()`` arguments, in its order; the rest are keyword-only
    extras. ``connect()`` reads its defaults from :data:`DEFAULTS`. Slots: one instance per stream, and
    10,000 streams in a process.
    """

    url: str
    method: str = "GET"
    headers: HeadersArg = None
    params: Any = None
    data: Any = None
    json: Any = None
    multipart: bool = False
    verify: bool = True
    ssl: SSLContext | None = None
    timeouts: Timeouts | None = None
    follow: bool = False
    http2: bool = False
    reconnect: bool = True
    retry_delay: int = 3000
    json_serializer: Callable[[Any], str] = _json.dumps
    keep_connection: bool = False
    last_event_id: str | None = None
    max_retries: int | None = None
    max_retry_delay: int = 30000
    read_timeout: float | None = 300.0
    event_timeout: float | None = None
    first_event_timeout: float | None = None
    dedup: bool = True
    on_comment: CommentCallback | None = None
    resume_unsafe: bool = False
    max_line_size: int | None = None
    max_event_size: int | None = None
    strict: bool = False
    event_types: Collection[str] | None = None
    decode: bool = True
    error_event: str | None = None
    done: str | Callable[[Event], bool] | None = None
    checkpoint: CheckpointStore | None = None
    on_open: Callable[[int, Mapping[str, str]], Any] | None = None
    on_retry: Callable[[int, float, BaseException | None], Any] | None = None
    on_error: Callable[[BaseException], Any] | None = None

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option names, in ``connect()``'s order."""
        return _NAMES

    def replace(self, **changes: Any) -> ConnectOptions:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)

    @property
    def upper_method(self) -> str:
        """The method as it is sent and shown in errors."""
        return self.method.upper()

    def request_kwargs(self, timeouts: Timeouts | None) -> dict[str, Any]:
        """The per-request arguments passed through to ``aiosonic.HTTPClient.request``."""
        return {
            "multipart": self.multipart,
            "verify": self.verify,
            "ssl": self.ssl,
            "timeouts": timeouts,
            "http2": self.http2,
            "json_serializer": self.json_serializer,
        }

    def initial_event_id(self) -> str | None:
        """The ``Last-Event-ID`` of the first request: ``last_event_id``, else one among the headers."""
        if self.last_event_id is not None:
            return self.last_event_id
        if isinstance(self.headers, Mapping):
            return next((str(v) for k, v in self.headers.items() if k.lower() == "last-event-id"), None)
        return None

    def shortest_timeout(self) -> float | None:
        """The shortest of the three timeouts that is set, or None when none is."""
        timeouts = [t for t in (self.read_timeout, self.event_timeout, self.first_event_timeout) if t]
        return min(timeouts) if timeouts else None


#: The defaults of every option (``url`` aside), read by ``connect()``'s signature.
DEFAULTS = ConnectOptions(url="")


_NAMES = tuple(field.name for field in dataclasses.fields(ConnectOptions))  # connect() reads them per call
