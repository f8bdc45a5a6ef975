"""The JavaScript client (clients/js): its unit tests, its types, its package, and its
behaviour against a real ``wsbridge serve`` and a real redis-server.

The package is installed from its lock file (``npm ci``) and built with its own ``tsc``
once per session. Without node and npm these tests are skipped, or fail under CI.
"""

from __future__ import annotations

import asyncio
import json
import queue
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
import redis

from tests._js import CLIENT_PACKAGE as PACKAGE
from tests._js import Node, npm_version, websocket_flag
from tests.support.fixtures import RedisServerFactory
from tests.support.processes import Child, child_env, wsbridge_command
from tests.support.redis_server import free_port, scaled
from tests.support.samples import REFERENCE_EXAMPLES
from tests.test_demo_browser import browser_tools  # noqa: F401  (a fixture)
from wsbridge import Broadcaster, __version__, trading

ROOT = Path(__file__).resolve().parents[1]


# ---- the package itself ----


def test_versions_agree_with_the_python_package() -> None:
    manifest = json.loads((PACKAGE / "package.json").read_text(encoding="utf-8"))
    assert manifest["version"] == npm_version(__version__)
    source = (PACKAGE / "src" / "index.ts").read_text(encoding="utf-8")
    assert f'export const VERSION = "{manifest["version"]}";' in source
    lock = json.loads((PACKAGE / "package-lock.json").read_text(encoding="utf-8"))
    assert lock["version"] == manifest["version"]
    assert lock["packages"][""]["version"] == manifest["version"]


@pytest.mark.parametrize(
    ("python", "npm"),
    [
        ("0.2.0", "0.2.0"),
        ("0.2.0.dev0", "0.2.0-dev.0"),
        ("0.2.0a1", "0.2.0-a.1"),
        ("0.2.0b2", "0.2.0-b.2"),
        ("1.0.0rc1", "1.0.0-rc.1"),
    ],
)
def test_the_npm_spelling_of_a_version_is_the_documented_one(python: str, npm: str) -> None:
    assert npm_version(python) == npm
    table = (ROOT / "docs" / "versioning.md").read_text(encoding="utf-8")
    if python.startswith("0.2.0"):  # the rows of the mapping's table in docs/versioning.md
        assert f"| `{python}` | `{npm}` |" in table


def test_versions_without_an_npm_spelling_are_refused() -> None:
    for version in ("0.2.0.post1", "0.2.0+local", "0.2"):
        with pytest.raises(AssertionError):
            npm_version(version)


def test_the_package_has_no_runtime_dependencies() -> None:
    manifest = json.loads((PACKAGE / "package.json").read_text(encoding="utf-8"))
    assert "dependencies" not in manifest
    assert manifest["peerDependenciesMeta"]["react"]["optional"] is True


def test_unit_tests_pass(js_node: Node) -> None:
    result = js_node.run("--test", *sorted((PACKAGE / "test").glob("*.test.mjs")))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert re.search(r"^# fail 0$", result.stdout, re.MULTILINE), result.stdout[-2000:]


def test_npm_pack_holds_what_the_readme_says(js_client: Node) -> None:
    result = js_client.npm_run("pack", "--dry-run", "--json")
    assert result.returncode == 0, result.stderr
    (packed,) = json.loads(result.stdout)
    files = sorted(entry["path"] for entry in packed["files"])
    readme = (PACKAGE / "README.md").read_text(encoding="utf-8")
    listed = re.search(r"<!-- tarball -->\n```text\n(.*?)```", readme, re.DOTALL)
    assert listed, "the README lists the tarball's files in a ```text block after <!-- tarball -->"
    assert files == sorted(listed.group(1).split()), files
    assert packed["name"] == "wsbridge"


USAGE = """\
import { WsbridgeClient } from "wsbridge";
import { createHooks } from "wsbridge/react";
import type { EventPayloads } from "./wsmessage";

const client = new WsbridgeClient<EventPayloads>({ url: "ws://localhost:8000/ws" });
client.on("portfolio:update", (data) => data.total_equity.toFixed(2));
client.on("trade:executed", (data, event) => `${data.symbol} ${event.offset ?? 0}`);
// @ts-expect-error: not a field of the portfolio update
client.on("portfolio:update", (data) => data.no_such_field);
// @ts-expect-error: not a channel of the registry
client.on("portfolio:updates", () => undefined);
const total: number | undefined = client.latest("portfolio:update")?.total_equity;

const { useChannel, useWebSocket } = createHooks<EventPayloads>();
export function useEquity(): number | undefined {
  const { lastMessage } = useWebSocket();
  if (lastMessage?.channel === "trade:executed") lastMessage.data.entry_price.toFixed(2);
  return useChannel("portfolio:update")?.total_equity ?? total;
}
"""

