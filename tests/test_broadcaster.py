"""The broadcaster on the in-memory broker, under asyncio and trio."""

from __future__ import annotations

import contextlib
import json

import anyio
import pytest
from pydantic import BaseModel

from wsbridge import (
    Broadcaster,
    BrokerClosedError,
    ConfigurationError,
    DeliveryKind,
    EventValidationError,
    Registry,
)
from wsbridge.broadcaster import Frame, Subscriber
from wsbridge.outbox import Connection, FrameBatch
from wsbridge.protocol import CLOSE_GOING_AWAY, CLOSE_SLOW_CONSUMER

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Price(BaseModel):
    symbol: str
    price: float


def registry() -> Registry:
    reg = Registry()
    reg.register("price", Price, kind=DeliveryKind.STATE)
    reg.register("trade", Price)
    return reg


async def drain(sub: object, n: int) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    with anyio.fail_after(5):
        while len(out) < n:
            out.extend(json.loads(f.text) for f in await sub.get())  # type: ignore[attr-defined]
    return out


async def settle(b: Broadcaster) -> None:
    """Return once everything published before was dispatched (one reader, FIFO)."""
    async with b.subscriber() as probe:
        await probe.subscribe(["__probe__"])
        await b.publish("__probe__", None)
        await drain(probe, 1)


async def test_one_upstream_subscription_however_many_subscribers() -> None:
    async with Broadcaster() as b:
        subs = [b.subscriber() for _ in range(3)]
        for s in subs:
            await s.__aenter__()
            await s.subscribe(["a", "risk:*"])
        assert b.stats().upstream_subscriptions == 2
        assert b.stats().subscriptions == 6
        await b.publish("a", {"n": 1})
        await b.publish("risk:alert", {"n": 2})
        for s in subs:
            assert await drain(s, 2) == [
                {"channel": "a", "data": {"n": 1}},
                {"channel": "risk:alert", "data": {"n": 2}},
            ]
        for s in subs[:2]:
            await s.__aexit__(None, None, None)
        assert b.stats().upstream_subscriptions == 2
        await subs[2].__aexit__(None, None, None)
        assert b.stats().upstream_subscriptions == 0


async def test_each_event_is_framed_once_for_all_recipients() -> None:
    async with Broadcaster() as b, b.subscriber() as s1, b.subscriber() as s2:
        await s1.subscribe(["a"])
        await s2.subscribe(["a"])
        await b.publish("a", [1])
        with anyio.fail_after(5):
            (f1,) = await s1.get()
            (f2,) = await s2.get()
        assert f1 is f2


@pytest.mark.parametrize("channel", ["a", "a*"])
async def test_clients_get_each_event_in_the_order_they_subscribed(channel: str) -> None:
    order: list[int] = []
    done = anyio.Event()
    async with Broadcaster() as b, contextlib.AsyncExitStack() as stack:
        subscribers = [await stack.enter_async_context(b.subscriber()) for _ in range(32)]
        for i in reversed(range(32)):  # an order no allocator would hand out by chance
            s = subscribers[i]

            def sink(frame: Frame, i: int = i) -> bool:
                order.append(i)
                if len(order) == 32:
                    done.set()
                return True

            s.sink = sink
            await s.subscribe([channel])
        await b.publish("a", 1)
        with anyio.fail_after(5):
            await done.wait()
    assert order == list(reversed(range(32)))


class _Recorder:
    """A connection of one group, recording what it is offered and takes."""

    def __init__(self, group: _RecordingGroup | None, name: str, log: list[str]) -> None:
        self.group = group
        self.name = name
        self.log = log
        self.woken = 0

    def offer(self, frame: Frame) -> bool:
        self.log.append(f"{self.name}:{json.loads(frame.text)['data']}")
        return True

    def wake(self) -> None:
        self.woken += 1


class _RecordingGroup:
    def __init__(self) -> None:
        self.calls = 0

    def offer(self, frame: Frame, connections: list[Connection]) -> int:
        self.calls += 1
        taken = 0
        for connection in connections:
            assert isinstance(connection, _Recorder)
            taken += connection.offer(frame)
        return taken


