"""The Redis Cluster backend against a real cluster: sharded subscriptions, failover.

Each test that needs a cluster starts its own (three masters, three replicas, a node
timeout of one second) and tears it down. The failover test kills a master under load
with two ``wsbridge serve`` processes connected and waits, within a bound, for every
channel to deliver again to both.
"""

from __future__ import annotations

import contextlib
import json
import runpy
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from tests.support.client import Client
from tests.support.processes import Child, child_env, wsbridge_command
from tests.support.redis_cluster import RedisCluster
from tests.support.redis_server import HOST, RedisServer, free_port, scaled
from tests.support.samples import REFERENCE_EXAMPLES
from wsbridge import Broadcaster, BrokerUnavailableError, SubscriptionRefusedError
from wsbridge.backends import backend_from_url
from wsbridge.backends.cluster import (
    PATTERN_REFUSAL,
    RedisClusterBackend,
    parse_cluster_url,
)
from wsbridge.exceptions import ConfigurationError
from wsbridge.history import parse_envelope

pytestmark = pytest.mark.anyio

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"

# -- URLs -----------------------------------------------------------------------------------


def test_cluster_urls_name_every_startup_node() -> None:
    nodes, options = parse_cluster_url("redis+cluster://a:7000,b:7001,[::1]:7002/")
    assert nodes == [("a", 7000), ("b", 7001), ("::1", 7002)]
    assert options == {}
    nodes, options = parse_cluster_url("rediss+cluster://bridge:s%40cret@h1:6380,h2/0")
    assert nodes == [("h1", 6380), ("h2", 6379)]
    assert options == {"username": "bridge", "password": "s@cret", "ssl": True}


@pytest.mark.parametrize(
    "url",
    [
        "redis://h:1/",  # not a cluster URL
        "redis+cluster:///",  # no node
        "redis+cluster://h:port/",
        "redis+cluster://h:1/3",  # a cluster has database 0 only
        "redis+cluster://h:1/?timeout=1",
    ],
)
def test_bad_cluster_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_cluster_url(url)


def test_the_url_scheme_chooses_the_cluster_backend() -> None:
    backend = backend_from_url("redis+cluster://127.0.0.1:7000/", command_timeout=1.0)
    assert isinstance(backend, RedisClusterBackend)
    assert isinstance(backend_from_url("rediss+cluster://h:1/"), RedisClusterBackend)
    with pytest.raises(ConfigurationError, match="no option db"):
        backend_from_url("redis+cluster://h:1/", db=2)
    with pytest.raises(ConfigurationError, match="rediss"):
        backend_from_url("redis+cluster://h:1/", ssl_ca_certs="/etc/ca.pem")


# -- against a cluster ------------------------------------------------------------------------


def spread(cluster: RedisCluster, per_master: int = 2) -> dict[str, RedisServer]:
    """Channels chosen so that every master owns ``per_master`` of them: name -> owner."""
    owners: dict[str, RedisServer] = {}
    counts: dict[int, int] = {}
    for n in range(1000):
        channel = f"prices:{n}"
        owner = cluster.owner(channel)
        if counts.get(owner.port, 0) < per_master:
            counts[owner.port] = counts.get(owner.port, 0) + 1
            owners[channel] = owner
        if len(counts) == 3 and all(c == per_master for c in counts.values()):
            return owners
    raise AssertionError("could not spread channels over the masters")


def shard_subscribers(node: RedisServer, channel: str) -> int:
    with redis.Redis(host=HOST, port=node.port, socket_timeout=scaled(2)) as client:
        reply = client.execute_command("PUBSUB", "SHARDNUMSUB", channel)
    return int(reply[1])


async def wait_until(predicate: Any, seconds: float = 10) -> None:
    """Poll ``predicate`` (a blocking call to Redis) until true, for at most ``seconds``."""
    with anyio.fail_after(scaled(seconds)):
        while not await anyio.to_thread.run_sync(predicate):  # noqa: ASYNC110 - polls Redis
            await anyio.sleep(0.02)


