"""The reference document's design, faithfully, flaws included.

FastAPI + uvicorn; every WebSocket connection starts its own Redis subscriber task, and each
subscriber broadcasts every message to every connection through a ``ConnectionManager`` with a
sequential loop of awaited ``send_json`` calls. Consequences the benchmark shows on purpose:

* with N clients connected there are N subscribers, so each client receives each event N times
  and the work per event grows as N squared;
* each subscriber takes a connection from redis-py's shared pool, capped at 100 by default, and
  never gives it back;
* the JSON is decoded per subscriber and re-encoded per client.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import redis.asyncio as aioredis
import uvicorn
from _common import parse_args
from fastapi import APIRouter, FastAPI, WebSocket, WebSocketDisconnect

ARGS = parse_args(__doc__)
CHANNELS = ARGS.channels
_redis: aioredis.Redis | None = None


async def get_redis() -> aioredis.Redis:
    """Return the application's shared Redis client, created on first use."""
    global _redis
    if _redis is None:
        _redis = aioredis.from_url(ARGS.redis, decode_responses=True)
    return _redis


class ConnectionManager:
    """The reference's list of open WebSockets."""

    def __init__(self) -> None:
        self.active_connections: list[WebSocket] = []

    async def connect(self, websocket: WebSocket) -> None:
        """Accept a WebSocket and remember it."""
        await websocket.accept()
        self.active_connections.append(websocket)

    def disconnect(self, websocket: WebSocket) -> None:
        """Forget a WebSocket."""
        if websocket in self.active_connections:
            self.active_connections.remove(websocket)

    async def broadcast(self, message: dict[str, Any]) -> None:
        """Send ``message`` to every connection in turn; drop those that fail."""
        disconnected = []
        for connection in self.active_connections:
            try:
                await connection.send_json(message)
            except Exception:
                disconnected.append(connection)
        for connection in disconnected:
            self.disconnect(connection)


manager = ConnectionManager()
router = APIRouter()


async def redis_subscriber() -> None:
    """Subscribe to every channel and broadcast each message (one of these per connection)."""
    redis = await get_redis()
    pubsub = redis.pubsub()
    await pubsub.subscribe(*CHANNELS)

    async for message in pubsub.listen():
        if message["type"] == "message":
            try:
                data = json.loads(message["data"])
            except json.JSONDecodeError:
                data = {"raw": message["data"]}
            event = {
                "channel": message["channel"],
                "data": data,
            }
            await manager.broadcast(event)


@router.websocket("/ws")
async def websocket_endpoint(websocket: WebSocket) -> None:
    """The reference's endpoint: connect, start a subscriber, answer pings."""
    await manager.connect(websocket)
    subscriber_task = asyncio.create_task(redis_subscriber())

    try:
        while True:
            data = await websocket.receive_text()
            msg = json.loads(data)
            if msg.get("type") == "ping":
                await websocket.send_json({"type": "pong"})
    except WebSocketDisconnect:
        manager.disconnect(websocket)
    finally:
        subscriber_task.cancel()


app = FastAPI()
app.include_router(router)

if __name__ == "__main__":
    uvicorn.run(app, host=ARGS.host, port=ARGS.port, loop=ARGS.loop, log_level="warning")
