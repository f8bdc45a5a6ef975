"""Every example runs: each starts as a subprocess on a free port and delivers an event.

The framework examples run on the memory broker (their default) with an event posted to
their own ``/trades`` endpoint, and on Redis with ``examples/publisher.py`` publishing from
another process. The React hook is type-checked with the pinned ``tsc`` against the
committed ``wsmessage.d.ts``, which must be what ``wsbridge schema`` generates today.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tests.support.client import Client
from tests.support.processes import Child, child_env, wsbridge_command
from tests.support.redis_server import free_port, scaled
from tests.support.samples import REFERENCE_EXAMPLES
from wsbridge.export import render
from wsbridge.trading import registry

pytestmark = pytest.mark.anyio

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
REACT = EXAMPLES / "react"

# Each framework example, and the line (stream, regex) that says it is listening.
FRAMEWORKS = {
    "fastapi_app.py": ("stderr", r"Uvicorn running on"),
    "starlette_app.py": ("stderr", r"Uvicorn running on"),
    "asgi_app.py": ("stderr", r"Uvicorn running on"),
    "aiohttp_app.py": ("stdout", r"Running on http://"),
}

# An offset instead of Z: the example's model writes the canonical form back.
TRADE = {**REFERENCE_EXAMPLES["trade:executed"], "entry_time": "2026-03-12T14:30:00+00:00"}


async def start_example(name: str, port: int, **env: str) -> Child:
    child = Child([sys.executable, str(EXAMPLES / name), str(port)], env=child_env(**env))
    stream, ready = FRAMEWORKS[name]
    try:
        await anyio.to_thread.run_sync(lambda: child.wait_for(ready, stream, timeout=30))
    except BaseException:
        child.stop()
        raise
    return child


async def subscribed_client(port: int) -> Client:
    """A client whose default subscriptions are in place: its ping was answered after them."""
    client = await Client.connect(f"ws://127.0.0.1:{port}/ws")
    await client.pinged()
    return client


async def post(port: int, path: str, body: object) -> tuple[int, Any]:
    async with httpx.AsyncClient(timeout=scaled(10)) as http:
        response = await http.post(f"http://127.0.0.1:{port}{path}", json=body)
    return response.status_code, response.json()


@pytest.mark.parametrize("name", list(FRAMEWORKS))
async def test_framework_example_delivers_a_posted_event(name: str) -> None:
    port = free_port()
    child = await start_example(name, port)
    try:
        client = await subscribed_client(port)
        try:
            assert await post(port, "/trades", TRADE) == (202, {"published": "trade:executed"})
            event = await client.recv_event()
            assert event["channel"] == "trade:executed"
            # Validated and written by the model: canonical time, quantity as a number.
            assert event["data"] == {
                **TRADE,
                "quantity": 10.0,
                "entry_time": "2026-03-12T14:30:00Z",
            }
            status, body = await post(port, "/trades", {**TRADE, "quantity": -1})
            assert status == 422
            assert "quantity" in json.dumps(body)
        finally:
            await client.close()
    finally:
        child.stop()
    assert "Traceback" not in child.output()


@pytest.mark.redis
@pytest.mark.parametrize("name", list(FRAMEWORKS))
async def test_publisher_reaches_clients_through_each_example(name: str, redis_url: str) -> None:
    port = free_port()
    child = await start_example(name, port, WSBRIDGE_REDIS_URL=redis_url)
    try:
        client = await subscribed_client(port)
        try:
            publisher = Child(
                [sys.executable, str(EXAMPLES / "publisher.py"), "--count", "3", "--interval", "0"],
                env=child_env(WSBRIDGE_REDIS_URL=redis_url),
            )
            with publisher:
                assert await anyio.to_thread.run_sync(publisher.wait) == 0, publisher.output()
            events = [await client.recv_event() for _ in range(3)]
        finally:
            await client.close()
    finally:
        child.stop()
    assert [e["channel"] for e in events] == ["signal:generated", "order:status", "trade:executed"]
    assert events[2]["data"]["side"] == "BUY"
    assert events[2]["data"]["entry_time"].endswith("Z")
    assert len(publisher.lines()) == 3  # one line per event published


@pytest.mark.parametrize("name", list(FRAMEWORKS))
async def test_framework_examples_answer_alike(name: str) -> None:
    """The same status for a body that is not JSON, and the same stop: 1001, then exit 0."""
    port = free_port()
    child = await start_example(name, port)
    try:
        client = await subscribed_client(port)
        async with httpx.AsyncClient(timeout=scaled(10)) as http:
            response = await http.post(
                f"http://127.0.0.1:{port}/trades",
                content=b"{not json",
                headers={"content-type": "application/json"},
            )
        assert (response.status_code, response.json()) == (400, {"error": "the body is not JSON"})
        child.send_signal(signal.SIGTERM)
        code, _ = await client.closed()  # aiohttp's own shutdown gives no reason
        assert code == 1001
        assert await anyio.to_thread.run_sync(child.wait) == 0
    finally:
        child.stop()
    assert "Traceback" not in child.output()


def test_publisher_with_redis_down_prints_one_line() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    publisher = Child(
        [sys.executable, str(EXAMPLES / "publisher.py"), "--count", "1"],
        env=child_env(WSBRIDGE_REDIS_URL=url),
    )
    assert publisher.wait(timeout=30) == 1
    assert publisher.lines() == []
    [line] = publisher.lines("stderr")
    assert line.startswith("publisher: cannot connect to Redis"), line


def test_every_example_starts_with_its_run_command() -> None:
    for name in [*FRAMEWORKS, "publisher.py"]:
        first = (EXAMPLES / name).read_text("utf-8").splitlines()[0]
        assert first.startswith(f'"""Run: python examples/{name}'), first
    first = (REACT / "src" / "useWebSocket.ts").read_text("utf-8").splitlines()[0]
    assert first.startswith("// Use:"), first


