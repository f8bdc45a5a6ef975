"""Channel history: offsets and epochs, resume after a position, latest values.

The broadcaster-level tests run on the memory broker and on a real redis-server; a
publisher in "another process" is a plain Redis client running the documented command.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st

from tests.support.redis_server import scaled
from wsbridge import Broadcaster
from wsbridge.backends.redis import RedisBackend, history_keys
from wsbridge.broadcaster import Subscriber
from wsbridge.history import (
    History,
    Page,
    Position,
    Resumed,
    encode_envelope,
    parse_envelope,
)
from wsbridge.schema import DeliveryKind, Registry

pytestmark = pytest.mark.anyio

BROKERS = [
    pytest.param("memory", id="memory"),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
]


def registry(size: int = 5) -> Registry:
    from pydantic import BaseModel

    class Snapshot(BaseModel):
        value: int

    reg = Registry(history={"ev:*": History(size=size, ttl=60)})
    reg.register("state:*", Snapshot, kind=DeliveryKind.STATE)
    return reg


@pytest.fixture(params=BROKERS)
def broker(request: pytest.FixtureRequest) -> str:
    if request.param == "redis":
        url: str = request.getfixturevalue("redis_url")
        return url
    return "memory://"


def ch(name: str) -> str:
    return f"{name}{uuid.uuid4().hex[:8]}"


async def take(subscriber: Subscriber, n: int) -> list[dict[str, Any]]:
    """Exactly ``n`` events, or fail within a bounded time."""
    out: list[dict[str, Any]] = []
    with anyio.fail_after(scaled(5)):
        while len(out) < n:
            frames = await subscriber.get()
            assert frames, "subscriber closed"
            out.extend(json.loads(f.text) for f in frames)
    assert len(out) == n, out
    return out


async def nothing_more(subscriber: Subscriber, b: Broadcaster, channel: str) -> None:
    """Publish a marker and check it is the next thing the subscriber gets."""
    await b.publish(channel, {"marker": True})
    (frame,) = await take(subscriber, 1)
    assert frame["data"] == {"marker": True}, frame


async def published(b: Broadcaster, prefix: str, count: int, *, first: int = 0) -> tuple[str, str]:
    """A new channel and its epoch, after ``count`` publications ``{"n": first}``, ..."""
    channel = ch(prefix)
    async with b.subscriber() as s:
        position = (await s.subscribe([channel]))[channel].position
    assert position is not None
    for i in range(first, first + count):
        await b.publish(channel, {"n": i})
    return channel, position.epoch


# -- the envelope --------------------------------------------------------------------


def test_envelope_round_trip() -> None:
    data = encode_envelope("abc_-1", 42, b'{"x":1}')
    assert parse_envelope(data) == ("abc_-1", 42, b'{"x":1}')


@pytest.mark.parametrize(
    "data",
    [
        b"\x00wsb1\x00",
        b"\x00wsb1\x00abc\x00",
        b"\x00wsb1\x00abc\x000\x00{}",
        b"\x00wsb1\x00abc\x00-1\x00{}",
        b"\x00wsb1\x00ab c\x001\x00{}",
        b"\x00wsb1\x00\x001\x00{}",
        b"\x00wsb1\x00" + b"a" * 65 + b"\x001\x00{}",
        b"\x00wsb1\x00abc\x0099999999999999999999\x00{}",
        b"\x00wsb1\x00abc\x009223372036854775808\x00{}",
        b"\x00wsb1\x00\xff\xfe\x001\x00{}",
    ],
)
def test_malformed_envelopes_are_rejected(data: bytes) -> None:
    assert parse_envelope(data) is None


@given(st.binary(max_size=200))
def test_parse_envelope_never_raises(data: bytes) -> None:
    parsed = parse_envelope(b"\x00wsb1\x00" + data)
    if parsed is not None:
        epoch, offset, _ = parsed
        assert 1 <= offset < 2**63
        assert 1 <= len(epoch) <= 64


# -- offsets, resume, trimming --------------------------------------------------------


@pytest.fixture
async def bridge(broker: str) -> AsyncIterator[Broadcaster]:
    async with Broadcaster(broker, registry=registry()) as b:
        yield b


async def test_events_on_history_channels_carry_consecutive_offsets(bridge: Broadcaster) -> None:
    channel = ch("ev:a")
    async with bridge.subscriber() as s:
        resumed = await s.subscribe([channel])
        start = resumed[channel].position
        assert start is not None
        assert start.offset == 0
        for i in range(3):
            await bridge.publish(channel, {"n": i})
        events = await take(s, 3)
    assert [e["offset"] for e in events] == [1, 2, 3]
    assert [e["data"] for e in events] == [{"n": 0}, {"n": 1}, {"n": 2}]


async def test_channels_without_history_carry_no_offset(bridge: Broadcaster) -> None:
    channel = ch("plain:")
    async with bridge.subscriber() as s:
        assert await s.subscribe([channel]) == {}
        await bridge.publish(channel, {"n": 1})
        (event,) = await take(s, 1)
    assert event == {"channel": channel, "data": {"n": 1}}


async def test_resume_delivers_what_was_missed_then_live(bridge: Broadcaster) -> None:
    channel = ch("ev:b")
    async with bridge.subscriber() as s:
        resumed = await s.subscribe([channel])
        await bridge.publish(channel, {"n": 1})
        (first,) = await take(s, 1)
    epoch = resumed[channel].position.epoch  # type: ignore[union-attr]
    for i in range(2, 5):
        await bridge.publish(channel, {"n": i})
    async with bridge.subscriber() as s:
        acked: list[dict[str, Any]] = []
        resumed = await s.subscribe(
            [channel],
            since={channel: Position(epoch, first["offset"])},
            acknowledge=lambda refused, r: acked.append({k: v.as_json() for k, v in r.items()}),
        )
        assert acked == [{channel: {"epoch": epoch, "offset": 4, "recovered": True}}]
        assert resumed[channel].recovered is True
        await bridge.publish(channel, {"n": 5})
        events = await take(s, 4)
        assert [e["offset"] for e in events] == [2, 3, 4, 5]
        assert [e["data"]["n"] for e in events] == [2, 3, 4, 5]
        await nothing_more(s, bridge, channel)


async def test_resume_when_nothing_was_missed_is_recovered(bridge: Broadcaster) -> None:
    channel = ch("ev:c")
    async with bridge.subscriber() as s:
        resumed = await s.subscribe([channel])
    position = resumed[channel].position
    assert position is not None
    async with bridge.subscriber() as s:
        again = await s.subscribe([channel], since={channel: position})
        assert again[channel].recovered is True
        await nothing_more(s, bridge, channel)


async def test_trimmed_history_is_not_recovered(bridge: Broadcaster) -> None:
    channel = ch("ev:d")
    async with bridge.subscriber() as s:
        resumed = await s.subscribe([channel])
    epoch = resumed[channel].position.epoch  # type: ignore[union-attr]
    for i in range(8):  # the history keeps 5
        await bridge.publish(channel, {"n": i})
    async with bridge.subscriber() as s:
        again = await s.subscribe([channel], since={channel: Position(epoch, 1)})
        assert again[channel].recovered is False
        assert again[channel].position == Position(epoch, 8)
        await nothing_more(s, bridge, channel)  # no replay: straight to live
    async with bridge.subscriber() as s:  # 5 .. 9 (the marker) are kept: after 4, recovered
        again = await s.subscribe([channel], since={channel: Position(epoch, 4)})
        assert again[channel].recovered is True
        assert [e["offset"] for e in await take(s, 5)] == [5, 6, 7, 8, 9]
    assert bridge.stats().recoveries_failed == 1


async def test_another_epoch_or_a_future_offset_is_not_recovered(bridge: Broadcaster) -> None:
    channel = ch("ev:e")
    await bridge.publish(channel, {"n": 1})
    async with bridge.subscriber() as s:
        other = await s.subscribe([channel], since={channel: Position("someotherepoch", 1)})
        assert other[channel].recovered is False
    epoch = other[channel].position.epoch  # type: ignore[union-attr]
    async with bridge.subscriber() as s:
        ahead = await s.subscribe([channel], since={channel: Position(epoch, 99)})
        assert ahead[channel].recovered is False
        assert ahead[channel].position == Position(epoch, 1)


async def test_beyond_the_replay_limit_is_not_recovered(bridge: Broadcaster) -> None:
    channel, epoch = await published(bridge, "ev:f", 4)
    async with bridge.subscriber() as s:
        limited = await s.subscribe([channel], since={channel: Position(epoch, 0)}, max_replay=3)
        assert limited[channel].recovered is False
        await nothing_more(s, bridge, channel)


async def test_replay_goes_in_batches_through_a_small_outbox(broker: str) -> None:
    async with Broadcaster(broker, registry=registry(size=500)) as b:
        channel, epoch = await published(b, "ev:g", 300)
        async with b.subscriber(max_messages=20) as s:
            got: list[int] = []

            async def read() -> None:
                while len(got) < 300:
                    frames = await s.get()
                    assert frames, (s.close_code, s.close_reason)
                    assert len(frames) <= 20
                    got.extend(json.loads(f.text)["offset"] for f in frames)

            with anyio.fail_after(scaled(20)):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(read)
                    resumed = await s.subscribe([channel], since={channel: Position(epoch, 0)})
            assert resumed[channel].recovered is True
            assert got == list(range(1, 301))
        assert b.stats().replayed >= 300


async def test_subscribers_resuming_the_same_events_share_their_frames(broker: str) -> None:
    # Each replayed event is decoded, checked and encoded once, not once per subscriber.
    async with Broadcaster(broker, registry=registry(size=50)) as b:
        channel, epoch = await published(b, "ev:s", 10)
        replays = []
        for _ in range(2):
            async with b.subscriber() as s:
                resumed = await s.subscribe([channel], since={channel: Position(epoch, 0)})
                assert resumed[channel].recovered is True
                got = []
                with anyio.fail_after(scaled(5)):
                    while len(got) < 10:
                        frames = await s.get()
                        assert frames, (s.close_code, s.close_reason)
                        got.extend(frames)
                replays.append(got)
        first, second = replays
        assert [json.loads(f.text)["offset"] for f in second] == list(range(1, 11))
        assert [json.loads(f.text)["data"]["n"] for f in second] == list(range(10))
        assert all(x is y for x, y in zip(first, second, strict=True))


async def scripts_run(client: aioredis.Redis) -> int:
    """How many scripts (the history reads and publishes) the server has run so far."""
    stats = await client.info("commandstats")
    return sum(
        int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("eval", "evalsha")
    )


@pytest.mark.redis
async def test_replays_from_one_place_read_each_page_once(redis_server_factory: Any) -> None:
    url = redis_server_factory().url  # a server of its own: its script calls are counted
    client = aioredis.from_url(url)

    try:
        async with Broadcaster(url, registry=registry(size=500)) as b:
            channel, epoch = await published(b, "ev:p", 300)
            reads = []
            for _ in range(2):
                before = await scripts_run(client)
                async with b.subscriber(max_messages=20) as s:  # pages of 10 events
                    got: list[int] = []

                    async def read(s: Subscriber = s, got: list[int] = got) -> None:
                        while len(got) < 300:
                            frames = await s.get()
                            assert frames, (s.close_code, s.close_reason)
                            got.extend(json.loads(f.text)["offset"] for f in frames)

                    with anyio.fail_after(scaled(20)):
                        async with anyio.create_task_group() as tg:
                            tg.start_soon(read)
                            await s.subscribe([channel], since={channel: Position(epoch, 0)})
                    assert got == list(range(1, 301))
                reads.append(await scripts_run(client) - before)
            # The first replay reads its position and first page, then 29 more pages; the
            # second reads its position and first page, and shares the other 29.
            assert reads == [30, 1], reads
    finally:
        await client.aclose()


async def test_subscribers_resuming_together_while_events_are_published(broker: str) -> None:
    # Subscriptions set up at the same time share their first history read: each still
    # gets every event once, in order, the live ones taking over where its replay ends.
    async with Broadcaster(broker, registry=registry(size=500)) as b:
        channel, epoch = await published(b, "ev:t", 120, first=1)
        total = 250
        results: list[list[int]] = []

        async def resume() -> None:
            async with b.subscriber() as s:
                resumed = await s.subscribe([channel], since={channel: Position(epoch, 0)})
                assert resumed[channel].recovered is True
                got: list[int] = []
                while not got or got[-1] < total:
                    frames = await s.get()
                    assert frames, (s.close_code, s.close_reason)
                    got.extend(json.loads(f.text)["offset"] for f in frames)
                results.append(got)

        async def publish_rest() -> None:
            for i in range(121, total + 1):
                await b.publish(channel, {"n": i})
                if i % 10 == 0:
                    await anyio.lowlevel.checkpoint()  # let subscriptions in between

        with anyio.fail_after(scaled(30)):
            async with anyio.create_task_group() as tg:
                for _ in range(20):
                    tg.start_soon(resume)
                tg.start_soon(publish_rest)
        assert len(results) == 20
        for got in results:
            assert got == list(range(1, total + 1)), got[:5]


@pytest.mark.redis
async def test_subscribers_resuming_from_one_place_share_history_reads(
    redis_server_factory: Any,
) -> None:
    url = redis_server_factory().url  # a server of its own: its script calls are counted
    client = aioredis.from_url(url)

    n = 30
    try:
        async with Broadcaster(url, registry=registry(size=500)) as b:
            channel, epoch = await published(b, "ev:u", 50)
            before = await scripts_run(client)

            async def resume() -> None:
                async with b.subscriber() as s:
                    resumed = await s.subscribe([channel], since={channel: Position(epoch, 0)})
                    assert resumed[channel].recovered is True
                    got: list[int] = []
                    while len(got) < 50:
                        frames = await s.get()
                        assert frames, (s.close_code, s.close_reason)
                        got.extend(json.loads(f.text)["offset"] for f in frames)
                    assert got == list(range(1, 51))

            with anyio.fail_after(scaled(20)):
                async with anyio.create_task_group() as tg:
                    for _ in range(n):
                        tg.start_soon(resume)
            reads = await scripts_run(client) - before
            # One read each would be n: the ones set up while a read is on its way share
            # the next one.
            assert 1 <= reads <= n // 2, reads
    finally:
        await client.aclose()


@pytest.mark.redis
async def test_a_page_kept_from_an_earlier_replay_does_not_outlive_the_history(
    redis_url: str,
) -> None:
    # A replay from the same place as an earlier one reuses its first page, but is told
    # what a fresh read would tell: the history was emptied meanwhile, so not recovered
    # (and not a replay cut short by 1013).
    admin = aioredis.from_url(redis_url)
    try:
        async with Broadcaster(redis_url, registry=registry(size=50)) as b:
            channel = ch("ev:k")
            async with b.subscriber() as s:
                epoch = (await s.subscribe([channel]))[channel].position.epoch  # type: ignore[union-attr]
            await b.publish(channel, {"n": 1})
            async with b.subscriber() as s:
                resumed = await s.subscribe([channel], since={channel: Position(epoch, 0)})
                assert resumed[channel].recovered is True
                assert [e["offset"] for e in await take(s, 1)] == [1]
            await b.publish(channel, {"n": 2})
            await admin.xtrim(history_keys(channel)[0], maxlen=0)
            async with b.subscriber() as s:
                resumed = await s.subscribe([channel], since={channel: Position(epoch, 0)})
                assert resumed[channel] == Resumed(Position(epoch, 2), False)
                await nothing_more(s, b, channel)
                assert not s.closed
    finally:
        await admin.aclose()


@pytest.mark.redis
async def test_more_concurrent_history_reads_than_connections_all_succeed(redis_url: str) -> None:
    backend = RedisBackend(redis_url, max_connections=4)
    await backend.connect()
    try:
        channel = ch("ev:q")
        await backend.append(channel, b'{"n":1}', History(size=5, ttl=60), False)
        pages: list[Page] = []

        async def read() -> None:
            pages.append(await backend.read_history(channel, History(size=5, ttl=60), 0, 10))

        with anyio.fail_after(scaled(20)):
            async with anyio.create_task_group() as tg:
                for _ in range(100):
                    tg.start_soon(read)
        assert len(pages) == 100
        assert all(page.entries == [(1, b'{"n":1}')] for page in pages)
    finally:
        await backend.close()


async def test_a_client_that_cannot_take_its_replay_is_closed_4008(broker: str) -> None:
    async with Broadcaster(broker, registry=registry(size=500)) as b:
        channel, epoch = await published(b, "ev:h", 100)
        # DROP would drop replayed events; the default policy closes: never a silent gap.
        async with b.subscriber(max_messages=10) as s:
            with anyio.fail_after(scaled(30)):
                await s.subscribe([channel], since={channel: Position(epoch, 0)})
            assert s.close_code == 4008


# -- plain publishers ------------------------------------------------------------------


async def test_plain_publish_on_a_history_channel_arrives_without_offset(
    redis_url: str,
) -> None:
    channel = ch("ev:p")
    async with Broadcaster(redis_url, registry=registry()) as b, b.subscriber() as s:
        await s.subscribe([channel])
        client = aioredis.from_url(redis_url)
        try:
            await client.publish(channel, b'{"plain":1}')
            await b.publish(channel, {"n": 1})
            events = await take(s, 2)
        finally:
            await client.aclose()
    assert events[0] == {"channel": channel, "data": {"plain": 1}}
    assert events[1]["offset"] == 1


async def test_the_documented_command_publishes_with_history(redis_url: str) -> None:
    """What a publisher in another language runs: one EVAL of the shipped script."""
    channel = ch("ev:q")
    script = files("wsbridge.backends").joinpath("history_publish.lua").read_text()
    async with Broadcaster(redis_url, registry=registry()) as b, b.subscriber() as s:
        resumed = await s.subscribe([channel])
        client = aioredis.from_url(redis_url)
        try:
            reply = await client.eval(
                script, 3, *history_keys(channel), channel, '{"n":1}', 5, 60, 3600, "e1", "0"
            )
            # The subscription started the epoch; "e1" would only start a new one.
            assert reply == [resumed[channel].position.epoch.encode(), 1]  # type: ignore[union-attr]
            (event,) = await take(s, 1)
        finally:
            await client.aclose()
    assert event == {"channel": channel, "data": {"n": 1}, "offset": 1}


@pytest.mark.parametrize(
    "hostile",
    [
        b"\x00wsb1\x00bad epoch\x001\x00{}",
        b"\x00wsb1\x00e\x00-5\x00{}",
        b"\x00wsb1\x00",
        b"\x00wsb1\x00e\x001",
    ],
)
async def test_a_malformed_envelope_is_counted_and_dropped(redis_url: str, hostile: bytes) -> None:
    channel = ch("ev:m")
    async with Broadcaster(redis_url, registry=registry()) as b, b.subscriber() as s:
        await s.subscribe([channel])
        client = aioredis.from_url(redis_url)
        try:
            await client.publish(channel, hostile)
            await b.publish(channel, {"n": 1})
            (event,) = await take(s, 1)
        finally:
            await client.aclose()
        assert event["offset"] == 1
        assert b.stats().invalid_envelopes == 1


# -- latest values ----------------------------------------------------------------------


async def test_a_new_subscriber_gets_the_latest_state_first(bridge: Broadcaster) -> None:
    channel = ch("state:")
    async with bridge.subscriber() as watcher:
        await watcher.subscribe([channel])
        await bridge.publish(channel, {"value": 1})
        await bridge.publish(channel, {"value": 2})
        await take(watcher, 2)
    async with bridge.subscriber() as s:
        await s.subscribe([channel])
        (latest,) = await take(s, 1)
        assert latest == {"channel": channel, "data": {"value": 2}}
        await bridge.publish(channel, {"value": 3})
        (live,) = await take(s, 1)
        assert live["data"] == {"value": 3}


async def test_a_fresh_process_gets_the_latest_state_from_redis(redis_url: str) -> None:
    channel = ch("state:")
    async with Broadcaster(redis_url, registry=registry()) as first:
        await first.publish(channel, {"value": 7})
    async with Broadcaster(redis_url, registry=registry()) as fresh, fresh.subscriber() as s:
        await s.subscribe([channel])
        (latest,) = await take(s, 1)
    assert latest == {"channel": channel, "data": {"value": 7}}


async def test_latest_state_seen_from_a_plain_publisher(redis_url: str) -> None:
    channel = ch("state:")
    async with Broadcaster(redis_url, registry=registry()) as b, b.subscriber() as watcher:
        await watcher.subscribe([channel])
        client = aioredis.from_url(redis_url)
        try:
            await client.publish(channel, b'{"value":5}')
        finally:
            await client.aclose()
        await take(watcher, 1)
        async with b.subscriber() as s:
            await s.subscribe([channel])
            (latest,) = await take(s, 1)
    assert latest == {"channel": channel, "data": {"value": 5}}


# -- Redis restarts ----------------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.parametrize("aof", [False, True], ids=["no-persistence", "aof"])
async def test_redis_restart_keeps_the_epoch_only_with_persistence(
    redis_server_factory: Any, aof: bool
) -> None:
    args = ["--appendonly", "yes", "--appendfsync", "always"] if aof else []
    server = redis_server_factory(args=args)
    channel = ch("ev:r")
    async with Broadcaster(server.url, registry=registry()) as b:
        async with b.subscriber() as s:
            resumed = await s.subscribe([channel])
            await b.publish(channel, {"n": 1})
            (event,) = await take(s, 1)
        await b.publish(channel, {"n": 2})  # missed by the client
    start = resumed[channel].position
    assert start is not None
    position = Position(start.epoch, event["offset"])
    server.restart()
    async with Broadcaster(server.url, registry=registry()) as b, b.subscriber() as s:
        resumed = await s.subscribe([channel], since={channel: position})
        if aof:
            assert resumed[channel].recovered is True
            assert resumed[channel].position == Position(position.epoch, 2)
            (missed,) = await take(s, 1)
            assert missed["data"] == {"n": 2}
            assert missed["offset"] == 2
        else:
            assert resumed[channel].recovered is False
            now = resumed[channel].position
            assert now is not None
            assert now.epoch != position.epoch
        await nothing_more(s, b, channel)


# -- the server's own position -------------------------------------------------------------


@asynccontextmanager
async def reconnecting(redis_url: str) -> AsyncIterator[tuple[Broadcaster, Broadcaster]]:
    """A bridge that reconnects at once, and a publisher, with a history of 1,000."""
    async with (
        Broadcaster(
            redis_url, registry=registry(size=1000), reconnect_delay=0.05, max_reconnect_delay=0.2
        ) as b,
        Broadcaster(redis_url, registry=registry(size=1000)) as publisher,
    ):
        yield b, publisher


@pytest.mark.redis
async def test_a_broker_reconnect_loses_nothing_on_history_channels(redis_url: str) -> None:
    channel = ch("ev:k")
    total = 60
    async with reconnecting(redis_url) as (b, publisher), b.subscriber() as s:
        await s.subscribe([channel])
        admin = aioredis.from_url(redis_url)
        got: list[int] = []
        try:
            for i in range(1, total + 1):
                await publisher.publish(channel, {"n": i})
                if i % 20 == 0:
                    # Drop the bridge's subscription connection; publishing goes on.
                    await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            with anyio.fail_after(scaled(20)):
                while len(got) < total:
                    frames = await s.get()
                    assert frames
                    for frame in frames:
                        event = json.loads(frame.text)
                        if "channel" in event:
                            got.append(event["offset"])
        finally:
            await admin.aclose()
        assert got == list(range(1, total + 1))
        assert b.stats().broker_reconnects >= 1
        assert b.stats().replayed >= 1


@pytest.mark.redis
async def test_a_broker_reconnect_loses_nothing_through_a_pattern(redis_url: str) -> None:
    """The server catches up every channel it follows through a pattern.

    It follows a channel once it has delivered an event of it through the pattern, or a
    client resumed the channel through it.
    """
    prefix = ch("ev:q")
    a, b_ = f"{prefix}:a", f"{prefix}:b"
    pattern = f"{prefix}:*"
    total = 60
    async with (
        reconnecting(redis_url) as (b, publisher),
        b.subscriber() as s,
        b.subscriber() as resumer,
    ):
        await s.subscribe([pattern])
        await publisher.publish(a, {"n": 1})
        await publisher.publish(b_, {"n": 1})
        frames = await take(s, 4)
        epoch = frames[2]["positions"][b_]["epoch"]
        # The second client resumes b through the pattern and hears nothing live of it
        # before the outage: the server follows b from the position it started b at.
        resumed = await resumer.subscribe([pattern], since={b_: Position(epoch, 0)})
        assert resumed[b_].recovered is True
        (replayed,) = await take(resumer, 1)
        assert replayed["offset"] == 1
        got = {s: {a: [1], b_: [1]}, resumer: {a: [], b_: [1]}}
        expected = {
            s: {a: list(range(1, total + 1)), b_: list(range(1, total + 1))},
            resumer: {a: list(range(2, total + 1)), b_: list(range(1, total + 1))},
        }
        admin = aioredis.from_url(redis_url)
        try:
            await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            for i in range(2, total + 1):
                await publisher.publish(a, {"n": i})
                await publisher.publish(b_, {"n": i})
                if i % 20 == 0:
                    await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            for sub, seen in got.items():
                with anyio.fail_after(scaled(20)):
                    while any(len(seen[c]) < len(expected[sub][c]) for c in (a, b_)):
                        frames = await sub.get()
                        assert frames
                        for frame in frames:
                            event = json.loads(frame.text)
                            if "channel" in event:
                                seen[event["channel"]].append(event["offset"])
                            elif event.get("type") == "position":
                                # A first sight (the resumer's of a), never a loss.
                                assert "recovered" not in event["positions"][a], event
        finally:
            await admin.aclose()
        assert got == expected
        assert b.stats().broker_reconnects >= 1
        assert b.stats().replayed >= 1


# -- gaps the server cannot fill ------------------------------------------------------------


async def _append_silently(redis_url: str, channel: str, payloads: list[str], size: int) -> None:
    """Append to the channel's history without a live message the bridge would receive."""
    script = files("wsbridge.backends").joinpath("history_publish.lua").read_text()
    client = aioredis.from_url(redis_url)
    try:
        for payload in payloads:
            await client.eval(
                script,
                3,
                *history_keys(channel),
                ch("elsewhere:"),
                payload,
                size,
                60,
                3600,
                "x",
                "0",
            )
    finally:
        await client.aclose()


