"""Redis pub/sub backend on redis-py's asyncio client.

One dedicated connection carries every subscription of the process; publishes go through
a connection pool (at most ``max_connections``, 100 by default; more concurrent commands
wait for a connection, within ``command_timeout``). URLs:
``redis://[[user]:[password]@]host:port/db``, ``rediss://...`` (TLS; ``ssl_*`` options such
as ``ssl_ca_certs`` are passed through) and ``unix:///path/to/socket``. Any keyword option
of ``redis.asyncio.BlockingConnectionPool.from_url`` (``password``, ``username``,
``ssl_certfile``, ``max_connections``, ...) can be given to the backend.
"""

from __future__ import annotations

import functools
import math
from collections import deque
from collections.abc import AsyncIterator, Sequence
from importlib.resources import files
from typing import Any

import anyio
from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection, parse_url
from redis.commands.core import AsyncScript
from redis.crc import key_slot
from redis.exceptions import RedisError, ResponseError

from wsbridge.backends import BrokerMessage
from wsbridge.exceptions import (
    BrokerClosedError,
    BrokerUnavailableError,
    ConfigurationError,
    SubscriptionRefusedError,
)
from wsbridge.history import History, Page, Position, new_epoch

__all__ = ["PendingCommand", "RedisBackend", "history_keys", "history_page"]

_FAILURES = (RedisError, OSError, TimeoutError)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def history_page(reply: Any) -> Page:
    """The :class:`~wsbridge.history.Page` in a reply of the history read script.

    The script answers ``[epoch, top offset, [[entry id, [field, value, ...]], ...]]``
    on a single Redis and on a cluster's shard alike.
    """
    entries: list[tuple[int, bytes]] = []
    for entry_id, fields in reply[2]:
        offset = int(_text(entry_id).partition("-")[2])
        values = dict(zip(fields[::2], fields[1::2], strict=False))
        entries.append((offset, values.get(b"d", b"")))
    return Page(Position(_text(reply[0]), int(reply[1])), entries)


# The reply kind each command of the subscription connection gets, once per argument.
_REPLY_KIND = {
    "SUBSCRIBE": b"subscribe",
    "PSUBSCRIBE": b"psubscribe",
    "UNSUBSCRIBE": b"unsubscribe",
    "PUNSUBSCRIBE": b"punsubscribe",
    "PING": b"pong",
}


def _script(name: str) -> str:
    return files("wsbridge.backends").joinpath(name).read_text(encoding="utf-8")


def _hash_tag(channel: str) -> str | None:
    """The part of ``channel`` Redis Cluster hashes: its first non-empty ``{...}``, or all."""
    start = channel.find("{")
    if start >= 0:
        end = channel.find("}", start + 1)
        if end > start + 1:
            return channel[start + 1 : end]
    return None if "}" in channel or not channel else channel


@functools.cache
def _slot_tag(slot: int) -> str:
    """The smallest number whose text hashes to ``slot`` (searched once per slot)."""
    n = 0
    while key_slot(str(n).encode()) != slot:
        n += 1
    return str(n)


def history_keys(channel: str) -> tuple[str, str, str]:
    """The Redis keys of a channel's history stream, its epoch and offset, its latest value.

    The keys carry a hash tag that Redis Cluster hashes to the slot of the channel itself,
    so they live on the shard that carries its sharded pub/sub: ``wsbridge:{<channel>}:``
    for a name without braces. A name with braces has its own hash tag (Redis hashes the
    first non-empty ``{...}``): the keys are ``wsbridge:{<that tag>}:<channel>:``, and for
    the rare name whose hashed part holds a ``}`` (``a}b``, ``x{}y``) the tag is the
    smallest number that hashes to the same slot.
    """
    if channel and "{" not in channel and "}" not in channel:
        prefix = "wsbridge:{" + channel + "}:"
    else:
        tag = _hash_tag(channel)
        if tag is None:
            tag = _slot_tag(key_slot(channel.encode("utf-8", "surrogatepass")))
        prefix = "wsbridge:{" + tag + "}:" + channel + ":"
    return prefix + "h", prefix + "m", prefix + "l"


