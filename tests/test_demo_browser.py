"""The trading demo in a real browser: Debian's Chromium driven by playwright-core.

Each test starts the demo server as a subprocess on a free port with a fixed seed, runs
``tests/browser/dashboard.mjs`` with node, and checks its exit code and output. The
``events`` run publishes deterministic events through the demo's debug endpoint (the
simulator is off) and stops and restarts the server when the script asks for it; the
``live`` run lets a fast simulator fill the page. Screenshots go to
``artifacts/screenshots/`` (git-ignored).

Without node, Chromium or playwright-core (installed from ``tests/browser/package-lock.json``
on first use) these tests are skipped, or fail when the ``CI`` environment variable is set.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

import wsbridge
from tests.support.ci import npm_ci, unavailable
from tests.support.redis_server import TIMEOUT_SCALE_ENV, free_port, scaled

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BROWSER_DIR = Path(__file__).resolve().parent / "browser"
SCRIPT = BROWSER_DIR / "dashboard.mjs"
SCREENSHOTS = ROOT / "artifacts" / "screenshots"

_SEED = 7
_SERVER_START_TIMEOUT = 30.0
_SERVER_STOP_TIMEOUT = 15.0
_SCRIPT_TIMEOUT = 180.0
_NPM_TIMEOUT = 600.0

_SERVER_CODE = """
import json, sys
from wsbridge.demo import serve
serve(**json.loads(sys.argv[1]))
"""


def _playwright_version() -> str | None:
    manifest = BROWSER_DIR / "node_modules" / "playwright-core" / "package.json"
    try:
        return str(json.loads(manifest.read_text(encoding="utf-8"))["version"])
    except (OSError, ValueError, KeyError):
        return None


@pytest.fixture(scope="session")
def browser_tools() -> tuple[str, str]:
    """``(node, chromium)``, after installing the pinned playwright-core if needed."""
    for module in ("fastapi", "uvicorn"):
        try:
            __import__(module)
        except ImportError:
            unavailable(f"the demo needs {module}: install wsbridge-py[fastapi,server]")
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        unavailable("node and npm are needed for the browser tests")
    chromium = (
        os.environ.get("CHROMIUM_PATH")
        or shutil.which("chromium")
        or shutil.which("chromium-browser")
    )
    if chromium is None or not os.access(chromium, os.X_OK):
        unavailable("Chromium is needed for the browser tests: apt-get install chromium")
    manifest = json.loads((BROWSER_DIR / "package.json").read_text(encoding="utf-8"))
    pinned = manifest["devDependencies"]["playwright-core"]
    if _playwright_version() != pinned:
        npm_ci(BROWSER_DIR, npm, scaled(_NPM_TIMEOUT))
        if _playwright_version() != pinned:
            unavailable(f"'npm ci' in {BROWSER_DIR} did not install playwright-core {pinned}")
    return node, chromium


class DemoServer:
    """The demo app in a child process: ``python -c "...serve(...)"`` on a fixed port."""

    def __init__(self, log_path: Path, **options: object) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self._options = {"host": "127.0.0.1", "port": self.port, "log_level": "warning", **options}
        self._log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        # The child imports the same wsbridge as this test, installed or not.
        package_root = str(Path(wsbridge.__file__).resolve().parents[1])
        path = os.environ.get("PYTHONPATH")
        self._env = {
            **os.environ,
            "PYTHONPATH": package_root + (os.pathsep + path if path else ""),
            "PYTHONUNBUFFERED": "1",
        }

    def start(self) -> None:
        """Start the server and wait until it answers ``GET /api/state``."""
        with self._log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-c", _SERVER_CODE, json.dumps(self._options)],
                env=self._env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + scaled(_SERVER_START_TIMEOUT)
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"the demo server exited with {self._process.returncode}")
            try:
                with urllib.request.urlopen(self.url + "api/state", timeout=1.0) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)  # poll again: the server is still starting
        raise RuntimeError(f"the demo server did not answer within {_SERVER_START_TIMEOUT} s")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and wait for it to exit."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=scaled(_SERVER_STOP_TIMEOUT))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=scaled(_SERVER_STOP_TIMEOUT))

    def log_tail(self, lines: int = 40) -> str:
        """The end of the server's output, for failure messages."""
        try:
            text = self._log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@pytest.fixture
