"""One contract every broker backend passes, run against memory and a real Redis."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest

from tests.support.redis_server import scaled
from wsbridge import Broadcaster, BrokerUnavailableError
from wsbridge.backends import Backend, BrokerMessage, backend_from_url
from wsbridge.backends.memory import MemoryBackend

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    url = "memory://" if request.param == "memory" else request.getfixturevalue("redis_url")
    b = backend_from_url(url)
    await b.connect()
    try:
        yield b
    finally:
        await b.close()


class Reader:
    def __init__(self, backend: Backend) -> None:
        self.send, self.receive = anyio.create_memory_object_stream[BrokerMessage](1000)
        self.backend = backend

    async def run(self) -> None:
        async for message in self.backend.messages():
            await self.send.send(message)

    async def next(self) -> BrokerMessage:
        with anyio.fail_after(scaled(5)):
            return await self.receive.receive()


@asynccontextmanager
async def reading(backend: Backend) -> AsyncIterator[Reader]:
    """Consume the backend's messages in a task for the duration of the block."""
    reader = Reader(backend)
    with reader.send, reader.receive:
        async with anyio.create_task_group() as tg:
            tg.start_soon(reader.run)
            try:
                yield reader
            finally:
                tg.cancel_scope.cancel()


async def test_exact_and_pattern_delivery(backend: Backend) -> None:
    async with reading(backend) as reader:
        await backend.subscribe(["c:exact"], ["p:*"])
        await backend.publish("c:exact", b"1")
        await backend.publish("p:x", b"2")
        assert await reader.next() == BrokerMessage("c:exact", None, b"1")
        assert await reader.next() == BrokerMessage("p:x", "p:*", b"2")


async def test_one_delivery_per_matching_subscription(backend: Backend) -> None:
    async with reading(backend) as reader:
        await backend.subscribe(["both"], ["b*"])
        await backend.publish("both", b"x")
        got = {await reader.next(), await reader.next()}
        assert got == {BrokerMessage("both", None, b"x"), BrokerMessage("both", "b*", b"x")}


async def test_unsubscribe_stops_delivery_in_order(backend: Backend) -> None:
    async with reading(backend) as reader:
        await backend.subscribe(["gone", "kept"], ["g*"])
        await backend.unsubscribe(["gone"], ["g*"])
        await backend.publish("gone", b"no")
        await backend.publish("kept", b"yes")
        assert await reader.next() == BrokerMessage("kept", None, b"yes")


async def test_messages_keep_publish_order(backend: Backend) -> None:
    async with reading(backend) as reader:
        await backend.subscribe(["seq"], [])
        for i in range(200):
            await backend.publish("seq", str(i).encode())
        assert [int((await reader.next()).data) for _ in range(200)] == list(range(200))


async def test_binary_payloads_pass_through(backend: Backend) -> None:
    async with reading(backend) as reader:
        await backend.subscribe(["bin"], [])
        await backend.publish("bin", bytes(range(256)))
        assert (await reader.next()).data == bytes(range(256))


async def test_memory_backend_is_bounded() -> None:
    backend = MemoryBackend(max_pending=2)
    await backend.connect()
    await backend.subscribe(["a"], [])
    await backend.publish("a", b"1")
    await backend.publish("a", b"2")
    with anyio.move_on_after(0.05) as scope:
        await backend.publish("a", b"3")
    assert scope.cancelled_caught  # the publisher waits instead of growing the queue
    await backend.close()


async def test_health_check_passes_without_any_subscription(backend: Backend) -> None:
    async with reading(backend):
        await backend.health_check()
        # Redis answers in order: once this is confirmed, the PING's answer was read.
        await backend.subscribe(["health"], [])
        await backend.health_check()  # the first PING was answered: no "stopped answering"


@pytest.mark.redis
async def test_connect_to_nothing_fails_fast() -> None:
    from tests.support.redis_server import free_port

    backend = backend_from_url(f"redis://127.0.0.1:{free_port()}/0", connect_timeout=1)
    with anyio.fail_after(scaled(10)), pytest.raises(BrokerUnavailableError):
        await backend.connect()
    await backend.close()


@pytest.mark.redis
async def test_publish_while_redis_is_down_fails_fast(redis_server_factory: object) -> None:
    server = redis_server_factory()  # type: ignore[operator]
    async with Broadcaster(
        server.url, backend_options={"command_timeout": 1, "connect_timeout": 1}
    ) as b:
        server.stop()
        with anyio.fail_after(scaled(10)), pytest.raises(BrokerUnavailableError):
            await b.publish("a", {"x": 1})


@pytest.mark.redis
async def test_broadcaster_reconnects_and_resubscribes(redis_server_factory: object) -> None:
    server = redis_server_factory()  # type: ignore[operator]
    b = Broadcaster(server.url, reconnect_delay=0.05, max_reconnect_delay=0.5)
    async with b, b.subscriber() as sub:
        await sub.subscribe(["live", "pat:*"])
        server.stop()
        with anyio.fail_after(scaled(10)):
            (down,) = await sub.get()
        assert json.loads(down.text) == {"type": "broker", "status": "down"}
        server.start()
        with anyio.fail_after(scaled(15)):
            (up,) = await sub.get()
        assert json.loads(up.text) == {"type": "broker", "status": "up"}
        await b.publish("live", 1)
        await b.publish("pat:x", 2)
        with anyio.fail_after(scaled(5)):
            frames = await sub.get()
            if len(frames) < 2:
                frames += await sub.get()
        assert [json.loads(f.text) for f in frames] == [
            {"channel": "live", "data": 1},
            {"channel": "pat:x", "data": 2},
        ]
        assert b.stats().broker_reconnects == 1
