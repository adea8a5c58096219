"""Resume checkpoints: where a stream's ``Last-Event-ID`` is kept so a restarted process resumes there.

A checkpoint store is any object with ``load() -> str | None`` and ``save(last_event_id: str)``; either
method may be a coroutine function. ``connect(..., checkpoint=store)`` takes the first ``Last-Event-ID``
from ``load()`` and saves every new id, at most once per socket read.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Awaitable
from pathlib import Path
from typing import Protocol, runtime_checkable

__all__ = ["CheckpointStore", "FileCheckpoint"]


@runtime_checkable
class CheckpointStore(Protocol):
    """What ``connect(checkpoint=...)`` needs: load the last event id, save a new one."""

    def load(self) -> str | Awaitable[str | None] | None:
        """The id to resume from, or None to start from the beginning."""

    def save(self, last_event_id: str) -> Awaitable[None] | None:
        """Remember ``last_event_id``; it is resumed from after a restart."""


class FileCheckpoint:
    """A checkpoint kept in a small file, replaced atomically at each save.

    A crash mid-save leaves either the old id or the new one, never a torn file: the id is written to a
    temporary file in the same directory, flushed to disk, and renamed over the old file.

    Args:
        path: the file; its directory must exist.
        fsync: flush each save to disk before the rename (durable across power loss; slower).
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync

    def load(self) -> str | None:
        """The saved id, or None when nothing was saved yet."""
        try:
            return self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def save(self, last_event_id: str) -> None:
        """Atomically replace the saved id with ``last_event_id``."""
        fd, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as file:
                file.write(last_event_id)
                if self.fsync:
                    file.flush()
                    os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    def __repr__(self) -> str:
        return f"FileCheckpoint({str(self.path)!r})"
