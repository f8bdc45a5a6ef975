"""Channel history on the Redis Cluster backend, against a real cluster.

History keys live on the shard of their channel (hash tags, braces in names included),
the history publish runs on that shard and sends the live message with ``SPUBLISH``,
reads and resumes follow the channel's owner, and a failover ends the channel's epoch
rather than hand out an offset twice. The failover test kills a master under load with
two ``wsbridge serve`` processes, each with clients resuming through the Python client,
and checks every client's sequence of every channel against what the publisher was told.
"""

from __future__ import annotations

import contextlib
import json
from importlib.resources import files
from typing import Any

import anyio
import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from tests.support.processes import Child, child_env, wsbridge_command
from tests.support.redis_cluster import RedisCluster, find_redis_cli
from tests.support.redis_server import HOST, RedisServer, free_port, scaled
from wsbridge import Broadcaster, BrokerUnavailableError
from wsbridge.backends.cluster import RedisClusterBackend
from wsbridge.backends.redis import history_keys
from wsbridge.broadcaster import Subscriber
from wsbridge.client import Client, Event, Status
from wsbridge.history import History, Page, Position, parse_envelope
from wsbridge.schema import DeliveryKind, Registry
from wsbridge.trading import EVENT_HISTORY

pytestmark = pytest.mark.anyio

HISTORY = History(size=100, ttl=60)


def registry() -> Registry:
    """History on ``ev:*``, latest values on ``state:*``."""
    from pydantic import BaseModel

    class Snapshot(BaseModel):
        value: int

    reg = Registry(history={"ev:*": HISTORY})
    reg.register("state:*", Snapshot, kind=DeliveryKind.STATE)
    return reg


def slot(name: str) -> int:
    return key_slot(name.encode("utf-8"))


def spread(cluster: RedisCluster, prefix: str, per_master: int = 1) -> dict[str, RedisServer]:
    """Channels ``prefix<n>`` chosen so that every master owns ``per_master``: name -> owner."""
    owners: dict[str, RedisServer] = {}
    counts: dict[int, int] = {}
    for n in range(1000):
        channel = f"{prefix}{n}"
        owner = cluster.owner(channel)
        if counts.get(owner.port, 0) < per_master:
            counts[owner.port] = counts.get(owner.port, 0) + 1
            owners[channel] = owner
        if len(counts) == 3 and all(c == per_master for c in counts.values()):
            return owners
    raise AssertionError("could not spread channels over the masters")


async def take(subscriber: Subscriber, n: int) -> list[dict[str, Any]]:
    """The next ``n`` events of ``subscriber``, decoded, within a bound."""
    got: list[dict[str, Any]] = []
    with anyio.fail_after(scaled(10)):
        while len(got) < n:
            got += [json.loads(frame.text) for frame in await subscriber.get()]
    return got


# -- keys and slots ---------------------------------------------------------------------------


@given(st.text(alphabet="ab{}:é", max_size=12))
def test_history_keys_hash_to_the_slot_of_their_channel(channel: str) -> None:
    keys = history_keys(channel)
    assert {slot(key) for key in keys} == {slot(channel)}
    assert len(set(keys)) == 3


@given(st.text(alphabet="ab{}:", max_size=8), st.text(alphabet="ab{}:", max_size=8))
def test_two_channels_never_share_history_keys(first: str, second: str) -> None:
    if first != second:
        assert not set(history_keys(first)) & set(history_keys(second))


def test_names_without_braces_keep_their_keys() -> None:
    assert history_keys("trade:executed") == (
        "wsbridge:{trade:executed}:h",
        "wsbridge:{trade:executed}:m",
        "wsbridge:{trade:executed}:l",
    )
    assert history_keys("{acct-7}:orders")[0] == "wsbridge:{acct-7}:{acct-7}:orders:h"


