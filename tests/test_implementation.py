"""Guards: the compiled decoder really is the one that runs in a normal build, and the switch works."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import sonicsse

from conftest import NO_EXTENSIONS


def test_public_names() -> None:
    for name in ("SSEDecoder", "SSEParsingError", "SSEConnectionError", "IMPLEMENTATION", "__version__"):
        assert hasattr(sonicsse, name), name
    assert sonicsse.IMPLEMENTATION in ("c", "py")


@pytest.mark.skipif(NO_EXTENSIONS, reason="built with SONICSSE_NO_EXTENSIONS")
def test_compiled_decoder_is_active_in_a_normal_build() -> None:
    # Fails when the extension silently did not build or import: the pure twin would hide a broken wheel.
    from sonicsse import _decoder_c

    assert sonicsse.IMPLEMENTATION == "c"
    assert sonicsse.SSEDecoder is _decoder_c.SSEDecoder


@pytest.mark.skipif(not NO_EXTENSIONS, reason="only for the pure run")
def test_pure_decoder_is_active_without_extensions() -> None:
    from sonicsse import _decoder_py

    assert sonicsse.IMPLEMENTATION == "py"
    assert sonicsse.SSEDecoder is _decoder_py.SSEDecoder

    from sonicsse import _chunked_py, _events_py, _impl, _receiver_py

    assert _impl.EventIterator is _events_py.EventIterator
    assert _impl.ChunkedDecoder is _chunked_py.ChunkedDecoder
    assert _impl.BodyReceiver is _receiver_py.BodyReceiver


@pytest.mark.skipif(NO_EXTENSIONS, reason="built with SONICSSE_NO_EXTENSIONS")
def test_compiled_event_iterator_chunked_decoder_and_receiver_are_active_in_a_normal_build() -> None:
    from sonicsse import _chunked_c, _events_c, _impl, _receiver_c

    assert _impl.EventIterator is _events_c.EventIterator
    assert _impl.ChunkedDecoder is _chunked_c.ChunkedDecoder
    assert _impl.BodyReceiver is _receiver_c.BodyReceiver


def test_environment_switch_forces_the_pure_decoder() -> None:
    code = (
        "import sonicsse, sonicsse._impl as i;"
        "print(sonicsse.IMPLEMENTATION, sonicsse.SSEDecoder.__module__, i.EventIterator.__module__,"
        " i.ChunkedDecoder.__module__, i.BodyReceiver.__module__)"
    )
    env = {**os.environ, "SONICSSE_NO_EXTENSIONS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [
        "py",
        "sonicsse._decoder_py",
        "sonicsse._events_py",
        "sonicsse._chunked_py",
        "sonicsse._receiver_py",
    ]


# Makes the compiled modules fail to import, as on an install that had no compiler.
_HIDE_COMPILED = (
    "import sys, importlib.abc\n"
    "class Hide(importlib.abc.MetaPathFinder):\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.startswith('sonicsse._') and name.endswith('_c'):\n"
    "            raise ImportError('no module named ' + name)\n"
    "sys.meta_path.insert(0, Hide())\n"
)


def _import_sonicsse(prelude: str, no_extensions: str | None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("SONICSSE_NO_EXTENSIONS", None)
    if no_extensions is not None:
        env["SONICSSE_NO_EXTENSIONS"] = no_extensions
    code = prelude + "import sonicsse; print(sonicsse.IMPLEMENTATION)"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)


def test_missing_compiled_modules_warn_once_at_import() -> None:
    result = _import_sonicsse(_HIDE_COMPILED, None)
    assert result.stdout.split() == ["py"]
    assert result.stderr.count("RuntimeWarning") == 1
    assert "pure-Python modules" in result.stderr and "SONICSSE_NO_EXTENSIONS=1" in result.stderr


@pytest.mark.parametrize("value", ["1", "true", "yes"])
def test_pure_modules_chosen_on_purpose_do_not_warn(value: str) -> None:
    result = _import_sonicsse(_HIDE_COMPILED, value)
    assert result.stdout.split() == ["py"]
    assert "Warning" not in result.stderr


@pytest.mark.skipif(NO_EXTENSIONS, reason="built with SONICSSE_NO_EXTENSIONS")
@pytest.mark.parametrize("value", ["0", "false", "False", "no", "off", "", " "])
def test_no_extensions_values_that_mean_not_set(value: str) -> None:
    result = _import_sonicsse("", value)
    assert result.stdout.split() == ["c"]
    assert result.stderr == ""


def test_switched_off_rule() -> None:
    from sonicsse._impl import switched_off

    assert [switched_off(v) for v in (None, "", "0", "false", "OFF", "no", " 0 ")] == [False] * 7
    assert [switched_off(v) for v in ("1", "true", "yes", "pure")] == [True] * 4


def test_exceptions_are_aiosonic_exceptions() -> None:
    import aiosonic.exceptions

    assert issubclass(sonicsse.SSEParsingError, aiosonic.exceptions.SSEParsingError)
    assert issubclass(sonicsse.SSEConnectionError, aiosonic.exceptions.SSEConnectionError)


def test_the_compiled_decoders_type_stub_declares_the_pure_twins_public_api() -> None:
    """``_decoder_c.pyi`` gives the compiled decoder the pure one's types: both must name the same API."""
    import ast
    import inspect
    from pathlib import Path

    from sonicsse import _decoder_py

    stub = Path(sonicsse.__file__).with_name("_decoder_c.pyi")
    tree = ast.parse(stub.read_text(encoding="utf-8"))
    (cls,) = [node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "SSEDecoder"]
    declared = {node.name for node in cls.body if isinstance(node, ast.FunctionDef)}
    public = {name for name in vars(_decoder_py.SSEDecoder) if not name.startswith("_")}
    assert declared - {"__init__"} == public
    init = next(node for node in cls.body if isinstance(node, ast.FunctionDef) and node.name == "__init__")
    stub_params = [arg.arg for arg in init.args.args[1:]]
    assert stub_params == list(inspect.signature(_decoder_py.SSEDecoder).parameters)