def demo_server_factory() -> Iterator[list[DemoServer]]:
    """A list to which tests add servers; every one is stopped after the test."""
    servers: list[DemoServer] = []
    yield servers
    for server in servers:
        server.stop()


def _read_lines(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))
    lines.put(None)


def _run_script(
    tools: tuple[str, str], server: DemoServer, mode: str, *, control: bool
) -> tuple[int, str]:
    """Run dashboard.mjs; answer its ``@@control`` requests; return its exit code and output."""
    node, chromium = tools
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "DEMO_URL": server.url,
        "CHROMIUM_PATH": chromium,
        "SCREENSHOT_DIR": str(SCREENSHOTS),
        TIMEOUT_SCALE_ENV: str(scaled(1.0)),
    }
    if control:
        env["DEMO_CONTROL"] = "stdio"
    process = subprocess.Popen(
        [node, str(SCRIPT), f"--mode={mode}"],
        cwd=BROWSER_DIR,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=_read_lines, args=(process.stdout, lines), daemon=True)
    reader.start()
    output: list[str] = []
    deadline = time.monotonic() + scaled(_SCRIPT_TIMEOUT)
    try:
        while True:
            try:
                line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                process.kill()
                output.append(f"# killed: the script ran longer than {_SCRIPT_TIMEOUT} s")
                break
            if line is None:
                break
            output.append(line)
            if line.startswith("@@control "):
                command = line.split(" ", 1)[1]
                try:
                    if command == "stop":
                        server.stop()
                    else:
                        server.start()
                    answer = "ok"
                except Exception as exc:  # report to the script, which then fails
                    answer = f"error {exc}"
                process.stdin.write(answer + "\n")
                process.stdin.flush()
        returncode = process.wait(timeout=scaled(30.0))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdin.close()
        reader.join(timeout=scaled(5.0))
        process.stdout.close()
    return returncode, "\n".join(output)


def _check(returncode: int, output: str, server: DemoServer) -> None:
    failed = [line for line in output.splitlines() if line.startswith("not ok")]
    report = (
        f"dashboard.mjs exited with {returncode}:\n{output}\n"
        f"--- demo server output ---\n{server.log_tail()}"
    )
    assert returncode == 0, report
    assert not failed, report
    assert "# all " in output, report


def test_dashboard_shows_every_channel_and_survives_a_restart(
    browser_tools: tuple[str, str], demo_server_factory: list[DemoServer], tmp_path: Path
) -> None:
    server = DemoServer(
        tmp_path / "demo-events.log", seed=_SEED, simulate=False, debug_publish=True
    )
    demo_server_factory.append(server)
    server.start()
    returncode, output = _run_script(browser_tools, server, "events", control=True)
    _check(returncode, output, server)
    restart = [line for line in output.splitlines() if "shows Live again" in line]
    assert restart, "the restart check did not run"
    assert restart[0].startswith("ok "), output
    for name in ("01-live-empty.png", "05-circuit-breaker.png", "09-reconnecting.png"):
        assert (SCREENSHOTS / name).stat().st_size > 0


def test_dashboard_fills_with_simulated_data(
    browser_tools: tuple[str, str], demo_server_factory: list[DemoServer], tmp_path: Path
) -> None:
    server = DemoServer(tmp_path / "demo-live.log", seed=_SEED, interval=0.1)
    demo_server_factory.append(server)
    server.start()
    returncode, output = _run_script(browser_tools, server, "live", control=False)
    _check(returncode, output, server)
    assert (SCREENSHOTS / "live-desktop.png").stat().st_size > 0