# -- publish, resume, latest value ------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.slow
async def test_history_publish_resume_and_latest_on_the_channel_shard(
    shared_redis_cluster: RedisCluster,
) -> None:
    owners = spread(shared_redis_cluster, "ev:")
    # Braces: a hash tag of the name's own, and names whose braces make no tag.
    for name in ("ev:{acct-7}:fills", "ev:a}b", "ev:x{}y"):
        owners[name] = shared_redis_cluster.owner(name)
    channels = sorted(owners)
    url = shared_redis_cluster.url
    bridge = Broadcaster(url, registry=registry(), probe_interval=0)
    async with bridge, bridge.subscriber() as live:
        await live.subscribe(channels)
        for n in range(1, 6):
            for channel in channels:
                await bridge.publish(channel, {"n": n})
        got = await take(live, 5 * len(channels))
        for channel in channels:
            mine = [event for event in got if event["channel"] == channel]
            # Delivered at all: the script sent it with SPUBLISH on the channel's shard.
            assert [e["offset"] for e in mine] == [1, 2, 3, 4, 5], channel
            assert [e["data"]["n"] for e in mine] == [1, 2, 3, 4, 5], channel
            with shared_redis_cluster.client(owners[channel]) as node:
                # The keys are on the owner of the channel itself.
                assert node.xlen(history_keys(channel)[0]) == 5
                epoch = node.hget(history_keys(channel)[1], "e").decode()
        async with bridge.subscriber() as late:
            channel = channels[0]
            with shared_redis_cluster.client(owners[channel]) as node:
                epoch = node.hget(history_keys(channel)[1], "e").decode()
            resumed = await late.subscribe([channel], since={channel: Position(epoch, 2)})
            assert resumed[channel].recovered is True
            assert resumed[channel].position == Position(epoch, 5)
            assert [e["offset"] for e in await take(late, 3)] == [3, 4, 5]
        await bridge.publish("state:book", {"value": 42})
    # A process that starts later reads the latest value from the channel's shard.
    fresh = Broadcaster(url, registry=registry(), probe_interval=0)
    async with fresh, fresh.subscriber() as newcomer:
        await newcomer.subscribe(["state:book"])
        (latest,) = await take(newcomer, 1)
    assert latest == {"channel": "state:book", "data": {"value": 42}}


def documented_command(cluster: RedisCluster, node: RedisServer, channel: str) -> list[str]:
    """The cluster variant of the documented redis-cli command (docs/howto/resume.md)."""
    cli = find_redis_cli()
    assert cli is not None
    script = str(files("wsbridge.backends") / "history_publish.lua")
    return [
        cli, "-c", "-h", HOST, "-p", str(node.port), "--eval", script,
        *history_keys(channel), ",", channel, '{"n":1}', "1000", "600", "604800",
        "0123456789abcdef", "0", "cluster",
    ]  # fmt: skip


@pytest.mark.redis
@pytest.mark.slow
async def test_the_documented_cluster_command_and_wsbridge_publish_assign_offsets(
    shared_redis_cluster: RedisCluster,
) -> None:
    channel = "trade:executed"
    owner = shared_redis_cluster.owner(channel)
    # Asked on another master: redis-cli -c follows the redirection to the owner.
    other = next(m for m in shared_redis_cluster.masters() if m.port != owner.port)
    with redis.Redis(host=HOST, port=owner.port, socket_timeout=scaled(5)) as client:
        pubsub = client.pubsub()
        pubsub.ssubscribe(channel)
        assert pubsub.get_sharded_message(timeout=scaled(5))["type"] == "ssubscribe"
        done = await anyio.run_process(
            documented_command(shared_redis_cluster, other, channel), check=False
        )
        assert done.returncode == 0, done.stderr.decode()
        message = pubsub.get_sharded_message(timeout=scaled(5))
        assert message is not None
        assert message["type"] == "smessage"
        first = parse_envelope(message["data"])
        assert first is not None
        assert first[1:] == (1, b'{"n":1}')
        assert done.stdout.decode().split() == [first[0], "1"]
        trade = {
            "id": "t-1", "symbol": "AAPL", "side": "BUY", "quantity": 10,
            "entry_price": 178.42, "entry_time": "2026-03-12T14:30:00Z",
            "strategy_name": "manual",
        }  # fmt: skip
        publisher = Child(
            wsbridge_command(
                "publish", channel, json.dumps(trade), "--redis", shared_redis_cluster.url
            )
        )
        assert await anyio.to_thread.run_sync(publisher.wait) == 0, publisher.output()
        message = pubsub.get_sharded_message(timeout=scaled(5))
        assert message is not None
        second = parse_envelope(message["data"])
        assert second is not None
        assert second[:2] == (first[0], 2)
        assert json.loads(second[2])["symbol"] == "AAPL"
        pubsub.close()