def _seconds(value: float) -> int:
    return max(1, math.ceil(value))


class PendingCommand:
    """A command sent on a subscription connection, still owed ``left`` replies.

    Redis answers in order, so a queue of these tells which command an error reply
    answers (the cluster backend keeps one queue per shard connection).
    """

    __slots__ = ("keys", "kind", "left")

    def __init__(self, kind: bytes, keys: tuple[str, ...]) -> None:
        self.kind = kind
        self.keys = keys
        self.left = max(len(keys), 1)


class RedisBackend:
    """Redis pub/sub, with subscription confirmations and a PING health check.

    ``connect_timeout`` bounds opening a connection, ``command_timeout`` bounds a publish
    and the wait for a subscription's confirmation. Both fail with
    :class:`~wsbridge.BrokerUnavailableError`, never hang.
    """

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float = 5.0,
        command_timeout: float = 5.0,
        **redis_options: Any,
    ) -> None:
        try:
            # Parsed now so that a bad port or db fails at construction with one line,
            # not later inside the broker reader. The URL is not repeated: it may hold a
            # password.
            parse_url(url)
        except ValueError as exc:
            raise ConfigurationError(f"invalid Redis URL: {exc}") from None
        self._url = url
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._options = redis_options
        self._pool: ConnectionPool | None = None
        self._client: Redis | None = None
        self._conn: AbstractConnection | None = None
        self._write_lock = anyio.Lock()
        self._confirmations: dict[tuple[bytes, str], anyio.Event] = {}
        # Redis answers in order, and an error reply names no command: this is how an
        # error is traced back to the SUBSCRIBE it refuses.
        self._pending: deque[PendingCommand] = deque()
        self._refused: dict[tuple[bytes, str], str] = {}
        self._awaiting_pong = False
        self._publish_script: AsyncScript | None = None
        self._read_script: AsyncScript | None = None

    @property
    def url(self) -> str:
        """The URL this backend connects to."""
        return self._url

    def _make_pool(self) -> ConnectionPool:
        options: dict[str, Any] = {
            "socket_connect_timeout": self._connect_timeout,
            "socket_timeout": self._command_timeout,
            "health_check_interval": 0,
            # RESP2 everywhere: pub/sub replies are plain arrays on every server version,
            # and redis-py's newer RESP3 default routes them to push handlers instead.
            "protocol": 2,
            # A thousand clients resuming at once read history concurrently: beyond the
            # pool's connections a command waits for one (bounded), it does not fail.
            "max_connections": 100,
            "timeout": self._command_timeout,
        }
        options.update(self._options)
        return BlockingConnectionPool.from_url(self._url, **options)

    async def connect(self) -> None:
        """Open the subscription connection (and the publish pool on first use)."""
        await self._drop_subscriber()
        self._write_lock = anyio.Lock()
        if self._pool is None:
            self._pool = self._make_pool()
            self._client = Redis(connection_pool=self._pool)
        kwargs = dict(self._pool.connection_kwargs)
        # Subscriptions stay idle for long stretches: only the health check may time out.
        kwargs["socket_timeout"] = None
        conn: AbstractConnection = self._pool.connection_class(**kwargs)
        try:
            with anyio.fail_after(self._connect_timeout * 2):
                await conn.connect()  # type: ignore[no-untyped-call]
                # A server that wants a password we did not give accepts the connection and
                # refuses every command: find out now, not at the first SUBSCRIBE.
                await conn.send_command("PING")
                await conn.read_response()
        except _FAILURES as exc:
            await conn.disconnect()
            raise BrokerUnavailableError(f"cannot connect to Redis: {exc}") from exc
        self._conn = conn
        self._awaiting_pong = False

    async def _drop_subscriber(self) -> None:
        conn, self._conn = self._conn, None
        for event in self._confirmations.values():
            event.set()
        self._confirmations.clear()
        self._pending.clear()
        self._refused.clear()
        if conn is not None:
            with anyio.CancelScope(shield=True):
                await conn.disconnect(nowait=True)

    async def close(self) -> None:
        """Close the subscription connection and the publish pool."""
        await self._drop_subscriber()
        client, self._client = self._client, None
        pool, self._pool = self._pool, None
        self._publish_script = self._read_script = None
        with anyio.CancelScope(shield=True):
            if client is not None:
                await client.aclose()
            if pool is not None:
                await pool.disconnect()

    def _connection(self) -> AbstractConnection:
        if self._conn is None:
            raise BrokerUnavailableError("not connected to Redis")
        return self._conn

    async def _send(self, *args: str) -> None:
        conn = self._connection()
        try:
            async with self._write_lock:
                with anyio.fail_after(self._command_timeout):
                    self._pending.append(PendingCommand(_REPLY_KIND[args[0]], args[1:]))
                    await conn.send_command(*args)
        except _FAILURES as exc:
            raise BrokerUnavailableError(f"lost the Redis subscription connection: {exc}") from exc

    async def subscribe(self, channels: Sequence[str], patterns: Sequence[str]) -> None:
        """SUBSCRIBE and PSUBSCRIBE, then wait for Redis to confirm each one.

        Raises :class:`~wsbridge.SubscriptionRefusedError` for the names Redis refused
        (an ACL denial refuses the whole command), after every confirmation came in.
        """
        waits = [(b"subscribe", ch) for ch in channels] + [(b"psubscribe", p) for p in patterns]
        events = [self._confirmations.setdefault(key, anyio.Event()) for key in waits]
        if channels:
            await self._send("SUBSCRIBE", *channels)
        if patterns:
            await self._send("PSUBSCRIBE", *patterns)
        try:
            with anyio.fail_after(self._command_timeout):
                for event in events:
                    await event.wait()
        except TimeoutError as exc:
            raise BrokerUnavailableError("Redis did not confirm a subscription in time") from exc
        if self._conn is None:
            raise BrokerUnavailableError("lost the Redis connection while subscribing")
        refused = [(key, self._refused.pop(key)) for key in waits if key in self._refused]
        if refused:
            raise SubscriptionRefusedError([key[1] for key, _ in refused], refused[0][1])

    async def unsubscribe(self, channels: Sequence[str], patterns: Sequence[str]) -> None:
        """UNSUBSCRIBE and PUNSUBSCRIBE; Redis answers in order, no need to wait."""
        if channels:
            await self._send("UNSUBSCRIBE", *channels)
        if patterns:
            await self._send("PUNSUBSCRIBE", *patterns)

    async def publish(self, channel: str, data: bytes) -> None:
        """PUBLISH, failing within ``command_timeout`` if Redis cannot be reached."""
        client = self._client
        if client is None:
            raise BrokerClosedError("the Redis backend is not connected")
        try:
            with anyio.fail_after(self._command_timeout):
                await client.publish(channel, data)
        except _FAILURES as exc:
            raise BrokerUnavailableError(f"cannot publish to {channel!r}: {exc}") from exc

    def _scripts(self) -> tuple[Redis, AsyncScript, AsyncScript]:
        client = self._client
        if client is None:
            raise BrokerClosedError("the Redis backend is not connected")
        if self._publish_script is None or self._read_script is None:
            # EVALSHA, falling back to EVAL when the server does not know the script yet
            # (after a restart, or on first use).
            self._publish_script = client.register_script(_script("history_publish.lua"))
            self._read_script = client.register_script(_script("history_read.lua"))
        return client, self._publish_script, self._read_script

    async def append(
        self, channel: str, data: bytes, history: History | None, latest: bool
    ) -> Position | None:
        """Publish ``data``: with history, it gets the next offset and is kept (one script).

        ``latest``: also keep it as the channel's latest value. Returns the publication's
        position, or ``None`` without history.
        """
        _, script, _ = self._scripts()
        keys = history_keys(channel)
        size = 0 if history is None else history.size
        ttl = 1 if history is None else _seconds(history.ttl)
        meta_ttl = _seconds(History().meta_ttl if history is None else history.meta_ttl)
        args: list[str | bytes | int] = [
            channel,
            data,
            size,
            ttl,
            meta_ttl,
            new_epoch(),
            "1" if latest else "0",
        ]
        try:
            with anyio.fail_after(self._command_timeout):
                reply = await script(keys=list(keys), args=args)
        except _FAILURES as exc:
            raise BrokerUnavailableError(f"cannot publish to {channel!r}: {exc}") from exc
        if history is None:
            return None
        return Position(_text(reply[0]), int(reply[1]))

    async def read_history(self, channel: str, history: History, after: int, limit: int) -> Page:
        """The channel's position, and up to ``limit`` publications after offset ``after``."""
        _, _, script = self._scripts()
        keys = history_keys(channel)
        args: list[str | int] = [f"0-{after + 1}", limit, new_epoch(), _seconds(history.meta_ttl)]
        try:
            with anyio.fail_after(self._command_timeout):
                reply = await script(keys=list(keys[:2]), args=args)
        except _FAILURES as exc:
            raise BrokerUnavailableError(f"cannot read the history of {channel!r}: {exc}") from exc
        return history_page(reply)

    async def latest(self, channel: str) -> bytes | None:
        """The latest value kept for ``channel`` by :meth:`append`, or ``None``."""
        client, _, _ = self._scripts()
        try:
            with anyio.fail_after(self._command_timeout):
                value = await client.get(history_keys(channel)[2])
        except _FAILURES as exc:
            raise BrokerUnavailableError(f"cannot read the latest {channel!r}: {exc}") from exc
        return value if isinstance(value, bytes) else None

    async def messages(self) -> AsyncIterator[BrokerMessage]:
        """Yield messages until the connection fails (then raise BrokerUnavailableError)."""
        conn = self._connection()
        confirmations = self._confirmations
        pending = self._pending
        while True:
            try:
                reply = await conn.read_response()
            except ResponseError as exc:
                self._refuse(exc)
                continue
            except _FAILURES as exc:
                raise BrokerUnavailableError(
                    f"lost the Redis subscription connection: {exc}"
                ) from exc
            if isinstance(reply, list) and reply:
                kind = reply[0]
            elif reply in (b"PONG", "PONG"):
                # PING on a connection with no subscription gets a plain PONG, not the
                # subscribed-mode ["pong", ""]: serve with no client yet is such a case.
                kind = b"pong"
            else:
                continue
            if kind == b"message":
                yield BrokerMessage(_text(reply[1]), None, reply[2])
                continue
            if kind == b"pmessage":
                yield BrokerMessage(_text(reply[2]), _text(reply[1]), reply[3])
                continue
            if pending:
                head = pending[0]
                head.left -= 1
                if head.left <= 0:
                    pending.popleft()
            if kind in (b"subscribe", b"psubscribe"):
                event = confirmations.pop((kind, _text(reply[1])), None)
                if event is not None:
                    event.set()
            elif kind == b"pong":
                self._awaiting_pong = False

    def _refuse(self, exc: ResponseError) -> None:
        # An error reply answers the oldest command still owed a reply, all of it: Redis
        # checks every channel of a SUBSCRIBE before subscribing any.
        head = self._pending.popleft() if self._pending else None
        if head is None or head.kind not in (b"subscribe", b"psubscribe"):
            raise BrokerUnavailableError(f"Redis answered with an error: {exc}") from exc
        for key in head.keys:
            event = self._confirmations.pop((head.kind, key), None)
            self._refused[(head.kind, key)] = str(exc)
            if event is not None:
                event.set()

    async def health_check(self) -> None:
        """Send PING; if the previous PING got no answer, the connection is dead."""
        self._connection()
        if self._awaiting_pong:
            await self._drop_subscriber()
            raise BrokerUnavailableError("Redis stopped answering PING")
        self._awaiting_pong = True
        await self._send("PING")
