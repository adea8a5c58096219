"""What every interop server sends and what the client must read: the single source of both.

Standard library only: the stdlib HTTP/1.0 server script, the Starlette app (run by uvicorn and
hypercorn in their own processes), the static files nginx serves and the tests all import it.
"""

from __future__ import annotations

import functools
import itertools
import json
from typing import Any

#: GET /events: this many small events, ``id: i`` / ``data: event i`` (i from 1).
SMALL_COUNT = 10_000
#: GET /big: this many events of BIG_SIZE characters of data each.
BIG_COUNT = 4
BIG_SIZE = 1 << 20
#: POST /v1/chat/completions: this many OpenAI-style token chunks, then ``data: [DONE]``.
TOKEN_COUNT = 200
#: The JSON body a token request must carry (the servers answer 400 to anything else).
CHAT_REQUEST: dict[str, Any] = {
    "model": "interop",
    "stream": True,
    "messages": [{"role": "user", "content": "count to 200 ✓"}],
}
DONE = "[DONE]"


def small_data(i: int) -> str:
    """The data of the i-th small event."""
    return f"event {i}"


@functools.cache
def big_data(i: int) -> str:
    """The data of the i-th big event: BIG_SIZE characters of position-dependent ASCII text, so a lost,
    repeated or reordered piece anywhere changes it."""
    pieces = (f"<{i}:{k:08d}>" for k in range(BIG_SIZE))  # at least 12 characters each
    text = "".join(itertools.islice(pieces, BIG_SIZE // 12 + 1))
    return text[:BIG_SIZE]


def token_json(i: int) -> str:
    """The data of the i-th token event: an OpenAI-style ``chat.completion.chunk`` delta."""
    return json.dumps({"choices": [{"delta": {"content": f"tok{i}"}}]}, separators=(",", ":"))


def token_value(i: int) -> dict[str, Any]:
    """The i-th token event's data as ``iter_json()`` yields it."""
    return {"choices": [{"delta": {"content": f"tok{i}"}}]}


def is_chat_request(body: bytes) -> bool:
    """True when ``body`` is CHAT_REQUEST as JSON (so a mangled or missing request body is caught)."""
    try:
        return bool(json.loads(body) == CHAT_REQUEST)
    except ValueError:
        return False


def _event(data: str, event_id: str | None = None, sep: str = "\n") -> str:
    head = f"id: {event_id}{sep}" if event_id is not None else ""
    return f"{head}data: {data}{sep}{sep}"


def small_body(count: int = SMALL_COUNT, sep: str = "\n") -> bytes:
    """The whole event stream of ``count`` small events."""
    return "".join(_event(small_data(i), str(i), sep) for i in range(1, count + 1)).encode()


def big_body(sep: str = "\n") -> bytes:
    """The whole event stream of the BIG_COUNT big events."""
    return "".join(_event(big_data(i), str(i), sep) for i in range(1, BIG_COUNT + 1)).encode()


def tokens_body(count: int = TOKEN_COUNT, sep: str = "\n") -> bytes:
    """The whole event stream of ``count`` token chunks and the ``[DONE]`` sentinel."""
    events = [_event(token_json(i), None, sep) for i in range(1, count + 1)]
    return "".join([*events, _event(DONE, None, sep)]).encode()


def expected_small(count: int = SMALL_COUNT) -> list[dict[str, Any]]:
    """The events the client must deliver for ``small_body(count)``."""
    return [{"data": small_data(i), "event": None, "id": str(i), "retry": None} for i in range(1, count + 1)]


def expected_big() -> list[dict[str, Any]]:
    """The events the client must deliver for ``big_body()``."""
    return [
        {"data": big_data(i), "event": None, "id": str(i), "retry": None} for i in range(1, BIG_COUNT + 1)
    ]


def expected_tokens(count: int = TOKEN_COUNT) -> list[dict[str, Any]]:
    """The values ``iter_json()`` must yield for ``tokens_body(count)`` (it stops at ``[DONE]``)."""
    return [token_value(i) for i in range(1, count + 1)]
