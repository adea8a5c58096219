"""Beyond the peers, end to end over loopback servers on both decoders: in-band errors, end sentinels,
resume checkpoints, raw bytes, event-type filters, lifecycle hooks and logging."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

import pytest

import sonicsse._json_events
from sonicsse import FileCheckpoint, SSEClient
from sonicsse.exceptions import SSEConnectionError, SSEParsingError, SSEServerError

from servers import CLOSE, DROP, LAST_CHUNK, STALL, Request, ScriptServer, chunk, head, sse_chunked, sse_close

pytestmark = pytest.mark.usefixtures("client_decoder")  # every test on the compiled and on the pure hot path

FAST = {"retry_delay": 10, "max_retry_delay": 50}


def token(text: str) -> bytes:
    chunk = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": text}}]}
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


ANTHROPIC_ERROR = (
    b"event: error\n"
    b'data: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}\n\n'
)


# -- in-band errors -------------------------------------------------------------------------------


async def test_error_event_raises_typed_error_after_earlier_events() -> None:
    async with ScriptServer([sse_chunked(token("Hel") + token("lo") + ANTHROPIC_ERROR)]) as srv:
        async with SSEClient() as client, client.connect(srv.url(), error_event="error", **FAST) as conn:
            seen = []
            with pytest.raises(SSEServerError) as info:
                async for event in conn:
                    seen.append(json.loads(event["data"])["choices"][0]["delta"]["content"])
    assert seen == ["Hel", "lo"]
    error = info.value
    assert isinstance(error, SSEConnectionError)
    assert (error.error_type, error.message, error.retryable) == ("overloaded_error", "Overloaded", True)
    assert error.event["event"] == "error" and error.payload["type"] == "error"
    assert len(srv.requests) == 1  # an in-band error is not retried behind the user's back


async def test_iter_json_in_band_error_in_a_later_read_after_plain_reads() -> None:
    # Reads without a stop are screened on the steady-state path; the read that holds the error goes to
    # the full path, which delivers the events before it, calls on_error once and raises.
    errors: list[BaseException] = []
    last = chunk(token("c") + ANTHROPIC_ERROR)
    steps = [head(), chunk(token("a")), 0.02, chunk(token("b")), 0.02, last, STALL]
    async with ScriptServer([steps]) as srv, SSEClient() as client:
        async with client.connect(srv.url(), on_error=errors.append, **FAST) as conn:
            contents = []
            with pytest.raises(SSEServerError) as info:
                async for chunk_ in conn.iter_json():
                    contents.append(chunk_["choices"][0]["delta"]["content"])
    assert contents == ["a", "b", "c"]
    assert errors == [info.value] and info.value.error_type == "overloaded_error"
    assert len(srv.requests) == 1


async def test_error_event_off_by_default() -> None:
    async with ScriptServer([sse_close(ANTHROPIC_ERROR)]) as srv:
        async with SSEClient() as client, client.connect(srv.url(), reconnect=False) as conn:
            events = [event async for event in conn]
    assert [e["event"] for e in events] == ["error"]


async def test_error_event_with_non_json_body() -> None:
    async with ScriptServer([sse_close(b"data: a\n\nevent: error\ndata: upstream fell over\n\n")]) as srv:
        async with SSEClient() as client, client.connect(srv.url(), error_event="error") as conn:
            with pytest.raises(SSEServerError) as info:
                async for _ in conn:
                    pass
    assert info.value.payload is None and info.value.retryable is False
    assert info.value.event["data"] == "upstream fell over"


async def test_iter_json_raises_server_error_not_key_error() -> None:
    openai_error = b'data: {"error": {"message": "Rate limit reached", "type": "rate_limit_exceeded"}}\n\n'
    async with ScriptServer([sse_chunked(token("a") + openai_error)]) as srv:
        async with SSEClient() as client, client.connect(srv.url()) as conn:
            contents = []
            with pytest.raises(SSEServerError) as info:
                async for chunk_ in conn.iter_json():
                    contents.append(chunk_["choices"][0]["delta"]["content"])
    assert contents == ["a"]
    assert info.value.retryable is True and info.value.message == "Rate limit reached"


async def test_iter_json_non_json_data_is_a_parsing_error() -> None:
    async with ScriptServer([sse_close(b"data: not json\n\n")]) as srv:
        async with SSEClient() as client, client.connect(srv.url(), reconnect=False) as conn:
            with pytest.raises(SSEParsingError, match="not JSON") as info:
                async for _ in conn.iter_json():
                    pass
    assert info.value.url == srv.url()


# -- end sentinels --------------------------------------------------------------------------------


@pytest.mark.parametrize("split", [False, True], ids=["one-read", "split-across-reads"])
async def test_done_sentinel_ends_iteration_without_reconnect(split: bool) -> None:
    if split:
        steps = [head(), chunk(token("a") + b"data: [DO"), 0.05, chunk(b"NE]\n"), 0.05, chunk(b"\n"), STALL]
    else:
        steps = [head(), chunk(token("a") + b"data: [DONE]\n\n" + token("after")), STALL]
    async with ScriptServer([steps]) as srv:
        async with SSEClient() as client, client.connect(srv.url(), done="[DONE]", **FAST) as conn:
            events = [event async for event in conn]
            await asyncio.wait_for(srv.conns[0].gone.wait(), 5)  # closed: nothing after it is read
    assert [json.loads(e["data"])["choices"][0]["delta"]["content"] for e in events] == ["a"]
    assert len(srv.requests) == 1


async def test_done_predicate() -> None:
    body = b"event: delta\ndata: 1\n\nevent: message_stop\ndata: {}\n\nevent: delta\ndata: 2\n\n"
    async with ScriptServer([[*sse_chunked(body, end=False), STALL]]) as srv, SSEClient() as client:
        conn = await client.connect(srv.url(), done=lambda e: e["event"] == "message_stop")
        events = [event["data"] async for event in conn]
        await conn.close()
    assert events == ["1"]


async def test_done_with_keep_connection_returns_the_connection_to_the_pool() -> None:
    body = token("a") + b"data: [DONE]\n\n"
    scripts = [sse_chunked(body), sse_chunked(token("b") + b"data: [DONE]\n\n")]
    async with ScriptServer(scripts) as srv, SSEClient() as client:
        for expected in ("a", "b"):
            conn = await client.connect(srv.url(), done="[DONE]", keep_connection=True)
            events = [e async for e in conn]
            assert json.loads(events[0]["data"])["choices"][0]["delta"]["content"] == expected
            await conn.close()
        assert [r.conn_id for r in srv.requests] == [0, 0]  # the second stream reused the socket


async def test_done_bytes_mode() -> None:
    async with ScriptServer([[*sse_chunked(b"data: x\n\ndata: [DONE]\n\n", end=False), STALL]]) as srv:
        async with SSEClient() as client, client.connect(srv.url(), done="[DONE]", decode=False) as conn:
            assert [e["data"] async for e in conn] == [b"x"]


async def test_done_predicate_sees_text_data_in_iter_json() -> None:
    """iter_json hands orjson/json.loads the raw bytes; the caller's predicate still gets str data."""
    steps = [head(), chunk(token("a") + b"data: [END]\n\n" + token("after")), STALL]
    async with ScriptServer([steps]) as srv, SSEClient() as client:
        async with client.connect(srv.url(), **FAST) as conn:
            chunks = [c async for c in conn.iter_json(done=lambda e: e["data"] == "[END]")]
    assert [c["choices"][0]["delta"]["content"] for c in chunks] == ["a"]


