"""The architecture's layering, checked by reading every module's imports.

Layers, lowest first: the base (exceptions, the version); the pure core (channel,
protocol, session, schema, trading, export: no I/O, no event loop); the runtime
(broadcaster, endpoint, backends); the edges (the adapters, the standalone server, the
client, the command line, the test helpers, the demo). A layer imports only from below,
and nothing below the edges imports a web framework. Importing the package, or one
adapter, must not load any other framework: that is checked in fresh interpreters.

Two rules hold across every module: no import circle (imports under ``TYPE_CHECKING``
included), and no module reads another module's private names, by attribute or by import.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "wsbridge"

BASE = {"wsbridge.exceptions", "wsbridge._version"}
PURE_CORE = {
    "wsbridge.channel",
    "wsbridge.outbox",
    "wsbridge.deflate",
    "wsbridge.protocol",
    "wsbridge.session",
    "wsbridge.schema",
    "wsbridge.trading",
    "wsbridge.export",
    "wsbridge.permissions",
    "wsbridge.history",
}
RUNTIME = {
    "wsbridge.broadcaster",
    "wsbridge.endpoint",
    "wsbridge.delivery",
    "wsbridge.backends",
    "wsbridge.backends.memory",
    "wsbridge.backends.redis",
    "wsbridge.tokens",
    "wsbridge.backends.cluster",
    "wsbridge.health",
}
CORE = BASE | PURE_CORE | RUNTIME

# Edges: nothing in the core may import them.
EDGES = (
    "wsbridge.asgi",
    "wsbridge.starlette",
    "wsbridge.fastapi",
    "wsbridge.aiohttp",
    "wsbridge.server",
    "wsbridge.workers",
    "wsbridge.uvicorn",
    "wsbridge.prometheus",
    "wsbridge.cli",
    "wsbridge.client",
    "wsbridge.testing",
    "wsbridge.demo",
    "wsbridge.__main__",
)
# Web frameworks, servers and command-line toolkits: never imported by the core.
FRAMEWORKS = ("starlette", "fastapi", "aiohttp", "uvicorn", "hypercorn", "websockets", "click")
# What the pure core must not touch either: I/O, event loops, clocks of its own.
IO = ("anyio", "asyncio", "trio", "socket", "selectors", "ssl", "redis", "time", "threading")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str) -> bool:
    relative = name.split(".")[1:]
    candidate = PACKAGE.joinpath(*relative)
    return candidate.with_suffix(".py").is_file() or (candidate / "__init__.py").is_file()


def _imports(path: Path) -> set[str]:
    """Every module that ``path`` imports, anywhere in the file, as absolute names."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            # ``from wsbridge import protocol`` imports the submodule wsbridge.protocol.
            if module.startswith("wsbridge"):
                for alias in node.names:
                    submodule = f"{module}.{alias.name}"
                    if _is_module(submodule):
                        found.add(submodule)
    return found


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _within(name: str, prefixes: tuple[str, ...] | set[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_every_module_is_classified() -> None:
    # A new module must be placed in a layer here, deliberately.
    unclassified = [
        name
        for name in MODULES
        if name != "wsbridge" and name not in CORE and not _within(name, EDGES)
    ]
    assert not unclassified, f"put these modules in a layer in {__file__}: {unclassified}"


@pytest.mark.parametrize("module", sorted(CORE))
def test_core_imports_no_framework_and_no_edge(module: str) -> None:
    imported = _imports(MODULES[module])
    frameworks = sorted(name for name in imported if _within(name, FRAMEWORKS))
    edges = sorted(name for name in imported if _within(name, EDGES))
    assert not frameworks, f"{module} imports a web framework: {frameworks}"
    assert not edges, f"{module} imports an edge module: {edges}"


@pytest.mark.parametrize("module", sorted(PURE_CORE | BASE))
def test_pure_core_does_no_io(module: str) -> None:
    imported = _imports(MODULES[module])
    io = sorted(name for name in imported if _within(name, IO))
    runtime = sorted(name for name in imported if name in RUNTIME)
    assert not io, f"{module} is pure core but imports {io}"
    assert not runtime, f"{module} is pure core but imports the runtime: {runtime}"


@pytest.mark.parametrize("module", sorted(BASE))
def test_base_imports_nothing_from_the_package(module: str) -> None:
    imported = _imports(MODULES[module])
    assert not [name for name in imported if name.startswith("wsbridge")]


def test_the_package_root_imports_only_the_core() -> None:
    imported = {name for name in _imports(MODULES["wsbridge"]) if name.startswith("wsbridge")}
    assert imported <= CORE, sorted(imported - CORE)


# -- in fresh interpreters ---------------------------------------------------------------


def _loaded_after(statement: str) -> set[str]:
    """Import in a fresh interpreter; return the top-level names in sys.modules."""
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))\n"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.splitlines()[-1]))


def _top(modules: set[str]) -> set[str]:
    return {name.partition(".")[0] for name in modules}


def _require(*distributions: str) -> None:
    for name in distributions:
        if importlib.util.find_spec(name) is None:
            pytest.skip(f"{name} is not installed")


def test_importing_wsbridge_loads_no_framework() -> None:
    loaded = _loaded_after("import wsbridge")
    assert not _top(loaded) & set(FRAMEWORKS)
    assert not {name for name in loaded if _within(name, EDGES)}
    # Optional dependencies are loaded only when used.
    assert not _top(loaded) & {"redis", "hypothesis", "prometheus_client"}


