"""The ``wsbridge`` command line: click's CliRunner where no server or broker is involved,
real subprocesses (``python -m wsbridge ...``), real Redis and real WebSockets otherwise."""

from __future__ import annotations

import json
import logging
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest
import redis.asyncio as aioredis
from click.testing import CliRunner

from tests.support.client import Client
from tests.support.processes import Child, child_env, wsbridge_command
from tests.support.redis_server import free_port, scaled
from tests.support.samples import REFERENCE_EXAMPLES
from tests.support.servers import UvicornServer
from wsbridge import Broadcaster, Endpoint, Registry, __version__
from wsbridge.asgi import WebSocketApp
from wsbridge.backends.redis import history_keys
from wsbridge.cli import cli
from wsbridge.export import FORMATS, json_schema, render
from wsbridge.trading import registry

if TYPE_CHECKING:
    import redis

pytestmark = pytest.mark.anyio

TRADE = REFERENCE_EXAMPLES["trade:executed"]
ALERT = {
    "type": "position_limit",
    "severity": "warning",
    "reason": "AAPL position size 6.2% exceeds 5% limit",
    "timestamp": "2026-03-12T14:40:00Z",
}
# The reference's own redis-cli example.
PORTFOLIO = {"total_equity": 26000, "cash": 6000, "positions_value": 20000}


def invoke(*args: str, stdin: str | None = None) -> Any:
    return CliRunner().invoke(cli, list(args), input=stdin, prog_name="wsbridge")


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("wsbridge: error: "), stderr
    return lines[0]


# -- no server needed ----------------------------------------------------------------------


@pytest.mark.parametrize("command", ["", "serve", "publish", "listen", "schema", "demo"])
def test_every_command_has_help(command: str) -> None:
    result = invoke(*([command] if command else []), "--help")
    assert result.exit_code == 0, result.output
    assert f"Usage: wsbridge {command}".rstrip() in result.output


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.output.strip() == f"wsbridge, version {__version__}"


def test_help_shows_the_environment_variables() -> None:
    output = invoke("serve", "--help").output
    for variable in ("WSBRIDGE_REDIS_URL", "WSBRIDGE_HOST", "WSBRIDGE_PORT", "WSBRIDGE_CHANNELS"):
        assert variable in output


@pytest.mark.parametrize("fmt", FORMATS)
def test_schema_prints_each_format(fmt: str) -> None:
    result = invoke("schema", "--format", fmt)
    assert result.exit_code == 0, result.output
    assert result.stdout == render(registry, fmt)  # type: ignore[arg-type]


def test_schema_of_one_channel_to_a_file(tmp_path: Path) -> None:
    result = invoke("schema", "--channel", "trade:executed")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == json_schema(registry, "trade:executed")

    target = tmp_path / "alert.d.ts"
    result = invoke("schema", "-f", "typescript", "-c", "risk:alert", "-o", str(target))
    assert result.exit_code == 0, result.output
    text = target.read_text("utf-8")
    assert text == render(Registry([registry.get("risk:alert")]), "typescript")  # type: ignore[list-item]
    assert "RiskAlertMessage" in text
    assert "TradeExecuted" not in text

    result = invoke("schema", "--channel", "no:such")
    assert result.exit_code == 2
    assert "no schema for channel 'no:such'" in one_error_line(result.stderr)


def test_publish_rejects_invalid_json() -> None:
    result = invoke("publish", "trade:executed", '{"id": ')
    assert result.exit_code == 2
    assert "invalid JSON" in one_error_line(result.stderr)
    result = invoke("publish", "trade:executed", '{"price": NaN}')
    assert result.exit_code == 2
    assert "NaN is not valid JSON" in one_error_line(result.stderr)


def test_publish_names_the_fields_that_break_the_schema() -> None:
    result = invoke("publish", "trade:executed", json.dumps({**TRADE, "quantity": -1}))
    assert result.exit_code == 2
    line = one_error_line(result.stderr)
    assert "trade:executed" in line
    assert "quantity" in line
    result = invoke("publish", "trade:executed", json.dumps({**TRADE, "strenght": 1}))
    assert result.exit_code == 2
    assert "strenght" in one_error_line(result.stderr)


