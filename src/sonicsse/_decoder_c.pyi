"""Types of the compiled decoder (ext/_decoder_c.pyx): the same API as ``sonicsse._decoder_py``."""

from collections.abc import Callable, Collection
from typing import Any

from ._decoder_py import Buffer
from ._types import Event

class SSEDecoder:
    def __init__(
        self,
        dedup: bool = False,
        strict: bool = False,
        last_event_id: str = "",
        on_comment: Callable[[str], Any] | None = None,
        max_line_size: int = 1048576,
        max_event_size: int = 16777216,
        dedup_window: int = 1024,
        event_types: Collection[str] | None = None,
        decode: bool = True,
    ) -> None: ...
    @property
    def last_event_id(self) -> str: ...
    @property
    def decode(self) -> bool: ...
    @decode.setter
    def decode(self, value: bool) -> None: ...
    @property
    def retry(self) -> int | None: ...
    @property
    def dispatched(self) -> int: ...
    def reset(self) -> None: ...
    def feed(self, chunk: Buffer) -> list[Event]: ...
