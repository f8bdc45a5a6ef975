"""Starlette: a WebSocket route, started and stopped by the application's lifespan."""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from wsbridge import Broadcaster
from wsbridge.starlette import create_route
from wsbridge.trading import registry

broadcaster = Broadcaster("redis://localhost:6379/0", registry=registry)


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"broker_connected": broadcaster.broker_connected})


app = Starlette(
    routes=[Route("/health", health), create_route(broadcaster, "/ws")],
    lifespan=broadcaster.lifespan,
)
