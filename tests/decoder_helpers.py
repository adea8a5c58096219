"""Helpers for the decoder tests: chunkings and a decode-everything call."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

CHUNKINGS = ["whole", "1", "2", "7", "random"]


def chunked(stream: bytes, chunking: str, seed: int = 0) -> Iterator[bytes]:
    """``stream`` cut the way ``chunking`` names: whole, in n-byte pieces, or at random cut points."""
    if chunking == "whole":
        yield stream
        return
    if chunking == "random":
        rng = random.Random(seed)
        pos = 0
        while pos < len(stream):
            size = rng.choice([1, 1, 2, 3, 5, 8, 64, 1000])
            yield stream[pos : pos + size]
            pos += size
        return
    size = int(chunking)
    for pos in range(0, len(stream), size):
        yield stream[pos : pos + size]


def decode(decoder: Any, stream: bytes, chunking: str = "whole") -> list[dict[str, Any]]:
    """Every event ``decoder`` yields for ``stream`` cut as ``chunking`` says."""
    events: list[dict[str, Any]] = []
    for chunk in chunked(stream, chunking):
        events.extend(decoder.feed(chunk))
    return events
