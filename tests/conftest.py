"""Shared fixtures: async tests run on asyncio and on uvloop; decoder tests run on both implementations."""

from __future__ import annotations

import asyncio
import importlib
import os
from collections.abc import Callable, Mapping
from typing import Any

import pytest

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is not available on Windows
    uvloop = None

NO_EXTENSIONS = bool(os.environ.get("SONICSSE_NO_EXTENSIONS"))

IMPLEMENTATIONS = ["c", "py"]


LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def pytest_asyncio_loop_factories(config: Any, item: Any) -> Mapping[str, LoopFactory]:
    factories: dict[str, LoopFactory] = {"asyncio": asyncio.new_event_loop}
    if uvloop is not None:
        factories["uvloop"] = uvloop.new_event_loop
    return factories


def load_parser_module(impl: str) -> Any:
    """The decoder module of one implementation; skips ``c`` only in a build without extensions."""
    if impl == "py":
        return importlib.import_module("sonicsse._parser_py")
    if NO_EXTENSIONS:
        pytest.skip("built with SONICSSE_NO_EXTENSIONS: no compiled decoder")
    return importlib.import_module("sonicsse._parser_c")


@pytest.fixture(params=IMPLEMENTATIONS)
def impl(request: pytest.FixtureRequest) -> str:
    """The decoder implementation under test: ``"c"`` or ``"py"``."""
    return str(request.param)


@pytest.fixture
def decoder_cls(impl: str) -> Any:
    """The ``SSEDecoder`` class of the implementation under test."""
    return load_parser_module(impl).SSEDecoder


def load_events_module(impl: str) -> Any:
    """The event-iterator module of one implementation; skips ``c`` only in a build without extensions."""
    if impl == "py":
        return importlib.import_module("sonicsse._events_py")
    if NO_EXTENSIONS:
        pytest.skip("built with SONICSSE_NO_EXTENSIONS: no compiled event iterator")
    return importlib.import_module("sonicsse._events_c")


@pytest.fixture
def event_iterator(impl: str) -> Any:
    """The ``EventIterator`` of the implementation under test."""
    return load_events_module(impl).EventIterator


@pytest.fixture
def client_decoder(decoder_cls: Any, event_iterator: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make the client use the implementation under test, decoder and event iterator (a module uses it
    from an autouse fixture)."""
    import sonicsse.connection

    monkeypatch.setattr(sonicsse.connection, "SSEDecoder", decoder_cls)
    monkeypatch.setattr(sonicsse.connection, "EventIterator", event_iterator)
    return decoder_cls