def test_publish_check_prints_the_canonical_payload_without_a_broker() -> None:
    payload = {**TRADE, "entry_time": "2026-03-12T14:30:00+00:00"}
    result = invoke("publish", "trade:executed", "-", "--check", stdin=json.dumps(payload))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {**TRADE, "quantity": 10.0}
    # A channel without a schema takes any JSON.
    assert invoke("publish", "chat:room", "[1, 2]", "--check").stdout.strip() == "[1,2]"


def test_publish_refuses_bad_channels_and_brokers() -> None:
    result = invoke("publish", "bad\nchannel", "{}")
    assert result.exit_code == 2
    assert "invalid channel" in one_error_line(result.stderr)
    result = invoke("publish", "chat:room", "{}", "--redis", "memory://")
    assert result.exit_code == 2
    assert "memory://" in one_error_line(result.stderr)
    result = invoke("publish", "chat:room", "{}", "--redis", "ftp://example.com")
    assert result.exit_code == 2
    assert "unknown broker URL scheme" in one_error_line(result.stderr)


@pytest.mark.parametrize("command", ["publish", "serve"])
def test_a_malformed_redis_url_is_one_line(command: str) -> None:
    args = ["chat:room", "{}"] if command == "publish" else []
    child = Child(wsbridge_command(command, *args, "--redis", "redis://127.0.0.1:abc/0"))
    assert child.wait(timeout=30) == 2
    line = one_error_line("\n".join(child.lines("stderr")))
    assert "invalid Redis URL: Port could not be cast to integer value as 'abc'" in line


def test_serve_and_listen_refuse_bad_options() -> None:
    result = invoke("serve", "--path", "ws")
    assert result.exit_code == 2
    assert "--path" in one_error_line(result.stderr)
    result = invoke("serve", "--redis", "nope")
    assert result.exit_code == 2
    assert "no scheme" in one_error_line(result.stderr)
    result = invoke("serve", "-c", "")
    assert result.exit_code == 2
    result = invoke("serve", "--health-path", "/healthz")
    assert result.exit_code == 2
    assert "--server uvicorn" in one_error_line(result.stderr)
    result = invoke("listen", "http://127.0.0.1/ws")
    assert result.exit_code == 2
    assert "not a WebSocket URL" in one_error_line(result.stderr)


def test_python_dash_m_wsbridge() -> None:
    child = Child(wsbridge_command("--version"))
    assert child.wait() == 0
    assert child.lines() == [f"wsbridge, version {__version__}"]


# -- publish, against a real broker (or none) ------------------------------------------------


def test_publish_to_an_unreachable_broker_fails_fast() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    started = time.monotonic()
    child = Child(wsbridge_command("publish", "chat:room", "{}", "--redis", url, "--timeout", "2"))
    assert child.wait(timeout=30) == 1
    assert time.monotonic() - started < scaled(15)
    line = one_error_line("\n".join(child.lines("stderr")))
    assert f"cannot publish to the broker at {url}" in line


# -- serve ----------------------------------------------------------------------------------


ENGINES = ["wsbridge", "uvicorn"]


def start_serve(*args: str, **env: str) -> Child:
    """``wsbridge serve`` in a child, once it listens."""
    child = Child(wsbridge_command("serve", "--log-level", "info", *args), env=child_env(**env))
    try:
        child.wait_for(r"^wsbridge serve: listening on ws://", timeout=30)
    except BaseException:
        child.stop()
        raise
    return child


async def subscribed(url: str, n: int = 1) -> list[Client]:
    """Clients whose default subscriptions are in place: each ping answered after them."""
    clients = [await Client.connect(url) for _ in range(n)]
    for client in clients:
        await client.pinged()
    return clients


async def get(port: int, path: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=scaled(10)) as http:
        return await http.get(f"http://127.0.0.1:{port}{path}")