async def wait_until(predicate: Any, seconds: float = 20) -> None:
    """Poll ``predicate`` (a blocking call to Redis) until true, for at most ``seconds``."""
    with anyio.fail_after(scaled(seconds)):
        while not await anyio.to_thread.run_sync(predicate):  # noqa: ASYNC110 - polls Redis
            await anyio.sleep(0.05)


async def read_after_the_move(backend: RedisClusterBackend, channel: str) -> Page:
    """The channel's history once the client's slot map knows its new owner (bounded)."""
    with anyio.fail_after(scaled(20)):
        while True:
            try:
                return await backend.read_history(channel, HISTORY, 0, 10)
            except BrokerUnavailableError:  # the client's slot map catches up
                await anyio.sleep(0.1)


def replica_of(cluster: RedisCluster, master: RedisServer) -> RedisServer:
    """The running replica of ``master`` (``ROLE`` names its master's port)."""
    for node in cluster.nodes:
        if node.running and node.port != master.port:
            with cluster.client(node) as client:
                role = client.execute_command("ROLE")
            if role[0] == b"slave" and int(role[2]) == master.port:
                return node
    raise AssertionError(f"no replica of {master.port}")


# -- failover: the epoch ends, no offset is handed out twice --------------------------------


@pytest.mark.redis
@pytest.mark.slow
async def test_a_failover_ends_the_epoch_of_the_shard_channels(
    redis_cluster: RedisCluster,
) -> None:
    channel = "ev:fenced"
    backend = RedisClusterBackend(redis_cluster.url)
    await backend.connect()
    try:
        positions = [await backend.append(channel, b'{"n":%d}' % n, HISTORY, False) for n in (1, 2)]
        epoch = positions[0].epoch if positions[0] else ""
        assert positions == [Position(epoch, 1), Position(epoch, 2)]
        owner = redis_cluster.owner(channel)
        with redis.Redis(host=HOST, port=owner.port, socket_timeout=scaled(20)) as node:
            # The replica has both (its first sync may still be under way).
            assert node.wait(1, int(scaled(15) * 1000)) == 1
        replica = replica_of(redis_cluster, owner)
        with redis_cluster.client(replica) as node:
            # Even a failover that loses nothing: the new master cannot know that.
            node.execute_command("CLUSTER", "FAILOVER")
        await wait_until(lambda: redis_cluster.owner(channel).port == replica.port)
        page = await read_after_the_move(backend, channel)
        assert page.position.epoch != epoch
        assert page.position.offset == 0
        assert page.entries == []
        after = await backend.append(channel, b'{"n":3}', HISTORY, False)
        assert after == Position(page.position.epoch, 1)
    finally:
        await backend.close()


# -- a master killed under load, two bridges, resuming clients -----------------------------


def start_bridge(url: str) -> tuple[Child, int]:
    """``wsbridge serve`` on the cluster (the trading registry: ``trade:*`` has history)."""
    port = free_port()
    args = ["--redis", url, "--port", str(port), "--allow", "trade:*", "--log-level", "info"]
    child = Child(wsbridge_command("serve", *args), env=child_env())
    try:
        child.wait_for(r"^wsbridge serve: listening on ws://", timeout=30)
    except BaseException:
        child.stop()
        raise
    return child, port


class Acked:
    """What the publisher was told: per channel, ``seq -> (epoch, offset)``, in order."""

    def __init__(self, channels: list[str]) -> None:
        self.by_seq: dict[str, dict[int, Position]] = {channel: {} for channel in channels}
        self.failed = 0

    def last(self, channel: str) -> Position:
        return list(self.by_seq[channel].values())[-1]


