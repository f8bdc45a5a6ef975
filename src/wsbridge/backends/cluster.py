"""Redis Cluster backend: sharded pub/sub (``SSUBSCRIBE`` / ``SPUBLISH``), Redis 7.0+.

URLs: ``redis+cluster://[[user]:[password]@]host:port[,host:port...]/`` names one or more
startup nodes (any node of the cluster will do; more than one survives that node being
down) and ``rediss+cluster://...`` does the same over TLS (``ssl_*`` options such as
``ssl_ca_certs`` are passed through, as are ``username``, ``password`` and
``client_name``).

A sharded channel lives on the shard that owns its hash slot, and ``SPUBLISH`` sends a
message to that shard only, where classic ``PUBLISH`` on a cluster is copied to every
node. So this backend keeps one subscription connection per master that owns a
subscribed channel, each channel subscribed once, on its owner. The connections are its
own rather than redis-py's cluster pub/sub: every subscription is confirmed before
``subscribe`` returns, a refusal is traced to the names it refuses, and a topology change
is noticed, whatever the redis-py version.

When the cluster changes under a subscription (its master dies, its replica is promoted,
its slot migrates and the server drops the sharded subscription) the whole backend
reports the loss: the broadcaster reconnects, this backend reads the new slot map, and
every channel is subscribed again on its new owner. Publishing goes through redis-py's
``RedisCluster`` client, which follows ``MOVED`` redirections and refreshes its own map.

Patterns cannot be sharded, and a pattern subscription on a cluster would never see a
``SPUBLISH``: subscribing a pattern is refused with
:class:`~wsbridge.SubscriptionRefusedError` (clients get a ``subscription_refused`` error
for it), never silently left deaf.

Channel history works as on one Redis, on the channel's shard: its keys carry a hash tag
of the channel's slot (:func:`~wsbridge.backends.redis.history_keys`), and the same Lua
scripts run there, with ``SPUBLISH`` for the live message. Replication to replicas is
asynchronous, so a promoted replica may lack the last publications its master made and
delivered; continuing the epoch there would give their offsets to other publications.
The scripts therefore keep the id of the node that wrote a channel's epoch, and a node
that finds another's id starts a new epoch (after a failover, or a slot migration):
subscribers of the channel are then told it was not recovered, never given a reused
offset.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
from collections import Counter, deque
from collections.abc import AsyncIterator, Sequence
from importlib.resources import files
from typing import Any
from urllib.parse import unquote

import anyio
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection, Connection, SSLConnection
from redis.crc import key_slot
from redis.exceptions import NoPermissionError, NoScriptError, RedisError, ResponseError

from wsbridge.backends import BrokerMessage
from wsbridge.backends.redis import PendingCommand, history_keys, history_page
from wsbridge.exceptions import (
    BrokerClosedError,
    BrokerUnavailableError,
    ConfigurationError,
    SubscriptionRefusedError,
)
from wsbridge.history import History, Page, Position, new_epoch

__all__ = ["RedisClusterBackend", "parse_cluster_url"]

_FAILURES = (RedisError, OSError, TimeoutError)
# The cluster client's commands: redis-py's asyncio connection may also raise
# AttributeError or TypeError when it writes to a connection the node just closed (a node
# that died), instead of ConnectionError: the node is as unavailable either way.
_CLIENT_FAILURES = (*_FAILURES, AttributeError, TypeError)
_SLOTS = 16384
_SCHEMES = {"redis+cluster": False, "rediss+cluster": True}
# Options that mean the same to one node's connection and to the cluster client.
_PASSED = {"username", "password", "client_name"}
# The reader hands messages to the broadcaster through this many slots: a reader that
# runs ahead waits instead of growing memory.
_QUEUE = 1024
PATTERN_REFUSAL = "Redis Cluster pub/sub is sharded by channel: patterns are not supported"
"""The reason given when a pattern is subscribed on the cluster backend."""

Address = tuple[str, int]


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def parse_cluster_url(url: str) -> tuple[list[Address], dict[str, Any]]:
    """Split a ``redis+cluster://`` URL into its startup nodes and connection options.

    Raises :class:`~wsbridge.ConfigurationError` for another scheme, no node, a port that
    is not a number, a database other than 0 (a cluster has only database 0) or a query.
    """
    scheme, sep, rest = url.partition("://")
    tls = _SCHEMES.get(scheme.lower())
    if not sep or tls is None:
        raise ConfigurationError(f"not a Redis Cluster URL: {url!r}")
    netloc, _, path = rest.partition("/")
    if "?" in netloc or "?" in path:
        raise ConfigurationError("Redis Cluster URLs take no query; pass options instead")
    if path not in ("", "0"):
        raise ConfigurationError(f"a Redis Cluster has only database 0, not {path!r}")
    options: dict[str, Any] = {}
    userinfo, at, hosts = netloc.rpartition("@")
    if at:
        user, colon, password = userinfo.partition(":")
        if user:
            options["username"] = unquote(user)
        if colon:
            options["password"] = unquote(password)
    nodes: list[Address] = []
    for item in hosts.split(","):
        host, colon, port = item.strip().rpartition(":")
        if not colon:
            host, port = item.strip(), "6379"
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigurationError(f"bad node {item!r} in Redis Cluster URL")
        nodes.append((host, int(port)))
    if tls:
        options["ssl"] = True
    return nodes, options


def _seconds(value: float) -> int:
    return max(1, math.ceil(value))


class _Script:
    """A Lua script shipped with the package, run by ``EVALSHA`` (``EVAL`` the first time)."""

    def __init__(self, name: str) -> None:
        self.text = files("wsbridge.backends").joinpath(name).read_text(encoding="utf-8")
        # The id Redis gives a script (SCRIPT LOAD): its SHA-1, not a security measure.
        self.sha = hashlib.sha1(self.text.encode("utf-8"), usedforsecurity=False).hexdigest()


_PUBLISH = _Script("history_publish.lua")
_READ = _Script("history_read.lua")


def _slot_map(reply: object, address: Address) -> tuple[list[Address | None], list[Address]]:
    """Parse ``CLUSTER SLOTS``: the owner of every slot, and the masters."""
    slots: list[Address | None] = [None] * _SLOTS
    masters: list[Address] = []
    for entry in reply if isinstance(reply, list) else ():
        start, end, primary = int(entry[0]), int(entry[1]), entry[2]
        if not 0 <= start <= end < _SLOTS:
            raise ValueError(f"slot range {start}-{end}")
        # An empty host means "the address you reached me at".
        host = _text(primary[0]) or address[0]
        owner = (host, int(primary[1]))
        if owner not in masters:
            masters.append(owner)
        slots[start : end + 1] = [owner] * (end - start + 1)
    return slots, masters


class _Shard:
    """The subscription connection to one master, and the state its reader keeps."""

    def __init__(self, address: Address, conn: AbstractConnection) -> None:
        self.address = address
        self.conn = conn
        self.lock = anyio.Lock()
        self.channels: set[str] = set()
        self.confirmations: dict[str, anyio.Event] = {}
        self.refused: dict[str, str] = {}
        # Redis answers in order; an error reply is traced back through this.
        self.pending: deque[PendingCommand] = deque()
        # Channels we asked to leave: any other sunsubscribe is the server moving a slot.
        self.leaving: Counter[str] = Counter()
        self.awaiting_pong = False
        self.task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"


class RedisClusterBackend:
    """Redis Cluster sharded pub/sub: one confirmed subscription per channel, on its shard.

    ``connect_timeout`` bounds opening a connection and reading the slot map,
    ``command_timeout`` a publish and the wait for a subscription's confirmation. Both
    fail with :class:`~wsbridge.BrokerUnavailableError`, never hang.
    """

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float = 5.0,
        command_timeout: float = 5.0,
        **redis_options: Any,
    ) -> None:
        self._url = url
        self._startup, options = parse_cluster_url(url)
        unknown = sorted(k for k in redis_options if k not in _PASSED and not k.startswith("ssl"))
        if unknown:
            raise ConfigurationError(
                f"the Redis Cluster backend takes no option {', '.join(unknown)}"
            )
        options.update(redis_options)
        self._tls = bool(options.pop("ssl", False))
        if not self._tls and any(k.startswith("ssl") for k in options):
            raise ConfigurationError("ssl_* options need a rediss+cluster:// URL")
        self._options = options
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._publisher: RedisCluster | None = None
        self._slots: list[Address | None] = [None] * _SLOTS
        self._known: list[Address] = list(self._startup)
        self._shards: dict[Address, _Shard] = {}
        self._queue: asyncio.Queue[BrokerMessage | None] | None = None
        self._lost: BrokerUnavailableError | None = None
        self._opening = anyio.Lock()

    @property
    def url(self) -> str:
        """The URL this backend connects to."""
        return self._url

    # -- connections -----------------------------------------------------------------

    def _connection(self, address: Address) -> AbstractConnection:
        kwargs: dict[str, Any] = {
            "host": address[0],
            "port": address[1],
            "socket_connect_timeout": self._connect_timeout,
            # Subscriptions stay idle for long stretches: only the health check may time out.
            "socket_timeout": None,
            "protocol": 2,
            **self._options,
        }
        return SSLConnection(**kwargs) if self._tls else Connection(**kwargs)

    async def _open(self, address: Address) -> AbstractConnection:
        conn = self._connection(address)
        try:
            with anyio.fail_after(self._connect_timeout * 2):
                await conn.connect()  # type: ignore[no-untyped-call]
                # A node that wants a password we did not give refuses every command.
                await conn.send_command("PING")
                await conn.read_response()
        except (*_FAILURES, ResponseError) as exc:
            with anyio.CancelScope(shield=True):
                await conn.disconnect(nowait=True)
            raise BrokerUnavailableError(f"cannot connect to Redis at {address}: {exc}") from exc
        return conn

    async def _read_slots(self) -> None:
        """Read the slot map (``CLUSTER SLOTS``) from the first node that answers."""
        errors = []
        for address in dict.fromkeys(self._startup + self._known):
            try:
                conn = await self._open(address)
            except BrokerUnavailableError as exc:
                errors.append(str(exc))
                continue
            try:
                with anyio.fail_after(self._connect_timeout):
                    await conn.send_command("CLUSTER", "SLOTS")
                    reply = await conn.read_response()
            except (*_FAILURES, ResponseError) as exc:
                errors.append(f"{address}: {exc}")
                continue
            finally:
                with anyio.CancelScope(shield=True):
                    await conn.disconnect(nowait=True)
            try:
                slots, masters = _slot_map(reply, address)
            except (TypeError, ValueError, IndexError) as exc:
                errors.append(f"{address}: unreadable slot map: {exc!r}")
                continue
            if not masters:
                errors.append(f"{address}: no slot map (is cluster mode enabled?)")
                continue
            self._slots = slots
            self._known = list(dict.fromkeys(masters + self._known))[:64]
            return
        raise BrokerUnavailableError("cannot read the Redis Cluster slot map: " + "; ".join(errors))

    async def connect(self) -> None:
        """Read the slot map and open the publishing client; subscriptions start empty."""
        await self._drop_shards()
        self._opening = anyio.Lock()
        self._queue = asyncio.Queue(_QUEUE)
        self._lost = None
        await self._read_slots()
        if self._publisher is None:
            options = dict(self._options)
            if self._tls:
                options["ssl"] = True
            self._publisher = RedisCluster(
                startup_nodes=[ClusterNode(host, port) for host, port in self._startup],
                socket_connect_timeout=self._connect_timeout,
                socket_timeout=self._command_timeout,
                protocol=2,
                **options,
            )

    async def _drop_shards(self) -> None:
        shards, self._shards = self._shards, {}
        with anyio.CancelScope(shield=True):
            for shard in shards.values():
                for event in shard.confirmations.values():
                    event.set()
                if shard.task is not None:
                    shard.task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await shard.task
                await shard.conn.disconnect(nowait=True)

    async def close(self) -> None:
        """Close every subscription connection and the publishing client."""
        await self._drop_shards()
        self._lost = BrokerUnavailableError("the Redis Cluster backend is closed")
        if self._queue is not None:
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(None)
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            with anyio.CancelScope(shield=True):
                await publisher.aclose()

    def _fail(self, exc: BrokerUnavailableError) -> BrokerUnavailableError:
        """Make ``messages()`` raise ``exc``: the broadcaster then reconnects everything."""
        if self._lost is None:
            self._lost = exc
            for shard in self._shards.values():
                for event in shard.confirmations.values():
                    event.set()  # a subscribe() waiting for them sees the loss at once
            if self._queue is not None:
                with contextlib.suppress(asyncio.QueueFull):
                    self._queue.put_nowait(None)  # wakes an idle messages()
        return exc

    async def _shard(self, address: Address) -> _Shard:
        shard = self._shards.get(address)
        if shard is not None:
            return shard
        async with self._opening:  # two subscribes to a new shard open one connection
            shard = self._shards.get(address)
            if shard is not None:
                return shard
            conn = await self._open(address)
            if self._queue is None:
                await conn.disconnect(nowait=True)
                raise BrokerUnavailableError("the Redis Cluster backend is not connected")
            shard = self._shards[address] = _Shard(address, conn)
            shard.task = asyncio.create_task(self._read(shard, self._queue))
        return shard

    def _owner(self, channel: str) -> tuple[Address, int]:
        slot = key_slot(channel.encode("utf-8", "surrogatepass"))
        owner = self._slots[slot]
        if owner is None:
            raise BrokerUnavailableError(f"no Redis Cluster node serves slot {slot} ({channel!r})")
        return owner, slot

    async def _send(self, shard: _Shard, kind: bytes, *args: str) -> None:
        try:
            async with shard.lock:
                with anyio.fail_after(self._command_timeout):
                    shard.pending.append(PendingCommand(kind, args[1:]))
                    await shard.conn.send_command(*args)
        except _FAILURES as exc:
            raise self._fail(
                BrokerUnavailableError(f"lost the subscription connection to {shard}: {exc}")
            ) from exc

    # -- the backend protocol ------------------------------------------------------------

    async def subscribe(self, channels: Sequence[str], patterns: Sequence[str]) -> None:
        """SSUBSCRIBE each channel on the master that owns its slot; wait for every reply.

        Patterns are refused (:data:`PATTERN_REFUSAL`); names Redis refuses (an ACL
        denial) raise :class:`~wsbridge.SubscriptionRefusedError` once every other
        confirmation came in.
        """
        if patterns:
            raise SubscriptionRefusedError(list(patterns), PATTERN_REFUSAL)
        if self._queue is None or self._lost is not None:
            raise BrokerUnavailableError("not connected to the Redis Cluster")
        groups: dict[Address, dict[int, list[str]]] = {}
        for channel in dict.fromkeys(channels):
            try:
                owner, slot = self._owner(channel)
            except BrokerUnavailableError as exc:
                raise self._fail(exc) from None
            groups.setdefault(owner, {}).setdefault(slot, []).append(channel)
        waits: list[tuple[_Shard, str, anyio.Event]] = []
        for address, by_slot in groups.items():
            try:
                shard = await self._shard(address)
            except BrokerUnavailableError as exc:
                raise self._fail(exc) from None
            for names in by_slot.values():
                # One command per slot: a sharded command must not cross slots.
                for name in names:
                    event = shard.confirmations.setdefault(name, anyio.Event())
                    waits.append((shard, name, event))
                await self._send(shard, b"ssubscribe", "SSUBSCRIBE", *names)
        try:
            with anyio.fail_after(self._command_timeout):
                for _, _, event in waits:
                    await event.wait()
        except TimeoutError:
            raise self._fail(
                BrokerUnavailableError("Redis Cluster did not confirm a subscription in time")
            ) from None
        if self._lost is not None:
            raise self._lost
        refused = [
            (name, shard.refused.pop(name)) for shard, name, _ in waits if name in shard.refused
        ]
        for shard, name, _ in waits:
            if name not in shard.refused:
                shard.channels.add(name)
        if refused:
            for shard, name, _ in waits:
                if any(name == r for r, _ in refused):
                    shard.channels.discard(name)
            raise SubscriptionRefusedError([name for name, _ in refused], refused[0][1])

    async def unsubscribe(self, channels: Sequence[str], patterns: Sequence[str]) -> None:
        """SUNSUBSCRIBE each channel on the shard that holds it (patterns were never held)."""
        groups: dict[Address, dict[int, list[str]]] = {}
        for channel in dict.fromkeys(channels):
            for address, shard in self._shards.items():
                if channel in shard.channels:
                    slot = key_slot(channel.encode("utf-8", "surrogatepass"))
                    groups.setdefault(address, {}).setdefault(slot, []).append(channel)
                    break
        for address, by_slot in groups.items():
            shard = self._shards[address]
            for names in by_slot.values():
                shard.channels.difference_update(names)
                shard.leaving.update(names)
                await self._send(shard, b"sunsubscribe", "SUNSUBSCRIBE", *names)

    async def publish(self, channel: str, data: bytes) -> None:
        """SPUBLISH to the channel's shard, within ``command_timeout``."""
        publisher = self._publisher
        if publisher is None:
            raise BrokerClosedError("the Redis Cluster backend is not connected")
        try:
            with anyio.fail_after(self._command_timeout):
                await publisher.execute_command("SPUBLISH", channel, data)
        except _CLIENT_FAILURES as exc:
            raise BrokerUnavailableError(f"cannot publish to {channel!r}: {exc}") from exc

    async def _eval(self, script: _Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run ``script`` on the shard of ``keys`` (one slot), following redirections.

        ``EVALSHA`` first; a node that does not know the script yet (a promoted replica:
        the script cache is not replicated) gets it with ``EVAL``.
        """
        publisher = self._publisher
        if publisher is None:
            raise BrokerClosedError("the Redis Cluster backend is not connected")
        try:
            return await publisher.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await publisher.execute_command("EVAL", script.text, len(keys), *keys, *args)

    async def append(
        self, channel: str, data: bytes, history: History | None, latest: bool
    ) -> Position | None:
        """Publish ``data`` with ``SPUBLISH`` on the channel's shard, and keep it there.

        With ``history`` it gets the next offset of the channel's epoch, in one script on
        the shard that owns the channel's slot (its keys carry a hash tag of that slot,
        see :func:`~wsbridge.backends.redis.history_keys`). An epoch last written by
        another node (before a failover or a slot migration) is ended, never continued:
        see the module's notes. ``latest``: also keep it as the channel's latest value.
        Returns the publication's position, ``None`` without history.
        """
        keys = history_keys(channel)
        size = 0 if history is None else history.size
        ttl = 1 if history is None else _seconds(history.ttl)
        meta_ttl = _seconds(History().meta_ttl if history is None else history.meta_ttl)
        args = [channel, data, size, ttl, meta_ttl, new_epoch(), "1" if latest else "0"]
        try:
            with anyio.fail_after(self._command_timeout):
                reply = await self._eval(_PUBLISH, keys, [*args, "cluster"])
        except _CLIENT_FAILURES as exc:
            raise BrokerUnavailableError(f"cannot publish to {channel!r}: {exc}") from exc
        if history is None:
            return None
        return Position(_text(reply[0]), int(reply[1]))

    async def read_history(self, channel: str, history: History, after: int, limit: int) -> Page:
        """The channel's position, and up to ``limit`` publications after offset ``after``.

        Read on the shard that owns the channel's slot; an epoch another node wrote is
        ended there first, as :meth:`append` does.
        """
        keys = history_keys(channel)[:2]
        args = [f"0-{after + 1}", limit, new_epoch(), _seconds(history.meta_ttl), "cluster"]
        try:
            with anyio.fail_after(self._command_timeout):
                reply = await self._eval(_READ, keys, args)
        except _CLIENT_FAILURES as exc:
            raise BrokerUnavailableError(f"cannot read the history of {channel!r}: {exc}") from exc
        return history_page(reply)

    async def latest(self, channel: str) -> bytes | None:
        """The latest value :meth:`append` kept for ``channel``, read on its shard."""
        publisher = self._publisher
        if publisher is None:
            raise BrokerClosedError("the Redis Cluster backend is not connected")
        try:
            with anyio.fail_after(self._command_timeout):
                value = await publisher.execute_command("GET", history_keys(channel)[2])
        except _CLIENT_FAILURES as exc:
            raise BrokerUnavailableError(f"cannot read the latest {channel!r}: {exc}") from exc
        return value if isinstance(value, bytes) else None

    async def messages(self) -> AsyncIterator[BrokerMessage]:
        """Yield messages from every shard until one of them is lost."""
        queue = self._queue
        if queue is None:
            raise BrokerUnavailableError("not connected to the Redis Cluster")
        while True:
            if self._lost is not None:
                raise self._lost
            message = await queue.get()
            if message is not None:
                yield message

    async def health_check(self) -> None:
        """PING every shard; one that left the previous PING unanswered is dead."""
        for shard in list(self._shards.values()):
            if shard.awaiting_pong:
                raise self._fail(BrokerUnavailableError(f"Redis at {shard} stopped answering PING"))
            shard.awaiting_pong = True
            await self._send(shard, b"pong", "PING")
        if self._lost is not None:
            raise self._lost

    def probe_channels(self, prefix: str) -> list[str]:
        """One channel per master, ``prefix`` plus a hash tag that lands on that master.

        A liveness probe sent on each proves every shard's subscription connection.
        """
        found: dict[Address, str] = {}
        masters = {owner for owner in self._slots if owner is not None}
        for n in range(_SLOTS * 4):
            if len(found) == len(masters):
                break
            tag = f"{{{n}}}"
            owner = self._slots[key_slot(tag.encode())]
            if owner is not None and owner not in found:
                found[owner] = prefix + tag
        return sorted(found.values())

    # -- one reader per shard --------------------------------------------------------

    async def _read(self, shard: _Shard, queue: asyncio.Queue[BrokerMessage | None]) -> None:
        conn = shard.conn
        try:
            while True:
                try:
                    reply = await conn.read_response()
                except ResponseError as exc:
                    self._refuse(shard, exc)
                    continue
                if isinstance(reply, list) and reply:
                    kind = reply[0]
                    if kind == b"smessage":
                        if len(reply) == 3 and all(isinstance(r, bytes) for r in reply[1:]):
                            await queue.put(BrokerMessage(_text(reply[1]), None, reply[2]))
                        continue  # anything else is not a message Redis would send
                    self._reply(shard, kind, reply)
                elif reply == b"PONG":
                    # PING on a connection that holds no subscription answers plainly.
                    self._reply(shard, b"pong", [b"pong"])
        except _FAILURES as exc:
            self._fail(
                BrokerUnavailableError(f"lost the subscription connection to {shard}: {exc}")
            )
        except BrokerUnavailableError as exc:
            self._fail(exc)
        except Exception as exc:  # a reply we cannot read: reconnect rather than go deaf
            self._fail(BrokerUnavailableError(f"unreadable reply from Redis at {shard}: {exc!r}"))

    def _reply(self, shard: _Shard, kind: bytes, reply: list[Any]) -> None:
        pending = shard.pending
        if pending:
            head = pending[0]
            head.left -= 1
            if head.left <= 0:
                pending.popleft()
        if kind == b"ssubscribe" and len(reply) >= 2:
            event = shard.confirmations.pop(_text(reply[1]), None)
            if event is not None:
                event.set()
        elif kind == b"sunsubscribe" and len(reply) >= 2:
            name = _text(reply[1])
            if shard.leaving[name] > 0:
                shard.leaving[name] -= 1
                if not shard.leaving[name]:
                    del shard.leaving[name]
            else:
                # Unasked: the slot moved to another shard (a failover, a migration).
                self._fail(
                    BrokerUnavailableError(f"Redis at {shard} moved channel {name!r} elsewhere")
                )
        elif kind == b"pong":
            shard.awaiting_pong = False

    def _refuse(self, shard: _Shard, exc: ResponseError) -> None:
        head = shard.pending.popleft() if shard.pending else None
        message = str(exc)
        if head is None or head.kind != b"ssubscribe" or not isinstance(exc, NoPermissionError):
            # Only an ACL denial refuses names. MOVED or ASK: our slot map is stale;
            # CLUSTERDOWN, TRYAGAIN, LOADING: the cluster is changing. Reconnect and retry.
            raise BrokerUnavailableError(f"Redis at {shard} answered: {message}")
        for name in head.keys:
            shard.refused[name] = message
            event = shard.confirmations.pop(name, None)
            if event is not None:
                event.set()
