from __future__ import annotations

import anyio
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from wsbridge import Broadcaster, DeliveryKind, Registry
from wsbridge.prometheus import register

pytestmark = pytest.mark.anyio


async def test_counters_are_exposed() -> None:
    from pydantic import BaseModel

    class Quote(BaseModel):
        price: float

    schemas = Registry()
    schemas.register("quote", Quote, kind=DeliveryKind.STATE)
    broadcaster = Broadcaster(registry=schemas)
    metrics = CollectorRegistry()
    register(broadcaster, metrics)
    async with broadcaster, broadcaster.subscriber() as sub:
        await sub.subscribe(["quote", "x:*"])
        await broadcaster._backend.publish("quote", b'{"price": "bad"}')
        await broadcaster.publish("x:1", 1)
        with anyio.fail_after(5):
            frames = await sub.get()
            if len(frames) < 2:
                frames += await sub.get()
        text = generate_latest(metrics).decode()
    assert "wsbridge_connections 1.0" in text
    assert "wsbridge_upstream_subscriptions 2.0" in text
    assert "wsbridge_messages_in_total 2.0" in text
    assert "wsbridge_validation_failures_total 1.0" in text
    assert 'wsbridge_channel_validation_failures_total{channel="quote"} 1.0' in text
    assert "wsbridge_broker_connected 1.0" in text


async def test_readiness_and_the_probe_are_exposed() -> None:
    broadcaster = Broadcaster(probe_interval=30)
    metrics = CollectorRegistry()
    register(broadcaster, metrics)
    assert "wsbridge_ready 0.0" in generate_latest(metrics).decode()
    async with broadcaster:
        text = generate_latest(metrics).decode()
    assert "wsbridge_ready 1.0" in text
    assert "wsbridge_probe_failures_total 0.0" in text
    assert "wsbridge_probe_age_seconds " in text
