"""wsbridge's FastAPI adapter on uvicorn: ``create_router`` with the broadcaster's lifespan.

Exits with status 3 when this checkout of wsbridge does not provide that API.
"""

from __future__ import annotations

import sys

from _common import EXIT_UNAVAILABLE, parse_args

ARGS = parse_args(__doc__)

try:
    import uvicorn
    from fastapi import FastAPI

    from wsbridge import Broadcaster, Endpoint
    from wsbridge.fastapi import create_router
except ImportError as exc:
    print(f"wsbridge_fastapi: unavailable: {exc}", file=sys.stderr)
    sys.exit(EXIT_UNAVAILABLE)

broadcaster = Broadcaster(ARGS.redis)
app = FastAPI(lifespan=broadcaster.lifespan)
app.include_router(create_router(Endpoint(broadcaster, channels=ARGS.channels), path="/ws"))

if __name__ == "__main__":
    uvicorn.run(app, host=ARGS.host, port=ARGS.port, loop=ARGS.loop, log_level="warning")