# -- resume checkpoints ---------------------------------------------------------------------------


def numbered(first: int, last: int) -> bytes:
    return b"".join(b"id: %d\ndata: %d\n\n" % (i, i) for i in range(first, last + 1))


def resuming_source(total: int, cut_after: int) -> Any:
    """Ids 1..total, resuming after Last-Event-ID; the first answer drops after ``cut_after`` events."""

    def script(n: int, request: Request) -> list[Any]:
        last = int(request.headers.get("last-event-id") or 0)
        if last >= total:
            return [head(204, None, framing="length", length=0)]
        stop = min(total, last + cut_after) if n == 0 else total
        return [head(framing="close"), numbered(last + 1, stop), DROP if n == 0 else CLOSE]

    return script


async def test_checkpoint_resumes_a_restarted_process(tmp_path: Path) -> None:
    store = FileCheckpoint(tmp_path / "last-id")
    async with ScriptServer(resuming_source(total=10, cut_after=4)) as srv:
        # first "process": consumes 6 events, then stops
        async with SSEClient() as client, client.connect(srv.url(), checkpoint=store, **FAST) as conn:
            first = []
            async for event in conn:
                first.append(int(event["data"]))
                if len(first) == 6:
                    break
        saved = store.load()
        assert saved is not None and int(saved) <= 6  # only what the consumer finished is saved
        # second "process": resumes from the checkpoint
        async with SSEClient() as client, client.connect(srv.url(), checkpoint=store, **FAST) as conn:
            second = [int(event["data"]) async for event in conn]
        assert srv.requests[-2].headers["last-event-id"] == saved
    delivered = first + second
    assert sorted(set(delivered)) == list(range(1, 11))  # nothing lost
    assert second == list(range(int(saved) + 1, 11))
    assert store.load() == "10"


