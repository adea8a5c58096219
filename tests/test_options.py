"""``ConnectOptions`` holds every ``connect()`` option with its default once: the signature is tied to it."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from sonicsse import SSEClient
from sonicsse._options import DEFAULTS, ConnectOptions


def test_connect_takes_exactly_the_options_in_their_order() -> None:
    parameters = list(inspect.signature(SSEClient.connect).parameters)
    assert parameters[1:] == list(ConnectOptions.names())


def test_connect_defaults_are_the_options_defaults() -> None:
    signature = inspect.signature(SSEClient.connect).parameters
    for field in dataclasses.fields(ConnectOptions):
        if field.name == "url":
            assert signature["url"].default is inspect.Parameter.empty
            continue
        assert signature[field.name].default is getattr(DEFAULTS, field.name), field.name


def test_aiosonic_positional_order_is_kept() -> None:
    positional = [
        name
        for name, parameter in inspect.signature(SSEClient.connect).parameters.items()
        if parameter.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    ]
    assert positional == [
        "self", "url", "method", "headers", "params", "data", "json", "multipart", "verify", "ssl",
        "timeouts", "follow", "http2", "reconnect", "retry_delay", "json_serializer", "keep_connection",
    ]  # fmt: skip


def test_options_are_frozen() -> None:
    options = ConnectOptions(url="http://127.0.0.1/")
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.retry_delay = 1  # type: ignore[misc]
    assert options.replace(retry_delay=1).retry_delay == 1 and options.retry_delay == 3000


def test_the_initial_event_id_comes_from_the_option_or_the_headers() -> None:
    assert ConnectOptions(url="u", headers={"Last-Event-ID": "7"}).initial_event_id() == "7"
    assert (
        ConnectOptions(url="u", headers={"last-event-id": "7"}, last_event_id="9").initial_event_id() == "9"
    )
    assert ConnectOptions(url="u", headers=lambda: {"Last-Event-ID": "7"}).initial_event_id() is None
