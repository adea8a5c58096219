"""Every ``.pyi`` of a compiled module against that module and against its pure twin.

Each ``sonicsse/_<name>_c.pyi`` types the compiled module, whose own signatures Python cannot see (Cython
does not expose them). Three checks keep the stub, the compiled module and its pure twin in step:

- mypy's ``stubtest`` on the compiled modules: every name the stub declares exists, of the right kind, and
  every public name of the module is declared (when mypy is installed: it is in the ``dev`` extras, and
  ``.ci/run`` installs it to run this file again);
- the pure twin, which Python can see whole: it has every name, class, method, property and attribute the
  stub declares, with the stub's signatures, and nothing public the stub leaves out;
- the ``.pyx`` sources (when the source tree is there): each ``def`` takes the parameters the stub names.
"""

from __future__ import annotations

import ast
import asyncio
import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import sonicsse

from conftest import NO_EXTENSIONS

TWINS = ["decoder", "chunked", "events", "receiver"]
STUBS = Path(sonicsse.__file__).parent
PYX = Path(__file__).resolve().parent.parent / "ext"

# Names only one twin has, and why.
COMPILED_ONLY = {
    # The compiled receiver's state lives in a C base class; the pure twin is one class.
    "receiver": {"ReceiverCore"},
}
PURE_ONLY = {
    "receiver": {"Dechunker"},  # a Protocol, for the types only (the stub imports it)
}
# The compiled EventIterator is its own awaitable: ``__anext__`` returns it, and it has the awaitable
# protocol. The pure twin's ``__anext__`` is a coroutine, which has that protocol (with its ``__await__()``).
AWAITABLE_PROTOCOL = {"__await__", "__next__", "send", "throw", "close"}
# Dunder methods that are part of an API (the others are Python's or Cython's machinery).
PROTOCOL_DUNDERS = {"__init__", "__aiter__", "__anext__", "__await__", "__next__", "__iter__", "__call__"}


def stub_of(twin: str) -> ast.Module:
    return ast.parse((STUBS / f"_{twin}_c.pyi").read_text(encoding="utf-8"))


def pure(twin: str) -> ModuleType:
    return importlib.import_module(f"sonicsse._{twin}_py")


def compiled(twin: str) -> ModuleType:
    if NO_EXTENSIONS:
        pytest.skip("built with SONICSSE_NO_EXTENSIONS: no compiled modules")
    return importlib.import_module(f"sonicsse._{twin}_c")


def declared(body: list[ast.stmt]) -> dict[str, ast.stmt]:
    """The names a stub's module or class body declares (not what it imports)."""
    names: dict[str, ast.stmt] = {}
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.setdefault(node.name, node)  # a property's setter comes after its getter
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = node
        elif isinstance(node, ast.Assign):
            names.update((t.id, node) for t in node.targets if isinstance(t, ast.Name))
    return names


def stub_class(tree: ast.Module, name: str) -> dict[str, ast.stmt]:
    """A class's declared members, with those of the classes it derives from in the same stub."""
    node = declared(tree.body)[name]
    assert isinstance(node, ast.ClassDef)
    members: dict[str, ast.stmt] = {}
    for base in node.bases:
        if isinstance(base, ast.Name) and isinstance(declared(tree.body).get(base.id), ast.ClassDef):
            members.update(stub_class(tree, base.id))
    members.update(declared(node.body))
    return members


def is_property(node: ast.stmt) -> bool:
    return isinstance(node, ast.FunctionDef) and any(
        isinstance(d, ast.Name) and d.id == "property" for d in node.decorator_list
    )


def has_setter(body: list[ast.stmt], name: str) -> bool:
    return any(
        isinstance(node, ast.FunctionDef)
        and any(ast.unparse(d) == f"{name}.setter" for d in node.decorator_list)
        for node in body
    )


