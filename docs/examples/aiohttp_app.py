"""aiohttp: the WebSocket handler plus the broadcaster's startup and cleanup hooks."""

from aiohttp import web

from wsbridge import Broadcaster, Endpoint
from wsbridge.aiohttp import setup
from wsbridge.trading import registry

broadcaster = Broadcaster("redis://localhost:6379/0", registry=registry)


async def health(request: web.Request) -> web.Response:
    return web.json_response({"broker_connected": broadcaster.broker_connected})


def create_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/health", health)
    setup(app, Endpoint(broadcaster), path="/ws")
    return app


if __name__ == "__main__":
    web.run_app(create_app(), host="127.0.0.1", port=8000)