async def test_checkpoint_saves_at_most_once_per_read() -> None:
    class Recorder:
        def __init__(self) -> None:
            self.saved: list[str] = []

        async def load(self) -> str | None:
            return None

        async def save(self, last_event_id: str) -> None:
            self.saved.append(last_event_id)

    store = Recorder()
    steps = [head(), chunk(numbered(1, 50)), 0.05, chunk(numbered(51, 100)), LAST_CHUNK]
    async with ScriptServer([steps]) as srv, SSEClient() as client:
        conn = await client.connect(srv.url(), checkpoint=store, reconnect=False)
        count = sum([1 async for _ in conn])
    assert count == 100
    assert store.saved == ["50", "100"]  # two socket reads, two saves, not a hundred


@pytest.mark.parametrize("cut", ["error", "sentinel"])
async def test_checkpoint_never_moves_past_an_undelivered_event(cut: str) -> None:
    """One read holds ids 1-3; the in-band error (or the end sentinel) at id 2 stops delivery after 1:
    the saved resume point must be 1, or a restarted process would never see event 3."""

    class Recorder:
        def __init__(self) -> None:
            self.saved: list[str] = []

        def load(self) -> str | None:
            return None

        def save(self, last_event_id: str) -> None:
            self.saved.append(last_event_id)

    middle = b"event: error\nid: 2\ndata: {}\n\n" if cut == "error" else b"id: 2\ndata: [DONE]\n\n"
    body = b"id: 1\ndata: one\n\n" + middle + b"id: 3\ndata: three\n\n"
    store = Recorder()
    options: dict[str, Any] = {"error_event": "error"} if cut == "error" else {"done": "[DONE]"}
    async with ScriptServer([[*sse_chunked(body, end=False), STALL]]) as srv, SSEClient() as client:
        conn = await client.connect(srv.url(), checkpoint=store, **options, **FAST)
        seen: list[str] = []
        with contextlib.suppress(SSEServerError):
            async for event in conn:
                seen.append(event["data"])
        await conn.close()
    assert seen == ["one"]
    assert store.saved == ["1"]


async def test_checkpoint_store_that_raises_fails_clearly_and_loses_nothing() -> None:
    class Broken:
        def load(self) -> str | None:
            return "3"

        def save(self, last_event_id: str) -> None:
            raise OSError("disk full")

    steps = [head(), chunk(numbered(4, 6)), 0.05, chunk(numbered(7, 9)), STALL]
    async with ScriptServer([steps]) as srv:
        async with SSEClient() as client, client.connect(srv.url(), checkpoint=Broken()) as conn:
            seen = []
            with pytest.raises(SSEConnectionError, match=r"checkpoint save failed.*disk full"):
                async for event in conn:
                    seen.append(event["id"])
        assert srv.requests[0].headers["last-event-id"] == "3"
    # every event read before the failure reached the user; the store kept "3", so a restart
    # delivers them again: at least once, never lost
    assert seen == ["4", "5", "6"]


async def test_checkpoint_load_failure_is_a_connection_error() -> None:
    class Broken:
        def load(self) -> str | None:
            raise RuntimeError("no database")

        def save(self, last_event_id: str) -> None:
            pass

    async with ScriptServer([sse_close(b"data: x\n\n")]) as srv, SSEClient() as client:
        with pytest.raises(SSEConnectionError, match="checkpoint load failed"):
            await client.connect(srv.url(), checkpoint=Broken())
        assert srv.requests == []


# -- bytes fast path and event-type filter ------------------------------------------------------


async def test_decode_false_yields_bytes() -> None:
    async with ScriptServer([sse_close(b"event: e\nid: 1\ndata: caf\xc3\xa9\n\n")]) as srv:
        async with SSEClient() as client, client.connect(srv.url(), decode=False, reconnect=False) as conn:
            events = [event async for event in conn]
    assert events == [{"data": "café".encode(), "event": "e", "id": "1", "retry": None}]


def recording_loads(fed: list[type]) -> Any:
    """json.loads that notes the type of what it is given."""

    def loads(data: Any) -> Any:
        fed.append(type(data))
        return json.loads(data)

    return loads


async def test_iter_json_with_bytes_and_custom_loads() -> None:
    body = b'data: {"n": 1}\n\ndata: {"n": 2}\n\ndata: [DONE]\n\n'
    fed: list[type] = []
    loads = recording_loads(fed)
    async with ScriptServer([[*sse_chunked(body, end=False), STALL]]) as srv:
        async with SSEClient() as client, client.connect(srv.url(), decode=False) as conn:
            values = [v async for v in conn.iter_json(loads=loads)]
    assert values == [{"n": 1}, {"n": 2}]
    assert fed == [bytes, bytes]