@pytest.mark.redis
@pytest.mark.slow
async def test_one_sharded_subscription_per_channel_on_its_owner(
    shared_redis_cluster: RedisCluster,
) -> None:
    owners = spread(shared_redis_cluster)
    channels = sorted(owners)
    async with Broadcaster(shared_redis_cluster.url, probe_interval=0) as broadcaster:
        async with broadcaster.subscriber() as first, broadcaster.subscriber() as second:
            await first.subscribe(channels)
            await second.subscribe(channels)
            for channel, owner in owners.items():
                # Confirmed before subscribe() returned; one for both subscribers.
                assert shard_subscribers(owner, channel) == 1, channel
            assert broadcaster.stats().upstream_subscriptions == len(channels)
            assert broadcaster.ready
            for channel in channels:
                await broadcaster.publish(channel, {"channel": channel})
            for subscriber in (first, second):
                got: dict[str, Any] = {}
                with anyio.fail_after(scaled(10)):
                    while len(got) < len(channels):
                        for frame in await subscriber.get():
                            got[frame.channel] = json.loads(frame.text)["data"]
                assert got == {channel: {"channel": channel} for channel in channels}
            await first.unsubscribe(channels)
            assert all(shard_subscribers(o, c) == 1 for c, o in owners.items())
        # Both gone: every sharded subscription is dropped on its shard.
        await wait_until(lambda: all(shard_subscribers(o, c) == 0 for c, o in owners.items()))


@pytest.mark.redis
@pytest.mark.slow
async def test_patterns_are_refused_and_exact_channels_still_work(
    shared_redis_cluster: RedisCluster,
) -> None:
    broadcaster = Broadcaster(shared_redis_cluster.url, probe_interval=0)
    async with broadcaster, broadcaster.subscriber() as subscriber:
        with pytest.raises(SubscriptionRefusedError) as refused:
            await subscriber.subscribe(["risk:*", "risk:alert"])
        assert refused.value.channels == ["risk:*"]
        assert refused.value.reason == PATTERN_REFUSAL
        assert subscriber.subscriptions == {"risk:alert"}
        assert broadcaster.stats().subscriptions_refused == 1
        await broadcaster.publish("risk:alert", REFERENCE_EXAMPLES["risk:alert"])
        with anyio.fail_after(scaled(10)):
            [frame] = await subscriber.get()
        assert frame.channel == "risk:alert"
        assert broadcaster.ready  # a refused pattern is the client's problem, not ours


@pytest.mark.redis
@pytest.mark.slow
async def test_wsbridge_publish_sends_to_the_channel_shard(
    shared_redis_cluster: RedisCluster,
) -> None:
    owner = shared_redis_cluster.owner("trade:executed")
    with redis.Redis(host=HOST, port=owner.port, socket_timeout=scaled(5)) as client:
        pubsub = client.pubsub()
        pubsub.ssubscribe("trade:executed")
        assert pubsub.get_sharded_message(timeout=scaled(5))["type"] == "ssubscribe"
        trade = REFERENCE_EXAMPLES["trade:executed"]
        publisher = Child(
            wsbridge_command(
                "publish", "trade:executed", json.dumps(trade), "--redis", shared_redis_cluster.url
            )
        )
        assert await anyio.to_thread.run_sync(publisher.wait) == 0, publisher.output()
        message = pubsub.get_sharded_message(timeout=scaled(5))
        assert message is not None
        assert message["type"] == "smessage"
        # trade:executed has history: the live message is its envelope, with an offset.
        envelope = parse_envelope(message["data"])
        assert envelope is not None
        assert json.loads(envelope[2])["symbol"] == trade["symbol"]
        pubsub.close()


# -- failover under load ----------------------------------------------------------------------


def start_bridge(url: str, channels: list[str]) -> tuple[Child, int]:
    port = free_port()
    args = ["--redis", url, "--port", str(port)]
    for channel in channels:
        args += ["--channel", channel]
    child = Child(wsbridge_command("serve", *args, "--log-level", "info"), env=child_env())
    try:
        child.wait_for(r"^wsbridge serve: listening on ws://", timeout=30)
    except BaseException:
        child.stop()
        raise
    return child, port


async def publish_forever(url: str, channels: list[str], sent: dict[str, int]) -> None:
    """Publish a numbered event to every channel in turn, retrying through a failover."""
    nodes = [ClusterNode(host, port) for host, port in parse_cluster_url(url)[0]]
    client = AsyncRedisCluster(startup_nodes=nodes, socket_timeout=1, socket_connect_timeout=1)
    try:
        seq = 0
        while True:
            for channel in channels:
                seq += 1
                try:
                    await client.execute_command("SPUBLISH", channel, json.dumps({"seq": seq}))
                except (redis.RedisError, OSError):
                    continue  # the shard is failing over: the next round retries
                sent[channel] = seq
            await anyio.sleep(0.01)  # about a hundred events a second per channel
    finally:
        with anyio.CancelScope(shield=True):
            await client.aclose()


