"""Broker backends: the small protocol every broker implements, and selection by URL.

``memory://`` is the in-process broker (the embedded default). ``redis://``,
``rediss://`` and ``unix://`` use Redis pub/sub through redis-py's asyncio client,
imported only when such a URL is used (install the ``redis`` extra).
``redis+cluster://`` and ``rediss+cluster://`` use Redis Cluster's sharded pub/sub
(:mod:`wsbridge.backends.cluster`, the ``cluster`` extra).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

from wsbridge.exceptions import ConfigurationError
from wsbridge.history import History, Page, Position

__all__ = ["Backend", "BrokerMessage", "HistoryBackend", "backend_from_url"]


class BrokerMessage(NamedTuple):
    """One message as the broker delivered it.

    ``pattern`` is the pattern subscription that matched, or ``None`` for an exact one.
    A broker delivers a message once per matching subscription, as Redis does.
    """

    channel: str
    pattern: str | None
    data: bytes


@runtime_checkable
class Backend(Protocol):
    """What wsbridge needs from a message broker.

    One backend instance holds one subscription connection. ``messages()`` yields until
    the connection is lost, then raises :class:`~wsbridge.BrokerUnavailableError`; the
    broadcaster then calls ``connect()`` again and subscribes everything anew. Every
    method may raise ``BrokerUnavailableError`` when the broker cannot be reached.

    A backend with several subscription connections (one per Redis Cluster shard) may
    also offer ``probe_channels(prefix) -> list[str]``: one channel per connection, so
    that the broadcaster's liveness probe proves each of them; without it, the probe uses
    one channel.
    """

    async def connect(self) -> None:
        """Open (or reopen) the connection; start with no subscriptions."""

    async def close(self) -> None:
        """Close the connection and release everything; safe to call twice."""

    async def subscribe(self, channels: Sequence[str], patterns: Sequence[str]) -> None:
        """Subscribe to exact channels and patterns; return once the broker confirmed."""

    async def unsubscribe(self, channels: Sequence[str], patterns: Sequence[str]) -> None:
        """Drop exact channels and patterns."""

    async def publish(self, channel: str, data: bytes) -> None:
        """Publish one message."""

    def messages(self) -> AsyncIterator[BrokerMessage]:
        """Yield incoming messages in the broker's order."""
        ...

    async def health_check(self) -> None:
        """Probe the connection; make ``messages()`` fail if the broker stopped answering."""


@runtime_checkable
class HistoryBackend(Protocol):
    """A backend that keeps channel history and latest values (memory and Redis do).

    A backend without these methods still works: publications then carry no offset.
    """

    async def append(
        self, channel: str, data: bytes, history: History | None, latest: bool
    ) -> Position | None:
        """Publish; with ``history``, give it the next offset and keep it, atomically.

        ``latest``: also keep ``data`` as the channel's latest value. Returns the
        publication's position, ``None`` without history.
        """
        ...

    async def read_history(self, channel: str, history: History, after: int, limit: int) -> Page:
        """The channel's position and at most ``limit`` publications after ``after``.

        An epoch is started for a channel that has none; publications come oldest first.
        """
        ...

    async def latest(self, channel: str) -> bytes | None:
        """The latest value :meth:`append` kept for ``channel``, or ``None``."""
        ...


def backend_from_url(url: str, **options: Any) -> Backend:
    """Create the backend a URL names; ``options`` go to the backend's constructor."""
    scheme, sep, _ = url.partition("://")
    if not sep:
        raise ConfigurationError(
            f"broker URL {url!r} has no scheme; try 'memory://' or 'redis://host:6379/0'"
        )
    scheme = scheme.lower()
    if scheme == "memory":
        from wsbridge.backends.memory import MemoryBackend

        return MemoryBackend(**options)
    if scheme in ("redis", "rediss", "unix"):
        try:
            from wsbridge.backends.redis import RedisBackend
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ConfigurationError(
                "the Redis backend needs redis-py: pip install 'wsbridge-py[redis]'"
            ) from exc
        return RedisBackend(url, **options)
    if scheme in ("redis+cluster", "rediss+cluster"):
        try:
            from wsbridge.backends.cluster import RedisClusterBackend
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ConfigurationError(
                "the Redis Cluster backend needs redis-py: pip install 'wsbridge-py[cluster]'"
            ) from exc
        return RedisClusterBackend(url, **options)
    raise ConfigurationError(
        f"unknown broker URL scheme {scheme!r}; expected memory, redis, rediss, unix, "
        "redis+cluster or rediss+cluster"
    )
