"""encode/broadcaster with Starlette, written the way broadcaster's README shows.

One ``Broadcast("redis://...")`` for the process (one Redis connection), connected in the
application's lifespan (Starlette 1.x has no ``on_startup``). Each WebSocket runs, in an anyio
task group as in the README, a receiver that answers pings and one sender per channel that
iterates ``broadcast.subscribe(channel)`` and sends each event. Broadcaster hands every
subscriber the raw message string, so the frame is built per client; it is wrapped by string
formatting rather than decoded and re-encoded, the cheapest correct way for the valid JSON the
benchmark publishes.

Known traps (broadcaster 0.3.1):

* when several clients subscribe to an idle channel at the same moment, each overwrites the
  others' registration and all but one silently receive nothing; the harness therefore connects
  and warms up one client before the others;
* with redis-py 8 its Redis listener never delivers anything: it is woken before the first
  ``SUBSCRIBE`` is registered, finds no subscription, and waits for good. This target therefore
  runs in its own virtualenv with redis-py 7 (``benchmarks/requirements-broadcaster.txt``,
  created by ``python benchmarks/run.py --setup``) and refuses to start with redis-py 8.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import AsyncIterator
from importlib.metadata import version

import anyio
import uvicorn
from _common import EXIT_UNAVAILABLE, parse_args
from broadcaster import Broadcast
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

ARGS = parse_args(__doc__)
if int(version("redis").split(".")[0]) >= 8:
    print(
        f"broadcaster_starlette: unavailable: broadcaster {version('broadcaster')} delivers "
        f"nothing with redis-py {version('redis')}; run `python benchmarks/run.py --setup`",
        file=sys.stderr,
    )
    sys.exit(EXIT_UNAVAILABLE)
PONG = json.dumps({"type": "pong"})
broadcast = Broadcast(ARGS.redis)


async def ws_endpoint(websocket: WebSocket) -> None:
    """Serve one client: a receiver for pings and a sender per channel, as in the README."""
    await websocket.accept()

    async with anyio.create_task_group() as task_group:

        async def run_receiver() -> None:
            await ws_receiver(websocket)
            task_group.cancel_scope.cancel()

        task_group.start_soon(run_receiver)
        for channel in ARGS.channels:
            task_group.start_soon(ws_sender, websocket, channel)


async def ws_receiver(websocket: WebSocket) -> None:
    """Answer ``{"type":"ping"}`` with ``{"type":"pong"}`` until the client leaves."""
    async for message in websocket.iter_text():
        try:
            msg = json.loads(message)
        except json.JSONDecodeError:
            continue
        if isinstance(msg, dict) and msg.get("type") == "ping":
            await websocket.send_text(PONG)


async def ws_sender(websocket: WebSocket, channel: str) -> None:
    """Forward every event of ``channel`` to this client in the reference wire format."""
    prefix = '{"channel":' + json.dumps(channel) + ',"data":'
    async with broadcast.subscribe(channel=channel) as subscriber:
        async for event in subscriber:
            await websocket.send_text(prefix + event.message + "}")


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    """Connect the broadcaster for the application's lifetime."""
    await broadcast.connect()
    try:
        yield
    finally:
        await broadcast.disconnect()


app = Starlette(routes=[WebSocketRoute("/ws", ws_endpoint)], lifespan=lifespan)

if __name__ == "__main__":
    uvicorn.run(app, host=ARGS.host, port=ARGS.port, loop=ARGS.loop, log_level="warning")