async def frames(client: Client) -> AsyncIterator[dict[str, Any]]:
    while True:
        yield await client.recv(timeout=30)


@pytest.mark.redis
@pytest.mark.slow
async def test_a_killed_master_is_replaced_and_both_bridges_deliver_again(
    redis_cluster: RedisCluster,
) -> None:
    owners = spread(redis_cluster)
    channels = sorted(owners)
    victim = owners[channels[0]]
    bridges = [start_bridge(redis_cluster.url, channels) for _ in range(2)]
    try:
        clients = [await Client.connect(f"ws://127.0.0.1:{port}/ws") for _, port in bridges]
        for client in clients:
            await client.pinged()
        sent: dict[str, int] = {}
        async with anyio.create_task_group() as tg:
            tg.start_soon(publish_forever, redis_cluster.url, channels, sent)
            # Warm: every channel reaches both clients.
            for client in clients:
                with anyio.fail_after(scaled(15)):
                    seen: set[str] = set()
                    async for frame in frames(client):
                        seen.add(frame.get("channel", ""))
                        if seen >= set(channels):
                            break
            killed_at = time.monotonic()
            await anyio.to_thread.run_sync(victim.kill)
            recovered: list[float] = []
            for client in clients:
                # "down", then "up", then every channel again: bounded as a whole.
                with anyio.fail_after(scaled(30)):
                    statuses: list[str] = []
                    after_up: set[str] = set()
                    async for frame in frames(client):
                        if frame.get("type") == "broker":
                            statuses.append(frame["status"])
                        elif statuses and statuses[-1] == "up":
                            after_up.add(frame["channel"])
                            if after_up >= set(channels):
                                break
                    # Once each, however many attempts the reconnection took.
                    assert statuses == ["down", "up"], statuses
                recovered.append(time.monotonic() - killed_at)
            # The killed node comes back (as a replica of its replacement): nothing breaks.
            await anyio.to_thread.run_sync(victim.start)
            await anyio.to_thread.run_sync(redis_cluster.wait_healthy)
            for client in clients:
                await client.pinged()
            tg.cancel_scope.cancel()
        assert redis_cluster.owner(channels[0]).port != victim.port
        print(f"every channel delivered again {max(recovered):.2f} s after the kill")
        for client in clients:
            await client.close()
    finally:
        for child, _ in bridges:
            assert child.stop() == 0, child.output()
    for child, _ in bridges:
        assert "Traceback" not in child.output(), child.output()


def test_the_cluster_settings_example_builds_its_broadcasters() -> None:
    namespace = runpy.run_path(str(EXAMPLES / "cluster_settings.py"))
    built = [value for value in namespace.values() if isinstance(value, Broadcaster)]
    assert [b.url.partition("://")[0] for b in built] == ["redis+cluster", "rediss+cluster"]
    assert not any(broadcaster.running for broadcaster in built)  # nothing connected


@pytest.mark.redis
@pytest.mark.slow
async def test_a_migrated_slot_moves_its_subscription_to_the_new_owner(
    redis_cluster: RedisCluster,
) -> None:
    owners = spread(redis_cluster, per_master=1)
    channel = sorted(owners)[0]
    source = owners[channel]
    target = next(node for node in owners.values() if node is not source)
    broadcaster = Broadcaster(redis_cluster.url, probe_interval=0, reconnect_delay=0.05)
    async with broadcaster, broadcaster.subscriber() as subscriber:
        await subscriber.subscribe([channel])
        assert shard_subscribers(source, channel) == 1
        await anyio.to_thread.run_sync(redis_cluster.migrate_slot, channel, target)
        # The source drops the sharded subscription and says so; the bridge follows.
        with anyio.fail_after(scaled(10)):
            statuses = [json.loads(f.text)["status"] for f in await subscriber.get()]
            while statuses[-1] != "up":
                statuses += [json.loads(f.text)["status"] for f in await subscriber.get()]
        assert statuses == ["down", "up"]
        assert shard_subscribers(target, channel) == 1
        assert broadcaster.ready
        await broadcaster.publish(channel, {"moved": True})
        with anyio.fail_after(scaled(10)):
            [frame] = await subscriber.get()
        assert json.loads(frame.text) == {"channel": channel, "data": {"moved": True}}