def stub_parameters(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[tuple[str, str, Any]]:
    """``(name, kind, default)`` of each parameter; the default is ``"-"`` when there is none."""
    args = node.args
    positional = [*args.posonlyargs, *args.args]
    defaults = ["-"] * (len(positional) - len(args.defaults)) + [ast.literal_eval(d) for d in args.defaults]
    params = [
        (a.arg, "POSITIONAL_ONLY" if i < len(args.posonlyargs) else "POSITIONAL_OR_KEYWORD", default)
        for i, (a, default) in enumerate(zip(positional, defaults, strict=True))
    ]
    if args.vararg:
        params.append((args.vararg.arg, "VAR_POSITIONAL", "-"))
    for a, default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        params.append((a.arg, "KEYWORD_ONLY", "-" if default is None else ast.literal_eval(default)))
    if args.kwarg:
        params.append((args.kwarg.arg, "VAR_KEYWORD", "-"))
    return params


def runtime_parameters(func: Any) -> list[tuple[str, str, Any]]:
    return [
        (p.name, p.kind.name, "-" if p.default is inspect.Parameter.empty else p.default)
        for p in inspect.signature(func).parameters.values()
    ]


def public_names(module: ModuleType) -> set[str]:
    """What a twin module defines for others: its classes and functions, and its constants."""
    names = set()
    for name, value in vars(module).items():
        if name.startswith("_"):
            continue
        if inspect.isclass(value) or inspect.isroutine(value):
            if getattr(value, "__module__", None) == module.__name__:
                names.add(name)
        elif name.isupper():
            names.add(name)
    return names


def public_members(cls: type) -> set[str]:
    """What a twin class defines for others (its own namespace, not its bases')."""
    return {n for n in vars(cls) if not n.startswith("_") or n in PROTOCOL_DUNDERS}


def instance_of(cls: type) -> Any:
    """An instance of a twin's class, made without touching the network (in a running loop)."""
    if cls.__name__ == "EventIterator":
        return cls(None, None, [iter(())])
    if cls.__name__ in ("BodyReceiver", "ReceiverCore"):
        return cls(None, None, b"", True)  # a stream that had ended: it takes no transport over
    return cls()


def check_value(value: Any, annotation: ast.expr, where: str) -> None:
    """An attribute's value has its declared type (when that type can be checked at run time)."""
    try:
        expected = eval(ast.unparse(annotation), {"asyncio": asyncio})
        ok = isinstance(value, expected)
    except TypeError:  # a parametrised generic
        return
    assert ok, f"{where} is {value!r}, declared {ast.unparse(annotation)}"


# -- the pure twin has what the stub declares, with its signatures -------------------------------------


@pytest.mark.parametrize("twin", TWINS)
async def test_the_pure_twin_has_every_name_of_the_stub_and_no_other(twin: str) -> None:
    tree, module = stub_of(twin), pure(twin)
    names = declared(tree.body)
    expected = set(names) - COMPILED_ONLY.get(twin, set())
    assert public_names(module) - PURE_ONLY.get(twin, set()) == {n for n in expected if not n.startswith("_")}
    for name, node in names.items():
        if name in COMPILED_ONLY.get(twin, set()):
            continue
        value = getattr(module, name)
        if isinstance(node, ast.AnnAssign):
            check_value(value, node.annotation, f"_{twin}_py.{name}")
        elif isinstance(node, ast.FunctionDef):
            assert runtime_parameters(value) == stub_parameters(node), name
        elif isinstance(node, ast.ClassDef):
            check_class(tree, name, value, f"_{twin}_py")


def check_class(tree: ast.Module, name: str, cls: type, where: str) -> None:
    members = stub_class(tree, name)
    node = declared(tree.body)[name]
    assert isinstance(node, ast.ClassDef)
    for base in node.bases:  # a base from outside the stub (asyncio.BufferedProtocol)
        if not isinstance(base, ast.Name):
            assert issubclass(cls, eval(ast.unparse(base), {"asyncio": asyncio})), (name, ast.unparse(base))
    instance = instance_of(cls)
    for member, decl in members.items():
        if name == "EventIterator" and member in AWAITABLE_PROTOCOL:
            coroutine = cls.__anext__(instance)  # type: ignore[attr-defined]
            iterator = coroutine.__await__()
            assert hasattr(coroutine, member) or hasattr(iterator, member), f"__anext__() has no {member}"
            coroutine.close()
            continue
        if isinstance(decl, ast.AnnAssign):
            assert hasattr(instance, member), f"{where}.{name} has no attribute {member}"
            check_value(getattr(instance, member), decl.annotation, f"{where}.{name}.{member}")
            continue
        assert isinstance(decl, (ast.FunctionDef, ast.AsyncFunctionDef)), member
        value = inspect.getattr_static(cls, member)
        if is_property(decl):
            assert isinstance(value, property), f"{where}.{name}.{member} is not a property"
            assert (value.fset is not None) == has_setter(node.body, member), f"{member}'s setter"
            continue
        assert callable(value), f"{where}.{name}.{member}"
        assert runtime_parameters(getattr(cls, member)) == stub_parameters(decl), f"{name}.{member}"
        if isinstance(decl, ast.AsyncFunctionDef):
            assert inspect.iscoroutinefunction(getattr(cls, member)), f"{name}.{member} is not async"
    undeclared = set().union(*(public_members(c) for c in cls.__mro__ if c.__module__.startswith("sonicsse")))
    assert undeclared <= set(members), f"{where}.{name} has more than its stub: {undeclared - set(members)}"


# -- the compiled module has what the stub declares ---------------------------------------------------


@pytest.mark.parametrize("twin", TWINS)
async def test_the_compiled_module_has_every_name_of_the_stub_and_no_other(twin: str) -> None:
    """What stubtest checks, without mypy: names, kinds and constants (signatures are not visible)."""
    tree, module = stub_of(twin), compiled(twin)
    names = declared(tree.body)
    assert public_names(module) == {n for n in names if not n.startswith("_")}
    for name, node in names.items():
        value = getattr(module, name)
        if isinstance(node, ast.AnnAssign):
            check_value(value, node.annotation, f"_{twin}_c.{name}")
            if name not in COMPILED_ONLY.get(twin, set()):
                assert value == getattr(pure(twin), name), f"the twins' {name} differ"
        elif isinstance(node, ast.ClassDef):
            members = stub_class(tree, name)
            cls_members = {m for c in value.__mro__ if c.__module__ == module.__name__ for m in vars(c)}
            assert {m for m in cls_members if not m.startswith("_") or m in PROTOCOL_DUNDERS} <= set(members)
            instance = instance_of(value) if name != "ReceiverCore" else None
            for member, decl in members.items():
                if isinstance(decl, ast.AnnAssign):
                    if instance is not None:
                        check_value(getattr(instance, member), decl.annotation, f"_{twin}_c.{name}.{member}")
                else:
                    assert hasattr(value, member), f"_{twin}_c.{name} has no {member}"
        else:
            assert callable(value), name


# -- the .pyx sources name the stub's parameters -----------------------------------------------------

DEF = re.compile(r"^( *)(?:async )?def (\w+)\(([^)]*)\)", re.M)


def pyx_signatures(source: str) -> dict[str, list[tuple[str, bool]]]:
    """``{"Class.method" or "function": [(parameter, has a default), ...]}`` of the ``def``s of a .pyx
    (not its ``cdef`` functions, which Python cannot call)."""
    signatures = {}
    classes: list[tuple[int, str]] = []
    for match in DEF.finditer(source):
        indent, name, params = len(match[1]), match[2], match[3]
        line_start = source.rfind("\n", 0, match.start()) + 1
        before = source[:line_start]
        classes = [
            (i, c)
            for i, c in ((len(m[1]), m[2]) for m in re.finditer(r"^( *)(?:cdef )?class (\w+)", before, re.M))
            if i < indent
        ][-1:]
        decorators = source[source.rfind("\n", 0, line_start - 1) + 1 : line_start].strip()
        if decorators.endswith(".setter") or decorators == "@property":
            continue
        parsed = []
        for param in (p.strip() for p in " ".join(params.split()).split(",")):
            if not param:
                continue
            head, _, default = param.partition("=")
            head = re.sub(r"\s+(not|or) None$", "", head.strip())
            parsed.append((head.split()[-1].lstrip("*"), bool(default)))
        key = f"{classes[0][1]}.{name}" if classes else name
        signatures[key] = parsed
    return signatures


@pytest.mark.skipif(not PYX.is_dir(), reason="the .pyx sources are not here (an installed copy of the tests)")
@pytest.mark.parametrize("twin", TWINS)
def test_the_pyx_sources_take_the_parameters_the_stub_names(twin: str) -> None:
    signatures = pyx_signatures((PYX / f"_{twin}_c.pyx").read_text(encoding="utf-8"))
    tree = stub_of(twin)
    checked = 0
    for name, node in declared(tree.body).items():
        nodes = (
            {name: node}
            if not isinstance(node, ast.ClassDef)
            else {f"{name}.{m}": d for m, d in declared(node.body).items()}
        )
        for key, decl in nodes.items():
            if not isinstance(decl, (ast.FunctionDef, ast.AsyncFunctionDef)) or is_property(decl):
                continue
            expected = [(p, d != "-") for p, _, d in stub_parameters(decl)]
            assert signatures.get(key) == expected, f"{key}: the .pyx has {signatures.get(key)}"
            checked += 1
    assert checked


# -- stubtest ----------------------------------------------------------------------------------------

# What stubtest reports about any Cython module, whatever its stub says.
CYTHON_NOISE = [
    r"\.__test__ is not present in stub$",
    r"\.__reduce_cython__ is not present in stub$",
    r"\.__setstate_cython__ is not present in stub$",
    # Every cdef class is one (it has a C layout); the decorator needs a recent mypy to read the stubs.
    r" is a disjoint base at runtime, but isn't marked with @disjoint_base in the stub$",
    # Cython shows every __init__ as (self, /, *args, **kwargs): the pure twin's is checked instead.
    r'\.__init__ is inconsistent, stub does not have \*args parameter "args"$',
    r'\.__init__ is inconsistent, stub does not have \*\*kwargs parameter "kwargs"$',
]


def test_stubtest_finds_nothing_wrong_with_the_stubs(tmp_path: Path) -> None:
    if NO_EXTENSIONS:
        pytest.skip("built with SONICSSE_NO_EXTENSIONS: no compiled modules")
    pytest.importorskip("mypy.stubtest", reason="mypy is not installed (it is in the dev extras)")
    modules = [f"sonicsse._{twin}_c" for twin in TWINS]
    out = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "--concise", *modules],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,  # mypy looks in the current directory first: nothing there but the cache
    )
    errors = [line for line in out.stdout.splitlines() if line.startswith("sonicsse.")]
    real = [line for line in errors if not any(re.search(p, line) for p in CYTHON_NOISE)]
    assert not real, "\n".join(real)
    assert out.returncode == (1 if errors else 0), out.stdout + out.stderr