async def publish_with_history(url: str, channels: list[str], acked: Acked, seqs: Any) -> None:
    """The history publish, round after round; a publish that fails is retried (bounded)."""
    backend = RedisClusterBackend(url, command_timeout=1, connect_timeout=1)
    await backend.connect()
    try:
        for seq in seqs:
            for channel in channels:
                payload = json.dumps({"seq": seq}).encode()
                for _ in range(400):  # about 20 s at most: the failover takes a few
                    try:
                        position = await backend.append(channel, payload, EVENT_HISTORY, False)
                    except BrokerUnavailableError:
                        acked.failed += 1
                        await anyio.sleep(0.05)  # the shard is failing over: try again
                        continue
                    assert position is not None
                    acked.by_seq[channel][seq] = position
                    break
            await anyio.sleep(0.005)
    finally:
        with anyio.CancelScope(shield=True):
            await backend.close()


class Watched:
    """Everything one client saw, in order: events and statuses."""

    def __init__(self) -> None:
        self.items: list[Event | Status] = []
        self.changed = anyio.Event()

    def add(self, item: Event | Status) -> None:
        self.items.append(item)
        self.changed.set()
        self.changed = anyio.Event()

    def top(self, channel: str) -> int | None:
        for item in reversed(self.items):
            if isinstance(item, Event) and item.channel == channel:
                return item.offset
        return None

    def statuses(self, kind: str) -> list[Status]:
        return [i for i in self.items if isinstance(i, Status) and i.kind == kind]


async def watch(client: Client, watched: Watched) -> None:
    async for item in client.updates():
        watched.add(item)


def segments(watched: Watched, channel: str) -> list[list[Event]]:
    """The channel's events cut where offsets stop following each other.

    Every cut must have been announced: a ``not_recovered`` status for the channel since
    the previous event.
    """
    cuts: list[list[Event]] = []
    told = False
    for item in watched.items:
        if isinstance(item, Status):
            told = told or (item.kind == "not_recovered" and item.detail == channel)
        elif item.channel == channel:
            assert item.offset is not None
            if not cuts or item.offset != (cuts[-1][-1].offset or 0) + 1:
                assert not cuts or told, f"{channel}: a silent cut before {item.offset}"
                cuts.append([])
            cuts[-1].append(item)
            told = False
    return cuts


