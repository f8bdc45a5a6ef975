"""Health checks for load balancers and orchestrators: liveness and readiness.

* **liveness** (``/healthz``): the process serves. Always ``200`` while it answers at all;
  an orchestrator restarts a process that stops answering.
* **readiness** (``/readyz``): the process can deliver, :attr:`Broadcaster.ready
  <wsbridge.Broadcaster.ready>`: running, connected to the broker, every channel its
  clients hold subscribed and confirmed, the liveness probe of the subscription
  connection recent. ``200`` when ready, else ``503``, so a load balancer sends new
  clients elsewhere while this process reconnects.

Both answer with a small JSON object. Every adapter serves them: ``wsbridge serve`` at
``/healthz`` and ``/readyz``, :class:`wsbridge.asgi.HealthApp` for any ASGI app,
:func:`wsbridge.starlette.create_health_routes`, :func:`wsbridge.fastapi.create_health_router`
and :func:`wsbridge.aiohttp.create_health_handler`.
"""

from __future__ import annotations

from wsbridge import protocol
from wsbridge.broadcaster import Broadcaster
from wsbridge.endpoint import Endpoint

__all__ = ["HEALTHZ", "READYZ", "check"]

HEALTHZ = "/healthz"
"""The conventional liveness path."""

READYZ = "/readyz"
"""The conventional readiness path."""


def check(target: Endpoint | Broadcaster, *, ready: bool) -> tuple[int, str]:
    """Return the HTTP status and JSON body of a liveness (or, with ``ready``, readiness) check.

    Liveness is ``200`` ``{"status": "ok", ...}`` whatever the broker's state. Readiness is
    ``200`` with ``"status": "ready"`` or ``503`` with ``"status": "unavailable"``, and says
    why: ``running``, ``broker_connected``, ``probe_age`` (seconds since the subscription
    connection last proved it delivers, ``null`` with the probe off).
    """
    broadcaster = target.broadcaster if isinstance(target, Endpoint) else target
    body: dict[str, object] = {"status": "ok"}
    status = 200
    if ready:
        stats = broadcaster.stats()
        status = 200 if stats.ready else 503
        body = {
            "status": "ready" if stats.ready else "unavailable",
            "running": broadcaster.running,
            "broker_connected": stats.broker_connected,
            "upstream_subscriptions": stats.upstream_subscriptions,
            "probe_age": None if stats.probe_age is None else round(stats.probe_age, 3),
            "probe_failures": stats.probe_failures,
            "broker_reconnects": stats.broker_reconnects,
        }
    if isinstance(target, Endpoint):
        body["connections"] = target.connections
    return status, protocol.dumps(body) + "\n"
