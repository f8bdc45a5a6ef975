"""wsbridge's aiohttp adapter on aiohttp's own server: ``setup(app, endpoint)``.

Exits with status 3 when this checkout of wsbridge does not provide that API.
"""

from __future__ import annotations

import sys

from _common import EXIT_UNAVAILABLE, parse_args

ARGS = parse_args(__doc__)

try:
    from aiohttp import web

    from wsbridge import Broadcaster, Endpoint
    from wsbridge.aiohttp import setup
except ImportError as exc:
    print(f"wsbridge_aiohttp: unavailable: {exc}", file=sys.stderr)
    sys.exit(EXIT_UNAVAILABLE)

app = web.Application()
setup(app, Endpoint(Broadcaster(ARGS.redis), channels=ARGS.channels), path="/ws")

if __name__ == "__main__":
    loop = None
    if ARGS.loop != "asyncio":  # uvloop when installed, as the uvicorn targets do
        try:
            import uvloop

            loop = uvloop.new_event_loop()
        except ImportError:
            if ARGS.loop == "uvloop":
                raise
    web.run_app(app, host=ARGS.host, port=ARGS.port, print=None, loop=loop)