@pytest.mark.redis
@pytest.mark.slow
async def test_history_survives_a_killed_master_with_two_bridges_under_load(
    redis_cluster: RedisCluster,
) -> None:
    owners = spread(redis_cluster, "trade:", per_master=2)
    channels = sorted(owners)
    victim = owners[channels[0]]
    lost = sorted(c for c, owner in owners.items() if owner.port == victim.port)
    kept = sorted(set(channels) - set(lost))
    bridges = [start_bridge(redis_cluster.url) for _ in range(2)]
    acked = Acked(channels)
    watched = [Watched() for _ in range(4)]
    try:
        async with contextlib.AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(
                    Client(
                        f"ws://127.0.0.1:{bridges[n % 2][1]}/ws",
                        channels=channels,
                        registry=Registry(),
                        reconnect_delay=0.2,
                        max_reconnect_delay=1.0,
                    )
                )
                for n in range(len(watched))
            ]
            async with anyio.create_task_group() as tg:
                for client, w in zip(clients, watched, strict=True):
                    tg.start_soon(watch, client, w)

                async def every_client_at(tops: dict[str, int]) -> None:
                    with anyio.move_on_after(scaled(30)):
                        for w in watched:
                            while any((w.top(c) or 0) < top for c, top in tops.items()):
                                await w.changed.wait()
                    behind = [
                        (n, c, w.top(c), top)
                        for n, w in enumerate(watched)
                        for c, top in tops.items()
                        if (w.top(c) or 0) < top
                    ]
                    assert not behind, (behind, watched[behind[0][0]].items[-20:])

                # Subscribed everywhere; one round reaches everyone; then the load runs
                # while the master dies.
                with anyio.fail_after(scaled(30)):
                    for w in watched:
                        while not w.statuses("connected"):
                            await w.changed.wait()
                await publish_with_history(redis_cluster.url, channels, acked, range(1, 2))
                await every_client_at({c: acked.last(c).offset for c in channels})
                first_epochs = {c: acked.last(c).epoch for c in channels}
                load = anyio.Event()

                async def publish_then_signal() -> None:
                    await publish_with_history(redis_cluster.url, channels, acked, range(2, 600))
                    load.set()

                tg.start_soon(publish_then_signal)
                with anyio.fail_after(scaled(10)):
                    while len(acked.by_seq[channels[0]]) < 50:
                        await watched[0].changed.wait()
                await anyio.to_thread.run_sync(victim.kill)
                with anyio.fail_after(scaled(90)):
                    await load.wait()
                tops = {c: acked.last(c) for c in channels}
                await every_client_at(
                    {c: p.offset for c, p in tops.items() if p.epoch == first_epochs[c]}
                )
                # A new epoch's offsets start again: wait on the last event's payload.
                with anyio.fail_after(scaled(30)):
                    for w in watched:
                        for c in channels:
                            last_seq = max(acked.by_seq[c])
                            while not any(
                                isinstance(i, Event)
                                and i.channel == c
                                and i.data == {"seq": last_seq}
                                for i in w.items[-50:]
                            ):
                                await w.changed.wait()
                tg.cancel_scope.cancel()
    finally:
        for child, _ in bridges:
            assert child.stop() == 0, child.output()
    for child, _ in bridges:
        assert "Traceback" not in child.output(), child.output()
    assert redis_cluster.owner(channels[0]).port != victim.port
    for channel in channels:
        final = acked.last(channel)
        # The failed shard's channels start a new epoch; the others keep theirs.
        assert (final.epoch != first_epochs[channel]) == (channel in lost), channel
    for w in watched:
        assert w.statuses("broker_down"), "every client heard of the failover"
        assert w.statuses("broker_up")
        for channel in channels:
            cuts = segments(w, channel)
            received = [e.data["seq"] for cut in cuts for e in cut]
            for cut in cuts:
                epochs = set()
                for event in cut:
                    position = acked.by_seq[channel].get(event.data["seq"])
                    if position is not None:
                        # Told this offset: no offset was ever handed out twice.
                        assert position.offset == event.offset, (channel, event)
                        epochs.add(position.epoch)
                assert len(epochs) <= 1, f"{channel}: one run of offsets spans two epochs"
            final = acked.last(channel)
            last = cuts[-1]
            assert last[-1].offset == final.offset, channel
            if channel in kept:
                # Its shard never failed: broker down and up, and nothing lost or repeated.
                assert len(cuts) == 1, (channel, [(c[0].offset, c[-1].offset) for c in cuts])
                assert sorted(acked.by_seq[channel]) == [
                    s for s in received if s in acked.by_seq[channel]
                ]
            else:
                # The new epoch was announced, then delivered from its start: all of it.
                assert len(cuts) >= 2, channel
                assert last[0].offset == 1, channel
                new = [s for s, p in acked.by_seq[channel].items() if p.epoch == final.epoch]
                assert [s for s in (e.data["seq"] for e in last) if s in new] == new
    print(
        f"acked {sum(map(len, acked.by_seq.values()))} publishes, {acked.failed} failed attempts;",
        "new epoch on",
        lost,
    )


@pytest.mark.redis
@pytest.mark.slow
async def test_a_migrated_slot_ends_the_epoch_on_its_new_owner(redis_cluster: RedisCluster) -> None:
    channel = "ev:moving"
    keys = history_keys(channel)
    backend = RedisClusterBackend(redis_cluster.url)
    await backend.connect()
    try:
        first = await backend.append(channel, b'{"n":1}', HISTORY, False)
        assert first is not None
        source = redis_cluster.owner(channel)
        target = next(m for m in redis_cluster.masters() if m.port != source.port)
        source_id, target_id = redis_cluster.node_id(source), redis_cluster.node_id(target)
        # A resharding as redis-cli --cluster reshard does it, keys moved with MIGRATE.
        with redis_cluster.client(target) as node:
            node.execute_command("CLUSTER", "SETSLOT", slot(channel), "IMPORTING", source_id)
        with redis_cluster.client(source) as node:
            node.execute_command("CLUSTER", "SETSLOT", slot(channel), "MIGRATING", target_id)
            node.execute_command(
                "MIGRATE", HOST, target.port, "", 0, int(scaled(5) * 1000), "KEYS", *keys[:2]
            )
        for owner in (target, source):
            with redis_cluster.client(owner) as node:
                node.execute_command("CLUSTER", "SETSLOT", slot(channel), "NODE", target_id)
        with redis_cluster.client(target) as node:
            # The history moved with its slot, still marked as the source's.
            assert node.hget(keys[1], "e") == first.epoch.encode()
            assert node.hget(keys[1], "w") == source_id.encode()
        page = await read_after_the_move(backend, channel)
        assert redis_cluster.owner(channel).port == target.port
        assert page.position.epoch != first.epoch
        assert page.position.offset == 0
        assert await backend.append(channel, b'{"n":2}', HISTORY, False) == Position(
            page.position.epoch, 1
        )
    finally:
        await backend.close()


