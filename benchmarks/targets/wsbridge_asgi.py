"""wsbridge's ASGI adapter on uvicorn, with its defaults (slow-client isolation on).

``WebSocketApp(Endpoint(broadcaster, channels=[...]))`` is a complete ASGI application: it handles
the lifespan protocol (which starts and stops the broadcaster) and serves the WebSocket route.
Exits with status 3 when this checkout of wsbridge does not provide that API yet.
"""

from __future__ import annotations

import sys

from _common import EXIT_UNAVAILABLE, parse_args

ARGS = parse_args(__doc__)

try:
    import uvicorn

    from wsbridge import Broadcaster, Endpoint
    from wsbridge.asgi import WebSocketApp
except ImportError as exc:  # the API has not landed in this checkout
    print(f"wsbridge_asgi: unavailable: {exc}", file=sys.stderr)
    sys.exit(EXIT_UNAVAILABLE)

broadcaster = Broadcaster(ARGS.redis)
app = WebSocketApp(Endpoint(broadcaster, channels=ARGS.channels))

if __name__ == "__main__":
    uvicorn.run(app, host=ARGS.host, port=ARGS.port, loop=ARGS.loop, log_level="warning")