async def _trim_a_gap_then_publish(
    redis_url: str,
    b: Broadcaster,
    s: Subscriber,
    channel: str,
    epoch: str,
    before_live: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """After offset 1: offsets 2 to 4 reach the history only, whose size of 2 keeps 3 and
    4; then 5 is published live. The server catches up and tells ``s`` of the loss."""
    await _append_silently(redis_url, channel, ['{"n":2}', '{"n":3}', '{"n":4}'], 2)
    if before_live is not None:
        await before_live()
    await b.publish(channel, {"n": 5})
    frames = await take(s, 3)
    assert frames[0] == {
        "type": "position",
        "positions": {channel: {"epoch": epoch, "offset": 3, "recovered": False}},
    }
    assert [(f["offset"], f["data"]["n"]) for f in frames[1:]] == [(4, 4), (5, 5)]
    await nothing_more(s, b, channel)
    assert b.stats().recoveries_failed == 1


@pytest.mark.redis
async def test_a_trimmed_gap_is_told_with_a_position_frame(redis_url: str) -> None:
    """A live event skips offsets that the history no longer has: clients are told."""
    channel = ch("ev:g")
    async with (
        Broadcaster(redis_url, registry=registry(size=2)) as b,
        b.subscriber() as s,
        b.subscriber() as late,
    ):
        resumed = await s.subscribe([channel])
        epoch = resumed[channel].position.epoch  # type: ignore[union-attr]
        await b.publish(channel, {"n": 1})
        (first,) = await take(s, 1)
        assert first["offset"] == 1
        await _trim_a_gap_then_publish(redis_url, b, s, channel, epoch)
        # A subscriber that started after the loss hears nothing of it.
        await late.subscribe([channel])
        await nothing_more(late, b, channel)


@pytest.mark.redis
@pytest.mark.parametrize("kill", [False, True], ids=["live", "reconnect"])
async def test_a_lost_history_is_told_with_a_position_frame(
    redis_server_factory: Any, kill: bool
) -> None:
    """The history is deleted (as a restart without persistence would): a new epoch.

    With the subscription connection killed the server learns it while catching up
    after the reconnect; without, from the first live event of the new epoch. Either
    way the client gets the new position, then every event of the new epoch.
    """
    server = redis_server_factory()
    channel = ch("ev:l")
    async with (
        Broadcaster(
            server.url, registry=registry(), reconnect_delay=0.05, max_reconnect_delay=0.2
        ) as b,
        Broadcaster(server.url, registry=registry()) as publisher,
        b.subscriber() as s,
    ):
        resumed = await s.subscribe([channel])
        old = resumed[channel].position
        assert old is not None
        await publisher.publish(channel, {"n": 1})
        assert (await take(s, 1))[0]["offset"] == 1
        admin = aioredis.from_url(server.url)
        try:
            if kill:
                await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            await admin.flushall()
        finally:
            await admin.aclose()
        for i in range(1, 4):
            await publisher.publish(channel, {"n": i})
        frames: list[dict[str, Any]] = []
        with anyio.fail_after(scaled(10)):
            while len([f for f in frames if "offset" in f and "type" not in f]) < 3:
                got = await s.get()
                assert got, "subscriber closed"
                frames.extend(json.loads(f.text) for f in got)
        frames = [f for f in frames if f.get("type") != "broker"]
        assert frames[0]["type"] == "position"
        position = frames[0]["positions"][channel]
        assert position["epoch"] != old.epoch
        assert position["offset"] == 0
        assert position["recovered"] is False
        assert [f["offset"] for f in frames[1:]] == [1, 2, 3]
        assert [f["data"]["n"] for f in frames[1:]] == [1, 2, 3]
        await nothing_more(s, publisher, channel)
        assert b.stats().recoveries_failed >= 1


@pytest.mark.redis
async def test_a_trimmed_gap_through_a_pattern_is_told(redis_url: str) -> None:
    prefix = ch("ev:t")
    channel, pattern = f"{prefix}:a", f"{prefix}:*"
    async with (
        Broadcaster(redis_url, registry=registry(size=2)) as b,
        b.subscriber() as s,
        b.subscriber() as late,
    ):
        await s.subscribe([pattern])
        await b.publish(channel, {"n": 1})
        told, first = await take(s, 2)
        epoch = told["positions"][channel]["epoch"]
        assert first["offset"] == 1
        # The late one has not seen the channel: it is told the channel's start only.
        await _trim_a_gap_then_publish(
            redis_url, b, s, channel, epoch, before_live=lambda: late.subscribe([pattern])
        )
        start, *events = await take(late, 4)  # the marker too
        assert "recovered" not in start["positions"][channel]
        assert [f["offset"] for f in events] == [4, 5, 6]


# -- resume through a pattern ----------------------------------------------------------------


async def test_resume_through_a_pattern(bridge: Broadcaster) -> None:
    prefix = ch("ev:p")
    channel, pattern = f"{prefix}:a", f"{prefix}:*"
    async with bridge.subscriber() as s:
        await s.subscribe([pattern])
        await bridge.publish(channel, {"n": 1})
        told, event = await take(s, 2)
    assert told["type"] == "position"
    start = told["positions"][channel]
    assert (start["offset"], event["offset"]) == (0, 1)
    for n in (2, 3):
        await bridge.publish(channel, {"n": n})  # missed
    async with bridge.subscriber() as s:
        with pytest.raises(ValueError, match="no channel or pattern asked covers"):
            await s.subscribe([f"{prefix}:b*"], since={channel: Position(start["epoch"], 1)})
        resumed = await s.subscribe([pattern], since={channel: Position(start["epoch"], 1)})
        assert resumed[channel] == Resumed(Position(start["epoch"], 3), True)
        assert [e["data"]["n"] for e in await take(s, 2)] == [2, 3]
        await nothing_more(s, bridge, channel)  # live through the pattern, no position frame