def test_a_memory_broadcaster_does_not_load_redis() -> None:
    loaded = _loaded_after("import wsbridge; wsbridge.Broadcaster('memory://')")
    assert "redis" not in _top(loaded)


def test_the_asgi_adapter_loads_no_framework() -> None:
    loaded = _loaded_after("import wsbridge.asgi")
    assert not _top(loaded) & set(FRAMEWORKS)


def test_the_starlette_adapter_does_not_load_aiohttp() -> None:
    _require("starlette")
    loaded = _top(_loaded_after("import wsbridge.starlette"))
    assert "starlette" in loaded
    assert not loaded & {"aiohttp", "fastapi", "uvicorn", "click"}


def test_the_fastapi_adapter_does_not_load_aiohttp() -> None:
    _require("fastapi")
    loaded = _top(_loaded_after("import wsbridge.fastapi"))
    assert not loaded & {"aiohttp", "uvicorn", "click"}


def test_the_aiohttp_adapter_does_not_load_starlette() -> None:
    _require("aiohttp")
    loaded = _top(_loaded_after("import wsbridge.aiohttp"))
    assert "aiohttp" in loaded
    assert not loaded & {"starlette", "fastapi", "uvicorn", "hypercorn", "click"}


# -- no import circle, no private names across modules ------------------------------------


def _package_imports(module: str) -> set[str]:
    """The package's modules that ``module`` imports, its own parent packages left out.

    A submodule reads its package's shared names (``wsbridge.backends.memory`` imports
    ``wsbridge.backends.BrokerMessage``), and importing ``wsbridge.x`` loads ``wsbridge``:
    that is how packages work, not a circle between two modules.
    """
    return {
        name
        for name in _imports(MODULES[module])
        if name in MODULES and name != module and not module.startswith(name + ".")
    }


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle in ``graph`` (module -> modules it imports), or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        for child in sorted(graph.get(node, ())):
            found = visit(child, [*path, node])
            if found:
                return found
        done.add(node)
        return None

    for start in sorted(graph):
        found = visit(start, [])
        if found:
            return found
    return None


def test_there_is_no_import_circle() -> None:
    # Imports under TYPE_CHECKING count too: a circle hidden from the interpreter is
    # still two modules that cannot be read, or changed, one without the other.
    graph = {name: _package_imports(name) for name in MODULES if name != "wsbridge"}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_circle_finder_finds_circles() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


# Private by name only: the public API of named tuples (urllib.parse's results among them).
_NAMEDTUPLE_API = {"_replace", "_asdict", "_fields", "_make", "_field_defaults"}
# Public names of the standard library that start with an underscore: os._exit is how a
# forked child leaves without running its parent's cleanup.
_STDLIB_API = {"_exit"}


def _own_private_names(tree: ast.Module) -> set[str]:
    """The private names a module defines for its own objects.

    Class attributes and methods, ``__slots__`` entries, and attributes it assigns on
    ``self`` or ``cls``. Reading ``x._name`` is allowed in a module that defines
    ``_name`` itself; anywhere else it reads another module's private state.
    """
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    names.add(item.name)
                elif isinstance(item, (ast.Assign, ast.AnnAssign)):
                    targets = item.targets if isinstance(item, ast.Assign) else [item.target]
                    for target in targets:
                        if not isinstance(target, ast.Name):
                            continue
                        names.add(target.id)
                        if target.id == "__slots__" and item.value is not None:
                            names.update(
                                c.value
                                for c in ast.walk(item.value)
                                if isinstance(c, ast.Constant) and isinstance(c.value, str)
                            )
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.ctx, ast.Store)
            and isinstance(node.value, ast.Name)
            and node.value.id in ("self", "cls")
        ):
            names.add(node.attr)
    return {name for name in names if _private(name)}


def _foreign_private_reads(source: str) -> list[str]:
    """Every ``x._name`` or ``from m import _name`` in ``source`` that is not its own."""
    tree = ast.parse(source)
    own = _own_private_names(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            if node.attr not in own and node.attr not in _NAMEDTUPLE_API | _STDLIB_API:
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.ImportFrom):
            found += [
                f"line {node.lineno}: from {node.module} import {alias.name}"
                for alias in node.names
                if _private(alias.name)
            ]
    return found


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_reads_another_modules_private_names(module: str) -> None:
    # By name: a module may read ``x._queue`` only if it defines ``_queue`` itself. Two
    # classes of two modules that share a private name are not told apart; keep private
    # names distinct where one module reaches into its own classes' state.
    found = _foreign_private_reads(MODULES[module].read_text(encoding="utf-8"))
    assert not found, f"{module} reads private names of other modules: {found}"


def test_the_private_name_check_sees_reads_and_imports() -> None:
    source = (
        "from wsbridge.broadcaster import _Counters\n"
        "class A:\n"
        "    __slots__ = ('_mine',)\n"
        "    def f(self, other):\n"
        "        self._mine = 1\n"
        "        return other._queue, self._mine, self.__class__, parts._replace()\n"
    )
    assert _foreign_private_reads(source) == [
        "line 1: from wsbridge.broadcaster import _Counters",
        "line 6: other._queue",
    ]