# -- the React hook ----------------------------------------------------------------------

# A component's use of the hook: narrowing on the channel types the payload. The
# @ts-expect-error lines make a mistake that compiles fail the check.
USAGE = """\
import { useWebSocket } from "HOOK";

export function equity(): number | undefined {
  const { lastMessage, connected, send } = useWebSocket({ url: "ws://127.0.0.1:8000/ws" });
  send({ type: "subscribe", channels: ["risk:*"], id: 1 });
  // @ts-expect-error: not a frame a client may send
  send({ type: "pong" });
  if (!connected || lastMessage === null) return undefined;
  if (lastMessage.channel === "portfolio:update") return lastMessage.data.total_equity;
  if (lastMessage.channel === "trade:executed") {
    // @ts-expect-error: a trade has no total_equity
    return lastMessage.data.total_equity;
  }
  return undefined;
}
"""


def test_wsmessage_declarations_are_generated(tmp_path: Path) -> None:
    """The committed declarations are exactly what the documented command writes today."""
    target = tmp_path / "wsmessage.d.ts"
    child = Child(wsbridge_command("schema", "--format", "typescript", "-o", str(target)))
    assert child.wait() == 0, child.output()
    regenerate = "wsbridge schema --format typescript -o examples/react/src/wsmessage.d.ts"
    committed = (REACT / "src" / "wsmessage.d.ts").read_bytes()
    assert committed == target.read_bytes(), f"out of date: run {regenerate}"
    assert committed.decode("utf-8") == render(registry, "typescript")


def test_react_hook_type_checks(react_example: Path, tmp_path: Path) -> None:
    """The example's hook, on the package's React binding, with the real React types."""
    hook = (react_example / "src" / "useWebSocket").as_posix()
    (tmp_path / "usage.ts").write_text(USAGE.replace("HOOK", hook), encoding="utf-8")
    config = {
        # The example's own settings (strict, DOM, bundler resolution).
        "extends": (react_example / "tsconfig.json").as_posix(),
        "include": [],
        "files": [
            (react_example / "src" / "useWebSocket.ts").as_posix(),
            (react_example / "src" / "wsmessage.d.ts").as_posix(),
            (tmp_path / "usage.ts").as_posix(),
        ],
    }
    (tmp_path / "tsconfig.json").write_text(json.dumps(config), encoding="utf-8")
    compiler = react_example / "node_modules" / "typescript" / "bin" / "tsc"
    result = subprocess.run(
        [shutil.which("node") or "node", str(compiler), "-p", str(tmp_path / "tsconfig.json")],
        capture_output=True,
        text=True,
        timeout=scaled(120),
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
