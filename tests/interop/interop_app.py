"""The ASGI app the interop tests run under uvicorn and hypercorn (and behind nginx): Starlette with
sse-starlette, started in a subprocess as ``interop_app:app``.

Routes (``?framing=length`` answers with the whole stream as one Content-Length body instead of
sse-starlette's streamed, chunked one under HTTP/1.1):

- ``GET /events?n=N&batch=B``: N small events (interop_content.SMALL_COUNT by default), one per
  message (sse-starlette's way: one chunk each), or B per message (fewer, larger chunks: cheaper
  for the server, where the test is about a proxy rather than about chunk sizes);
- ``GET /big``: the BIG_COUNT events of 1 MiB each;
- ``POST /v1/chat/completions``: checks the JSON body is CHAT_REQUEST (else 400), then streams the
  TOKEN_COUNT token chunks and ``[DONE]``;
- ``GET /headers``: one event whose data is the JSON of the request's headers (a proxy's ``Via``)
  and HTTP version: ``{"headers": {...}, "http_version": "1.1"}``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

from interop_content import (
    BIG_COUNT,
    DONE,
    SMALL_COUNT,
    TOKEN_COUNT,
    big_body,
    big_data,
    is_chat_request,
    small_body,
    small_data,
    token_json,
    tokens_body,
)
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route


def _stream(
    request: Request, events: Callable[[], AsyncIterator[ServerSentEvent | bytes]], body: bytes
) -> Response:
    if request.query_params.get("framing") == "length":
        return Response(body, media_type="text/event-stream")
    return EventSourceResponse(events(), ping=None)


async def events(request: Request) -> Response:
    """GET /events: ``n`` small events, ``batch`` per message."""
    count = int(request.query_params.get("n", SMALL_COUNT))
    batch = int(request.query_params.get("batch", 1))

    async def gen() -> AsyncIterator[ServerSentEvent | bytes]:
        if batch == 1:
            for i in range(1, count + 1):
                yield ServerSentEvent(small_data(i), id=str(i))
            return
        for first in range(1, count + 1, batch):
            last = min(first + batch, count + 1)
            yield b"".join(ServerSentEvent(small_data(i), id=str(i)).encode() for i in range(first, last))

    return _stream(request, gen, small_body(count) if request.query_params.get("framing") else b"")


async def big(request: Request) -> Response:
    """GET /big: the BIG_COUNT events of BIG_SIZE characters."""

    async def gen() -> AsyncIterator[ServerSentEvent | bytes]:
        for i in range(1, BIG_COUNT + 1):
            yield ServerSentEvent(big_data(i), id=str(i))

    return _stream(request, gen, big_body() if request.query_params.get("framing") else b"")


async def chat(request: Request) -> Response:
    """POST /v1/chat/completions: the token stream, when the body is CHAT_REQUEST."""
    if not is_chat_request(await request.body()):
        return PlainTextResponse("the request body is not the expected JSON", status_code=400)

    async def gen() -> AsyncIterator[ServerSentEvent | bytes]:
        for i in range(1, TOKEN_COUNT + 1):
            yield ServerSentEvent(token_json(i))
        yield ServerSentEvent(DONE)

    return _stream(request, gen, tokens_body() if request.query_params.get("framing") else b"")


async def headers(request: Request) -> Response:
    """GET /headers: one event with the request's headers and HTTP version."""
    info = {"headers": dict(request.headers), "http_version": request.scope.get("http_version")}
    data = json.dumps(info, sort_keys=True)
    return Response(f"data: {data}\n\n".encode(), media_type="text/event-stream")


app = Starlette(
    routes=[
        Route("/events", events),
        Route("/big", big),
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/headers", headers),
    ]
)