CUSTOM_USAGE = """\
import { WsbridgeClient } from "wsbridge";
import type { EventPayloads } from "./wsmessage";

const client = new WsbridgeClient<EventPayloads>({ url: "ws://localhost:8000/ws" });
client.on("news:headline", (data) => data.title.toUpperCase());
// @ts-expect-error: the registry has no portfolio
client.on("portfolio:update", () => undefined);
"""

TSCONFIG = {
    "compilerOptions": {
        "strict": True,
        "noEmit": True,
        "target": "ES2022",
        "module": "ESNext",
        "moduleResolution": "bundler",
        "lib": ["ES2022", "DOM"],
        "types": [],
        "exactOptionalPropertyTypes": True,
        "noUnusedLocals": False,
    },
    "files": ["usage.ts", "wsmessage.d.ts"],
}


def _typecheck(js_client: Node, directory: Path, usage: str, declarations: str) -> None:
    (directory / "usage.ts").write_text(usage, encoding="utf-8")
    (directory / "wsmessage.d.ts").write_text(declarations, encoding="utf-8")
    (directory / "tsconfig.json").write_text(json.dumps(TSCONFIG), encoding="utf-8")
    # Installed as an application installs it: through its package.json exports.
    modules = directory / "node_modules"
    modules.mkdir()
    (modules / "wsbridge").symlink_to(PACKAGE)
    (modules / "react").symlink_to(PACKAGE / "node_modules" / "react")
    (modules / "@types").symlink_to(PACKAGE / "node_modules" / "@types")
    tsc = PACKAGE / "node_modules" / "typescript" / "bin" / "tsc"
    result = js_client.run(tsc, "-p", directory / "tsconfig.json", "--pretty", "false")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_generated_declarations_type_the_client(js_client: Node, tmp_path: Path) -> None:
    from wsbridge.export import typescript

    _typecheck(js_client, tmp_path, USAGE, typescript(trading.registry))


def test_a_wrong_field_fails_to_type_check(js_client: Node, tmp_path: Path) -> None:
    from wsbridge.export import typescript

    wrong = USAGE.replace("// @ts-expect-error: not a field of the portfolio update\n", "")
    with pytest.raises(AssertionError, match="no_such_field"):
        _typecheck(js_client, tmp_path, wrong, typescript(trading.registry))


def test_a_users_own_registry_types_the_client(js_client: Node, tmp_path: Path) -> None:
    from pydantic import BaseModel

    from wsbridge.export import typescript
    from wsbridge.schema import Registry

    class Headline(BaseModel):
        title: str

    registry = Registry()
    registry.register("news:headline", Headline)
    _typecheck(js_client, tmp_path, CUSTOM_USAGE, typescript(registry))


# ---- against a real server ----


class Serve:
    """``wsbridge serve`` on a fixed port, which can be killed, restarted and frozen."""

    def __init__(self, redis_url: str, *args: str, **env: str) -> None:
        self.redis_url = redis_url
        self.args = args
        self.env = env
        self.port = free_port()
        self.child: Child | None = None
        self.outputs: list[str] = []

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self) -> None:
        args = ["--redis", self.redis_url, "--port", str(self.port), "--log-level", "info"]
        self.child = Child(wsbridge_command("serve", *args, *self.args), env=child_env(**self.env))
        self.child.wait_for(r"^wsbridge serve: listening on ws://", timeout=30)

    def kill(self) -> None:
        assert self.child is not None
        self.child.send_signal(signal.SIGKILL)
        self.child.wait()
        self.outputs.append(self.child.output())
        self.child = None

    def signal(self, sig: int) -> None:
        assert self.child is not None
        self.child.send_signal(sig)

    def close(self) -> None:
        if self.child is not None:
            self.child.send_signal(signal.SIGCONT)
            self.child.stop()
            self.outputs.append(self.child.output())
            self.child = None


def _trade(n: int) -> dict[str, Any]:
    return {**REFERENCE_EXAMPLES["trade:executed"], "id": f"t{n}"}


async def _publish(redis_url: str, first: int, last: int) -> None:
    async with Broadcaster(redis_url, registry=trading.registry) as broadcaster:
        for n in range(first, last + 1):
            await broadcaster.publish("trade:executed", _trade(n))