@pytest.mark.redis
@pytest.mark.parametrize("engine", ENGINES)
async def test_serve_bridges_redis_to_websocket_clients(
    engine: str, redis_url: str, redis_client: redis.Redis
) -> None:
    port = free_port()
    health = ["--health-path", "/healthz"] if engine == "uvicorn" else []
    child = start_serve("--redis", redis_url, "--port", str(port), "--server", engine, *health)
    try:
        if health:
            response = await get(port, "/healthz")
            assert response.status_code == 200
            assert response.json() == {"status": "ok", "broker_connected": True, "connections": 0}
        clients = await subscribed(f"ws://127.0.0.1:{port}/ws", 2)
        # One upstream subscription per channel, whatever the number of clients.
        assert redis_client.pubsub_numsub("trade:executed") == [(b"trade:executed", 1)]

        publisher = Child(
            wsbridge_command("publish", "trade:executed", json.dumps(TRADE), "--redis", redis_url)
        )
        assert await anyio.to_thread.run_sync(publisher.wait) == 0, publisher.output()
        # As the reference's testing section does it: redis-cli PUBLISH.
        redis_client.publish("portfolio:update", json.dumps(PORTFOLIO))
        for client in clients:
            trade = await client.recv_event()
            # trade:executed keeps history: `wsbridge publish` gave the event its offset.
            assert trade == {
                "channel": "trade:executed",
                "data": {**TRADE, "quantity": 10.0},
                "offset": 1,
            }
            assert await client.recv_event() == {"channel": "portfolio:update", "data": PORTFOLIO}
        for client in clients:
            await client.close()
    finally:
        assert child.stop() == 0
    assert "Traceback" not in child.output()


@pytest.mark.redis
async def test_serve_channels_and_patterns_from_the_environment(
    redis_url: str, redis_client: redis.Redis
) -> None:
    port = free_port()
    child = start_serve(
        WSBRIDGE_REDIS_URL=redis_url,
        WSBRIDGE_PORT=str(port),
        WSBRIDGE_CHANNELS="risk:* custom:x",
        WSBRIDGE_SERVER="uvicorn",
    )
    try:
        [client] = await subscribed(f"ws://127.0.0.1:{port}/ws")
        redis_client.publish("trade:executed", json.dumps(TRADE))  # not served
        redis_client.publish("risk:alert", json.dumps(ALERT))
        redis_client.publish("custom:x", "not json")
        assert await client.recv_event() == {"channel": "risk:alert", "data": ALERT}
        assert await client.recv_event() == {"channel": "custom:x", "data": {"raw": "not json"}}
        await client.close()
    finally:
        assert child.stop() == 0


@pytest.mark.redis
@pytest.mark.parametrize("by", ["option", "environment"])
async def test_serve_max_replay_bounds_a_resume(redis_server_factory: Any, by: str) -> None:
    redis_url = redis_server_factory().url  # its own: other tests expect a fresh history
    port = free_port()
    url = f"ws://127.0.0.1:{port}/ws"
    channel = "trade:executed"
    if by == "option":
        child = start_serve("--redis", redis_url, "--port", str(port), "--max-replay", "2")
    else:
        child = start_serve(
            "--redis",
            redis_url,
            "--port",
            str(port),
            WSBRIDGE_MAX_REPLAY="2",
            WSBRIDGE_SERVER="uvicorn",
        )
    try:
        async with Broadcaster(redis_url, registry=registry) as publisher:
            [client] = await subscribed(url)
            await client.send_json({"type": "subscribe", "channels": [channel], "id": 1})
            ack = await client.recv()
            start = ack["positions"][channel]
            await client.close()
            for _ in range(3):
                await publisher.publish(channel, TRADE)  # missed: 3 events

            async def resume(after: int) -> tuple[dict[str, Any], Client]:
                again = await Client.connect(url)
                since = {channel: {"epoch": start["epoch"], "offset": after}}
                await again.send_json(
                    {"type": "subscribe", "channels": [channel], "since": since, "id": 2}
                )
                return await again.recv(), again

            ack, far = await resume(start["offset"])  # 3 behind: beyond --max-replay 2
            assert ack["positions"][channel]["recovered"] is False
            assert ack["positions"][channel]["offset"] == start["offset"] + 3
            await far.pinged()  # nothing replayed before the pong
            ack, near = await resume(start["offset"] + 1)  # 2 behind
            assert ack["positions"][channel]["recovered"] is True
            replayed = [(await near.recv_event())["offset"] for _ in range(2)]
            assert replayed == [start["offset"] + 2, start["offset"] + 3]
            await far.close()
            await near.close()
    finally:
        assert child.stop() == 0
    assert "Traceback" not in child.output()


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_serve_closes_every_client_with_1001_and_exits_0(
    sig: signal.Signals, engine: str
) -> None:
    port = free_port()
    child = start_serve("--port", str(port), "--server", engine)
    try:
        clients = await subscribed(f"ws://127.0.0.1:{port}/ws", 3)
        started = time.monotonic()
        child.send_signal(sig)
        with anyio.fail_after(scaled(10)):
            closes = [await client.closed() for client in clients]
        assert closes == [(1001, "server shutting down")] * 3
        assert await anyio.to_thread.run_sync(child.wait) == 0
        assert time.monotonic() - started < scaled(8)
    finally:
        child.stop()
    assert "Traceback" not in child.output()
    assert "memory:// broker" in child.output()  # the note when no --redis is given


