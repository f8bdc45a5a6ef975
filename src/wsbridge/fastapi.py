"""FastAPI integration: a router holding the wsbridge WebSocket route.

::

    from fastapi import FastAPI
    from wsbridge import Broadcaster
    from wsbridge.fastapi import create_router

    broadcaster = Broadcaster("redis://localhost:6379/0")
    app = FastAPI(lifespan=broadcaster.lifespan)
    app.include_router(create_router(broadcaster, path="/ws"))
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.routing import Route

from wsbridge import health
from wsbridge.broadcaster import Broadcaster
from wsbridge.endpoint import Endpoint
from wsbridge.starlette import create_health_routes, create_route

__all__ = ["create_health_router", "create_router"]


def create_router(
    target: Endpoint | Broadcaster,
    *,
    path: str = "/ws",
    name: str | None = "wsbridge",
    **router_options: Any,
) -> APIRouter:
    """An ``APIRouter`` with one WebSocket route serving ``target`` at ``path``.

    A plain ``GET`` on ``path`` gets the answer of
    :meth:`Endpoint.answer_http <wsbridge.endpoint.Endpoint.answer_http>` (the reason a
    handshake would be refused), as with :func:`wsbridge.starlette.create_route`.

    ``router_options`` go to ``APIRouter`` (a ``prefix``, ``tags``...). Start the
    broadcaster with the app's lifespan: ``FastAPI(lifespan=broadcaster.lifespan)``.
    """
    router = APIRouter(**router_options)
    # Routes appended by hand do not get the router's prefix applied: add it here.
    route = create_route(target, router.prefix + path, name=name)
    # include_router may rebuild the WebSocket route as a plain one, which takes no GET:
    # this route answers the JavaScript client's plain GET (Endpoint.answer_http) then.
    app: Any = route.endpoint
    answer = Route(route.path, app, methods=["GET", "HEAD"], include_in_schema=False)
    router.routes.extend([route, answer])
    return router


def create_health_router(
    target: Endpoint | Broadcaster,
    *,
    healthz: str = health.HEALTHZ,
    readyz: str = health.READYZ,
    **router_options: Any,
) -> APIRouter:
    """An ``APIRouter`` with the liveness and readiness routes (see :mod:`wsbridge.health`).

    They are plain routes, left out of the OpenAPI schema.
    """
    router = APIRouter(**router_options)
    prefix = router.prefix
    router.routes.extend(
        create_health_routes(target, healthz=prefix + healthz, readyz=prefix + readyz)
    )
    return router
