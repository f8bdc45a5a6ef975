"""Starlette integration: a WebSocket route for the wsbridge endpoint.

::

    from starlette.applications import Starlette
    from wsbridge import Broadcaster
    from wsbridge.starlette import create_route

    broadcaster = Broadcaster("redis://localhost:6379/0")
    app = Starlette(routes=[create_route(broadcaster, "/ws")], lifespan=broadcaster.lifespan)
"""

from __future__ import annotations

from starlette.routing import Match, Route, WebSocketRoute
from starlette.types import Scope

from wsbridge import health
from wsbridge.asgi import HealthApp, WebSocketApp
from wsbridge.broadcaster import Broadcaster
from wsbridge.endpoint import Endpoint

__all__ = ["create_health_routes", "create_route"]


class _WebSocketRoute(WebSocketRoute):
    """A WebSocket route that also takes a plain ``GET`` or ``HEAD`` on its path."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http" and scope.get("method") in ("GET", "HEAD"):
            match, child = super().matches({**scope, "type": "websocket"})
            return (match, child) if match is Match.FULL else (Match.NONE, {})
        return super().matches(scope)


def create_route(
    target: Endpoint | Broadcaster, path: str = "/ws", *, name: str | None = None
) -> WebSocketRoute:
    """A Starlette ``WebSocketRoute`` serving ``target`` at ``path``.

    A plain ``GET`` on ``path`` gets the answer of
    :meth:`Endpoint.answer_http <wsbridge.endpoint.Endpoint.answer_http>`: the reason a
    handshake would be refused (the JavaScript client asks it), or ``426``.

    The broadcaster is not started by the route: pass ``broadcaster.lifespan`` to the
    application (or enter it in your own lifespan).
    """
    return _WebSocketRoute(path, WebSocketApp(target, lifespan=False), name=name)


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