async def test_a_connection_attached_after_subscribing_gets_the_next_event() -> None:
    # The fan-out keeps each channel's connections cut into groups between events: a
    # connection attached, replaced or detached later must take effect at once.
    log: list[str] = []
    group = _RecordingGroup()
    async with Broadcaster() as b, b.subscriber() as s1, b.subscriber() as s2:
        await s1.subscribe(["a"])
        await s2.subscribe(["a"])
        await b.publish("a", 1)
        assert [json.loads(f.text)["data"] for f in await drain_frames(s1, 1)] == [1]
        assert [json.loads(f.text)["data"] for f in await drain_frames(s2, 1)] == [1]
        s1.attach(_Recorder(group, "one", log))
        s2.attach(_Recorder(None, "two", log))
        await b.publish("a", 2)
        await settle(b)
        assert log == ["one:2", "two:2"]
        assert group.calls == 1
        s1.attach(_Recorder(group, "three", log))
        s2.attach(None)
        await b.publish("a", 3)
        await settle(b)
        assert log[2:] == ["three:3"]
        assert group.calls == 2
        assert [json.loads(f.text)["data"] for f in await drain_frames(s2, 1)] == [3]
        # Two frames of each event, and one of each of settle's probes.
        assert b.stats().messages_out == 8


async def drain_frames(sub: Subscriber, n: int) -> list[Frame]:
    out: list[Frame] = []
    with anyio.fail_after(5):
        while len(out) < n:
            out.extend(await sub.get())
    return out


async def test_overlapping_subscriptions_deliver_once() -> None:
    async with Broadcaster() as b, b.subscriber() as s:
        await s.subscribe(["risk:alert", "risk:*", "r*", "other"])
        await b.publish("risk:alert", 1)
        await b.publish("risk:kill_switch", 2)
        await b.publish("rx", 3)
        await b.publish("other", 4)
        got = await drain(s, 4)
        assert [e["data"] for e in got] == [1, 2, 3, 4]
        assert s.pending == 0


async def test_many_concurrent_first_subscriptions_to_one_channel() -> None:
    async with Broadcaster() as b:
        subs = [b.subscriber() for _ in range(100)]
        for s in subs:
            await s.__aenter__()
        async with anyio.create_task_group() as tg:
            for s in subs:
                tg.start_soon(s.subscribe, ["idle"])
        assert b.stats().upstream_subscriptions == 1
        await b.publish("idle", "x")
        for s in subs:
            assert await drain(s, 1) == [{"channel": "idle", "data": "x"}]
            await s.__aexit__(None, None, None)


async def test_full_outbox_disconnects_a_slow_subscriber_only() -> None:
    async with Broadcaster() as b, b.subscriber(max_messages=3) as slow, b.subscriber() as fast:
        await slow.subscribe(["a"])
        await fast.subscribe(["a"])
        for i in range(5):
            await b.publish("a", i)
        await settle(b)
        assert [e["data"] for e in await drain(fast, 5)] == [0, 1, 2, 3, 4]
        assert slow.closed
        assert slow.close_code == CLOSE_SLOW_CONSUMER
        assert await slow.get() == []
        assert b.stats().slow_consumer_disconnects == 1


async def test_outbox_is_bounded_in_bytes_too() -> None:
    async with Broadcaster() as b, b.subscriber(max_bytes=200) as s:
        await s.subscribe(["a"])
        await b.publish("a", "x" * 100)
        await settle(b)
        assert not s.closed
        await b.publish("a", "x" * 100)
        await settle(b)
        assert s.closed


async def test_drop_policy_counts_drops_and_keeps_the_connection() -> None:
    async with Broadcaster() as b, b.subscriber(max_messages=2, overflow="drop") as s:
        await s.subscribe(["a"])
        for i in range(5):
            await b.publish("a", i)
        await settle(b)
        assert not s.closed
        assert [e["data"] for e in await drain(s, 2)] == [0, 1]
        stats = b.stats()
        assert stats.dropped == 3
        assert stats.per_channel["a"]["dropped"] == 3