@pytest.mark.redis
@pytest.mark.parametrize("engine", ENGINES)
def test_serve_logs_the_broker_outage_and_its_end(redis_server_factory: Any, engine: str) -> None:
    server = redis_server_factory()
    child = start_serve("--redis", server.url, "--port", str(free_port()), "--server", engine)
    try:
        server.stop()
        child.wait_for(r"WARNING: +wsbridge: broker connection lost .*; reconnecting")
        server.start()
        restored = child.wait_for(
            r"WARNING: +wsbridge: broker connection restored after (\d+\.\d) s$", timeout=60
        )
        assert float(restored.group(1)) > 0
    finally:
        assert child.stop() == 0
    assert "Traceback" not in child.output()


@pytest.mark.parametrize("engine", ENGINES)
def test_serve_fails_clearly_when_the_broker_is_unreachable(engine: str) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    args = ["--redis", url, "--port", str(free_port()), "--server", engine]
    child = Child(wsbridge_command("serve", *args))
    assert child.wait(timeout=30) == 1
    assert f"cannot reach the broker at {url}" in child.output()
    assert "Traceback" not in child.output()


# -- listen ---------------------------------------------------------------------------------


def bridge(port: int | None = None) -> UvicornServer:
    """A wsbridge endpoint on uvicorn, memory broker; on ``port`` when given (restarts)."""
    server = UvicornServer(WebSocketApp(Endpoint(Broadcaster("memory://", registry=registry))))
    if port is not None:
        server.port = port
        server.url = f"ws://127.0.0.1:{port}/ws"
        server.server.config.port = port
    return server


async def publish(server: UvicornServer, channel: str, data: object) -> None:
    await server.acall(server.app.endpoint.broadcaster.publish, channel, data)


@pytest.fixture
def server() -> Iterator[UvicornServer]:
    with bridge() as running:
        assert isinstance(running, UvicornServer)
        yield running


def start_listen(*args: str) -> Child:
    """``wsbridge listen`` in a child, once it is connected and subscribed."""
    child = Child(wsbridge_command("listen", *args))
    try:
        child.wait_for(r"^wsbridge listen: connected to ws://")
    except BaseException:
        child.stop()
        raise
    return child


async def test_listen_prints_one_json_event_per_line(server: UvicornServer) -> None:
    child = start_listen(server.url, "--json", "--count", "2", "--timeout", str(scaled(30)))
    with child:
        await publish(server, "trade:executed", TRADE)
        await publish(server, "chat:room", {"text": "line one\nline two"})  # not subscribed
        await publish(server, "portfolio:update", PORTFOLIO)
        assert await anyio.to_thread.run_sync(child.wait) == 0, child.output()
    assert [json.loads(line) for line in child.lines()] == [
        {"channel": "trade:executed", "data": {**TRADE, "quantity": 10.0}, "offset": 1},
        {"channel": "portfolio:update", "data": PORTFOLIO},
    ]


async def test_listen_prints_events_pretty(server: UvicornServer) -> None:
    child = start_listen(server.url, "--count", "1", "--timeout", str(scaled(30)))
    with child:
        await publish(server, "trade:executed", TRADE)
        assert await anyio.to_thread.run_sync(child.wait) == 0, child.output()
    head, *body = child.lines()
    assert head.endswith(" trade:executed (TradeExecuted)")
    assert '    "symbol": "AAPL",' in body


async def test_listen_selects_channels_and_reconnects() -> None:
    port = free_port()
    first = bridge(port)
    first.start()
    args = ["--channel", "risk:*", "--json", "--count", "2", "--reconnect-delay", "0.05"]
    child = start_listen(first.url, *args, "--timeout", str(scaled(60)))
    with child:
        try:
            await publish(first, "trade:executed", TRADE)  # a default channel, filtered out
            await publish(first, "risk:alert", ALERT)
            await anyio.to_thread.run_sync(lambda: child.wait_for(r"risk:alert", "stdout"))
        finally:
            first.stop()
        await anyio.to_thread.run_sync(lambda: child.wait_for(r"disconnected"))
        second = bridge(port)
        with second:
            await anyio.to_thread.run_sync(lambda: child.wait_for(r"connected to", occurrence=2))
            await publish(second, "risk:alert", {**ALERT, "severity": "critical"})
            assert await anyio.to_thread.run_sync(child.wait) == 0, child.output()
    frames = [json.loads(line) for line in child.lines()]
    assert [(f["channel"], f["data"]["severity"]) for f in frames] == [
        ("risk:alert", "warning"),
        ("risk:alert", "critical"),
    ]


