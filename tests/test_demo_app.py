"""The demo app on a real uvicorn server: page, WebSocket, decisions and debug endpoints."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import httpx
import pytest

from tests.support.client import Client
from tests.support.redis_server import scaled
from tests.support.servers import UvicornServer
from wsbridge.demo import create_app, serve
from wsbridge.demo.app import DEBUG_PUBLISH_ENV

pytestmark = pytest.mark.anyio

StartDemo = Callable[..., UvicornServer]


@pytest.fixture
def start_demo() -> Iterator[StartDemo]:
    """Start demo apps on uvicorn; each is stopped, and checked for leftover tasks, after."""
    servers: list[UvicornServer] = []

    def start(**options: Any) -> UvicornServer:
        server = UvicornServer(create_app(**options))
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
        assert server.leftover_tasks == []


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=scaled(10)) as client:
        yield client


async def connected(server: UvicornServer) -> Client:
    """A client whose default subscriptions are in place (its ping was answered)."""
    client = await Client.connect(server.url)
    await client.pinged()
    return client


async def events(client: Client, n: int) -> list[tuple[str, dict[str, Any]]]:
    got = [await client.recv_event() for _ in range(n)]
    return [(e["channel"], e["data"]) for e in got]


async def test_the_page_and_its_assets_are_served(
    start_demo: StartDemo, http: httpx.AsyncClient
) -> None:
    server = start_demo(simulate=False)
    page = await http.get(server.http_url + "/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'data-testid="connection-status"' in page.text
    for asset, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        response = await http.get(f"{server.http_url}/static/{asset}")
        assert response.status_code == 200
        assert kind in response.headers["content-type"]
    state = (await http.get(server.http_url + "/api/state")).json()
    assert state["kill_switch"] is None
    assert state["circuit_breakers"] == {}
    assert state["feed_connected"] is True
    assert state["simulating"] is False


async def test_a_debug_publish_reaches_the_websocket(
    start_demo: StartDemo, http: httpx.AsyncClient
) -> None:
    server = start_demo(simulate=False, debug_publish=True)
    client = await connected(server)
    try:
        data = {"timestamp": "2026-03-13T09:30:00+00:00", "symbol_count": 503}
        response = await http.post(
            server.http_url + "/api/debug/publish",
            json={"channel": "system:feed:reconnected", "data": data},
        )
        assert response.status_code == 200
        # The registry writes the timestamp in its canonical UTC form.
        assert await events(client, 1) == [
            ("system:feed:reconnected", {"timestamp": "2026-03-13T09:30:00Z", "symbol_count": 503})
        ]
    finally:
        await client.close()


async def test_a_reloaded_page_shows_the_portfolio_at_once(
    start_demo: StartDemo, http: httpx.AsyncClient
) -> None:
    server = start_demo(simulate=False, debug_publish=True)
    portfolio = {"total_equity": 26000, "cash": 6000, "positions_value": 20000}
    response = await http.post(
        server.http_url + "/api/debug/publish",
        json={"channel": "portfolio:update", "data": portfolio},
    )
    assert response.status_code == 200
    # A page opened (or reloaded) after the last update gets it first, without waiting.
    client = await Client.connect(server.url)
    try:
        assert await events(client, 1) == [("portfolio:update", portfolio)]
    finally:
        await client.close()


async def test_debug_publish_validates_and_updates_the_state(
    start_demo: StartDemo, http: httpx.AsyncClient
) -> None:
    server = start_demo(simulate=False, debug_publish=True)
    url = server.http_url + "/api/debug/publish"
    bad = await http.post(url, json={"channel": "portfolio:update", "data": {"total_equity": 1}})
    assert bad.status_code == 422
    assert "cash" in bad.json()["detail"]
    breaker = {
        "breaker": "stale_data",
        "action": "activated",
        "reason": "no data",
        "timestamp": "2026-03-12T14:50:00Z",
    }
    assert (
        await http.post(url, json={"channel": "risk:circuit_breaker", "data": breaker})
    ).is_success
    state = (await http.get(server.http_url + "/api/state")).json()
    assert state["circuit_breakers"] == {"stale_data": "no data"}
    assert state["trading_halted"] is True


async def test_approve_publishes_the_orders_life_and_the_fill(
    start_demo: StartDemo, http: httpx.AsyncClient
) -> None:
    server = start_demo(simulate=False, seed=3)
    client = await connected(server)
    try:
        decision = {
            "symbol": "MSFT",
            "side": "BUY",
            "quantity": 2,
            "strategy_name": "ml_signal",
            "decision": "approve",
        }
        response = await http.post(server.http_url + "/api/approvals", json=decision)
        assert response.status_code == 200
        body = response.json()
        assert body["decision"] == "approve"
        assert body["order_status"] == "FILLED"
        got = await events(client, 5)
        assert [(c, d.get("status")) for c, d in got] == [
            ("order:status", "PENDING"),
            ("order:status", "SUBMITTED"),
            ("order:status", "FILLED"),
            ("trade:executed", None),
            ("portfolio:update", None),
        ]
        assert {d["id"] for c, d in got[:3]} == {body["order_id"]}
        assert got[3][1]["strategy_name"] == "ml_signal"
        assert got[3][1]["quantity"] == 2
    finally:
        await client.close()


async def test_reject_publishes_an_info_alert(
    start_demo: StartDemo, http: httpx.AsyncClient
) -> None:
    server = start_demo(simulate=False)
    client = await connected(server)
    try:
        decision = {
            "symbol": "AAPL",
            "side": "SELL",
            "quantity": 10,
            "strategy_name": "ml_signal",
            "decision": "reject",
        }
        response = await http.post(server.http_url + "/api/approvals", json=decision)
        assert response.status_code == 200
        assert response.json()["order_id"] is None
        [(channel, data)] = await events(client, 1)
        assert channel == "risk:alert"
        assert data["severity"] == "info"
        assert "rejected by operator" in data["reason"]
    finally:
        await client.close()


@pytest.mark.parametrize(
    "change",
    [{"side": "HOLD"}, {"symbol": "ZZZZ"}, {"quantity": 0}, {"decision": "maybe"}, {"extra": 1}],
)
async def test_invalid_decisions_are_refused(
    start_demo: StartDemo, http: httpx.AsyncClient, change: dict[str, Any]
) -> None:
    server = start_demo(simulate=False)
    decision = {
        "symbol": "AAPL",
        "side": "BUY",
        "quantity": 1,
        "strategy_name": "ml_signal",
        "decision": "approve",
        **change,
    }
    response = await http.post(server.http_url + "/api/approvals", json=decision)
    assert response.status_code == 422


async def test_the_kill_switch_halts_trading_until_released(
    start_demo: StartDemo, http: httpx.AsyncClient
) -> None:
    server = start_demo(simulate=False)
    kill = server.http_url + "/api/kill-switch"
    client = await connected(server)
    try:
        response = await http.post(kill, json={"action": "activate", "reason": "unusual market"})
        assert response.status_code == 200
        assert response.json()["kill_switch"]["operator"] == "human"
        [(channel, data)] = await events(client, 1)
        assert channel == "risk:kill_switch"
        assert data["action"] == "activate"
        assert data["operator"] == "human"
        assert data["reason"] == "unusual market"
        assert (await http.post(kill, json={"action": "activate"})).status_code == 409
        decision = {
            "symbol": "AAPL",
            "side": "BUY",
            "quantity": 1,
            "strategy_name": "ml_signal",
            "decision": "approve",
        }
        refused = await http.post(server.http_url + "/api/approvals", json=decision)
        assert refused.status_code == 409
        assert "kill switch" in refused.json()["detail"]
        response = await http.post(kill, json={"action": "deactivate"})
        assert response.status_code == 200
        assert response.json()["kill_switch"] is None
        [(channel, data)] = await events(client, 1)
        assert (channel, data["action"]) == ("risk:kill_switch", "deactivate")
        assert (await http.post(kill, json={"action": "deactivate"})).status_code == 409
    finally:
        await client.close()


async def test_debug_endpoints_are_off_unless_enabled(
    start_demo: StartDemo, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = {"channel": "risk:alert", "data": {}}
    server = start_demo(simulate=False)
    assert (await http.post(server.http_url + "/api/debug/publish", json=body)).status_code == 404
    assert (await http.post(server.http_url + "/api/debug/tick", json={})).status_code == 404
    monkeypatch.setenv(DEBUG_PUBLISH_ENV, "1")
    enabled = start_demo(simulate=False)
    assert (await http.post(enabled.http_url + "/api/debug/publish", json=body)).status_code == 422
    disabled = start_demo(simulate=False, debug_publish=False)
    response = await http.post(disabled.http_url + "/api/debug/publish", json=body)
    assert response.status_code == 404


async def test_debug_tick_publishes_simulated_events(
    start_demo: StartDemo, http: httpx.AsyncClient
) -> None:
    server = start_demo(simulate=False, debug_publish=True, seed=5)
    client = await connected(server)
    try:
        response = await http.post(server.http_url + "/api/debug/tick", json={"count": 3})
        assert response.status_code == 200
        assert response.json()["ticks"] == 3
        n = response.json()["events"]
        got = await events(client, n)
        assert sum(channel == "portfolio:update" for channel, _ in got) >= 1
    finally:
        await client.close()


async def test_the_simulator_runs_in_the_lifespan(start_demo: StartDemo) -> None:
    server = start_demo(seed=1, interval=0.02)
    client = await connected(server)
    try:
        seen: set[str] = set()
        for _ in range(500):
            channel, _data = (await events(client, 1))[0]
            seen.add(channel)
            if {"portfolio:update", "signal:generated"} <= seen:
                break
        assert {"portfolio:update", "signal:generated"} <= seen
    finally:
        await client.close()


@pytest.mark.redis
async def test_the_demo_runs_on_redis(
    start_demo: StartDemo, http: httpx.AsyncClient, redis_url: str
) -> None:
    # Seeded: unseeded, the first tick drops the market feed one time in 250, and then
    # neither tick publishes a portfolio update (this test failed that way, now and then).
    server = start_demo(broker_url=redis_url, simulate=False, debug_publish=True, seed=5)
    client = await connected(server)
    try:
        response = await http.post(server.http_url + "/api/debug/tick", json={"count": 2})
        assert response.status_code == 200
        got = await events(client, response.json()["events"])
        assert "portfolio:update" in {channel for channel, _ in got}
    finally:
        await client.close()


@pytest.mark.redis
async def test_a_kill_switch_from_another_process_halts_the_demo(
    start_demo: StartDemo, http: httpx.AsyncClient, redis_url: str, redis_client: Any
) -> None:
    server = start_demo(broker_url=redis_url, simulate=False)
    client = await connected(server)
    try:
        payload = {
            "action": "activate",
            "reason": "halt from the risk service",
            "operator": "system",
            "timestamp": "2026-03-12T15:00:00Z",
        }
        redis_client.publish("risk:kill_switch", json.dumps(payload))
        [(channel, _data)] = await events(client, 1)
        assert channel == "risk:kill_switch"
        state: dict[str, Any] = {}
        deadline = anyio.current_time() + scaled(10)
        while anyio.current_time() < deadline:
            state = (await http.get(server.http_url + "/api/state")).json()
            if state["kill_switch"] is not None:
                break
            await anyio.sleep(0.02)  # polling a condition, with a deadline
        assert state["kill_switch"]["operator"] == "system"
        assert state["trading_halted"] is True
        response = await http.post(
            server.http_url + "/api/kill-switch", json={"action": "activate"}
        )
        assert response.status_code == 409
    finally:
        await client.close()


def test_create_app_refuses_a_bad_interval() -> None:
    with pytest.raises(ValueError, match="interval"):
        create_app(interval=0)


def test_serve_prints_the_url_and_runs_uvicorn(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The real server is exercised through a process in tests/test_cli.py; here only what
    # serve() hands to it.
    from wsbridge.uvicorn import Server

    calls: list[dict[str, Any]] = []

    def fake_run(self: Server, sockets: object = None) -> None:
        calls.append({"host": self.config.host, "port": self.config.port, "bc": self.broadcaster})

    monkeypatch.setattr(Server, "run", fake_run)
    serve(host="0.0.0.0", port=8123, seed=1)
    assert "http://127.0.0.1:8123/" in capsys.readouterr().out
    assert calls[0]["host"] == "0.0.0.0"
    assert calls[0]["port"] == 8123
    assert calls[0]["bc"] is not None
    serve(host="::1", port=8124)
    assert "http://[::1]:8124/" in capsys.readouterr().out
