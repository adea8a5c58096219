"""Shared fixtures: async tests run on asyncio and on uvloop; decoder tests run on both implementations."""

from __future__ import annotations

import asyncio
import functools
import importlib
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from sonicsse._impl import switched_off

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is not available on Windows
    uvloop = None

NO_EXTENSIONS = switched_off(os.environ.get("SONICSSE_NO_EXTENSIONS"))

# Every test talks to servers on loopback that it starts itself: a developer's proxy settings (which send
# loopback through the proxy when NO_PROXY is not set) must not reach them. Tests of proxy settings set
# their own with monkeypatch.
for _name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
    os.environ.pop(_name, None)
    os.environ.pop(_name.upper(), None)

IMPLEMENTATIONS = ["c", "py"]


LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def pytest_asyncio_loop_factories(config: Any, item: Any) -> Mapping[str, LoopFactory]:
    factories: dict[str, LoopFactory] = {"asyncio": asyncio.new_event_loop}
    if uvloop is not None:
        factories["uvloop"] = uvloop.new_event_loop
    return factories


def load_module(impl: str, name: str) -> Any:
    """``sonicsse._<name>_<impl>``: one twin of a hot-path module; skips ``c`` in a build without
    extensions."""
    if impl == "c" and NO_EXTENSIONS:
        pytest.skip("built with SONICSSE_NO_EXTENSIONS: no compiled modules")
    return importlib.import_module(f"sonicsse._{name}_{impl}")


@pytest.fixture(params=IMPLEMENTATIONS)
def impl(request: pytest.FixtureRequest) -> str:
    """The implementation under test: ``"c"`` or ``"py"``."""
    return str(request.param)


@pytest.fixture
def decoder_cls(impl: str) -> Any:
    """The ``SSEDecoder`` class of the implementation under test."""
    return load_module(impl, "decoder").SSEDecoder


@pytest.fixture
def event_iterator(impl: str) -> Any:
    """The ``EventIterator`` of the implementation under test, made from ``(step, next_batch, on_exit,
    rest)`` callables (see ``client_helpers.iterator_of``)."""
    from client_helpers import iterator_of

    return functools.partial(iterator_of, load_module(impl, "events").EventIterator)


@pytest.fixture
def chunked_cls(impl: str) -> Any:
    """The ``ChunkedDecoder`` class of the implementation under test."""
    return load_module(impl, "chunked").ChunkedDecoder


@pytest.fixture
def receiver_module(impl: str) -> Any:
    """The ``_receiver_*`` module (``BodyReceiver`` and its sizes) of the implementation under test."""
    return load_module(impl, "receiver")


@pytest.fixture
def client_decoder(
    impl: str,
    decoder_cls: Any,
    chunked_cls: Any,
    receiver_module: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> Any:
    """Make the client run on the implementation under test: its decoder, event iterator, chunked
    decoder and body receiver (a module asks for it with a ``usefixtures`` mark).

    The one selector, ``sonicsse._impl``, is switched: the client's modules look the twins up there when
    they make one, so no importer can escape the switch."""
    import sonicsse._impl

    monkeypatch.setattr(sonicsse._impl, "SSEDecoder", decoder_cls)
    monkeypatch.setattr(sonicsse._impl, "EventIterator", load_module(impl, "events").EventIterator)
    monkeypatch.setattr(sonicsse._impl, "ChunkedDecoder", chunked_cls)
    monkeypatch.setattr(sonicsse._impl, "BodyReceiver", receiver_module.BodyReceiver)
    return decoder_cls


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The fault scenarios' outcomes (``test_faults.OUTCOMES``) as a table, after the results."""
    outcomes: dict[str, str] = getattr(sys.modules.get("test_faults"), "OUTCOMES", None) or {}
    if not outcomes:
        return
    width = max(len(name) for name in outcomes)
    terminalreporter.write_sep("-", "fault scenarios: what the user saw")
    for name, outcome in outcomes.items():
        terminalreporter.write_line(f"{name:<{width}} | {outcome}")
