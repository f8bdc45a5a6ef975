"""Node.js tooling for the tests: the npm packages pinned in ``tests/js``, the JavaScript
client of ``clients/js`` and the React example of ``examples/react``.

The session fixture :func:`js_tools` installs them once (``npm ci``, from the lock file)
when ``tests/js/node_modules`` is missing or holds other versions, and gives the tests a
small API to run ``tsc`` and the AsyncAPI parser. Without ``node`` and ``npm``, or when the
installation fails, the tests that use it are skipped, or fail when the ``CI`` environment
variable is set, so CI never passes by skipping them.

The fixtures :func:`js_client` (the client installed and built, with ``npm ci`` from its
lock file) and :func:`react_example` (the example installed and built with Vite) are
session-scoped too. :func:`js_node` runs the client's tests under two Node versions: the
``node`` on the PATH (Node 20 with ``--experimental-websocket`` on the reference machine),
and Node 22, the version the package claims, installed once into the pytest cache from the
npm registry's ``node-<os>-<arch>`` package (skipped when the registry cannot be reached,
failed under CI).

Import the fixtures from ``tests/conftest.py``: ``from tests._js import js_tools``.
"""

from __future__ import annotations

import json
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.ci import npm_ci, unavailable
from tests.support.redis_server import scaled

__all__ = [
    "CLIENT_PACKAGE",
    "JS_DIR",
    "REACT_EXAMPLE",
    "JsTools",
    "Node",
    "js_client",
    "js_node",
    "js_tools",
    "npm_version",
    "react_example",
    "websocket_flag",
]

JS_DIR = Path(__file__).resolve().parent / "js"
ROOT = Path(__file__).resolve().parents[1]
CLIENT_PACKAGE = ROOT / "clients" / "js"
REACT_EXAMPLE = ROOT / "examples" / "react"
PACKAGE = CLIENT_PACKAGE

_INSTALL_TIMEOUT = 600.0  # seconds, before scaling: a cold npm cache downloads ~20 MB
_RUN_TIMEOUT = 120.0


@dataclass(frozen=True)
class JsTools:
    """Runs the pinned JavaScript tools of ``tests/js``."""

    node: str
    directory: Path = JS_DIR

    def run(
        self, *args: str | Path, timeout: float = _RUN_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """Run ``node`` with ``args`` in ``tests/js``; never raises on a non-zero exit."""
        try:
            return subprocess.run(
                [self.node, *map(str, args)],
                cwd=self.directory,
                capture_output=True,
                text=True,
                timeout=scaled(timeout),
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"node {' '.join(map(str, args))} took more than {exc.timeout:.0f} s")

    def tsc(self, *files: Path) -> subprocess.CompletedProcess[str]:
        """Type-check ``files`` with ``tsc --strict --noEmit``."""
        compiler = self.directory / "node_modules" / "typescript" / "bin" / "tsc"
        return self.run(compiler, "--strict", "--noEmit", "--pretty", "false", *files)

    def validate_asyncapi(self, *documents: Path) -> list[dict[str, Any]]:
        """Parse ``documents`` with ``@asyncapi/parser`` in one run; return their reports.

        Each report holds ``valid``, ``version`` and ``diagnostics`` (dicts with
        ``severity``, ``code``, ``message`` and ``path``).
        """
        result = self.run(self.directory / "validate_asyncapi.mjs", *documents)
        try:
            reports = json.loads(result.stdout)
        except ValueError:
            pytest.fail(
                f"the AsyncAPI validator printed no report:\n{result.stdout}\n{result.stderr}"
            )
        if result.returncode != (0 if all(r["valid"] for r in reports) else 1):
            pytest.fail(f"the AsyncAPI validator exited with {result.returncode}:\n{result.stderr}")
        return list(reports)


def _pinned() -> dict[str, str]:
    manifest = json.loads((JS_DIR / "package.json").read_text(encoding="utf-8"))
    return dict(manifest["devDependencies"])


def _installed(name: str) -> str | None:
    manifest = JS_DIR / "node_modules" / name / "package.json"
    try:
        return str(json.loads(manifest.read_text(encoding="utf-8"))["version"])
    except (OSError, ValueError, KeyError):
        return None


@pytest.fixture(scope="session")
def js_tools() -> JsTools:
    """The pinned npm packages of ``tests/js``, installed once per session if needed."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        unavailable("node and npm are needed to check the AsyncAPI and TypeScript exports")
    pinned = _pinned()
    if any(_installed(name) != version for name, version in pinned.items()):
        npm_ci(JS_DIR, npm, scaled(_INSTALL_TIMEOUT))
        wrong = {
            name: _installed(name)
            for name, version in pinned.items()
            if _installed(name) != version
        }
        if wrong:
            unavailable(f"'npm ci' did not install the pinned versions: {wrong}")
    return JsTools(node)


@dataclass(frozen=True)
class Node:
    """The node binary and the built package."""

    node: str
    npm: str

    def run(
        self, *args: str | Path, cwd: Path = PACKAGE, timeout: float = _RUN_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """Run ``node ARGS`` (with the WebSocket flag Node 20 needs); never raises on exit."""
        return _run([self.node, *websocket_flag(self.node), *map(str, args)], cwd, timeout)

    def npm_run(self, *args: str, cwd: Path = PACKAGE) -> subprocess.CompletedProcess[str]:
        """Run ``npm ARGS``; never raises on a non-zero exit."""
        return _run([self.npm, *args], cwd, _RUN_TIMEOUT)


def _run(command: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            command, cwd=cwd, capture_output=True, text=True, timeout=scaled(timeout), check=False
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{' '.join(command)} took more than {exc.timeout:.0f} s")


def websocket_flag(node: str) -> list[str]:
    """Node 20 and 21 have a global WebSocket only behind a flag."""
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    major = int(version.stdout.strip().lstrip("v").split(".")[0])
    return ["--experimental-websocket"] if major < 22 else []


def npm_version(python_version: str) -> str:
    """The npm (SemVer) spelling of a PEP 440 version: 0.1.0.dev0 -> 0.1.0-dev.0."""
    found = re.fullmatch(r"(\d+\.\d+\.\d+)(?:\.?(dev|a|b|rc)(\d+))?", python_version)
    assert found, python_version
    release, tag, number = found.groups()
    return release if tag is None else f"{release}-{tag}.{number}"


def _installed_in(directory: Path, name: str) -> str | None:
    try:
        manifest = directory / "node_modules" / name / "package.json"
        return str(json.loads(manifest.read_text(encoding="utf-8"))["version"])
    except (OSError, ValueError, KeyError):
        return None


def install(directory: Path, npm: str) -> None:
    """``npm ci`` in ``directory`` unless its pinned dev dependencies are installed."""
    pinned = json.loads((directory / "package.json").read_text(encoding="utf-8"))
    wanted = dict(pinned.get("devDependencies", {}))
    if any(_installed_in(directory, name) != version for name, version in wanted.items()):
        npm_ci(directory, npm, scaled(_INSTALL_TIMEOUT))


@pytest.fixture(scope="session")
def js_client() -> Node:
    """The package installed and built (``dist/``) once per session."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        unavailable("node and npm are needed to test the JavaScript client")
    install(PACKAGE, npm)
    tools = Node(node, npm)
    built = tools.npm_run("run", "build")
    assert built.returncode == 0, built.stdout + built.stderr
    return tools


@pytest.fixture(scope="session")
def react_example(js_client: Node) -> Path:
    """examples/react installed (with the built package) and built (``npm run build``)."""
    install(REACT_EXAMPLE, js_client.npm)
    built = _run([js_client.npm, "run", "build"], REACT_EXAMPLE, _INSTALL_TIMEOUT)
    assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-4000:]
    return REACT_EXAMPLE


