"""Node.js tooling for the export tests: the npm packages pinned in ``tests/js``.

The session fixture :func:`js_tools` installs them once (``npm ci``, from the lock file)
when ``tests/js/node_modules`` is missing or holds other versions, and gives the tests a
small API to run ``tsc`` and the AsyncAPI parser. Without ``node`` and ``npm``, or when the
installation fails, the tests that use it are skipped, or fail when the ``CI`` environment
variable is set, so CI never passes by skipping them.

Import the fixture from ``tests/conftest.py``: ``from tests._js import js_tools``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.ci import npm_ci, unavailable
from tests.support.redis_server import scaled

__all__ = ["JS_DIR", "JsTools", "js_tools"]

JS_DIR = Path(__file__).resolve().parent / "js"

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
