"""Prometheus exposition of a broadcaster's counters (install the ``prometheus`` extra).

::

    from prometheus_client import make_asgi_app
    from wsbridge.prometheus import register

    register(broadcaster)                      # into prometheus_client's default registry
    app.mount("/metrics", make_asgi_app())     # FastAPI / Starlette

Values are read from :meth:`Broadcaster.stats` at scrape time: nothing is counted twice
and the fan-out path does no extra work for metrics.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from wsbridge.broadcaster import Broadcaster

__all__ = ["BroadcasterCollector", "register"]

_COUNTERS = (
    ("messages_in", "Broker messages received on a subscribed channel or pattern"),
    ("messages_out", "Frames handed to client connections"),
    ("bytes_out", "Bytes of frames handed to client connections"),
    ("conflated", "State frames replaced by a newer value for a slow client"),
    ("dropped", "Frames dropped for clients with the drop overflow policy"),
    ("slow_consumer_disconnects", "Clients disconnected because their outbox was full"),
    ("broker_reconnects", "Times the broker connection was lost and re-established"),
    ("validation_failures", "Broker messages that failed their channel's schema"),
    ("subscriptions_refused", "Subscriptions the broker refused (an ACL denial, say)"),
    ("payloads_too_large", "Broker messages dropped for exceeding max_payload_bytes"),
    ("dispatch_errors", "Broker messages skipped after an error while delivering them"),
    ("probe_failures", "Liveness probes the subscription connection did not deliver back"),
    ("invalid_envelopes", "Broker messages dropped for a malformed history envelope"),
    ("replayed", "Events delivered from channel history (resumes and catch-ups)"),
    ("recoveries_failed", "Resumes or catch-ups that could not recover what was missed"),
)
_PER_CHANNEL = (
    "conflated",
    "dropped",
    "validation_failures",
    "invalid_envelopes",
    "recoveries_failed",
)


class BroadcasterCollector(Collector):
    """A prometheus_client collector reading one broadcaster's :class:`~wsbridge.Stats`."""

    def __init__(self, broadcaster: Broadcaster, *, namespace: str = "wsbridge") -> None:
        self.broadcaster = broadcaster
        self.namespace = namespace

    def collect(self) -> Iterator[Metric]:
        """Yield the current values, one metric family each."""
        stats = self.broadcaster.stats()
        ns = self.namespace
        yield GaugeMetricFamily(
            f"{ns}_connections", "Open client connections", value=stats.connections
        )
        yield GaugeMetricFamily(
            f"{ns}_subscriptions",
            "Channels and patterns held by clients",
            value=stats.subscriptions,
        )
        yield GaugeMetricFamily(
            f"{ns}_upstream_subscriptions",
            "Broker subscriptions held by this process (one per channel or pattern)",
            value=stats.upstream_subscriptions,
        )
        yield GaugeMetricFamily(
            f"{ns}_broker_connected",
            "1 while the broker connection is up",
            value=int(stats.broker_connected),
        )
        yield GaugeMetricFamily(
            f"{ns}_ready",
            "1 while the process can deliver (what /readyz answers): see Broadcaster.ready",
            value=int(stats.ready),
        )
        if stats.probe_age is not None:
            yield GaugeMetricFamily(
                f"{ns}_probe_age_seconds",
                "Seconds since the subscription connection last proved it delivers",
                value=stats.probe_age,
            )
        for name, doc in _COUNTERS:
            yield CounterMetricFamily(f"{ns}_{name}", doc, value=getattr(stats, name))
        for name in _PER_CHANNEL:
            family = CounterMetricFamily(
                f"{ns}_channel_{name}",
                f"{name.replace('_', ' ').capitalize()}, per channel",
                labels=["channel"],
            )
            for channel, counters in stats.per_channel.items():
                if name in counters:
                    family.add_metric([channel], counters[name])
            yield family


def register(
    broadcaster: Broadcaster, registry: CollectorRegistry = REGISTRY, *, namespace: str = "wsbridge"
) -> BroadcasterCollector:
    """Register a collector for ``broadcaster`` and return it."""
    collector = BroadcasterCollector(broadcaster, namespace=namespace)
    registry.register(collector)
    return collector
