"""A small test client over the ``websockets`` library: every wait is bounded."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

from tests.support.redis_server import scaled


class Client:
    """One real WebSocket connection with JSON helpers."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    @classmethod
    async def connect(cls, url: str, **options: Any) -> Client:
        ws = await asyncio.wait_for(
            websockets.connect(url, open_timeout=scaled(10), **options), scaled(15)
        )
        return cls(ws)

    async def send_json(self, value: object) -> None:
        await self.ws.send(json.dumps(value))

    async def send_raw(self, data: str | bytes) -> None:
        await self.ws.send(data)

    async def recv(self, timeout: float = 10) -> Any:
        text = await asyncio.wait_for(self.ws.recv(), scaled(timeout))
        return json.loads(text)

    async def recv_event(self, timeout: float = 10) -> dict[str, Any]:
        """Next frame that is an event (skips control frames such as broker status)."""
        for _ in range(1000):
            frame = await self.recv(timeout)
            if "channel" in frame:
                return frame  # type: ignore[no-any-return]
        raise AssertionError("no event among 1000 frames")

    async def subscribe(self, channels: Sequence[str], request_id: object = None) -> dict[str, Any]:
        frame: dict[str, Any] = {"type": "subscribe", "channels": list(channels)}
        if request_id is not None:
            frame["id"] = request_id
        await self.send_json(frame)
        reply = await self.recv()
        assert reply.get("type") == "subscribed", reply
        return reply  # type: ignore[no-any-return]

    async def closed(self, timeout: float = 10) -> tuple[int | None, str]:
        """Wait until the server closes; return its close code and reason."""
        try:
            for _ in range(100_000):
                await asyncio.wait_for(self.ws.recv(), scaled(timeout))
        except websockets.ConnectionClosed:
            pass
        rcvd = self.ws.protocol.close_rcvd
        return (rcvd.code, rcvd.reason) if rcvd else (None, "")

    async def close(self) -> None:
        await asyncio.wait_for(self.ws.close(), scaled(10))


async def connect_many(url: str, n: int, **options: Any) -> list[Client]:
    return list(await asyncio.gather(*(Client.connect(url, **options) for _ in range(n))))


async def close_all(clients: Sequence[Client]) -> None:
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
