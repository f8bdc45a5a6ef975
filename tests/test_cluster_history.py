"""Channel history on the Redis Cluster backend, against a real cluster.

History keys live on the shard of their channel (hash tags, braces in names included),
the history publish runs on that shard and sends the live message with ``SPUBLISH``,
reads and resumes follow the channel's owner, and a failover ends the channel's epoch
rather than hand out an offset twice. The failover test kills a master under load with
two ``wsbridge serve`` processes, each with clients resuming through the Python client,
and checks every client's sequence of every channel against what the publisher was told.
"""

from __future__ import annotations

import json
import subprocess
from importlib.resources import files
from typing import Any

import anyio
import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from tests.support.processes import Child, wsbridge_command
from tests.support.redis_cluster import RedisCluster, find_redis_cli
from tests.support.redis_server import HOST, RedisServer, scaled
from wsbridge import Broadcaster, BrokerUnavailableError
from wsbridge.backends.cluster import RedisClusterBackend
from wsbridge.backends.redis import history_keys
from wsbridge.broadcaster import Subscriber
from wsbridge.history import History, Position, parse_envelope
from wsbridge.schema import DeliveryKind, Registry

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
    async with Broadcaster(url, registry=registry(), probe_interval=0) as bridge:
        async with bridge.subscriber() as live:
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
    async with Broadcaster(url, registry=registry(), probe_interval=0) as fresh:
        async with fresh.subscriber() as newcomer:
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
        done = subprocess.run(
            documented_command(shared_redis_cluster, other, channel),
            capture_output=True,
            text=True,
            timeout=scaled(20),
            check=False,
        )
        assert done.returncode == 0, done.stderr
        message = pubsub.get_sharded_message(timeout=scaled(5))
        assert message is not None and message["type"] == "smessage"
        first = parse_envelope(message["data"])
        assert first is not None and first[1:] == (1, b'{"n":1}')
        assert done.stdout.split() == [first[0], "1"]
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
        assert second is not None and second[:2] == (first[0], 2)
        assert json.loads(second[2])["symbol"] == "AAPL"
        pubsub.close()


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
        with redis_cluster.client(owner) as node:
            assert node.wait(1, int(scaled(5) * 1000)) == 1  # the replica has both
        replica = replica_of(redis_cluster, owner)
        with redis_cluster.client(replica) as node:
            # Even a failover that loses nothing: the new master cannot know that.
            node.execute_command("CLUSTER", "FAILOVER")
        with anyio.fail_after(scaled(20)):
            while redis_cluster.owner(channel).port != replica.port:
                await anyio.sleep(0.05)
        with anyio.fail_after(scaled(20)):
            while True:
                try:
                    page = await backend.read_history(channel, HISTORY, 0, 10)
                    break
                except BrokerUnavailableError:  # the client's slot map catches up
                    await anyio.sleep(0.1)
        assert page.position.epoch != epoch
        assert page.position.offset == 0 and page.entries == []
        after = await backend.append(channel, b'{"n":3}', HISTORY, False)
        assert after == Position(page.position.epoch, 1)
    finally:
        await backend.close()
