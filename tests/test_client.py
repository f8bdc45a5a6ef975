"""wsbridge.client.Client against real servers: a wsbridge endpoint on uvicorn, and a
scripted ``websockets`` server where the test must choose exactly what the server sends."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from pydantic import BaseModel, ConfigDict
from websockets.asyncio.server import ServerConnection, serve

from tests.support.redis_server import free_port, scaled
from tests.support.samples import REFERENCE_EXAMPLES
from tests.support.servers import UvicornServer
from wsbridge import Broadcaster, Endpoint, InvalidChannelError, Registry, SessionLimits
from wsbridge.asgi import WebSocketApp
from wsbridge.client import (
    Client,
    ClientClosedError,
    Event,
    Status,
    SubscriptionError,
)
from wsbridge.exceptions import ConfigurationError
from wsbridge.trading import TradeExecuted, registry

pytestmark = pytest.mark.anyio

TRADE = REFERENCE_EXAMPLES["trade:executed"]

# The reference's redis-cli examples: partial payloads that the schemas accept.
PORTFOLIO = {"total_equity": 26000, "cash": 6000, "positions_value": 20000}
SIGNAL = {"symbol": "AAPL", "direction": "BUY", "strength": 0.8, "strategy_name": "test"}


def bridge(port: int | None = None, **endpoint_options: Any) -> UvicornServer:
    """A wsbridge endpoint (trading registry, memory broker) on uvicorn, not started.

    Clients may subscribe to any channel unless ``allow`` says otherwise.
    """
    endpoint_options.setdefault("allow", ["*"])
    broadcaster = Broadcaster("memory://", registry=registry)
    app = WebSocketApp(Endpoint(broadcaster, **endpoint_options), path="/ws")
    server = UvicornServer(app)
    if port is not None:  # to restart "the same" server on the same port
        server.port = port
        server.url = f"ws://127.0.0.1:{port}/ws"
        server.server.config.port = port
    return server


async def publish(server: UvicornServer, channel: str, data: object) -> None:
    broadcaster = server.app.endpoint.broadcaster
    await server.acall(broadcaster.publish, channel, data)


@pytest.fixture
def server() -> Iterator[UvicornServer]:
    with bridge() as running:
        assert isinstance(running, UvicornServer)
        yield running


async def next_status(client: Client, *kinds: str) -> Status:
    """The next status of one of ``kinds`` from ``client.updates()`` (events are skipped)."""
    with anyio.fail_after(scaled(10)):
        async for item in client.updates():
            if isinstance(item, Status) and item.kind in kinds:
                return item
    raise AssertionError(f"the client closed before a status in {kinds}")


# -- a wsbridge server -------------------------------------------------------------------


async def test_receives_events_parsed_into_models(server: UvicornServer) -> None:
    async with Client(server.url) as client:
        with anyio.fail_after(scaled(10)):
            await client.wait_connected()
            assert client.connected
            await publish(server, "trade:executed", TRADE)
            await publish(server, "portfolio:update", PORTFOLIO)
            trade = await client.receive()
            portfolio = await client.receive()
    assert trade.channel == "trade:executed"
    assert isinstance(trade.model, TradeExecuted)
    assert trade.model.symbol == "AAPL"
    assert trade.data["entry_time"] == "2026-03-12T14:30:00Z"
    assert trade.error is None
    # trade:executed keeps history: the event has its offset, and the JSON line shows it.
    assert trade.offset == 1
    assert json.loads(trade.to_json()) == {
        "channel": "trade:executed",
        "data": trade.data,
        "offset": 1,
    }
    assert portfolio.channel == "portfolio:update"
    assert type(portfolio.model).__name__ == "PortfolioUpdate"


async def test_channels_without_a_schema_or_off_it(server: UvicornServer) -> None:
    class Custom(BaseModel):
        model_config = ConfigDict(extra="forbid")
        n: int

    mine = Registry()
    mine.register("custom:*", Custom)
    async with Client(server.url, registry=mine) as client:
        with anyio.fail_after(scaled(10)):
            assert await client.subscribe(["custom:*", "other:x"]) == ["custom:*", "other:x"]
            await publish(server, "custom:a", {"n": 1})
            await publish(server, "custom:b", {"n": "many"})
            await publish(server, "other:x", [1, 2])
            good, bad, plain = [await client.receive() for _ in range(3)]
    assert isinstance(good.model, Custom)
    assert good.model.n == 1
    assert bad.model is None
    assert bad.error is not None
    assert bad.error.fields == ["n"]
    assert bad.data == {"n": "many"}
    assert (plain.channel, plain.data, plain.model, plain.error) == ("other:x", [1, 2], None, None)


async def test_subscribe_and_unsubscribe_await_the_acknowledgement(server: UvicornServer) -> None:
    async with Client(server.url) as client:
        with anyio.fail_after(scaled(10)):
            assert await client.subscribe(["extra:*"]) == ["extra:*"]
            assert client.subscriptions == ("extra:*",)
            assert await client.unsubscribe(["trade:executed"]) == ["trade:executed"]
            # The server stopped sending trade:executed before it acknowledged.
            await publish(server, "trade:executed", TRADE)
            await publish(server, "extra:one", {"x": 1})
            event = await client.receive()
            assert (event.channel, event.data) == ("extra:one", {"x": 1})
            assert await client.unsubscribe(["extra:*"]) == ["extra:*"]
            assert len(client.subscriptions) == 0
            await publish(server, "extra:two", {"x": 2})
            await publish(server, "signal:generated", SIGNAL)
            assert (await client.receive()).channel == "signal:generated"


async def test_subscription_refusals() -> None:
    def authorize(principal: object, channel: str) -> bool:
        return not channel.startswith("secret:")

    options: dict[str, Any] = {
        "channels": ["a:1"],
        "limits": SessionLimits(max_subscriptions=3),
        "authorize": authorize,
    }
    with bridge(**options) as running:
        async with Client(running.url) as client:
            with anyio.fail_after(scaled(10)):
                assert await client.subscribe(["secret:x", "b:1"]) == ["b:1"]
                assert client.subscriptions == ("b:1",)  # the refused one is forgotten
                assert await client.subscribe(["secret:y"]) == []  # answered, not timed out
                assert client.subscriptions == ("b:1",)
                with pytest.raises(SubscriptionError) as caught:
                    await client.subscribe(["c:1", "c:2", "c:3"])
                assert caught.value.code == "too_many_subscriptions"
                assert client.subscriptions == ("b:1",)
                with pytest.raises(InvalidChannelError):
                    await client.subscribe(["bad\nname"])
                with pytest.raises(ConfigurationError):
                    await client.subscribe("a:1")


async def test_channels_select_what_is_delivered(server: UvicornServer) -> None:
    # The server subscribes every client to the ten trading channels; this client asked
    # for risk:* only, so the other channels are filtered out.
    async with Client(server.url, channels=["risk:*"]) as client:
        with anyio.fail_after(scaled(10)):
            await client.wait_connected()
            await publish(server, "trade:executed", TRADE)
            await publish(server, "risk:anything", {"level": 1})
            event = await client.receive()
    assert event.channel == "risk:anything"


async def test_reconnects_after_the_server_restarts_on_the_same_port() -> None:
    port = free_port()
    client = Client(
        f"ws://127.0.0.1:{port}/ws", reconnect_delay=0.05, max_reconnect_delay=0.2, jitter=0.5
    )
    first = bridge(port)
    first.start()
    try:
        async with client:
            with anyio.fail_after(scaled(10)):
                await client.wait_connected()
                await client.subscribe(["extra:*"])
                await client.unsubscribe(["trade:executed"])
            first.stop()
            down = await next_status(client, "disconnected")
            assert down.code is not None
            assert not client.connected
            second = bridge(port)
            with second:
                await next_status(client, "connected")
                with anyio.fail_after(scaled(10)):
                    await client.wait_connected()  # subscriptions restored
                    assert client.connections == 2
                    await publish(second, "trade:executed", TRADE)
                    await publish(second, "extra:back", {"ok": True})
                    event = await client.receive()
                assert (event.channel, event.data) == ("extra:back", {"ok": True})
    finally:
        first.stop()


async def test_resumes_default_subscriptions_after_a_reconnect(server: UvicornServer) -> None:
    broadcaster = server.app.endpoint.broadcaster
    async with Client(server.url, reconnect_delay=0.5, jitter=0) as client:
        with anyio.fail_after(scaled(10)):
            await client.wait_connected()
            await publish(server, "trade:executed", {**TRADE, "quantity": 1})
            first = await client.receive()
            assert first.offset == 1
            # Answered after the client asked the server for the channel's epoch.
            await client.subscribe(["other:channel"])
        epoch, offset = client.positions["trade:executed"]
        assert offset == 1
        await server.acall(broadcaster.close_clients, 1001, "restart")
        await next_status(client, "disconnected")
        for quantity in (2, 3, 4):  # published while the client is away
            await publish(server, "trade:executed", {**TRADE, "quantity": quantity})
        await next_status(client, "connected")
        with anyio.fail_after(scaled(10)):
            await client.wait_connected()
            await publish(server, "trade:executed", {**TRADE, "quantity": 5})
            events = [await client.receive() for _ in range(4)]
        assert [e.offset for e in events] == [2, 3, 4, 5]
        assert [e.data["quantity"] for e in events] == [2, 3, 4, 5]
        assert client.positions["trade:executed"] == (epoch, 5)


async def test_reports_a_channel_it_could_not_recover() -> None:
    port = free_port()
    client = Client(f"ws://127.0.0.1:{port}/ws", reconnect_delay=0.05, max_reconnect_delay=0.2)
    first = bridge(port)
    first.start()
    try:
        async with client:
            with anyio.fail_after(scaled(10)):
                await client.wait_connected()
                await publish(first, "trade:executed", TRADE)
                assert (await client.receive()).offset == 1
                await client.subscribe(["other:channel"])
            assert "trade:executed" in client.positions
            first.stop()
            await next_status(client, "disconnected")
            with bridge(port):  # a new broker: the history and its epoch are gone
                lost = await next_status(client, "not_recovered")
                assert lost.detail == "trade:executed"
    finally:
        first.stop()


async def test_gives_up_after_max_reconnect_attempts() -> None:
    client = Client(
        f"ws://127.0.0.1:{free_port()}/ws",
        reconnect_delay=0.02,
        max_reconnect_delay=1.0,
        jitter=0.0,
        max_reconnect_attempts=2,
        open_timeout=scaled(5),
    )
    seen: list[Status] = []
    async with client:
        with anyio.fail_after(scaled(20)):
            async for item in client.updates():
                assert isinstance(item, Status)
                seen.append(item)
        with pytest.raises(ClientClosedError):
            await client.wait_connected()
    kinds = [s.kind for s in seen]
    assert kinds == ["disconnected", "reconnecting"] * 2 + ["disconnected"] * 2
    assert "cannot connect" in seen[0].detail
    assert "giving up" in seen[-1].detail
    assert [s.retry_in for s in seen if s.kind == "reconnecting"] == [0.02, 0.04]


async def test_requests_are_bounded_when_no_server_answers() -> None:
    client = Client(f"ws://127.0.0.1:{free_port()}/ws", request_timeout=0.3, reconnect_delay=5)
    async with client:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await client.subscribe(["x:1"])
        assert time.monotonic() - started < scaled(5)
        assert client.subscriptions == ("x:1",)  # remembered for the next connection


async def test_not_usable_outside_async_with() -> None:
    client = Client("ws://127.0.0.1:9/ws")
    with pytest.raises(ClientClosedError):
        await client.receive()
    async with client:
        pass
    with pytest.raises(ClientClosedError):
        await client.wait_connected()
    with pytest.raises(ClientClosedError):
        async with client:
            pass


def test_rejects_bad_configuration() -> None:
    with pytest.raises(ConfigurationError, match="WebSocket URL"):
        Client("http://example.com/ws")
    with pytest.raises(ConfigurationError):
        Client("ws://h/ws", reconnect_delay=5, max_reconnect_delay=1)
    with pytest.raises(ConfigurationError):
        Client("ws://h/ws", jitter=1.5)
    with pytest.raises(InvalidChannelError):
        Client("ws://h/ws", channels=[""])


# -- a scripted server -------------------------------------------------------------------


class Scripted:
    """A ``websockets`` server: records what each client sends, answers pings, and sends
    what ``script`` sends after the first ping."""

    def __init__(self, script: Callable[[ServerConnection], Awaitable[None]]) -> None:
        self.script = script
        self.pings: list[float] = []
        self.received: list[Any] = []
        self.close_codes: list[int | None] = []
        self.closed = anyio.Event()
        self.url = ""

    async def handler(self, ws: ServerConnection) -> None:
        scripted = False
        try:
            async for message in ws:
                frame = json.loads(message)
                self.received.append(frame)
                if frame.get("type") == "ping":
                    self.pings.append(time.monotonic())
                    await ws.send('{"type":"pong"}')
                    if not scripted:
                        scripted = True
                        await self.script(ws)
        finally:
            self.close_codes.append(ws.close_code)
            self.closed.set()


@asynccontextmanager
async def scripted(
    script: Callable[[ServerConnection], Awaitable[None]],
) -> AsyncIterator[Scripted]:
    recorder = Scripted(script)
    async with serve(recorder.handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        recorder.url = f"ws://127.0.0.1:{port}/ws"
        yield recorder


async def test_pings_on_the_interval_and_filters_pongs() -> None:
    async def nothing(ws: ServerConnection) -> None:
        pass

    interval = 0.1
    async with scripted(nothing) as server:
        async with Client(server.url, ping_interval=interval) as client:
            with anyio.fail_after(scaled(10)):
                await client.wait_connected()
                while len(server.pings) < 5:  # noqa: ASYNC110 - a bounded wait on a recording
                    await anyio.sleep(interval / 4)
                assert client.last_pong is not None
        # One ping at connect (to know the server is ready), then one per interval: the
        # client sleeps a whole interval between two, so on average they are that far apart.
        periodic = server.pings[1:]
        mean_gap = (periodic[-1] - periodic[0]) / (len(periodic) - 1)
        assert interval * 0.8 <= mean_gap <= scaled(interval * 5), server.pings
        assert all(frame == {"type": "ping"} for frame in server.received)


async def test_control_frames_become_statuses_and_malformed_ones_are_ignored() -> None:
    async def script(ws: ServerConnection) -> None:
        await ws.send("not json")
        await ws.send("[1, 2]")
        await ws.send(b"\x00binary")
        await ws.send('{"type":"pong"}')
        await ws.send('{"type":"future_frame","x":1}')
        await ws.send('{"type":"broker","status":"down"}')
        await ws.send('{"type":"error","code":"invalid_json","message":"frame is not JSON"}')
        await ws.send(json.dumps({"channel": "trade:executed", "data": TRADE}))
        await ws.send('{"type":"broker","status":"up"}')

    async with scripted(script) as server:
        items: list[Event | Status] = []
        async with Client(server.url) as client:
            with anyio.fail_after(scaled(10)):
                async for item in client.updates():
                    items.append(item)
                    if isinstance(item, Status) and item.kind == "broker_up":
                        break
                assert client.broker_connected
        with anyio.fail_after(scaled(10)):
            await server.closed.wait()
    shown = [(i.kind, i.detail) if isinstance(i, Status) else i.channel for i in items]
    assert shown == [
        ("connected", server.url),
        ("broker_down", "down"),
        ("error", "invalid_json: frame is not JSON"),
        "trade:executed",
        ("broker_up", "up"),
    ]
    assert server.close_codes == [1000]  # a clean close on leaving "async with"


async def test_gaps_and_position_frames_are_reported_as_not_recovered() -> None:
    def event(offset: int | None) -> str:
        frame: dict[str, Any] = {"channel": "c", "data": {"at": offset}}
        if offset is not None:
            frame["offset"] = offset
        return json.dumps(frame)

    def position(epoch: object, offset: object, **extra: object) -> str:
        return json.dumps(
            {"type": "position", "positions": {"c": {"epoch": epoch, "offset": offset, **extra}}}
        )

    async def script(ws: ServerConnection) -> None:
        positions = {"c": {"epoch": "e1", "offset": 0}}
        await ws.send(json.dumps({"type": "subscribed", "channels": ["c"], "positions": positions}))
        await ws.send(event(1))
        await ws.send(event(3))  # skips 2: a gap nobody announced
        await ws.send(event(None))  # a plain PUBLISH: no offset, no effect on the position
        await ws.send(event(4))
        await ws.send(position("e2", 0, recovered=False))  # the server lost the history
        await ws.send(event(1))
        for hostile in (
            position(5, 1),
            position("e2", -1),
            position("e2", True),
            '{"type":"position","positions":[1]}',
            '{"type":"position","positions":{"c":3}}',
            '{"type":"position"}',
        ):
            await ws.send(hostile)
        await ws.send(position("e2", 1))  # same epoch, nothing lost: no status
        await ws.send(position("e3", 7))  # another epoch: lost, even unannounced
        await ws.send('{"type":"broker","status":"up"}')

    async with scripted(script) as server:
        items: list[Event | Status] = []
        async with Client(server.url) as client:
            with anyio.fail_after(scaled(10)):
                async for item in client.updates():
                    items.append(item)
                    if isinstance(item, Status) and item.kind == "broker_up":
                        break
            positions = client.positions
    shown = [(i.kind, i.detail) if isinstance(i, Status) else i.offset for i in items]
    assert shown == [
        ("connected", server.url),
        1,
        ("not_recovered", "c"),
        3,
        None,
        4,
        ("not_recovered", "c"),
        1,
        ("not_recovered", "c"),
        ("broker_up", "up"),
    ]
    assert positions["c"] == ("e3", 7)
