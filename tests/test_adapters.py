"""One behaviour suite, run through every adapter on a real server with real clients.

Redis-backed setups publish with a separate Redis client (as another process would);
memory-backed ones publish inside the server's event loop, on asyncio (uvicorn) and on
trio (hypercorn).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.support.apps import serve
from tests.support.client import Client, close_all, connect_many
from tests.support.redis_server import scaled
from tests.support.servers import ServerThread
from wsbridge import Broadcaster, Endpoint

pytestmark = pytest.mark.anyio

SETUPS = [
    pytest.param(("asgi", "redis"), id="asgi-redis", marks=pytest.mark.redis),
    pytest.param(("starlette", "redis"), id="starlette-redis", marks=pytest.mark.redis),
    pytest.param(("fastapi", "redis"), id="fastapi-redis", marks=pytest.mark.redis),
    pytest.param(("aiohttp", "redis"), id="aiohttp-redis", marks=pytest.mark.redis),
    pytest.param(("server", "redis"), id="server-redis", marks=pytest.mark.redis),
    pytest.param(("asgi", "memory"), id="asgi-memory-asyncio"),
    pytest.param(("asgi-trio", "memory"), id="asgi-memory-trio"),
]


@dataclass
class Harness:
    """A running server plus the means to publish to it and look at its broker."""

    server: ServerThread
    broadcaster: Broadcaster
    prefix: str
    redis: aioredis.Redis | None

    @property
    def url(self) -> str:
        return self.server.url

    def ch(self, name: str) -> str:
        return f"{self.prefix}:{name}"

    async def publish(self, channel: str, raw: str | bytes) -> None:
        """Put a raw message on the broker, as any publisher would."""
        data = raw.encode() if isinstance(raw, str) else raw
        if self.redis is not None:
            await self.redis.publish(channel, data)
        else:
            backend = self.broadcaster._backend
            await self.server.acall(backend.publish, channel, data)

    async def publish_json(self, channel: str, value: object) -> None:
        await self.publish(channel, json.dumps(value))

    async def upstream(self, channel: str) -> int:
        """How many broker subscriptions exist for ``channel`` (Redis: PUBSUB NUMSUB)."""
        if self.redis is not None:
            result = await self.redis.pubsub_numsub(channel)
            return int(result[0][1])
        backend: Any = self.broadcaster._backend
        return 1 if channel in backend._channels or channel in backend._patterns else 0

    async def wait_upstream(self, channel: str, expected: int) -> None:
        deadline = asyncio.get_running_loop().time() + scaled(10)
        while (count := await self.upstream(channel)) != expected:
            assert asyncio.get_running_loop().time() < deadline, f"{channel}: {count} != {expected}"
            await asyncio.sleep(0.02)  # polling a condition, with a deadline


@pytest.fixture(params=SETUPS)
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    adapter, broker = request.param
    prefix = f"t{uuid.uuid4().hex[:8]}"
    redis_client = None
    if broker == "redis":
        url = request.getfixturevalue("redis_url")
        redis_client = aioredis.from_url(url)
        broadcaster = Broadcaster(url)
    else:
        broadcaster = Broadcaster("memory://")
    endpoint = Endpoint(broadcaster, channels=[f"{prefix}:a", f"{prefix}:b"], allow=[f"{prefix}:*"])
    server = serve(adapter, endpoint)
    try:
        yield Harness(server, broadcaster, prefix, redis_client)
    finally:
        server.stop()
        if redis_client is not None:
            await redis_client.aclose()
    # Every task the server started has an owner and ended with it.
    assert server.leftover_tasks == []


async def test_every_client_gets_every_publish_once_in_order(harness: Harness) -> None:
    a, b = harness.ch("a"), harness.ch("b")
    clients = await connect_many(harness.url, 50)
    try:
        await harness.wait_upstream(a, 1)
        await harness.wait_upstream(b, 1)
        for i in range(30):
            await harness.publish_json(a if i % 2 == 0 else b, {"seq": i})
        for client in clients:
            got = [await client.recv_event() for _ in range(30)]
            assert [e["channel"] for e in got].count(a) == 15
            assert [e["data"]["seq"] for e in got if e["channel"] == a] == list(range(0, 30, 2))
            assert [e["data"]["seq"] for e in got if e["channel"] == b] == list(range(1, 30, 2))
        # 50 clients, still one upstream subscription per channel.
        assert await harness.upstream(a) == 1
        assert await harness.upstream(b) == 1
        stats = await harness.server.acall(_stats, harness.broadcaster)
        assert stats.connections == 50
        assert stats.upstream_subscriptions == 2
    finally:
        await close_all(clients)
    await harness.wait_upstream(a, 0)
    await harness.wait_upstream(b, 0)


async def _stats(broadcaster: Broadcaster) -> Any:
    return broadcaster.stats()


async def test_payloads_are_forwarded_as_the_reference_does(harness: Harness) -> None:
    a = harness.ch("a")
    client = await Client.connect(harness.url)
    try:
        await harness.wait_upstream(a, 1)
        await harness.publish(a, "not json at all")
        await harness.publish(a, "[1, 2, 3]")
        await harness.publish(a, '"a string"')
        await harness.publish(a, "42")
        await harness.publish(a, '{"price": 178.42, "note": "caf\\u00e9 \u2713"}')
        await harness.publish(a, "NaN")
        assert await client.recv_event() == {"channel": a, "data": {"raw": "not json at all"}}
        assert await client.recv_event() == {"channel": a, "data": [1, 2, 3]}
        assert await client.recv_event() == {"channel": a, "data": "a string"}
        assert await client.recv_event() == {"channel": a, "data": 42}
        assert await client.recv_event() == {
            "channel": a,
            "data": {"price": 178.42, "note": "café ✓"},
        }
        assert await client.recv_event() == {"channel": a, "data": {"raw": "NaN"}}
    finally:
        await client.close()


async def test_pong_reaches_only_the_pinger(harness: Harness) -> None:
    a = harness.ch("a")
    pinger, other = await connect_many(harness.url, 2)
    try:
        await harness.wait_upstream(a, 1)
        await pinger.send_json({"type": "ping"})
        assert await pinger.recv() == {"type": "pong"}
        await harness.publish_json(a, {"after": "ping"})
        # The other client's next frame is the event: no pong was sent to it.
        assert await other.recv() == {"channel": a, "data": {"after": "ping"}}
        assert await pinger.recv() == {"channel": a, "data": {"after": "ping"}}
    finally:
        await close_all([pinger, other])


BAD_INPUT = [
    pytest.param("{not json", "invalid_json", id="not-json"),
    pytest.param("[1, 2]", "not_an_object", id="array"),
    pytest.param('"ping"', "not_an_object", id="string"),
    pytest.param("{}", "missing_type", id="no-type"),
    pytest.param('{"type": "dance"}', "unknown_type", id="unknown-type"),
    pytest.param('{"type": 5}', "invalid_field", id="type-not-string"),
    pytest.param('{"type": "subscribe", "channels": "a"}', "invalid_field", id="channels-not-list"),
    pytest.param(
        '{"type": "subscribe", "channels": [1]}', "invalid_field", id="channel-not-string"
    ),
    pytest.param(
        '{"type": "subscribe", "channels": ["has space"]}', "invalid_channel", id="bad-channel"
    ),
    pytest.param(b"\x00\x01binary", "binary_unsupported", id="binary"),
]


@pytest.mark.parametrize(("frame", "code"), BAD_INPUT)
async def test_bad_input_gets_an_error_and_disturbs_no_one(
    harness: Harness, frame: str | bytes, code: str, caplog: pytest.LogCaptureFixture
) -> None:
    a = harness.ch("a")
    offender, bystander = await connect_many(harness.url, 2)
    try:
        await harness.wait_upstream(a, 1)
        await offender.send_raw(frame)
        reply = await offender.recv()
        assert reply["type"] == "error"
        assert reply["code"] == code
        assert isinstance(reply["message"], str)
        assert reply["message"]
        await harness.publish_json(a, {"still": "here"})
        assert await bystander.recv() == {"channel": a, "data": {"still": "here"}}
        # The offender stays connected and keeps receiving.
        assert await offender.recv() == {"channel": a, "data": {"still": "here"}}
    finally:
        await close_all([offender, bystander])
    assert "Traceback" not in caplog.text


async def test_oversize_frame_closes_with_1009_only_that_client(harness: Harness) -> None:
    a = harness.ch("a")
    offender, bystander = await connect_many(harness.url, 2, max_size=None)
    try:
        await harness.wait_upstream(a, 1)
        await offender.send_raw(json.dumps({"type": "ping", "pad": "x" * 70_000}))
        code, _ = await offender.closed()
        assert code == 1009
        await harness.publish_json(a, {"after": "oversize"})
        assert await bystander.recv() == {"channel": a, "data": {"after": "oversize"}}
    finally:
        await close_all([offender, bystander])


async def test_connect_storm_on_an_idle_channel_serves_everyone(harness: Harness) -> None:
    idle = harness.ch("idle")
    clients = await connect_many(harness.url, 100)
    try:
        replies = await asyncio.gather(*(c.subscribe([idle]) for c in clients))
        assert all(r["channels"] == [idle] for r in replies)
        assert await harness.upstream(idle) == 1
        await harness.publish_json(idle, {"storm": True})
        got = await asyncio.gather(*(c.recv() for c in clients))
        assert got == [{"channel": idle, "data": {"storm": True}}] * 100
    finally:
        await close_all(clients)
    await harness.wait_upstream(idle, 0)


async def test_subscribe_and_unsubscribe_patterns(harness: Harness) -> None:
    a = harness.ch("a")
    pattern = harness.ch("risk:*")
    client = await Client.connect(harness.url)
    try:
        reply = await client.subscribe([pattern], request_id="r1")
        assert reply == {"type": "subscribed", "channels": [pattern], "id": "r1"}
        await harness.publish_json(harness.ch("risk:alert"), {"n": 1})
        assert await client.recv() == {"channel": harness.ch("risk:alert"), "data": {"n": 1}}
        await client.send_json({"type": "unsubscribe", "channels": [pattern]})
        assert await client.recv() == {"type": "unsubscribed", "channels": [pattern]}
        await harness.wait_upstream(pattern, 0)
        await harness.publish_json(harness.ch("risk:alert"), {"n": 2})
        await harness.publish_json(a, {"sentinel": True})
        # The sentinel arrives first: the unsubscribed pattern delivered nothing.
        assert await client.recv() == {"channel": a, "data": {"sentinel": True}}
    finally:
        await client.close()


async def test_overlapping_subscriptions_deliver_each_event_once(harness: Harness) -> None:
    a = harness.ch("a")
    client = await Client.connect(harness.url)
    try:
        await client.subscribe([harness.ch("*"), harness.ch("?")])
        await harness.publish_json(a, {"n": 1})
        await harness.publish_json(harness.ch("b"), {"n": 2})
        assert await client.recv() == {"channel": a, "data": {"n": 1}}
        assert await client.recv() == {"channel": harness.ch("b"), "data": {"n": 2}}
        await client.send_json({"type": "ping"})
        assert await client.recv() == {"type": "pong"}
    finally:
        await client.close()


async def test_http_request_to_the_websocket_path_is_refused(harness: Harness) -> None:
    import httpx

    async with httpx.AsyncClient(timeout=scaled(10)) as http:
        response = await http.get(harness.server.http_url + "/ws")
    assert response.status_code in (400, 404, 405, 426)


async def test_fastapi_router_prefix_applies_to_the_websocket_route() -> None:
    from fastapi import FastAPI

    from tests.support.servers import UvicornServer
    from wsbridge.fastapi import create_router

    broadcaster = Broadcaster()
    app = FastAPI(lifespan=broadcaster.lifespan)
    app.include_router(create_router(broadcaster, path="/ws", prefix="/api"))
    server = UvicornServer(app).start()
    try:
        client = await Client.connect(server.url.replace("/ws", "/api/ws"))
        await client.send_json({"type": "ping"})
        assert await client.recv() == {"type": "pong"}
        await client.close()
    finally:
        server.stop()