class Scenario:
    """A node scenario process; answers its actions until it prints its result."""

    def __init__(self, node: Node, name: str, url: str) -> None:
        script = PACKAGE / "test" / "integration" / "scenario.mjs"
        command = [node.node, *websocket_flag(node.node), str(script), name, url]
        self._launch(command, PACKAGE, None)

    @classmethod
    def start(cls, command: list[str], *, cwd: Path, env: dict[str, str]) -> Scenario:
        """Any script that speaks the same ACTION / RESULT lines."""
        scenario = cls.__new__(cls)
        scenario._launch(command, cwd, env)
        return scenario

    def _launch(self, command: list[str], cwd: Path, env: dict[str, str] | None) -> None:
        self.process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True).start()
        threading.Thread(target=self._collect, args=(self.process.stderr,), daemon=True).start()

    def _read(self, pipe: IO[str] | None) -> None:
        assert pipe is not None
        for line in pipe:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _collect(self, pipe: IO[str] | None) -> None:
        assert pipe is not None
        self.stderr.extend(pipe)

    def next_line(self, deadline: float) -> str:
        try:
            line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            pytest.fail(f"the scenario printed nothing in time\n{''.join(self.stderr)}")
        if line is None:
            self.process.wait(scaled(10))
            pytest.fail(
                f"the scenario exited with {self.process.returncode}\n{''.join(self.stderr)}"
            )
        return line

    def answer(self, value: str = "") -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(f"ok {value}\n" if value else "ok\n")
        self.process.stdin.flush()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(scaled(10))
        for pipe in (self.process.stdin, self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def redis_url(redis_server_factory: RedisServerFactory) -> str:
    """A redis-server of this test's own: scenarios flush it."""
    return str(redis_server_factory().url)


@pytest.fixture
def serve(redis_url: str) -> Iterator[Serve]:
    server = Serve(redis_url)
    server.start()
    yield server
    server.close()
    assert not any("Traceback" in output for output in server.outputs)


Actions = dict[str, Callable[..., object]]


def drive(scenario: Scenario, actions: Actions) -> str:
    """Carry out the script's actions until it prints its result; return that result."""
    deadline = time.monotonic() + scaled(120)
    while True:
        line = scenario.next_line(deadline)
        if line.startswith("RESULT "):
            assert scenario.process.wait(scaled(10)) == 0, "".join(scenario.stderr)
            return line.removeprefix("RESULT ")
        words = line.split()
        assert words[0] == "ACTION", line
        answer = actions[words[1]](*words[2:])
        scenario.answer(answer if isinstance(answer, str) else "")


def run_scenario(
    node: Node, name: str, server: Serve, redis_url: str, **more: Callable[..., object]
) -> dict[str, Any]:
    """Run scenario ``name``, carrying out its actions; return its result."""
    actions: Actions = {
        **more,
        "publish": lambda first, last: asyncio.run(_publish(redis_url, int(first), int(last))),
        "kill-server": server.kill,
        "start-server": server.start,
        "stop-server": lambda: server.signal(signal.SIGSTOP),
        "continue-server": lambda: server.signal(signal.SIGCONT),
        "flush-redis": lambda: redis.Redis.from_url(redis_url).flushall(),
    }
    scenario = Scenario(node, name, server.url)
    try:
        return dict(json.loads(drive(scenario, actions)))
    finally:
        scenario.close()


@pytest.mark.redis
def test_resume_after_the_server_was_killed_and_restarted(
    js_node: Node, serve: Serve, redis_url: str
) -> None:
    result = run_scenario(js_node, "resume", serve, redis_url)
    ids = [event["id"] for event in result["seen"]]
    assert ids == [f"t{n}" for n in range(1, 16)], ids  # none lost, none repeated
    offsets = [event["offset"] for event in result["seen"]]
    assert offsets == list(range(offsets[0], offsets[0] + 15)), offsets
    assert result["resumed"] == ["trade:executed"]
    assert result["queued"] == ["risk:alert"]


@pytest.mark.redis
def test_a_channel_that_cannot_be_recovered_is_reported(
    js_node: Node, serve: Serve, redis_url: str
) -> None:
    result = run_scenario(js_node, "unrecoverable", serve, redis_url)
    assert result["lost"]["channel"] == "trade:executed"
    assert result["lost"]["position"]["epoch"] != result["before"]["epoch"]
    assert result["lost"]["position"]["offset"] == 2  # the two published after the flush
    ids = [event["id"] for event in result["seen"]]
    assert ids == ["t1", "t2", "t3", "t6"], ids


@pytest.mark.redis
def test_history_lost_while_connected_is_reported(
    js_client: Node, serve: Serve, redis_url: str
) -> None:
    result = run_scenario(js_client, "lost-while-connected", serve, redis_url)
    assert result["lost"]["channel"] == "trade:executed"
    assert result["lost"]["position"]["epoch"] != result["before"]["epoch"]
    assert result["lost"]["position"]["offset"] == 0
    assert result["after"] == {"epoch": result["lost"]["position"]["epoch"], "offset": 1}
    assert [(e["id"], e["offset"]) for e in result["seen"]] == [("t1", 1), ("t2", 2), ("t3", 1)]


@pytest.mark.redis
def test_resume_through_a_pattern(js_client: Node, redis_url: str) -> None:
    # trade:executed is not a default channel here: it arrives through the pattern only.
    server = Serve(redis_url, "--channel", "risk:alert", "--allow", "trade:*")
    server.start()
    try:
        result = run_scenario(js_client, "pattern-resume", server, redis_url)
    finally:
        server.close()
    assert not any("Traceback" in output for output in server.outputs)
    ids = [event["id"] for event in result["seen"]]
    assert ids == [f"t{n}" for n in range(1, 8)], ids  # none lost, none repeated
    assert result["before"]["offset"] == 3
    assert result["after"] == {"epoch": result["before"]["epoch"], "offset": 7}


@pytest.mark.redis
def test_a_server_that_stops_answering_is_detected_by_the_ping(
    js_node: Node, serve: Serve, redis_url: str
) -> None:
    result = run_scenario(js_node, "ping-timeout", serve, redis_url)
    assert "ping timeout" in result["reason"]
    assert result["detectedMs"] < scaled(5) * 1000


def test_the_demo_ships_the_current_build(js_client: Node) -> None:
    static = ROOT / "src" / "wsbridge" / "demo" / "static" / "wsbridge"
    for name in ("index.js", "protocol.js"):
        built = (PACKAGE / "dist" / name).read_text(encoding="utf-8")
        shipped = (static / name).read_text(encoding="utf-8")
        assert shipped == built, f"{name} is stale: run 'npm run demo' in clients/js"


# ---- the React example ----


@pytest.mark.slow
@pytest.mark.redis
def test_react_example_in_chromium(
    react_example: Path,
    browser_tools: tuple[str, str],  # noqa: F811  (the fixture imported above)
    serve: Serve,
    redis_url: str,
) -> None:
    node, chromium = browser_tools
    assert (react_example / "dist" / "index.html").is_file()
    port = free_port()
    vite = react_example / "node_modules" / "vite" / "bin" / "vite.js"
    preview = Child(
        [node, str(vite), "preview", "--host", "127.0.0.1", "--port", str(port), "--strictPort"],
        cwd=react_example,
        # Vite colours its output when CI is set, which splits the address it prints.
        env=child_env(WSBRIDGE_URL=f"ws://127.0.0.1:{serve.port}", NO_COLOR="1"),
    )
    with preview:
        preview.wait_for(rf"127\.0\.0\.1:{port}", stream="stdout", timeout=60)
        script = ROOT / "tests" / "browser" / "react_example.mjs"
        browser = Scenario.start(
            [node, str(script)],
            cwd=script.parent,
            env=child_env(PAGE_URL=f"http://127.0.0.1:{port}/", CHROMIUM_PATH=chromium),
        )
        portfolio = REFERENCE_EXAMPLES["portfolio:update"]

        async def publish(channel: str, data: Any) -> None:
            async with Broadcaster(redis_url, registry=trading.registry) as broadcaster:
                await broadcaster.publish(channel, data)

        actions: Actions = {
            "publish-portfolio": lambda: asyncio.run(publish("portfolio:update", portfolio)),
            "publish-trade": lambda: asyncio.run(publish("trade:executed", _trade(1))),
        }
        try:
            result = drive(browser, actions)
        finally:
            browser.close()
    assert result == "ok"


JWT_SECRET = "a-test-secret-of-at-least-32-bytes!!"


@pytest.fixture
def serve_with_tokens(redis_url: str) -> Iterator[Serve]:
    server = Serve(redis_url, "--jwt-leeway", "0", WSBRIDGE_JWT_SECRET=JWT_SECRET)
    server.start()
    yield server
    server.close()
    assert not any("Traceback" in output for output in server.outputs)


def _short_token() -> str:
    import jwt

    return str(jwt.encode({"exp": int(time.time()) + 3, "sub": "js"}, JWT_SECRET, "HS256"))


@pytest.mark.redis
@pytest.mark.parametrize("scenario", ["token-refresh", "token-expired"])
def test_a_fresh_token_before_or_at_expiry_loses_nothing(
    js_node: Node, serve_with_tokens: Serve, redis_url: str, scenario: str
) -> None:
    result = run_scenario(js_node, scenario, serve_with_tokens, redis_url, token=_short_token)
    assert [event["id"] for event in result["seen"]] == ["t1", "t2", "t3", "t4"]
    assert result["asked"] >= 2  # one token per connection
    first = result["closes"][0]
    if scenario == "token-refresh":
        # The client came back with a fresh token before the server closed the connection.
        assert first == {"code": 4001, "reason": "token refresh"}
    else:
        assert first == {"code": 4001, "reason": "token expired"}


@pytest.mark.redis
def test_a_refused_handshake_stops_the_client_with_the_reason(
    js_node: Node, serve_with_tokens: Serve, redis_url: str
) -> None:
    result = run_scenario(js_node, "refused", serve_with_tokens, redis_url)
    assert result == {"reason": "handshake refused: HTTP 401 (malformed token)", "state": "stopped"}


# ---- against the framework adapters ----


@pytest.mark.parametrize("adapter", ["asgi", "fastapi", "aiohttp"])
def test_a_refused_handshake_is_explained_by_the_adapters_too(js_node: Node, adapter: str) -> None:
    from tests.support.apps import serve as serve_adapter
    from wsbridge import Endpoint
    from wsbridge.tokens import TokenAuth

    auth = TokenAuth(secret=JWT_SECRET)
    endpoint = Endpoint(Broadcaster(), authenticate=auth.authenticate, authorize=auth.authorize)
    app = serve_adapter(adapter, endpoint)
    scenario = Scenario(js_node, "refused", app.url)
    try:
        result = json.loads(drive(scenario, {}))
    finally:
        scenario.close()
        app.stop()
    assert result == {"reason": "handshake refused: HTTP 401 (malformed token)", "state": "stopped"}


@pytest.mark.parametrize("adapter", ["asgi", "starlette"])
def test_a_full_server_is_explained_and_retried(js_node: Node, adapter: str) -> None:
    from websockets.sync.client import connect

    from tests.support.apps import serve as serve_adapter
    from wsbridge import Endpoint

    app = serve_adapter(adapter, Endpoint(Broadcaster(), max_connections=1))
    try:
        with connect(app.url, open_timeout=scaled(10)) as holder:
            scenario = Scenario(js_node, "busy", app.url)
            try:
                result = json.loads(drive(scenario, {"free-slot": holder.close}))
            finally:
                scenario.close()
    finally:
        app.stop()
    reason = "handshake refused: HTTP 503 (too many connections)"
    assert result == {"reason": reason, "retried": True}


PAGE = "<!doctype html><title>refusal</title><p>a page of the bridge's own origin</p>"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("allowed", "limit", "wait_for", "expected"),
    [
        (True, 0, "close", {"close": "handshake refused: HTTP 503 (too many connections)"}),
        (False, None, "stopped", {"stopped": "handshake refused: HTTP 403 (origin not allowed)"}),
    ],
    ids=["connection-limit", "origin-not-allowed"],
)
def test_a_page_of_the_same_origin_learns_why_in_chromium(
    browser_tools: tuple[str, str],  # noqa: F811  (the fixture imported above)
    allowed: bool,
    limit: int | None,
    wait_for: str,
    expected: dict[str, str],
) -> None:
    # Chromium sends no Origin with a same-origin GET: the answer judges its Referer.
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    from tests.support.servers import UvicornServer
    from wsbridge import Endpoint
    from wsbridge.starlette import create_route

    node, chromium = browser_tools
    broadcaster = Broadcaster()
    endpoint = Endpoint(broadcaster, max_connections=limit)
    static = ROOT / "src" / "wsbridge" / "demo" / "static" / "wsbridge"
    app = Starlette(
        routes=[
            Route("/", lambda request: HTMLResponse(PAGE)),
            Mount("/client", StaticFiles(directory=static)),
            create_route(endpoint, "/ws"),
        ],
        lifespan=broadcaster.lifespan,
    )
    server = UvicornServer(app)
    origin = f"http://127.0.0.1:{server.port}"
    endpoint.allowed_origins = frozenset([origin if allowed else "https://elsewhere.example"])
    server.start()
    try:
        result = subprocess.run(
            [node, str(ROOT / "tests" / "browser" / "refusal.mjs")],
            cwd=ROOT / "tests" / "browser",
            env=child_env(PAGE_URL=origin + "/", WAIT_FOR=wait_for, CHROMIUM_PATH=chromium),
            capture_output=True,
            text=True,
            timeout=scaled(120),
            check=False,
        )
    finally:
        server.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    if wait_for == "close":
        assert outcome == {**expected, "state": "waiting"}, outcome
    else:
        assert outcome == expected, outcome
