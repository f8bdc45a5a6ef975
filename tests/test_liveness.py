"""The liveness probe of the subscription path, and readiness.

A subscriber made deaf by a proxy that swallows Redis's replies (the connection stays
open) is found by the probe, reconnected and resubscribed; clients hear ``down`` and
``up``, and events flow again. The PING health check is off in these tests so that the
probe alone is on trial.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
import redis.asyncio

from tests.support.redis_server import scaled
from tests.support.tcp_proxy import DeafeningProxy
from wsbridge import Broadcaster, ConfigurationError, Subscriber

pytestmark = pytest.mark.anyio


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


async def next_frame(subscriber: Subscriber, seconds: float = 10) -> Any:
    with anyio.fail_after(scaled(seconds)):
        while True:
            frames = await subscriber.get()
            assert frames, "the subscriber was closed"
            return json.loads(frames[0].text)


def test_probe_settings_are_checked() -> None:
    with pytest.raises(ConfigurationError):
        Broadcaster(probe_timeout=0)
    with pytest.raises(ConfigurationError):
        Broadcaster(probe_interval=-1)


@pytest.mark.redis
async def test_a_deaf_subscriber_is_found_by_the_probe_and_recovers(redis_url: str) -> None:
    async with DeafeningProxy(port_of(redis_url)) as proxy:
        broadcaster = Broadcaster(
            proxy.url,
            health_check_interval=0,
            probe_interval=0.2,
            probe_timeout=0.5,
            reconnect_delay=0.05,
        )
        async with broadcaster, broadcaster.subscriber() as subscriber:
            await subscriber.subscribe(["news"])
            await broadcaster.publish("news", {"n": 1})
            assert await next_frame(subscriber) == {"channel": "news", "data": {"n": 1}}
            assert broadcaster.ready

            assert proxy.deafen() == 1  # the subscription connection, not the publish pool
            await broadcaster.publish("news", {"n": 2})  # published, never delivered
            assert await next_frame(subscriber) == {"type": "broker", "status": "down"}
            stats = broadcaster.stats()
            assert stats.probe_failures == 1
            assert stats.broker_reconnects == 1
            assert not stats.ready
            assert await next_frame(subscriber) == {"type": "broker", "status": "up"}
            assert broadcaster.ready

            await broadcaster.publish("news", {"n": 3})
            assert await next_frame(subscriber) == {"channel": "news", "data": {"n": 3}}


@pytest.mark.redis
async def test_a_quiet_healthy_connection_passes_the_probe(redis_url: str) -> None:
    watcher = redis.asyncio.Redis.from_url(redis_url)
    pubsub = watcher.pubsub()
    try:
        await pubsub.psubscribe("__wsbridge:probe:*")
        broadcaster = Broadcaster(
            redis_url, health_check_interval=0, probe_interval=0.1, probe_timeout=2
        )
        async with broadcaster, broadcaster.subscriber() as subscriber:
            await subscriber.subscribe(["quiet"])
            probes = 0
            with anyio.fail_after(scaled(10)):
                while probes < 3:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                    if message is not None:
                        probes += 1
            stats = broadcaster.stats()
            assert stats.probe_failures == 0
            assert stats.broker_reconnects == 0
            assert stats.probe_age is not None
            assert stats.probe_age < 2 * 0.1 + 2
            assert stats.ready
            assert subscriber.pending == 0  # probes never reach clients
    finally:
        await pubsub.aclose()
        await watcher.aclose()


async def test_the_probe_can_be_turned_off() -> None:
    async with Broadcaster(probe_interval=0.05, probe_timeout=1) as broadcaster:
        assert broadcaster.stats().probe_age is not None
        assert broadcaster.ready
    assert not broadcaster.ready
    async with Broadcaster(probe_interval=0) as off:
        assert off.stats().probe_age is None
        assert off.ready