async def test_iter_json_feeds_bytes_only_to_orjson() -> None:
    """json.loads is slower on bytes than on str (it detects the encoding first): only orjson gets bytes."""
    body = b'data: {"n": 1}\n\ndata: [DONE]\n\n'
    fed: list[type] = []
    loads = recording_loads(fed)
    async with ScriptServer([[*sse_chunked(body, end=False), STALL]]) as srv, SSEClient() as client:
        async with client.connect(srv.url()) as conn:
            assert [v async for v in conn.iter_json(loads=loads)] == [{"n": 1}]
        orjson = pytest.importorskip("orjson")
        async with client.connect(srv.url()) as conn:
            assert [v async for v in conn.iter_json(loads=orjson.loads)] == [{"n": 1}]
            assert conn._decoder.decode  # restored after iter_json switched it to bytes
    assert fed == [str]


async def test_iter_json_without_orjson_uses_json_loads_on_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "orjson", None)  # `import orjson` now fails, as when not installed
    assert sonicsse._json_events.default_loads() is json.loads
    body = b'data: {"n": 1}\n\ndata: [DONE]\n\n'
    async with ScriptServer([[*sse_chunked(body, end=False), STALL]]) as srv, SSEClient() as client:
        async with client.connect(srv.url()) as conn:
            assert [v async for v in conn.iter_json()] == [{"n": 1}]
            assert conn._decoder.decode


async def test_event_types_filter() -> None:
    body = b"".join(
        b"event: %s\nid: %d\ndata: %d\n\n" % (b"keep" if i % 10 == 0 else b"noise", i, i) for i in range(50)
    )
    async with ScriptServer([sse_close(body)]) as srv, SSEClient() as client:
        conn = await client.connect(srv.url(), event_types={"keep"}, reconnect=False)
        kept = [event["data"] async for event in conn]
        assert conn.last_event_id == "49"  # filtered events still move the resume point
        await conn.close()
    assert kept == ["0", "10", "20", "30", "40"]


# -- hooks and logging ----------------------------------------------------------------------------


async def test_lifecycle_hooks_sync_and_async() -> None:
    calls: list[tuple[Any, ...]] = []

    def on_open(status: int, headers: Any) -> None:
        calls.append(("open", status, headers["content-type"]))

    async def on_retry(attempt: int, delay: float, cause: BaseException | None) -> None:
        calls.append(("retry", attempt, delay >= 0, type(cause).__name__ if cause else None))

    def on_error(exc: BaseException) -> None:
        calls.append(("error", type(exc).__name__, getattr(exc, "status", None)))

    scripts = [
        [head(), chunk(b"id: 1\ndata: a\n\n"), DROP],
        [head(503, "text/plain", framing="length", length=0)],
        [head(), chunk(b"id: 2\ndata: b\n\n"), LAST_CHUNK],
        [head(204, None, framing="length", length=0)],
    ]
    async with ScriptServer(scripts) as srv, SSEClient() as client:
        conn = await client.connect(srv.url(), on_open=on_open, on_retry=on_retry, on_error=on_error, **FAST)
        assert [e["data"] async for e in conn] == ["a", "b"]
    assert calls[0] == ("open", 200, "text/event-stream")
    kinds = [c[0] for c in calls]
    assert kinds == ["open", "error", "retry", "error", "retry", "open", "retry"]
    assert calls[3] == ("error", "SSEConnectionError", 503)
    assert calls[6][3] is None  # the last stream ended cleanly: a retry with no cause


async def test_hook_exception_ends_the_stream() -> None:
    def on_open(status: int, headers: Any) -> None:
        raise RuntimeError("hook failed")

    async with ScriptServer([sse_close(b"data: a\n\n")]) as srv, SSEClient() as client:
        with pytest.raises(RuntimeError, match="hook failed"):
            await client.connect(srv.url(), on_open=on_open)


async def test_logging_never_shows_secrets(caplog: pytest.LogCaptureFixture) -> None:
    scripts = [[head(), chunk(b"data: secret-body\n\n"), DROP], sse_chunked(b"data: b\n\n")]
    headers = {
        "Authorization": "Bearer sk-verysecret",
        "Cookie": "session=topsecret",
        "X-Goog-Api-Key": "googsecret",
        "X-Trace": "t1",
    }
    caplog.set_level(logging.DEBUG, logger="sonicsse")
    async with ScriptServer(scripts) as srv, SSEClient() as client:
        url = srv.url("/sse?access_token=qsecret&page=2").replace("://", "://user:pwsecret@")
        conn = await client.connect(url, headers=headers, **FAST)
        async for event in conn:
            if event["data"] == "b":
                break
        await conn.close()
    text = caplog.text
    assert "connected GET" in text and "closed GET" in text
    assert "GET http://<redacted>@" in text and "retrying in" in text  # the retried failure
    assert "<redacted>" in text and "t1" in text and "page=2" in text
    for secret in ("sk-verysecret", "topsecret", "secret-body", "googsecret", "qsecret", "pwsecret"):
        assert secret not in text