async def test_state_channels_are_conflated_when_full() -> None:
    async with Broadcaster(registry=registry()) as b, b.subscriber(max_messages=3) as s:
        await s.subscribe(["price", "trade"])
        await b.publish("trade", {"symbol": "T", "price": 0})
        for i in range(10):
            await b.publish("price", {"symbol": "AAPL", "price": i})
        await settle(b)
        assert not s.closed
        got = await drain(s, 3)
        prices = [e["data"]["price"] for e in got if e["channel"] == "price"]
        assert got[0]["channel"] == "trade"
        assert prices[-1] == 9
        assert prices == sorted(prices)
        assert b.stats().conflated > 0


async def test_event_channels_are_never_conflated() -> None:
    async with Broadcaster(registry=registry()) as b, b.subscriber(max_messages=3) as s:
        await s.subscribe(["trade"])
        for i in range(4):
            await b.publish("trade", {"symbol": "T", "price": i})
        await settle(b)
        assert s.closed
        assert s.close_code == CLOSE_SLOW_CONSUMER


async def test_publish_validates_against_the_registry() -> None:
    async with Broadcaster(registry=registry()) as b, b.subscriber() as s:
        await s.subscribe(["trade", "free"])
        with pytest.raises(EventValidationError) as info:
            await b.publish("trade", {"symbol": "T", "price": "lots"})
        assert "price" in str(info.value)
        await b.publish("trade", Price(symbol="T", price=1.5))
        await b.publish("free", {"anything": True})
        assert await drain(s, 2) == [
            {"channel": "trade", "data": {"symbol": "T", "price": 1.5}},
            {"channel": "free", "data": {"anything": True}},
        ]


async def test_broker_messages_failing_validation_are_forwarded_and_counted() -> None:
    async with Broadcaster(registry=registry()) as b, b.subscriber() as s:
        await s.subscribe(["trade"])
        await b._backend.publish("trade", b'{"symbol": 1}')
        assert await drain(s, 1) == [{"channel": "trade", "data": {"symbol": 1}}]
        assert b.stats().validation_failures == 1


async def test_drop_validation_policy() -> None:
    async with Broadcaster(registry=registry(), validation="drop") as b, b.subscriber() as s:
        await s.subscribe(["trade"])
        await b._backend.publish("trade", b'{"symbol": 1}')
        await b.publish("trade", {"symbol": "ok", "price": 1})
        assert await drain(s, 1) == [{"channel": "trade", "data": {"symbol": "ok", "price": 1}}]


async def test_publish_needs_a_running_broadcaster() -> None:
    b = Broadcaster()
    with pytest.raises(BrokerClosedError):
        await b.publish("a", 1)
    async with b:
        pass
    with pytest.raises(BrokerClosedError):
        await b.publish("a", 1)


async def test_shutdown_closes_subscribers_with_1001() -> None:
    b = Broadcaster(shutdown_timeout=0.2)
    async with b:
        sub = b.subscriber()
        await sub.__aenter__()
        await sub.subscribe(["a"])
    assert sub.close_code == CLOSE_GOING_AWAY
    await sub.__aexit__(None, None, None)


async def test_restartable_after_stop() -> None:
    b = Broadcaster()
    for _ in range(2):
        async with b, b.subscriber() as s:
            await s.subscribe(["a"])
            await b.publish("a", 1)
            assert await drain(s, 1) == [{"channel": "a", "data": 1}]


async def test_lifespan_runs_the_broadcaster() -> None:
    b = Broadcaster()
    async with b.lifespan(None):
        assert b.running
    assert not b.running


def test_configuration_errors() -> None:
    with pytest.raises(ConfigurationError):
        Broadcaster("kafka://x")
    with pytest.raises(ConfigurationError):
        Broadcaster("no-scheme")
    with pytest.raises(ConfigurationError):
        Broadcaster(validation="maybe")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("redis://127.0.0.1:abc/0", "Port could not be cast"),
        ("redis://127.0.0.1:70000/0", "Port out of range"),
        ("redis://127.0.0.1:6379/0?socket_timeout=soon", "socket_timeout"),
        ("unix:///tmp/redis.sock?db=first", "db"),
    ],
)
def test_a_malformed_redis_url_is_a_configuration_error(url: str, reason: str) -> None:
    pytest.importorskip("redis")
    with pytest.raises(ConfigurationError, match=reason) as caught:
        Broadcaster(url)
    assert str(caught.value).startswith("invalid Redis URL: ")
    assert caught.value.__cause__ is None  # one line, not a chained ValueError
    # The URL may carry a password: the message does not repeat it.
    with pytest.raises(ConfigurationError) as caught:
        Broadcaster("redis://:hunter2@127.0.0.1:abc/0")
    assert "hunter2" not in str(caught.value)