@pytest.mark.redis
async def test_listen_reports_events_the_server_could_not_recover(
    redis_server_factory: Any,
) -> None:
    redis_url = redis_server_factory().url
    port = free_port()
    serve_child = start_serve("--redis", redis_url, "--port", str(port))
    try:
        args = ["--channel", "trade:executed", "--json", "--count", "2"]
        child = start_listen(f"ws://127.0.0.1:{port}/ws", *args, "--timeout", str(scaled(30)))
        with child:
            publisher = Broadcaster(redis_url, registry=registry)
            async with publisher:
                await publisher.publish("trade:executed", TRADE)
                await anyio.to_thread.run_sync(lambda: child.wait_for(r"executed", "stdout"))
                client = aioredis.from_url(redis_url)
                try:
                    await client.delete(*history_keys("trade:executed"))  # as an eviction would
                finally:
                    await client.aclose()
                await publisher.publish("trade:executed", {**TRADE, "quantity": 2})
                assert await anyio.to_thread.run_sync(child.wait) == 0, child.output()
    finally:
        assert serve_child.stop() == 0
    assert [json.loads(line)["offset"] for line in child.lines()] == [1, 1]  # a new epoch
    expected = "events of trade:executed were missed and could not be recovered"
    assert any(expected in line for line in child.lines("stderr")), child.output()
    assert "Traceback" not in child.output() + serve_child.output()


async def test_listen_exits_1_when_the_count_is_not_reached(server: UvicornServer) -> None:
    child = Child(wsbridge_command("listen", server.url, "--count", "1", "--timeout", "0.5"))
    assert await anyio.to_thread.run_sync(child.wait) == 1
    assert "received 0 of 1 events within 0.5 s" in one_error_line(
        "\n".join(line for line in child.lines("stderr") if "error" in line)
    )


# -- demo -----------------------------------------------------------------------------------


async def test_demo_serves_the_dashboard_and_its_events() -> None:
    port = free_port()
    child = Child(
        wsbridge_command(
            "demo", "--port", str(port), "--seed", "7", "--interval", "0.05", "--log-level", "info"
        )
    )
    with child:
        await anyio.to_thread.run_sync(lambda: child.wait_for(r"Uvicorn running on", timeout=30))
        page = await get(port, "/")
        assert page.status_code == 200
        assert "<html" in page.text.lower()
        [client] = await subscribed(f"ws://127.0.0.1:{port}/ws")
        event = await client.recv_event()
        assert event["channel"] in registry
        await client.close()


async def test_demo_closes_every_client_with_1001_and_exits_0_on_sigterm() -> None:
    port = free_port()
    child = Child(wsbridge_command("demo", "--port", str(port)), env=child_env())
    try:
        child.wait_for(r"Uvicorn running on", timeout=30)
        clients = await subscribed(f"ws://127.0.0.1:{port}/ws", 2)
        child.send_signal(signal.SIGTERM)
        with anyio.fail_after(scaled(10)):
            closes = [await client.closed() for client in clients]
        assert [code for code, _ in closes] == [1001, 1001]
        assert await anyio.to_thread.run_sync(child.wait) == 0
    finally:
        child.stop()
    assert "Traceback" not in child.output()


def test_log_lines_name_their_source_once() -> None:
    from wsbridge.cli import _LogFormatter

    formatter = _LogFormatter("%(message)s")

    def line(name: str, message: str) -> str:
        record = logging.LogRecord(name, logging.WARNING, __file__, 1, message, None, None)
        return formatter.format(record)

    # wsbridge's messages carry their own prefix; the logger name is not repeated.
    assert line("wsbridge", "wsbridge: broker lost") == "WARNING:     wsbridge: broker lost"
    assert line("websockets.server", "connection open") == (
        "WARNING:     websockets.server: connection open"
    )