def test_an_unreadable_slot_map_is_an_unavailable_broker_not_a_crash() -> None:
    from wsbridge.backends.cluster import _slot_map

    with pytest.raises(ValueError, match="slot range"):
        _slot_map([[0, 99999, [b"h", 1]]], ("h", 1))
    with pytest.raises((TypeError, ValueError, IndexError)):
        _slot_map([[b"x"]], ("h", 1))
    slots, masters = _slot_map([[0, 16383, [b"", 7000, b"id"]]], ("10.0.0.1", 7000))
    assert masters == [("10.0.0.1", 7000)]  # an empty host: the address we asked
    assert slots[16383] == ("10.0.0.1", 7000)


@pytest.mark.redis
@pytest.mark.slow
async def test_the_probe_proves_every_shard_connection(shared_redis_cluster: RedisCluster) -> None:
    broadcaster = Broadcaster(shared_redis_cluster.url, probe_interval=0.1, probe_timeout=2)
    async with broadcaster, broadcaster.subscriber() as subscriber:
        await subscriber.subscribe(sorted(spread(shared_redis_cluster, per_master=1)))

        def probes_on_every_master() -> list[bytes]:
            found = []
            for node in shared_redis_cluster.masters():
                with redis.Redis(host=HOST, port=node.port, socket_timeout=scaled(2)) as client:
                    found += client.execute_command("PUBSUB", "SHARDCHANNELS", "__wsbridge:probe:*")
            return found

        await wait_until(lambda: len(probes_on_every_master()) == 3)
        probe = (await anyio.to_thread.run_sync(probes_on_every_master))[0].decode()
        owner = shared_redis_cluster.owner(probe)

        def three_probe_rounds() -> int:
            deadline = time.monotonic() + scaled(10)
            seen = 0
            with redis.Redis(host=HOST, port=owner.port, socket_timeout=scaled(5)) as client:
                pubsub = client.pubsub()
                pubsub.ssubscribe(probe)
                while seen < 3 and time.monotonic() < deadline:
                    message = pubsub.get_sharded_message(timeout=1)
                    if message is not None and message["type"] == "smessage":
                        seen += 1
                pubsub.close()
            return seen

        assert await anyio.to_thread.run_sync(three_probe_rounds) == 3
        stats = broadcaster.stats()
        assert stats.probe_failures == 0
        assert stats.broker_reconnects == 0
        assert stats.ready
        assert subscriber.pending == 0


# -- a hostile node ---------------------------------------------------------------------------


def resp(*items: object) -> bytes:
    """Encode a RESP2 array of bulk strings (bytes/str), integers and nested lists."""

    def one(item: object) -> bytes:
        if isinstance(item, int):
            return b":%d\r\n" % item
        if isinstance(item, list):
            return b"*%d\r\n" % len(item) + b"".join(one(i) for i in item)
        data = item.encode() if isinstance(item, str) else bytes(item)  # type: ignore[arg-type]
        return b"$%d\r\n%s\r\n" % (len(data), data)

    return one(list(items))


def parse_commands(buffer: bytes) -> tuple[list[list[bytes]], bytes]:
    """Split complete RESP commands (arrays of bulk strings) off ``buffer``."""
    commands: list[list[bytes]] = []
    while buffer.startswith(b"*") and b"\r\n" in buffer:
        head, _, rest = buffer.partition(b"\r\n")
        words: list[bytes] = []
        for _ in range(int(head[1:])):
            size_line, sep, rest = rest.partition(b"\r\n")
            if not sep or len(rest) < int(size_line[1:]) + 2:
                return commands, buffer  # incomplete: wait for more
            size = int(size_line[1:])
            words.append(rest[:size])
            rest = rest[size + 2 :]
        commands.append(words)
        buffer = rest
    return commands, buffer


