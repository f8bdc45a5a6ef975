"""Run: python examples/asgi_app.py [PORT]   (after pip install -e ".[all]")

Plain ASGI on uvicorn, no web framework: wsbridge's ``WebSocketApp`` serves ``/ws`` and a
dozen lines of ASGI route ``POST /trades`` to a publish. The broker is
``WSBRIDGE_REDIS_URL`` (default: the in-process ``memory://`` broker, no Redis needed); the
port is the first argument, else ``WSBRIDGE_PORT``, else 8000. Equally:
``uvicorn examples.asgi_app:app --port 8000``.

The endpoint is configured explicitly here: its channels (patterns allowed) and limits.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import uvicorn

from wsbridge import Broadcaster, BrokerError, Endpoint, EventValidationError, SessionLimits
from wsbridge.asgi import Receive, Scope, Send, WebSocketApp
from wsbridge.trading import CHANNELS, registry
from wsbridge.uvicorn import Server

BROKER_URL = os.environ.get("WSBRIDGE_REDIS_URL", "memory://")
MAX_BODY = 64 * 1024

broadcaster = Broadcaster(BROKER_URL, registry=registry)
endpoint = Endpoint(
    broadcaster,
    channels=[*CHANNELS, "news:*"],  # the trading channels and, say, every news channel
    limits=SessionLimits(max_frame_bytes=16 * 1024, max_subscriptions=20),
    idle_timeout=75.0,
)
bridge = WebSocketApp(endpoint, path="/ws")  # also starts the broadcaster on lifespan


async def respond(send: Send, status: int, body: dict[str, Any]) -> None:
    """Send a small JSON response."""
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})


async def record_trade(receive: Receive, send: Send) -> None:
    """Publish the posted trade; bodies are bounded, payloads validated."""
    body = b""
    more = True
    while more:  # ends with the last chunk, or at the size limit
        message = await receive()
        if message["type"] != "http.request":
            return
        body += message.get("body", b"")
        more = message.get("more_body", False)
        if len(body) > MAX_BODY:
            await respond(send, 413, {"error": "body too large"})
            return
    try:
        trade = json.loads(body)
    except ValueError:  # not UTF-8, or not JSON
        await respond(send, 400, {"error": "the body is not JSON"})
        return
    try:
        await broadcaster.publish("trade:executed", trade)
    except EventValidationError as exc:
        await respond(send, 422, {"error": str(exc), "fields": exc.fields})
    except BrokerError as exc:
        await respond(send, 503, {"error": str(exc)})
    else:
        await respond(send, 202, {"published": "trade:executed"})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Route ``POST /trades`` here; everything else (``/ws``, lifespan) to the bridge."""
    if scope["type"] == "http" and scope["path"] == "/trades" and scope["method"] == "POST":
        await record_trade(receive, send)
    else:
        await bridge(scope, receive, send)


if __name__ == "__main__":
    port = int(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("WSBRIDGE_PORT", "8000"))
    host = os.environ.get("WSBRIDGE_HOST", "127.0.0.1")
    # wsbridge's Server closes clients with 1001 on SIGTERM or Ctrl+C and exits 0;
    # plain uvicorn.run closes them with 1012 and ends killed by the signal.
    Server(uvicorn.Config(app, host=host, port=port), broadcaster).run()