@pytest.mark.redis
@pytest.mark.slow
async def test_a_write_lost_in_a_failover_never_lends_its_offset_to_another_event(
    redis_cluster: RedisCluster,
) -> None:
    channel = "ev:lost"
    keys = history_keys(channel)
    # A short backoff: the bridge's attempts fail until the failover ends, and with the
    # default one (doubling up to 10 s) its next attempt could come later than take()
    # waits for the "up" frame on a loaded machine.
    bridge = Broadcaster(
        redis_cluster.url,
        registry=registry(),
        probe_interval=0,
        reconnect_delay=0.1,
        max_reconnect_delay=0.5,
    )
    async with bridge, bridge.subscriber() as live:
        await live.subscribe([channel])
        for n in (1, 2):
            await bridge.publish(channel, {"n": n})
        assert [e["offset"] for e in await take(live, 2)] == [1, 2]
        owner = redis_cluster.owner(channel)
        replica = replica_of(redis_cluster, owner)
        with redis.Redis(host=HOST, port=owner.port, socket_timeout=scaled(20)) as node:
            assert node.wait(1, int(scaled(15) * 1000)) == 1
            epoch = node.hget(keys[1], "e").decode()
            # Cut replication, and keep it cut: the replica cannot authenticate again.
            with redis_cluster.client(replica) as other:
                other.config_set("masterauth", "not-the-password")
            node.execute_command("CLIENT", "KILL", "TYPE", "replica")
        # Published, acknowledged and delivered live; never replicated.
        await bridge.publish(channel, {"n": 3})
        assert await take(live, 1) == [{"channel": channel, "data": {"n": 3}, "offset": 3}]
        with redis_cluster.client(replica) as other:
            other.execute_command("READONLY")
            assert other.hget(keys[1], "o") == b"2"
        await anyio.to_thread.run_sync(owner.kill)
        await wait_until(lambda: redis_cluster.owner(channel).port == replica.port, 30)
        # The frames after "down": "up" once subscribed on the promoted replica, and the
        # end of the old epoch, told when the bridge's catch-up or the next event finds
        # the new one (either may come first, and one get() may return several frames).
        frames: list[dict[str, Any]] = []
        with anyio.fail_after(scaled(30)):
            while {"type": "broker", "status": "up"} not in frames:
                frames += await take(live, 1)
        with anyio.fail_after(scaled(30)):
            while True:
                try:
                    await bridge.publish(channel, {"n": 4})
                    break
                except BrokerUnavailableError:  # until the client's slot map catches up
                    await anyio.sleep(0.1)
        # Continuing the old epoch would give {"n": 4} offset 3 again: the bridge, at 3
        # already, would drop it as delivered, and no client would ever see it. Instead
        # the subscriber is told the old epoch's end, then gets the new one from its start.
        with anyio.fail_after(scaled(30)):
            while not any(f.get("channel") == channel for f in frames):
                frames += await take(live, 1)
        told, event = [f for f in frames if f.get("type") != "broker"]
        assert told["type"] == "position"
        assert told["positions"][channel]["recovered"] is False
        assert told["positions"][channel]["epoch"] != epoch
        assert event == {"channel": channel, "data": {"n": 4}, "offset": 1}
        async with bridge.subscriber() as back:
            resumed = await back.subscribe([channel], since={channel: Position(epoch, 3)})
        assert resumed[channel].recovered is False
        position = resumed[channel].position
        assert position is not None
        assert position.epoch != epoch