async def test_malformed_sharded_messages_are_ignored_and_the_reader_goes_on() -> None:
    """A node that owns every slot and sends junk among its pushes: nothing breaks."""
    port_box: list[int] = []

    async def node(stream: anyio.abc.SocketStream) -> None:
        buffer = b""
        async with stream:
            while True:
                try:
                    buffer += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return
                commands, buffer = parse_commands(buffer)
                for words in commands:
                    command = words[0].upper()
                    if command == b"PING":
                        await stream.send(b"+PONG\r\n")
                    elif command == b"CLUSTER":
                        slots = [[0, 16383, ["127.0.0.1", port_box[0], "id"]]]
                        await stream.send(resp(*slots))
                    elif command == b"SSUBSCRIBE":
                        await stream.send(resp("ssubscribe", words[1], 1))
                        await stream.send(
                            resp("smessage", "ch", 10**12)  # an integer as the payload
                            + resp("smessage", "ch")  # too short
                            + resp("hello", 1)  # not a push Redis sends
                            + resp("smessage", "ch", '{"ok": true}')
                        )
                    else:
                        await stream.send(b"+OK\r\n")

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port_box.append(listener.extra(anyio.abc.SocketAttribute.local_port))
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, node)
        broadcaster = Broadcaster(
            f"redis+cluster://127.0.0.1:{port_box[0]}/",
            probe_interval=0,
            health_check_interval=0,
        )
        async with broadcaster, broadcaster.subscriber() as subscriber:
            await subscriber.subscribe(["ch"])
            with anyio.fail_after(scaled(10)):
                frames = await subscriber.get()
            assert [json.loads(f.text) for f in frames] == [{"channel": "ch", "data": {"ok": True}}]
            stats = broadcaster.stats()
            assert stats.broker_reconnects == 0
            assert stats.ready
        tg.cancel_scope.cancel()


@pytest.mark.redis
@pytest.mark.slow
async def test_an_acl_denial_refuses_only_that_channel(shared_redis_cluster: RedisCluster) -> None:
    for node in shared_redis_cluster.nodes:  # ACLs are per node in a cluster
        with shared_redis_cluster.client(node) as client:
            client.execute_command(
                "ACL", "SETUSER", "bridge", "on", ">bridge-pw", "~*", "&allowed:*", "+@all"
            )
    broadcaster = Broadcaster(
        shared_redis_cluster.url,
        probe_interval=0,
        backend_options={"username": "bridge", "password": "bridge-pw"},
    )
    async with broadcaster, broadcaster.subscriber() as subscriber:
        with pytest.raises(SubscriptionRefusedError) as refused:
            await subscriber.subscribe(["allowed:1", "secret:1"])
        assert refused.value.channels == ["secret:1"]
        assert subscriber.subscriptions == {"allowed:1"}
        assert broadcaster.stats().broker_reconnects == 0
        assert broadcaster.ready
        await broadcaster.publish("allowed:1", {"n": 1})
        with anyio.fail_after(scaled(10)):
            [frame] = await subscriber.get()
        assert json.loads(frame.text) == {"channel": "allowed:1", "data": {"n": 1}}


@pytest.mark.redis
@pytest.mark.slow
async def test_a_restarted_master_gets_its_subscriptions_back(redis_cluster: RedisCluster) -> None:
    owners = spread(redis_cluster, per_master=1)
    channel = sorted(owners)[0]
    node = owners[channel]
    broadcaster = Broadcaster(redis_cluster.url, probe_interval=0, reconnect_delay=0.05)
    async with broadcaster, broadcaster.subscriber() as subscriber:
        await subscriber.subscribe(sorted(owners))
        await anyio.to_thread.run_sync(node.restart)  # SIGTERM, then back on its port
        with anyio.fail_after(scaled(30)):
            statuses = [json.loads(f.text)["status"] for f in await subscriber.get()]
            while statuses[-1] != "up":
                statuses += [json.loads(f.text)["status"] for f in await subscriber.get()]
        assert statuses == ["down", "up"]
        await anyio.to_thread.run_sync(redis_cluster.wait_healthy)
        # On whichever master owns it now (a slow restart may have let a replica take over).
        await wait_until(lambda: shard_subscribers(redis_cluster.owner(channel), channel) == 1)
        with anyio.fail_after(scaled(10)):
            while True:  # a failover may still move the slot: publish until it arrives
                with contextlib.suppress(BrokerUnavailableError):
                    await broadcaster.publish(channel, {"back": True})
                with anyio.move_on_after(1):
                    [frame] = await subscriber.get()
                    break
        assert json.loads(frame.text) == {"channel": channel, "data": {"back": True}}