NODE_22 = "22"
# Node's own builds as npm packages, without install scripts: bin/node inside.
_NODE_OS = {"linux": "linux", "darwin": "darwin"}
_NODE_ARCH = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}


def _major(node: str) -> int | None:
    try:
        version = subprocess.run(
            [node, "--version"], capture_output=True, text=True, timeout=scaled(30), check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.fullmatch(r"v(\d+)\..*", version.stdout.strip())
    return int(found.group(1)) if found else None


def node_22(cache: pytest.Cache, npm: str) -> str:
    """A Node 22 binary: installed once into the pytest cache, from the npm registry."""
    system = _NODE_OS.get(sys.platform)
    arch = _NODE_ARCH.get(platform.machine().lower())
    if system is None or arch is None:
        unavailable(f"no Node 22 package for {sys.platform} {platform.machine()}")
    package = f"node-{system}-{arch}"
    folder = cache.mkdir(f"node-{NODE_22}")
    binary = folder / "node_modules" / package / "bin" / "node"
    if binary.is_file() and _major(str(binary)) == int(NODE_22):
        return str(binary)
    command = [npm, "install", "--no-save", "--no-package-lock", "--ignore-scripts"]
    command += ["--no-audit", "--no-fund", "--loglevel=error", "--prefix", str(folder)]
    try:
        result = subprocess.run(
            [*command, f"{package}@{NODE_22}"],
            capture_output=True,
            text=True,
            timeout=scaled(_INSTALL_TIMEOUT),
            check=False,
        )
    except subprocess.TimeoutExpired:
        unavailable(f"installing {package}@{NODE_22} from the npm registry took too long")
    if result.returncode != 0:
        unavailable(f"cannot install {package}@{NODE_22} from the npm registry:\n{result.stderr}")
    if _major(str(binary)) != int(NODE_22):
        unavailable(f"{package}@{NODE_22} holds no working bin/node")
    return str(binary)


@pytest.fixture(scope="session", params=["path", NODE_22], ids=["node-path", f"node-{NODE_22}"])
def js_node(request: pytest.FixtureRequest, js_client: Node) -> Node:
    """The built package with each Node the client is tested under: PATH's, and Node 22."""
    if request.param == "path":
        return js_client
    cache = request.config.cache
    if cache is None:
        unavailable("Node 22 is installed into the pytest cache, which is turned off")
    return Node(node_22(cache, js_client.npm), js_client.npm)
