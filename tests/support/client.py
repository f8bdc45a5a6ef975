"""A small test client over the ``websockets`` library: every wait is bounded."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.frames import Frame as WireFrame
from websockets.frames import Opcode

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

    async def pinged(self, timeout: float = 10) -> None:
        """Send a ping and return once its pong has arrived.

        Events the server sent first are skipped: a server that publishes on its own (the
        demo) may fan one out to this client between its subscriptions and its pong.
        """
        await self.send_json({"type": "ping"})
        for _ in range(1000):
            frame = await self.recv(timeout)
            if frame == {"type": "pong"}:
                return
            assert "channel" in frame, frame
        raise AssertionError("no pong among 1000 frames")

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


class StalledClient:
    """A WebSocket client that completes the handshake, then never reads.

    Its socket's receive buffer is tiny, so the server's writes back up quickly. ``drain``
    later reads everything the server sent, with websockets' sans-I/O parser.
    """

    def __init__(self, port: int, path: str = "/ws") -> None:
        import socket

        from websockets.client import ClientProtocol
        from websockets.uri import parse_uri

        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(scaled(10))
        self.sock.connect(("127.0.0.1", port))
        self.protocol = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}{path}"), max_size=None)
        self.protocol.send_request(self.protocol.connect())
        self.sock.sendall(b"".join(self.protocol.data_to_send()))
        for _ in range(100):
            self.protocol.receive_data(self.sock.recv(4096))
            if self.protocol.handshake_exc is not None:
                raise self.protocol.handshake_exc
            if self.protocol.state.name == "OPEN":
                break
        assert self.protocol.state.name == "OPEN"
        self.protocol.events_received()  # the handshake response

    def drain(self, max_bytes: int = 64 * 1024 * 1024) -> tuple[list[str], int | None]:
        """Read until the server closes; return the text frames and the close code."""
        texts: list[str] = []
        received = 0
        while received < max_bytes:
            chunk = self.sock.recv(65536)
            if not chunk:
                self.protocol.receive_eof()
            else:
                received += len(chunk)
                self.protocol.receive_data(chunk)
            for event in self.protocol.events_received():
                if isinstance(event, WireFrame) and event.opcode is Opcode.TEXT:
                    texts.append(bytes(event.data).decode())
            if self.protocol.close_rcvd is not None or not chunk:
                break
        rcvd = self.protocol.close_rcvd
        return texts, (rcvd.code if rcvd else None)

    def close(self) -> None:
        self.sock.close()
