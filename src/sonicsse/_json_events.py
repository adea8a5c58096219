"""``SSEConnection.iter_json()``: each event's data as a JSON value, for LLM streams.

The stream is screened for the end sentinel (``[DONE]`` by default) and for in-band errors while it is
iterated this way. orjson, the default parser when it is installed, is fed the raw bytes: it parses
them at 0.34x the cost of str + ``json.loads`` on OpenAI-style chunks, while ``json.loads`` is slower on
bytes (1.29x: it detects the encoding first); see ``benchmarks/test_options.py``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING, Any

from ._inband import StopSignals
from ._types import Event
from .exceptions import SSEParsingError

if TYPE_CHECKING:
    from .connection import SSEConnection

__all__ = ["default_loads", "json_values"]


def default_loads() -> Callable[[Any], Any]:
    """orjson.loads when orjson is installed (``sonicsse[fast]``), else json.loads."""
    try:
        import orjson
    except ImportError:
        return json.loads
    loads: Callable[[Any], Any] = orjson.loads
    return loads


async def json_values(
    conn: SSEConnection,
    done: str | Callable[[Event], bool] | None,
    loads: Callable[[Any], Any] | None,
) -> AsyncGenerator[Any, None]:
    """The JSON value of each event's data (events with empty data skipped), until ``done``."""
    parse: Callable[[Any], Any] = default_loads() if loads is None else loads
    raw = getattr(parse, "__module__", None) == "orjson"
    options = conn._core.options
    decode = conn._decoder.decode and not raw
    signals = StopSignals(
        options.done if done is None else done,
        options.error_event or "error",
        raw=not decode,
        loads=parse,
        # bytes only for the parser's sake: a predicate written for str data still gets str
        text_events=raw and conn._decoder.decode,
        method=options.upper_method,
        url=options.url,
    )
    with conn._screened(signals, decode):
        async with contextlib.aclosing(conn.iter_batches()) as batches:
            async for events in batches:
                for event in events:
                    data = event["data"]
                    if not data:
                        continue
                    try:
                        value = parse(data)
                    except ValueError as exc:
                        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
                        raise SSEParsingError(
                            f"event data is not JSON: {exc}",
                            line=text[:80],
                            method=options.upper_method,
                            url=options.url,
                        ) from exc
                    yield value
