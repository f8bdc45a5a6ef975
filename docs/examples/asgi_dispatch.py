"""Plain ASGI: put the endpoint in front of another ASGI application."""

from wsbridge import Broadcaster, Endpoint
from wsbridge.asgi import WebSocketApp
from wsbridge.trading import registry


async def existing_app(scope, receive, send):
    """Stands for your HTTP application (any ASGI app that serves HTTP only)."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": b"hello from the HTTP app\n"})


broadcaster = Broadcaster("redis://localhost:6379/0", registry=registry)
websocket_app = WebSocketApp(Endpoint(broadcaster), path="/ws")


async def app(scope, receive, send):
    if scope["type"] == "http":
        await existing_app(scope, receive, send)
    else:
        # "websocket" and "lifespan": the lifespan starts and stops the broadcaster.
        await websocket_app(scope, receive, send)
