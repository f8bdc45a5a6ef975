"""A WebSocket client on a bare TCP socket, for tests that need every bit under control.

It sends exactly the ``Sec-WebSocket-Extensions`` offer it is given (or none), returns
each frame as it arrived (FIN, RSV1, opcode, payload: compressed or not), and sends frames
with whatever RSV1 bit and payload the test chooses. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import struct
import zlib
from dataclasses import dataclass

from tests.support.redis_server import scaled

__all__ = ["RawClient", "RawFrame", "deflate", "inflate", "parse_extension"]

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA
_TAIL = b"\x00\x00\xff\xff"


@dataclass(frozen=True)
class RawFrame:
    """One frame as read from the socket."""

    fin: bool
    rsv1: bool
    opcode: int
    payload: bytes
    wire: bytes

    @property
    def close_code(self) -> int:
        """The code of a close frame."""
        assert self.opcode == CLOSE, self
        assert len(self.payload) >= 2, self
        return int(struct.unpack("!H", self.payload[:2])[0])


def inflate(payload: bytes, window_bits: int = 15, limit: int = 1 << 24) -> bytes:
    """Decompress one permessage-deflate message compressed without context takeover."""
    decoder = zlib.decompressobj(-window_bits)
    data = decoder.decompress(payload + _TAIL, limit)
    assert not decoder.unconsumed_tail, "message larger than the test's limit"
    return data


def deflate(data: bytes, compressor: zlib._Compress | None = None, window_bits: int = 15) -> bytes:
    """Compress one message as a permessage-deflate client would.

    Pass the same ``compressor`` for every message to keep the context (context takeover).
    """
    if compressor is None:
        compressor = zlib.compressobj(6, zlib.DEFLATED, -window_bits)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(_TAIL)
    return out[:-4]


def parse_extension(header: str | None) -> dict[str, str | None] | None:
    """``permessage-deflate; a; b=1`` as ``{"a": None, "b": "1"}``; ``None`` if absent."""
    if header is None:
        return None
    name, *params = (part.strip() for part in header.split(";"))
    assert name == "permessage-deflate", header
    parsed: dict[str, str | None] = {}
    for param in params:
        key, _, value = param.partition("=")
        parsed[key.strip()] = value.strip().strip('"') or None
    return parsed


class RawClient:
    """One connection: ``connect``, then ``send_frame`` and ``recv_frame``."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        status: int,
        headers: dict[str, str],
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.status = status
        self.headers = headers

    @classmethod
    async def connect(
        cls, port: int, *, extensions: str | None = None, path: str = "/ws"
    ) -> RawClient:
        """Open the connection and complete the handshake (any status is returned)."""
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), scaled(10)
        )
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        if extensions is not None:
            lines.append(f"Sec-WebSocket-Extensions: {extensions}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), scaled(10))
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers: dict[str, str] = {}
        for line in header_lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        return cls(reader, writer, int(status_line.split()[1]), headers)

    @property
    def extension(self) -> dict[str, str | None] | None:
        """The negotiated permessage-deflate parameters, ``None`` without the extension."""
        return parse_extension(self.headers.get("sec-websocket-extensions"))

    async def recv_frame(self, timeout: float = 10) -> RawFrame:
        """The next frame, as it came."""
        head = await asyncio.wait_for(self.reader.readexactly(2), scaled(timeout))
        length = head[1] & 0x7F
        extra = b""
        if length == 126:
            extra = await asyncio.wait_for(self.reader.readexactly(2), scaled(timeout))
            length = struct.unpack("!H", extra)[0]
        elif length == 127:
            extra = await asyncio.wait_for(self.reader.readexactly(8), scaled(timeout))
            length = struct.unpack("!Q", extra)[0]
        assert not head[1] & 0x80, "server frames are never masked"
        payload = await asyncio.wait_for(self.reader.readexactly(length), scaled(timeout))
        return RawFrame(
            fin=bool(head[0] & 0x80),
            rsv1=bool(head[0] & 0x40),
            opcode=head[0] & 0x0F,
            payload=payload,
            wire=head + extra + payload,
        )

    async def recv_data(self, timeout: float = 10) -> RawFrame:
        """The next text or binary frame (pings and pongs are skipped)."""
        for _ in range(1000):
            frame = await self.recv_frame(timeout)
            if frame.opcode not in (PING, PONG):
                return frame
        raise AssertionError("no data frame among 1000 frames")

    async def send_frame(
        self, payload: bytes, *, opcode: int = TEXT, rsv1: bool = False, fin: bool = True
    ) -> None:
        """Send one masked frame."""
        first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
        n = len(payload)
        if n < 126:
            header = bytes((first, 0x80 | n))
        elif n < 65536:
            header = bytes((first, 0x80 | 126)) + struct.pack("!H", n)
        else:
            header = bytes((first, 0x80 | 127)) + struct.pack("!Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(header + mask + masked)
        await asyncio.wait_for(self.writer.drain(), scaled(10))

    async def close(self) -> None:
        """Drop the connection."""
        self.writer.close()
        with contextlib.suppress(ConnectionError, TimeoutError):
            await asyncio.wait_for(self.writer.wait_closed(), scaled(10))
