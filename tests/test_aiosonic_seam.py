"""The seam to aiosonic (``sonicsse._seam``): the only package that imports aiosonic, and its check of the
private names it relies on, which fails at import, by name, on an aiosonic that lacks one."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import pytest
from aiosonic.client import HttpResponse
from aiosonic.connection import Connection
from aiosonic.pools import PoolConfig

import sonicsse
from sonicsse import _seam

SOURCES = Path(sonicsse.__file__).parent


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_only_the_seam_imports_aiosonic_or_its_http2_engine() -> None:
    importers = {
        path.relative_to(SOURCES).parts[0]
        for path in SOURCES.rglob("*.py")
        if _imported_modules(path) & {"aiosonic", "h2"}
    }
    assert importers == {"_seam"}
    assert (SOURCES / "_seam" / "__init__.py").exists()


def test_the_installed_aiosonic_has_the_shape_the_seam_relies_on() -> None:
    _seam.check_shape()  # also ran at import


@pytest.mark.parametrize(
    ("owner", "name"),
    [
        (HttpResponse, "_discard_h2_queue"),
        (Connection, "_connection_made"),
        (asyncio.StreamReader, "feed_eof"),  # not relied on: must not fail
    ],
)
def test_a_missing_private_name_fails_with_the_aiosonic_version(
    monkeypatch: pytest.MonkeyPatch, owner: type, name: str
) -> None:
    monkeypatch.delattr(owner, name)
    if name == "feed_eof":
        _seam.check_shape()
        return
    with pytest.raises(ImportError) as caught:
        _seam.check_shape()
    message = str(caught.value)
    assert f"aiosonic {_seam.AIOSONIC_VERSION}" in message
    assert name in message


def test_a_changed_signature_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    async def connect(self: object, urlparsed: object, dns_info: object, verify: object) -> None: ...

    monkeypatch.setattr(Connection, "connect", connect)
    with pytest.raises(ImportError, match=r"Connection\.connect"):
        _seam.check_shape()


def test_the_lazy_pool_makes_connections_when_first_needed() -> None:
    async def main() -> None:
        pool = _seam.LazyPool(PoolConfig(size=1024), _seam.HoldingConnection)
        assert pool._made == 0
        conn = await pool.acquire()
        assert isinstance(conn, _seam.HoldingConnection) and pool._made == 1
        pool.release(conn)
        again = await pool.acquire()
        assert again is conn and pool._made == 1

    asyncio.run(main())


def test_request_arguments_aiosonic_refuses_are_refused_before_sending() -> None:
    with pytest.raises(ValueError, match="header value"):
        _seam.check_request({"X-Bad": "a\r\nb"}, None, multipart=False)
    with pytest.raises(ValueError, match="header name"):
        _seam.check_request({"Bad Name": "x"}, None, multipart=False)
    with pytest.raises(ValueError, match="dict"):
        _seam.check_request({}, b"raw", multipart=True)
    _seam.check_request({"Accept": "text/event-stream"}, {"a": "b"}, multipart=True)


def test_twins_are_looked_up_through_the_one_selector() -> None:
    """A module that bound a twin class at import would escape ``SONICSSE_NO_EXTENSIONS`` switches made
    through ``sonicsse._impl`` (and the tests' ``client_decoder`` fixture)."""
    twins = {"SSEDecoder", "EventIterator", "ChunkedDecoder", "BodyReceiver"}
    offenders = []
    for path in SOURCES.glob("*.py"):
        if path.name in ("__init__.py", "_impl.py"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:  # module level only: imports under TYPE_CHECKING are for types
            if isinstance(node, ast.ImportFrom) and node.module in ("_impl", "sonicsse._impl"):
                offenders += [f"{path.name}: {alias.name}" for alias in node.names if alias.name in twins]
    assert offenders == []
