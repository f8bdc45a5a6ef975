"""The ``websockets`` library's own asyncio server with ``broadcast()``: the pure-Python ceiling.

One Redis subscription for the process; each message is decoded and encoded once and handed to
``websockets.asyncio.server.broadcast``, which writes the frame to every open connection
synchronously, with no task per client and no backpressure (a slow client's buffer grows).
"""

from __future__ import annotations

import json

import redis.asyncio as aioredis
from _common import parse_args, run_loop
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

ARGS = parse_args(__doc__)
PONG = json.dumps({"type": "pong"})
CLIENTS: set[ServerConnection] = set()


async def handler(websocket: ServerConnection) -> None:
    """Register the connection and answer its pings until it goes away."""
    CLIENTS.add(websocket)
    try:
        async for message in websocket:
            try:
                msg = json.loads(message)
            except (TypeError, ValueError):
                continue
            if isinstance(msg, dict) and msg.get("type") == "ping":
                await websocket.send(PONG)
    except ConnectionClosed:
        pass
    finally:
        CLIENTS.discard(websocket)


def only_ws_path(connection: ServerConnection, request: Request) -> Response | None:
    """Refuse any path but ``/ws``."""
    if request.path != "/ws":
        return connection.respond(404, "not found\n")
    return None


async def relay(client: aioredis.Redis) -> None:
    """Read the one subscription and broadcast each message, encoded once."""
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(*ARGS.channels)
    async for message in pubsub.listen():
        if message["type"] != "message":
            continue
        try:
            data = json.loads(message["data"])
        except json.JSONDecodeError:
            data = {"raw": message["data"]}
        broadcast(CLIENTS, json.dumps({"channel": message["channel"], "data": data}))


async def main() -> None:
    """Serve ``/ws`` and relay Redis until the process is stopped."""
    client = aioredis.from_url(ARGS.redis, decode_responses=True)
    async with serve(handler, ARGS.host, ARGS.port, process_request=only_ws_path):
        await relay(client)


if __name__ == "__main__":
    run_loop(main(), ARGS.loop)
