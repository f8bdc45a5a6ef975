"""Run: python examples/aiohttp_app.py [PORT]   (after pip install -e ".[all]")

An aiohttp application with a live ``/ws`` endpoint for the ten trading channels, on the
broker ``WSBRIDGE_REDIS_URL`` (default: the in-process ``memory://`` broker, no Redis
needed), served by aiohttp's own server. The port is the first argument, else
``WSBRIDGE_PORT``, else 8000.

``POST /trades`` publishes a ``trade:executed`` payload (validated first; 422 names the
wrong fields); ``wsbridge listen ws://127.0.0.1:8000/ws`` shows it.
"""

from __future__ import annotations

import os
import sys

from aiohttp import web

from wsbridge import Broadcaster, BrokerError, EventValidationError
from wsbridge.aiohttp import setup
from wsbridge.trading import registry

BROKER_URL = os.environ.get("WSBRIDGE_REDIS_URL", "memory://")
BROADCASTER = web.AppKey("broadcaster", Broadcaster)


async def record_trade(request: web.Request) -> web.Response:
    """Publish the posted trade to every connected client."""
    try:
        trade = await request.json()
    except ValueError:
        return web.json_response({"error": "the body is not JSON"}, status=400)
    try:
        await request.app[BROADCASTER].publish("trade:executed", trade)
    except EventValidationError as exc:
        return web.json_response({"error": str(exc), "fields": exc.fields}, status=422)
    except BrokerError as exc:
        return web.json_response({"error": str(exc)}, status=503)
    return web.json_response({"published": "trade:executed"}, status=202)


def create_app() -> web.Application:
    """The application: the bridge at /ws (started and stopped with the app), and /trades."""
    app = web.Application()
    endpoint = setup(app, Broadcaster(BROKER_URL, registry=registry), path="/ws")
    app[BROADCASTER] = endpoint.broadcaster
    app.router.add_post("/trades", record_trade)
    return app


if __name__ == "__main__":
    port = int(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("WSBRIDGE_PORT", "8000"))
    host = os.environ.get("WSBRIDGE_HOST", "127.0.0.1")
    web.run_app(create_app(), host=host, port=port)
