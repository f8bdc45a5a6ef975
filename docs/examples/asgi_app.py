"""Plain ASGI: the endpoint as a whole application, for any ASGI server."""

from wsbridge import Broadcaster, Endpoint
from wsbridge.asgi import WebSocketApp
from wsbridge.trading import registry

broadcaster = Broadcaster("redis://localhost:6379/0", registry=registry)

# Serves WebSocket connections on /ws; starts and stops the broadcaster on the ASGI
# lifespan events; answers plain HTTP requests with 426 Upgrade Required (404 off /ws).
app = WebSocketApp(Endpoint(broadcaster), path="/ws")
