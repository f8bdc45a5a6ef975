"""Resume and latest values over real WebSocket connections, through every adapter.

Publications go through the library's publish (a separate broadcaster on Redis, as
another process would; the server's own broadcaster on the memory broker).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis
from pydantic import BaseModel

from tests.support.apps import serve
from tests.support.client import Client, close_all, connect_many
from tests.support.redis_server import scaled
from tests.support.servers import ServerThread
from wsbridge import Broadcaster, Endpoint
from wsbridge.backends.redis import history_keys
from wsbridge.client import Client as WsClient
from wsbridge.client import Event, Item, Status
from wsbridge.history import History
from wsbridge.schema import DeliveryKind, Registry

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


class Snapshot(BaseModel):
    value: int


def make_registry() -> Registry:
    reg = Registry(history={"*:ev:*": History(size=1000, ttl=60)})
    reg.register("*:state", Snapshot, kind=DeliveryKind.STATE)
    return reg


@dataclass
class Harness:
    server: ServerThread
    broadcaster: Broadcaster
    publisher: Broadcaster | None
    prefix: str

    @property
    def url(self) -> str:
        return self.server.url

    def ch(self, name: str) -> str:
        return f"{self.prefix}:{name}"

    async def publish(self, channel: str, data: object) -> None:
        if self.publisher is not None:
            await self.publisher.publish(channel, data)
        else:
            await self.server.acall(self.broadcaster.publish, channel, data)


@pytest.fixture(params=SETUPS)
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    adapter, broker = request.param
    prefix = f"t{uuid.uuid4().hex[:8]}"
    url = request.getfixturevalue("redis_url") if broker == "redis" else "memory://"
    broadcaster = Broadcaster(url, registry=make_registry())
    endpoint = Endpoint(
        broadcaster, channels=[f"{prefix}:ev:a", f"{prefix}:state"], allow=[f"{prefix}:*"]
    )
    server = serve(adapter, endpoint)
    try:
        if broker == "redis":
            async with Broadcaster(url, registry=make_registry()) as publisher:
                yield Harness(server, broadcaster, publisher, prefix)
        else:
            yield Harness(server, broadcaster, None, prefix)
    finally:
        server.stop()
    assert server.leftover_tasks == []


async def events(client: Client, n: int) -> list[dict[str, Any]]:
    return [await client.recv_event() for _ in range(n)]


async def subscribe(client: Client, frame: dict[str, Any]) -> dict[str, Any]:
    await client.send_json({"type": "subscribe", **frame})
    for _ in range(100):
        reply = await client.recv()
        if reply.get("type") == "subscribed":
            return reply  # type: ignore[no-any-return]
        assert reply.get("type") == "broker", reply
    raise AssertionError("no acknowledgement")


async def test_resume_an_explicit_subscription(harness: Harness) -> None:
    channel = harness.ch("ev:x")
    first = await Client.connect(harness.url)
    ack = await subscribe(first, {"channels": [channel]})
    position = ack["positions"][channel]
    assert position["offset"] == 0
    assert "recovered" not in position
    for i in range(1, 4):
        await harness.publish(channel, {"n": i})
    seen = await events(first, 3)
    assert [e["offset"] for e in seen] == [1, 2, 3]
    await first.close()
    for i in range(4, 7):
        await harness.publish(channel, {"n": i})  # missed

    again = await Client.connect(harness.url)
    since = {channel: {"epoch": position["epoch"], "offset": 3}}
    ack = await subscribe(again, {"channels": [channel], "since": since, "id": 7})
    assert ack["id"] == 7
    assert ack["positions"][channel] == {
        "epoch": position["epoch"],
        "offset": 6,
        "recovered": True,
    }
    await harness.publish(channel, {"n": 7})
    replayed = await events(again, 4)
    assert [e["offset"] for e in replayed] == [4, 5, 6, 7]
    assert [e["data"]["n"] for e in replayed] == [4, 5, 6, 7]
    await again.close()


async def test_resume_a_default_subscription(harness: Harness) -> None:
    channel = harness.ch("ev:a")
    first = await Client.connect(harness.url)
    # A resuming client asks for its default channels once, to learn their positions.
    ack = await subscribe(first, {"channels": [channel]})
    epoch = ack["positions"][channel]["epoch"]
    await harness.publish(channel, {"n": 1})
    (seen,) = await events(first, 1)
    await first.close()
    for i in range(2, 4):
        await harness.publish(channel, {"n": i})

    again = await Client.connect(harness.url)
    since = {channel: {"epoch": epoch, "offset": seen["offset"]}}
    ack = await subscribe(again, {"channels": [channel], "since": since})
    assert ack["positions"][channel]["recovered"] is True
    await harness.publish(channel, {"n": 4})
    assert [e["data"]["n"] for e in await events(again, 3)] == [2, 3, 4]
    await again.close()


async def test_an_unknown_epoch_is_told_not_recovered(harness: Harness) -> None:
    channel = harness.ch("ev:y")
    await harness.publish(channel, {"n": 1})
    client = await Client.connect(harness.url)
    since = {channel: {"epoch": "gone", "offset": 1}}
    ack = await subscribe(client, {"channels": [channel], "since": since})
    assert ack["positions"][channel]["recovered"] is False
    assert ack["positions"][channel]["offset"] == 1
    await harness.publish(channel, {"n": 2})
    (event,) = await events(client, 1)
    assert event["offset"] == 2  # straight to live, from the position given
    await client.close()


@pytest.mark.parametrize(
    "since",
    [
        [],
        {"other": {"epoch": "e", "offset": 1}},
        {"C": {"epoch": "e"}},
        {"C": {"epoch": "e", "offset": -1}},
        {"C": {"epoch": "e", "offset": True}},
        {"C": {"epoch": "bad epoch", "offset": 1}},
        {"C": {"epoch": "e" * 65, "offset": 1}},
        {"C": {"epoch": "e", "offset": 2**63}},
        {"C": 5},
    ],
)
async def test_a_malformed_since_gets_an_error_frame(harness: Harness, since: Any) -> None:
    channel = harness.ch("ev:z")
    if isinstance(since, dict):
        since = {channel if k == "C" else k: v for k, v in since.items()}
    client = await Client.connect(harness.url)
    await client.send_json({"type": "subscribe", "channels": [channel], "since": since})
    reply = await client.recv()
    assert reply["type"] == "error"
    assert reply["code"] == "invalid_field"
    await client.pinged()
    await client.close()


async def test_latest_state_first_for_default_and_explicit_subscriptions(
    harness: Harness,
) -> None:
    state = harness.ch("state")
    await harness.publish(state, {"value": 41})
    await harness.publish(state, {"value": 42})
    client = await Client.connect(harness.url)  # state is one of its default channels
    first = await client.recv_event()
    assert first == {"channel": state, "data": {"value": 42}}
    other = harness.ch("other:state")
    await harness.publish(other, {"value": 9})
    ack = await subscribe(client, {"channels": [other]})
    assert ack["channels"] == [other]
    assert await client.recv_event() == {"channel": other, "data": {"value": 9}}
    await client.close()


async def test_100_clients_resume_while_events_are_published(harness: Harness) -> None:
    channel = harness.ch("ev:storm")
    probe = await Client.connect(harness.url)
    epoch = (await subscribe(probe, {"channels": [channel]}))["positions"][channel]["epoch"]
    await probe.close()
    total = 300
    for i in range(1, 51):
        await harness.publish(channel, {"n": i})

    async def publish_rest() -> None:
        for i in range(51, total + 1):
            await harness.publish(channel, {"n": i})

    async def resume(start: int) -> list[int]:
        client = await Client.connect(harness.url)
        try:
            since = {channel: {"epoch": epoch, "offset": start}}
            ack = await subscribe(client, {"channels": [channel], "since": since})
            assert ack["positions"][channel]["recovered"] is True, ack
            got: list[int] = []
            while not got or got[-1] < total:
                event = await client.recv_event(timeout=30)
                got.append(event["offset"])
            return got
        finally:
            await client.close()

    starts = [i % 50 for i in range(100)]
    publisher = asyncio.ensure_future(publish_rest())
    results = await asyncio.wait_for(
        asyncio.gather(*(resume(start) for start in starts)), scaled(120)
    )
    await asyncio.wait_for(publisher, scaled(60))
    for start, got in zip(starts, results, strict=True):
        assert got == list(range(start + 1, total + 1)), (start, got[:10])
    clients = await connect_many(harness.url, 1)
    await close_all(clients)


# -- resume through a pattern ------------------------------------------------------------


async def test_resume_through_a_pattern(harness: Harness) -> None:
    pattern = harness.ch("ev:p*")
    a, b = harness.ch("ev:p1"), harness.ch("ev:p2")
    first = await Client.connect(harness.url)
    ack = await subscribe(first, {"channels": [pattern]})
    assert "positions" not in ack
    await harness.publish(a, {"n": 1})
    await harness.publish(b, {"n": 1})
    # The first event of each channel reached through the pattern comes after its
    # position, so the client learns the epoch it needs to resume.
    frames = [await first.recv() for _ in range(4)]
    told: dict[str, dict[str, Any]] = {}
    for index, frame in enumerate(frames):
        if frame.get("type") == "position":
            ((channel, position),) = frame["positions"].items()
            told[channel] = {**position, "index": index}
    assert set(told) == {a, b}
    for channel in (a, b):
        assert told[channel]["offset"] == 0
        assert "recovered" not in told[channel]
        events_of = [i for i, f in enumerate(frames) if f.get("channel") == channel]
        assert [frames[i]["offset"] for i in events_of] == [1]
        assert told[channel]["index"] < events_of[0]
    await first.close()
    await harness.publish(a, {"n": 2})
    await harness.publish(a, {"n": 3})
    await harness.publish(b, {"n": 2})

    again = await Client.connect(harness.url)
    since = {ch: {"epoch": told[ch]["epoch"], "offset": 1} for ch in (a, b)}
    ack = await subscribe(again, {"channels": [pattern], "since": since, "id": 4})
    assert ack["channels"] == [pattern]
    assert ack["positions"] == {
        a: {"epoch": told[a]["epoch"], "offset": 3, "recovered": True},
        b: {"epoch": told[b]["epoch"], "offset": 2, "recovered": True},
    }
    await harness.publish(a, {"n": 4})
    await harness.publish(b, {"n": 3})
    got = await events(again, 5)
    assert [(e["data"]["n"], e["offset"]) for e in got if e["channel"] == a] == [
        (2, 2),
        (3, 3),
        (4, 4),
    ]
    assert [(e["data"]["n"], e["offset"]) for e in got if e["channel"] == b] == [(2, 2), (3, 3)]
    # Nothing more: no repeated event and no position frame.
    await again.pinged()
    await again.close()


async def test_resume_through_a_pattern_that_cannot_recover(harness: Harness) -> None:
    pattern = harness.ch("ev:q*")
    channel = harness.ch("ev:q1")
    await harness.publish(channel, {"n": 1})
    client = await Client.connect(harness.url)
    since = {channel: {"epoch": "gone", "offset": 1}}
    ack = await subscribe(client, {"channels": [pattern], "since": since})
    assert ack["positions"][channel]["recovered"] is False
    assert ack["positions"][channel]["offset"] == 1
    await harness.publish(channel, {"n": 2})
    assert (await client.recv_event())["offset"] == 2
    await client.pinged()
    await client.close()


@pytest.mark.parametrize(
    "names",
    [
        ["ev:r1"],  # no pattern of the request covers it
        ["ev:r*", "ev:r1*"],  # a pattern as a key
        ["ev:r*", "bad name"],
    ],
)
async def test_since_outside_the_patterns_gets_an_error_frame(
    harness: Harness, names: list[str]
) -> None:
    channels = [harness.ch(n) for n in names[:1]]
    since = {harness.ch(n): {"epoch": "e", "offset": 1} for n in names[1:] or ["ev:s1"]}
    client = await Client.connect(harness.url)
    await client.send_json({"type": "subscribe", "channels": channels, "since": since})
    reply = await client.recv()
    assert reply["type"] == "error"
    assert reply["code"] == "invalid_field"
    await client.pinged()
    await client.close()


async def test_the_python_client_resumes_through_a_pattern(harness: Harness) -> None:
    pattern = harness.ch("ev:w*")
    channel = harness.ch("ev:w1")
    async with WsClient(harness.url, channels=[pattern], reconnect_delay=0.05) as client:
        await client.wait_connected()
        await harness.publish(channel, {"n": 1})
        first = await _next_event(client)
        assert first.offset == 1
        epoch = client.positions[channel][0]
        # The server closes this client: it reconnects and resumes through the pattern.
        await harness.server.acall(harness.broadcaster.close_clients)
        with anyio.fail_after(scaled(10)):
            async for item in client.updates():
                if isinstance(item, Status) and item.kind == "connected":
                    break
        assert client.connections == 2
        await harness.publish(channel, {"n": 2})
        second = await _next_event(client)
        assert (second.offset, second.data) == (2, {"n": 2})
        assert client.positions[channel] == (epoch, 2)
        assert client.subscriptions == (pattern,)


async def _next_event(client: WsClient) -> Event:
    with anyio.fail_after(scaled(10)):
        async for item in client.updates():
            if isinstance(item, Status):
                assert item.kind != "not_recovered", item
                continue
            return item
    raise AssertionError("the client stopped")


# -- gaps the server cannot fill ------------------------------------------------------------

REDIS_SETUPS = [p for p in SETUPS if "redis" in str(p.id)]


@pytest.mark.parametrize("harness", REDIS_SETUPS, indirect=True)
async def test_the_python_client_reports_a_gap_the_server_tells(
    harness: Harness, redis_url: str
) -> None:
    channel = harness.ch("ev:gap")
    async with WsClient(harness.url, channels=[channel]) as client:
        await client.wait_connected()
        await harness.publish(channel, {"n": 1})
        assert (await _next_event(client)).offset == 1
        old = client.positions[channel][0]
        admin = aioredis.from_url(redis_url)
        try:
            await admin.delete(*history_keys(channel))  # as an eviction or a restart would
        finally:
            await admin.aclose()
        await harness.publish(channel, {"n": 2})
        seen: list[Item] = []
        with anyio.fail_after(scaled(10)):
            async for item in client.updates():
                seen.append(item)
                if isinstance(item, Event):
                    break
        assert Status("not_recovered", channel) in seen
        event = seen[-1]
        assert isinstance(event, Event)
        assert (event.offset, event.data) == (1, {"n": 2})
        new, offset = client.positions[channel]
        assert new != old
        assert offset == 1
