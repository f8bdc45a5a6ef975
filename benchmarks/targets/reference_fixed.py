"""The reference design with the obvious fix: one shared Redis subscriber.

FastAPI + uvicorn. A single subscriber task is started in the application's lifespan; each
Redis message is decoded and encoded once, then sent to every connection by a plain loop of
awaited ``send_text`` calls (one slow client still delays the others: nothing isolates them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
import uvicorn
from _common import parse_args
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

ARGS = parse_args(__doc__)
PONG = json.dumps({"type": "pong"})


class ConnectionManager:
    """The open WebSockets, and a broadcast that awaits each send in turn."""

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

    async def broadcast_text(self, text: str) -> None:
        """Send an already-encoded frame to every connection; drop those that fail."""
        for connection in list(self.active_connections):
            try:
                await connection.send_text(text)
            except Exception:
                self.disconnect(connection)


manager = ConnectionManager()


async def redis_subscriber(client: aioredis.Redis) -> None:
    """The one subscriber: decode and encode each message once, then broadcast it."""
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(*ARGS.channels)
    try:
        async for message in pubsub.listen():
            if message["type"] != "message":
                continue
            try:
                data = json.loads(message["data"])
            except json.JSONDecodeError:
                data = {"raw": message["data"]}
            text = json.dumps({"channel": message["channel"], "data": data})
            await manager.broadcast_text(text)
    finally:
        await pubsub.aclose()


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start the shared subscriber with the application and stop it with it."""
    client = aioredis.from_url(ARGS.redis, decode_responses=True)
    task = asyncio.create_task(redis_subscriber(client))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.aclose()


app = FastAPI(lifespan=lifespan)


@app.websocket("/ws")
async def websocket_endpoint(websocket: WebSocket) -> None:
    """Register the connection and answer its pings until it goes away."""
    await manager.connect(websocket)
    try:
        while True:
            data = await websocket.receive_text()
            try:
                msg = json.loads(data)
            except json.JSONDecodeError:
                continue
            if isinstance(msg, dict) and msg.get("type") == "ping":
                await websocket.send_text(PONG)
    except WebSocketDisconnect:
        pass
    finally:
        manager.disconnect(websocket)


if __name__ == "__main__":
    uvicorn.run(app, host=ARGS.host, port=ARGS.port, loop=ARGS.loop, log_level="warning")
