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

    ``router_options`` go to ``APIRouter`` (a ``prefix``, ``tags``...). Start the
    broadcaster with the app's lifespan: ``FastAPI(lifespan=broadcaster.lifespan)``.
    """
    router = APIRouter(**router_options)
    # Routes appended by hand do not get the router's prefix applied: add it here.
    router.routes.append(create_route(target, router.prefix + path, name=name))
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
