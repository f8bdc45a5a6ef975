"""Build the same endpoint behind every adapter, each on a real server."""

from __future__ import annotations

from typing import Any

from tests.support.servers import (
    AiohttpServer,
    BridgeServer,
    HypercornTrioServer,
    ServerThread,
    UvicornServer,
)
from wsbridge import Endpoint

ADAPTERS = ("asgi", "starlette", "fastapi", "aiohttp", "server")


def serve(adapter: str, endpoint: Endpoint, **server_options: Any) -> ServerThread:
    """A started server exposing ``endpoint`` at ``/ws`` through ``adapter``."""
    broadcaster = endpoint.broadcaster
    server: ServerThread
    if adapter in ("asgi", "asgi-trio"):
        from wsbridge.asgi import WebSocketApp

        app: Any = WebSocketApp(endpoint, path="/ws")
        server = (
            HypercornTrioServer(app)
            if adapter == "asgi-trio"
            else UvicornServer(app, **server_options)
        )
    elif adapter == "starlette":
        from starlette.applications import Starlette

        from wsbridge.starlette import create_route

        app = Starlette(routes=[create_route(endpoint, "/ws")], lifespan=broadcaster.lifespan)
        server = UvicornServer(app, **server_options)
    elif adapter == "fastapi":
        from fastapi import FastAPI

        from wsbridge.fastapi import create_router

        app = FastAPI(lifespan=broadcaster.lifespan)
        app.include_router(create_router(endpoint, path="/ws"))
        server = UvicornServer(app, **server_options)
    elif adapter == "aiohttp":
        from aiohttp import web

        from wsbridge.aiohttp import setup

        app = web.Application()
        setup(app, endpoint, path="/ws")
        server = AiohttpServer(app)
    elif adapter == "server":
        server = BridgeServer(endpoint)
    else:
        raise ValueError(adapter)
    return server.start()
