"""The in-process broker: the embedded default, with the same delivery rules as Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from wsbridge.backends import BrokerMessage
from wsbridge.channel import glob_match
from wsbridge.exceptions import BrokerClosedError

__all__ = ["MemoryBackend"]


class MemoryBackend:
    """A broker inside this process, for one broadcaster.

    Like Redis, a message is delivered once per matching subscription (one exact, plus one
    per matching pattern). The queue between ``publish`` and the broadcaster is bounded by
    ``max_pending``: when the broadcaster falls behind, ``publish`` waits instead of
    letting memory grow.
    """

    def __init__(self, *, max_pending: int = 10_000) -> None:
        self._max_pending = max_pending
        self._channels: set[str] = set()
        self._patterns: set[str] = set()
        self._send: MemoryObjectSendStream[BrokerMessage] | None = None
        self._receive: MemoryObjectReceiveStream[BrokerMessage] | None = None

    async def connect(self) -> None:
        """Start with an empty queue and no subscriptions."""
        await self.close()
        self._send, self._receive = anyio.create_memory_object_stream[BrokerMessage](
            self._max_pending
        )

    async def close(self) -> None:
        """Drop the queue; pending messages are discarded."""
        self._channels.clear()
        self._patterns.clear()
        if self._send is not None:
            self._send.close()
        if self._receive is not None:
            self._receive.close()
        self._send = self._receive = None

    async def subscribe(self, channels: Sequence[str], patterns: Sequence[str]) -> None:
        """Subscribe to exact channels and patterns."""
        self._channels.update(channels)
        self._patterns.update(patterns)

    async def unsubscribe(self, channels: Sequence[str], patterns: Sequence[str]) -> None:
        """Drop exact channels and patterns."""
        self._channels.difference_update(channels)
        self._patterns.difference_update(patterns)

    async def publish(self, channel: str, data: bytes) -> None:
        """Deliver ``data`` once per matching subscription."""
        if self._send is None:
            raise BrokerClosedError("the memory broker is not connected")
        if channel in self._channels:
            await self._send.send(BrokerMessage(channel, None, data))
        for pattern in [p for p in self._patterns if glob_match(p, channel)]:
            await self._send.send(BrokerMessage(channel, pattern, data))

    async def messages(self) -> AsyncIterator[BrokerMessage]:
        """Yield messages until the backend is closed."""
        receive = self._receive
        if receive is None:
            raise BrokerClosedError("the memory broker is not connected")
        try:
            async for message in receive:
                yield message
        except anyio.ClosedResourceError:
            return

    async def health_check(self) -> None:
        """Nothing to probe in-process."""
