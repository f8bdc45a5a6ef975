"""Starlette integration: a WebSocket route for the wsbridge endpoint.

::

    from starlette.applications import Starlette
    from wsbridge import Broadcaster
    from wsbridge.starlette import create_route

    broadcaster = Broadcaster("redis://localhost:6379/0")
    app = Starlette(routes=[create_route(broadcaster, "/ws")], lifespan=broadcaster.lifespan)
"""

from __future__ import annotations

from starlette.routing import Route, WebSocketRoute

from wsbridge import health
from wsbridge.asgi import HealthApp, WebSocketApp
from wsbridge.broadcaster import Broadcaster
from wsbridge.endpoint import Endpoint

__all__ = ["create_health_routes", "create_route"]


def create_route(
    target: Endpoint | Broadcaster, path: str = "/ws", *, name: str | None = None
) -> WebSocketRoute:
    """A Starlette ``WebSocketRoute`` serving ``target`` at ``path``.

    The broadcaster is not started by the route: pass ``broadcaster.lifespan`` to the
    application (or enter it in your own lifespan).
    """
    return WebSocketRoute(path, WebSocketApp(target, lifespan=False), name=name)


def create_health_routes(
    target: Endpoint | Broadcaster,
    *,
    healthz: str = health.HEALTHZ,
    readyz: str = health.READYZ,
) -> list[Route]:
    """Liveness and readiness routes (``GET``) for load balancers; see :mod:`wsbridge.health`."""
    return [
        Route(healthz, HealthApp(target), methods=["GET", "HEAD"]),
        Route(readyz, HealthApp(target, ready=True), methods=["GET", "HEAD"]),
    ]
