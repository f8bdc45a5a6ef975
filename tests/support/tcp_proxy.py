"""A TCP proxy in front of Redis that can make a subscriber deaf without closing it.

``deafen()`` stops forwarding what Redis sends to every connection that has issued a
``SUBSCRIBE`` so far: the connection stays open, writes still reach Redis, and nothing
comes back, which is how a subscriber dies silently behind a broken middlebox. Other
connections (the publish pool) and connections opened afterwards are untouched.
Runs in the test's own asyncio loop; ``aclose()`` ends every task it started.
"""

from __future__ import annotations

import asyncio
import contextlib

from tests.support.redis_server import HOST

__all__ = ["DeafeningProxy"]


class _Link:
    __slots__ = ("deaf", "subscriber")

    def __init__(self) -> None:
        self.subscriber = False
        self.deaf = False


class DeafeningProxy:
    """Forward 127.0.0.1:``port`` to a Redis on ``target_port``."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: list[_Link] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.deafened = 0

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0`` through the proxy."""
        return f"redis://{HOST}:{self.port}/0"

    async def start(self) -> DeafeningProxy:
        """Listen on a free port."""
        self._server = await asyncio.start_server(self._accept, HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def deafen(self) -> int:
        """Stop delivering Redis's replies to every subscriber so far; return how many."""
        count = 0
        for link in self._links:
            if link.subscriber and not link.deaf:
                link.deaf = True
                count += 1
        self.deafened += count
        return count

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        link = _Link()
        self._links.append(link)
        try:
            up_reader, up_writer = await asyncio.open_connection(HOST, self.target_port)
        except OSError:
            writer.close()
            self._tasks.discard(task)
            return
        try:
            await asyncio.gather(
                self._pump(reader, up_writer, link, upstream=True),
                self._pump(up_reader, writer, link, upstream=False),
            )
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in (writer, up_writer):
                w.close()
            self._tasks.discard(task)

    @staticmethod
    async def _pump(
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        link: _Link,
        *,
        upstream: bool,
    ) -> None:
        while True:
            data = await source.read(65536)
            if not data:
                sink.close()
                return
            if upstream and b"SUBSCRIBE" in data.upper():
                link.subscriber = True
            if not upstream and link.deaf:
                continue  # swallowed: the client waits for bytes that never come
            sink.write(data)
            await sink.drain()

    async def aclose(self) -> None:
        """Stop listening and close every proxied connection."""
        if self._server is not None:
            self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> DeafeningProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