# -- frames pushed as a batch (a page of replayed events) --------------------------------


class _Batched:
    """A connection taking whole batches while ``open``; records what it took, in order."""

    group = None

    def __init__(self) -> None:
        self.open = True
        self.taken: list[str] = []
        self.batches = 0
        self.woken = 0

    def offer(self, frame: Frame) -> bool:
        if self.open:
            self.taken.append(frame.text)
        return self.open

    def offer_batch(self, batch: FrameBatch) -> bool:
        if self.open:
            self.batches += 1
            self.taken.extend(frame.text for frame in batch.frames)
        return self.open

    def wake(self) -> None:
        self.woken += 1


def batch_of(start: int, n: int) -> FrameBatch:
    return FrameBatch(Frame("a", str(i)) for i in range(start, start + n))


async def test_a_batch_goes_whole_to_a_connection_that_takes_it() -> None:
    async with Broadcaster() as b, b.subscriber(max_messages=4) as s:
        connection = _Batched()
        s.attach(connection)
        s.push_batch(batch_of(0, 10))  # more than the outbox holds: it is not queued
        s.push_batch(batch_of(10, 10))
        assert connection.batches == 2
        assert connection.taken == [str(i) for i in range(20)]
        assert not s.closed
        assert s.pending == 0
        assert b.stats().messages_out == 20


async def test_batches_keep_their_order_behind_queued_frames() -> None:
    async with Broadcaster() as b, b.subscriber(max_messages=100) as s:
        connection = _Batched()
        s.attach(connection)
        s.push_batch(batch_of(0, 3))
        connection.open = False  # the socket is full: frames queue
        s.push_batch(batch_of(3, 3))
        connection.open = True  # ... and while some are queued, later ones queue behind
        s.push_batch(batch_of(6, 3))
        s.push(Frame("a", "9"))
        assert connection.batches == 1
        assert s.pending == 7
        assert connection.woken >= 1
        connection.taken.extend(frame.text for frame in s.get_nowait())
        s.push_batch(batch_of(10, 2))  # nothing queued: whole again
        assert connection.batches == 2
        assert connection.taken == [str(i) for i in range(12)]


@pytest.mark.parametrize("overflow", ["disconnect", "drop"])
async def test_a_refused_batch_meets_the_outbox_bound_and_its_policy(overflow: str) -> None:
    async with Broadcaster() as b, b.subscriber(max_messages=5, overflow=overflow) as s:
        connection = _Batched()
        connection.open = False
        s.attach(connection)
        s.push_batch(batch_of(0, 8))
        stats = b.stats()
        if overflow == "disconnect":
            assert s.close_code == CLOSE_SLOW_CONSUMER
            assert stats.slow_consumer_disconnects == 1
            assert s.pending == 0
            s.push_batch(batch_of(8, 2))  # closed: ignored
            assert s.pending == 0
        else:
            assert not s.closed
            assert stats.dropped == 3
            assert [f.text for f in s.get_nowait()] == [str(i) for i in range(5)]
        assert connection.taken == []


async def test_a_batch_to_a_connection_without_offer_batch_goes_frame_by_frame() -> None:
    async with Broadcaster() as b, b.subscriber(max_messages=3) as s:
        taken: list[str] = []

        def take_two(frame: Frame) -> bool:
            if len(taken) == 2:
                return False
            taken.append(frame.text)
            return True

        s.sink = take_two
        s.push_batch(batch_of(0, 4))  # two written, then queued, in order
        assert taken == ["0", "1"]
        assert [f.text for f in s.get_nowait()] == ["2", "3"]
        assert not s.closed
