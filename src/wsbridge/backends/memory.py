"""The in-process broker: the embedded default, with the same delivery rules as Redis."""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from wsbridge.backends import BrokerMessage
from wsbridge.channel import glob_match
from wsbridge.exceptions import BrokerClosedError
from wsbridge.history import History, Page, Position, encode_envelope, new_epoch

__all__ = ["MemoryBackend"]


class _Kept:
    """One channel's history in this process, as Redis keeps it."""

    __slots__ = ("entries", "epoch", "expires", "history_expires", "top")

    def __init__(self, epoch: str) -> None:
        self.epoch = epoch
        self.top = 0
        self.entries: deque[tuple[int, bytes]] = deque()
        self.expires = 0.0
        self.history_expires = 0.0


class MemoryBackend:
    """A broker inside this process, for one broadcaster.

    Like Redis, a message is delivered once per matching subscription (one exact, plus one
    per matching pattern). The queue between ``publish`` and the broadcaster is bounded by
    ``max_pending``: when the broadcaster falls behind, ``publish`` waits instead of
    letting memory grow.

    Channel history and latest values are kept in this process, with the same sizes,
    expiry and epochs as in Redis; they are lost when the backend is garbage collected,
    not when it reconnects.
    """

    def __init__(self, *, max_pending: int = 10_000) -> None:
        self._max_pending = max_pending
        self._channels: set[str] = set()
        self._patterns: set[str] = set()
        self._send: MemoryObjectSendStream[BrokerMessage] | None = None
        self._receive: MemoryObjectReceiveStream[BrokerMessage] | None = None
        self._kept: dict[str, _Kept] = {}
        self._latest: dict[str, tuple[bytes, float]] = {}

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

    def _history(self, channel: str, meta_ttl: float, now: float) -> _Kept:
        kept = self._kept.get(channel)
        if kept is None or kept.expires <= now:
            kept = self._kept[channel] = _Kept(new_epoch())
            kept.expires = now + meta_ttl
        if kept.history_expires <= now:
            kept.entries.clear()
        return kept

    async def append(
        self, channel: str, data: bytes, history: History | None, latest: bool
    ) -> Position | None:
        """Publish ``data``; with history, give it the next offset and keep it."""
        if self._send is None:
            raise BrokerClosedError("the memory broker is not connected")
        now = time.monotonic()
        position = None
        message = data
        if history is not None:
            kept = self._history(channel, history.meta_ttl, now)
            kept.top += 1
            kept.entries.append((kept.top, data))
            while len(kept.entries) > history.size:
                kept.entries.popleft()
            kept.expires = now + history.meta_ttl
            kept.history_expires = now + history.ttl
            position = Position(kept.epoch, kept.top)
            message = encode_envelope(kept.epoch, kept.top, data)
        if latest:
            ttl = (history or History()).meta_ttl
            self._latest[channel] = (data, now + ttl)
        await self.publish(channel, message)
        return position

    async def read_history(self, channel: str, history: History, after: int, limit: int) -> Page:
        """The channel's position, and at most ``limit`` publications after ``after``."""
        kept = self._history(channel, history.meta_ttl, time.monotonic())
        entries: list[tuple[int, bytes]] = []
        if limit > 0 and kept.entries:
            # Offsets in the deque are consecutive: skip straight to the first one wanted.
            start = max(0, after + 1 - kept.entries[0][0])
            entries = list(itertools.islice(kept.entries, start, start + limit))
        return Page(Position(kept.epoch, kept.top), entries)

    async def latest(self, channel: str) -> bytes | None:
        """The latest value kept for ``channel``, or ``None``."""
        found = self._latest.get(channel)
        if found is None or found[1] <= time.monotonic():
            return None
        return found[0]

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
