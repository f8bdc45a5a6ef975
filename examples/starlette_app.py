"""Run: python examples/starlette_app.py [PORT]   (after pip install -e ".[all]")

A Starlette app with a live ``/ws`` endpoint for the ten trading channels, on the broker
``WSBRIDGE_REDIS_URL`` (default: the in-process ``memory://`` broker, no Redis needed).
The port is the first argument, else ``WSBRIDGE_PORT``, else 8000.

``POST /trades`` with a ``trade:executed`` payload publishes it (validated first: a wrong
payload gets 422 and names the fields); ``wsbridge listen ws://127.0.0.1:8000/ws`` shows it.
"""

from __future__ import annotations

import os
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from wsbridge import Broadcaster, BrokerError, EventValidationError
from wsbridge.starlette import create_route
from wsbridge.trading import registry
from wsbridge.uvicorn import Server

BROKER_URL = os.environ.get("WSBRIDGE_REDIS_URL", "memory://")

broadcaster = Broadcaster(BROKER_URL, registry=registry)


async def record_trade(request: Request) -> JSONResponse:
    """Publish the posted trade to every connected client."""
    try:
        trade = await request.json()
    except ValueError:
        return JSONResponse({"error": "the body is not JSON"}, status_code=400)
    try:
        await broadcaster.publish("trade:executed", trade)
    except EventValidationError as exc:
        return JSONResponse({"error": str(exc), "fields": exc.fields}, status_code=422)
    except BrokerError as exc:
        return JSONResponse({"error": str(exc)}, status_code=503)
    return JSONResponse({"published": "trade:executed"}, status_code=202)


app = Starlette(
    routes=[create_route(broadcaster, "/ws"), Route("/trades", record_trade, methods=["POST"])],
    lifespan=broadcaster.lifespan,
)

if __name__ == "__main__":
    port = int(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("WSBRIDGE_PORT", "8000"))
    host = os.environ.get("WSBRIDGE_HOST", "127.0.0.1")
    # wsbridge's Server closes clients with 1001 on SIGTERM or Ctrl+C and exits 0;
    # plain uvicorn.run closes them with 1012 and ends killed by the signal.
    Server(uvicorn.Config(app, host=host, port=port), broadcaster).run()
