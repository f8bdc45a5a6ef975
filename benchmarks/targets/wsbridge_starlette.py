"""wsbridge's Starlette adapter on uvicorn: ``create_route`` with the broadcaster's lifespan.

Exits with status 3 when this checkout of wsbridge does not provide that API.
"""

from __future__ import annotations

import sys

from _common import EXIT_UNAVAILABLE, parse_args

ARGS = parse_args(__doc__)

try:
    import uvicorn
    from starlette.applications import Starlette

    from wsbridge import Broadcaster, Endpoint
    from wsbridge.starlette import create_route
except ImportError as exc:
    print(f"wsbridge_starlette: unavailable: {exc}", file=sys.stderr)
    sys.exit(EXIT_UNAVAILABLE)

broadcaster = Broadcaster(ARGS.redis)
endpoint = Endpoint(broadcaster, channels=ARGS.channels)
app = Starlette(routes=[create_route(endpoint, "/ws")], lifespan=broadcaster.lifespan)

if __name__ == "__main__":
    uvicorn.run(app, host=ARGS.host, port=ARGS.port, loop=ARGS.loop, log_level="warning")
