"""An async Python client for a wsbridge endpoint, with the reference hook's behaviour.

:class:`Client` connects to a WebSocket endpoint that speaks wsbridge's wire protocol (any
wsbridge server, or the reference system) and behaves like the reference's React
``useWebSocket`` hook:

* it connects on entry and reconnects after every close or error, 3 s later by default,
  doubling the delay on each failed attempt up to a cap, with random jitter so that many
  clients do not come back at the same instant;
* it sends ``{"type": "ping"}`` every 30 s (the server closes idle clients) and filters
  the ``{"type": "pong"}`` answers out;
* it subscribes and unsubscribes, awaiting the server's acknowledgement, and restores
  those choices after a reconnect;
* it parses each event's payload into the registry's pydantic model where the channel has
  a schema (the built-in trading registry by default);
* it reports the connection and the server's broker status (``{"type": "broker", ...}``
  frames) as :class:`Status` items;
* it remembers the position (epoch and offset) of every channel with history and resumes
  from there after a reconnect: the events missed meanwhile arrive first, once each and
  in order; a channel the server cannot recover is reported as a ``not_recovered``
  :class:`Status`.

.. code-block:: python

    from wsbridge.client import Client

    async with Client("ws://127.0.0.1:8000/ws") as client:
        async for event in client:
            print(event.channel, event.model or event.data)

The transport is the ``websockets`` library's asyncio implementation (install the
``client`` extra), so the client runs on asyncio, including anyio's asyncio backend; the
rest is written with anyio. Every wait is bounded: opening, each request, closing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import count
from types import TracebackType
from typing import Any, Final, Literal

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from pydantic import BaseModel

from wsbridge.channel import glob_match, is_pattern, validate_channel
from wsbridge.exceptions import ConfigurationError, EventValidationError, WsbridgeError
from wsbridge.protocol import MAX_SINCE
from wsbridge.schema import Registry

try:
    from websockets.asyncio.client import ClientConnection, connect
    from websockets.exceptions import ConnectionClosed, InvalidURI
    from websockets.uri import parse_uri
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "wsbridge.client needs the websockets library: pip install 'wsbridge-py[client]'"
    ) from exc

__all__ = [
    "Client",
    "ClientClosedError",
    "ClientError",
    "ConnectionLostError",
    "Event",
    "Status",
    "StatusKind",
    "SubscriptionError",
]

logger = logging.getLogger("wsbridge.client")

_PING: Final = '{"type":"ping"}'
_DUMPS: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


# -- errors ------------------------------------------------------------------------------


# Error codes that refuse one channel of a request; the acknowledgement still follows.
_PARTIAL = frozenset({"forbidden", "subscription_refused"})


class ClientError(WsbridgeError):
    """Base class of the errors the client raises."""


class SubscriptionError(ClientError, ValueError):
    """The server refused a subscribe or unsubscribe request.

    ``code`` is the error frame's code (``invalid_channel``, ``too_many_subscriptions``,
    ``forbidden``...), ``message`` its text.
    """

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


class ConnectionLostError(ClientError, ConnectionError):
    """The connection closed before the server answered a request.

    The client still restores the subscription choice on its next connection.
    """


class ClientClosedError(ClientError, RuntimeError):
    """The client is not open: use it with ``async with`` first, and not after closing."""


# -- what the client yields ----------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One event frame from the server.

    ``channel`` and ``data`` are the frame's fields (``data`` decoded from JSON).
    ``model`` is ``data`` parsed into the registry's pydantic model for ``channel``, or
    ``None`` when the channel has no schema or the payload does not match it; ``error``
    then says why it does not match. ``received_at`` is the wall-clock time of arrival
    (``time.time()``). ``offset`` is the event's offset on a channel with history.
    """

    channel: str
    data: Any
    model: BaseModel | None = None
    error: EventValidationError | None = None
    received_at: float = field(default_factory=time.time, compare=False)
    offset: int | None = None

    def to_json(self) -> str:
        """The event frame as compact JSON on one line: ``{"channel":...,"data":...}``."""
        if self.offset is not None:
            return _DUMPS({"channel": self.channel, "data": self.data, "offset": self.offset})
        return _DUMPS({"channel": self.channel, "data": self.data})


StatusKind = Literal[
    "connected",
    "disconnected",
    "reconnecting",
    "broker_down",
    "broker_up",
    "error",
    "not_recovered",
]
"""What a :class:`Status` reports."""


@dataclass(frozen=True)
class Status:
    """A change of the connection, or a message from the server that is not an event.

    ``kind`` is one of:

    * ``connected``: the WebSocket is open and the server answered a first request, so
      its subscriptions are in place (``detail`` holds the URL);
    * ``disconnected``: it closed or could not be opened (``code`` and ``detail`` say why);
    * ``reconnecting``: the next attempt starts in ``retry_in`` seconds;
    * ``broker_down`` / ``broker_up``: the server lost or regained its broker connection
      (the ``{"type": "broker"}`` frames); the WebSocket stays open meanwhile;
    * ``error``: the server sent an error frame that answers no pending request;
    * ``not_recovered``: events of the channel named in ``detail`` were missed and cannot
      be delivered (the server's history no longer has them): refetch its state.
    """

    kind: StatusKind
    detail: str = ""
    code: int | None = None
    retry_in: float | None = None


Item = Event | Status


class _Request:
    """A subscribe or unsubscribe request awaiting its acknowledgement."""

    __slots__ = ("channels", "done", "failure")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.channels: list[str] = []
        self.failure: ClientError | None = None


def _default_registry() -> Registry:
    from wsbridge.trading import registry

    return registry


class Client:
    """An async WebSocket client of a wsbridge endpoint; use it with ``async with``.

    Iterate it for :class:`Event` objects (``async for event in client``), or
    :meth:`updates` for events and :class:`Status` changes in order of arrival.

    Args:
        url: The endpoint, ``ws://host:port/ws`` or ``wss://...``.
        channels: If given, subscribe to these channels or patterns on every connection
            and deliver only the events that match them (the server's default channels are
            filtered out). If ``None`` (the default), deliver what the server sends: its
            default channels plus whatever :meth:`subscribe` adds.
        registry: The schemas events are parsed with (default: the trading registry,
            ``wsbridge.trading.registry``); ``Registry()`` parses nothing.
        ping_interval: Seconds between two ``{"type": "ping"}`` frames (``None`` or 0
            disables them; the server then closes the connection after its idle timeout).
        reconnect: Reconnect after every close or error (the default), or stop.
        reconnect_delay: The delay before the first reconnection attempt; it doubles
            after each failed attempt, up to ``max_reconnect_delay``.
        max_reconnect_delay: The cap on the reconnection delay.
        jitter: Each delay is multiplied by a random factor in ``[1 - jitter, 1 + jitter]``.
        max_reconnect_attempts: Give up after this many failed attempts in a row
            (``None``: never).
        open_timeout: Bound, in seconds, on opening one connection.
        request_timeout: Bound on a subscribe or unsubscribe round trip, waiting for a
            connection included.
        close_timeout: Bound on closing.
        max_queue: Events held for the consumer; when it is full the client stops
            reading, so a consumer that falls behind slows the socket down, and the server
            applies its own slow-client policy.
        max_size: The largest frame accepted from the server, in bytes.
        headers: Extra HTTP headers for the handshake (a token, a cookie).
        origin: The ``Origin`` header of the handshake.
        connect_options: Further keyword arguments for
            ``websockets.asyncio.client.connect`` (``ssl``, ``proxy``, ``compression``...).

    Raises:
        ConfigurationError: ``url`` is not a WebSocket URL, or a setting is out of range.
        InvalidChannelError: a name in ``channels`` is not a valid channel or pattern.
    """

    def __init__(
        self,
        url: str,
        *,
        channels: Iterable[str] | None = None,
        registry: Registry | None = None,
        ping_interval: float | None = 30.0,
        reconnect: bool = True,
        reconnect_delay: float = 3.0,
        max_reconnect_delay: float = 30.0,
        jitter: float = 0.2,
        max_reconnect_attempts: int | None = None,
        open_timeout: float = 10.0,
        request_timeout: float = 10.0,
        close_timeout: float = 5.0,
        max_queue: int = 1000,
        max_size: int = 16 * 1024 * 1024,
        headers: Mapping[str, str] | None = None,
        origin: str | None = None,
        connect_options: Mapping[str, Any] | None = None,
    ) -> None:
        try:
            parse_uri(url)
        except InvalidURI as exc:
            raise ConfigurationError(
                f"not a WebSocket URL: {url!r} (expected ws:// or wss://)"
            ) from exc
        if not 0 < reconnect_delay <= max_reconnect_delay:
            raise ConfigurationError("need 0 < reconnect_delay <= max_reconnect_delay")
        if not 0 <= jitter < 1:
            raise ConfigurationError("jitter must be in [0, 1)")
        if ping_interval is not None and ping_interval < 0:
            raise ConfigurationError("ping_interval must be positive, 0 or None")
        if min(open_timeout, request_timeout, close_timeout) <= 0:
            raise ConfigurationError("timeouts must be positive")
        if max_queue < 1 or max_size < 1:
            raise ConfigurationError("max_queue and max_size must be positive")
        if max_reconnect_attempts is not None and max_reconnect_attempts < 0:
            raise ConfigurationError("max_reconnect_attempts must not be negative")
        self.url = url
        self.registry = registry if registry is not None else _default_registry()
        self._exclusive = channels is not None
        self._added: dict[str, None] = {}
        for channel in channels or ():
            self._added[validate_channel(channel)] = None
        self._removed: dict[str, None] = {}
        self._ping_interval = ping_interval or None
        self._reconnect = reconnect
        self._reconnect_delay = reconnect_delay
        self._max_reconnect_delay = max_reconnect_delay
        self._jitter = jitter
        self._max_attempts = max_reconnect_attempts
        self._open_timeout = open_timeout
        self._request_timeout = request_timeout
        self._close_timeout = close_timeout
        self._max_queue = max_queue
        self._connect_options: dict[str, Any] = {
            # Protocol-level pings detect a dead TCP connection; the JSON pings below are
            # what the server's idle timeout counts.
            "ping_interval": 20.0,
            "max_size": max_size,
            "open_timeout": open_timeout,
            "close_timeout": close_timeout,
            **({"additional_headers": dict(headers)} if headers else {}),
            **({"origin": origin} if origin else {}),
            **dict(connect_options or {}),
        }
        self._ids = count(1)
        self._pending: dict[int, _Request] = {}
        self._ws: ClientConnection | None = None
        self._task_group: anyio.abc.TaskGroup | None = None
        self._items_in: MemoryObjectSendStream[Item] | None = None
        self._items_out: MemoryObjectReceiveStream[Item] | None = None
        self._ready = anyio.Event()
        self._closing = anyio.Event()
        self._connected = False
        self._broker_connected = True
        self._close_code: int | None = None
        self._close_reason = ""
        self._last_pong: float | None = None
        self._awaiting_pong = False
        self._restoring: set[int] = set()
        self._connections = 0
        # Per channel with history: [epoch or None until the server said it, offset].
        self._positions: dict[str, list[Any]] = {}
        self._probes: dict[str, None] = {}

    # -- state -------------------------------------------------------------------------

    @property
    def positions(self) -> dict[str, tuple[str, int]]:
        """The position of each channel with history: its epoch and the last offset seen."""
        return {ch: (p[0], p[1]) for ch, p in self._positions.items() if p[0] is not None}

    @property
    def connected(self) -> bool:
        """True while the WebSocket is open (the hook's ``connected``)."""
        return self._connected

    @property
    def broker_connected(self) -> bool:
        """False after the server reported ``{"type": "broker", "status": "down"}``."""
        return self._broker_connected

    @property
    def close_code(self) -> int | None:
        """The close code of the last connection that ended, if any."""
        return self._close_code

    @property
    def close_reason(self) -> str:
        """The close reason of the last connection that ended."""
        return self._close_reason

    @property
    def last_pong(self) -> float | None:
        """When the last pong arrived (``time.monotonic()``), or ``None``."""
        return self._last_pong

    @property
    def connections(self) -> int:
        """How many times a connection was opened (1 + successful reconnections)."""
        return self._connections

    @property
    def subscriptions(self) -> tuple[str, ...]:
        """The channels and patterns this client asked for, restored after a reconnect."""
        return tuple(self._added)

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Client:
        if self._task_group is not None or self._closing.is_set():
            raise ClientClosedError("a Client can be entered once")
        self._items_in, self._items_out = anyio.create_memory_object_stream[Item](self._max_queue)
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        task_group.start_soon(self._run)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task_group, self._task_group = self._task_group, None
        if task_group is None:
            return
        with anyio.CancelScope(shield=True):
            await self.aclose()
        # Outside the shield: a task group must be exited from its own cancel scope.
        task_group.cancel_scope.cancel()
        try:
            await task_group.__aexit__(None, None, None)
        finally:
            if self._items_out is not None:
                self._items_out.close()

    async def aclose(self) -> None:
        """Close the connection (code 1000) and stop reconnecting; iteration then ends.

        Bounded by ``close_timeout``. Leaving the ``async with`` block calls it.
        """
        self._closing.set()
        ws = self._ws
        if ws is not None:
            with anyio.move_on_after(self._close_timeout, shield=True):
                await ws.close(1000, "client closing")
        if self._items_in is not None:
            self._items_in.close()

    async def wait_connected(self) -> None:
        """Wait until connected and the server answered a first request.

        That request restores the subscriptions (or is a ping): a wsbridge server has then
        subscribed this client to its channels, so what is published afterwards arrives.

        Bound it with ``anyio.fail_after`` (or ``asyncio.timeout``) as any wait.

        Raises:
            ClientClosedError: the client is closed, or gave up reconnecting.
        """
        await self._wait_ready()

    async def _wait_ready(self) -> ClientConnection:
        while True:  # each pass waits for one connection; ends by return, raise or timeout
            if self._closing.is_set() or self._task_group is None:
                raise ClientClosedError("the client is closed")
            ws = self._ws
            if self._ready.is_set() and ws is not None:
                return ws
            await self._ready.wait()

    # -- receiving ---------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        async for item in self.updates():
            if isinstance(item, Event):
                yield item

    async def updates(self) -> AsyncIterator[Item]:
        """Yield events and :class:`Status` changes in order, until the client closes."""
        if self._items_out is None:
            raise ClientClosedError("use the client with 'async with' first")
        try:
            while True:  # ends with the stream: when the client closes
                yield await self._items_out.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            return

    async def receive(self) -> Event:
        """Return the next event, skipping statuses; bound it with ``anyio.fail_after``.

        Raises:
            ClientClosedError: the client closed.
        """
        if self._items_out is None:
            raise ClientClosedError("use the client with 'async with' first")
        while True:  # skips statuses; ends with an event or the stream's end
            try:
                item = await self._items_out.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                raise ClientClosedError("the client is closed") from None
            if isinstance(item, Event):
                return item

    # -- requests ----------------------------------------------------------------------

    async def subscribe(self, channels: Iterable[str]) -> list[str]:
        """Subscribe to channels or patterns; return those the server accepted.

        The choice is remembered and restored after every reconnection. Waits, at most
        ``request_timeout`` seconds, for a connection and for the acknowledgement.
        Channels the server refuses (not allowed for this client, or refused by the
        broker) are left out of the result and forgotten.

        Raises:
            InvalidChannelError: a name is not a valid channel or pattern.
            SubscriptionError: the server refused the whole request.
            ConnectionLostError: the connection closed before the acknowledgement.
            TimeoutError: no acknowledgement in time (the choice is still restored on
                the next connection).
        """
        wanted = self._channel_list(channels)
        for channel in wanted:
            self._removed.pop(channel, None)
            self._added[channel] = None
        try:
            accepted = await self._request("subscribe", wanted)
        except SubscriptionError:
            for channel in wanted:
                self._added.pop(channel, None)
            raise
        for channel in set(wanted) - set(accepted):
            self._added.pop(channel, None)
        return accepted

    async def unsubscribe(self, channels: Iterable[str]) -> list[str]:
        """Unsubscribe from channels or patterns (default channels included).

        No event of these channels is delivered after this call returns, unless another
        subscription (a pattern) covers it. Bounded and remembered like :meth:`subscribe`.
        """
        unwanted = self._channel_list(channels)
        for channel in unwanted:
            self._added.pop(channel, None)
            self._removed[channel] = None
        return await self._request("unsubscribe", unwanted)

    @staticmethod
    def _channel_list(channels: Iterable[str]) -> list[str]:
        if isinstance(channels, str):
            raise ConfigurationError("pass a list of channels, not a single string")
        names = list(dict.fromkeys(validate_channel(channel) for channel in channels))
        if not names:
            raise ConfigurationError("no channel given")
        return names

    async def _request(self, kind: str, channels: list[str]) -> list[str]:
        request = _Request()
        request_id = next(self._ids)
        with anyio.fail_after(self._request_timeout):
            ws = await self._wait_ready()
            self._pending[request_id] = request
            try:
                frame = {"type": kind, "channels": channels, "id": request_id}
                try:
                    await ws.send(_DUMPS(frame))
                except ConnectionClosed as exc:
                    raise ConnectionLostError(f"connection closed: {exc}") from None
                await request.done.wait()
            finally:
                self._pending.pop(request_id, None)
        if request.failure is not None:
            raise request.failure
        return request.channels

    def _delivers(self, channel: str) -> bool:
        for wanted in self._added:
            if wanted == channel or (is_pattern(wanted) and glob_match(wanted, channel)):
                return True
        if self._exclusive:
            return False
        return channel not in self._removed

    # -- the connection loop -----------------------------------------------------------

    def _next_delay(self, attempt: int) -> float:
        base = min(self._reconnect_delay * 2.0 ** min(attempt, 30), self._max_reconnect_delay)
        factor = random.uniform(1 - self._jitter, 1 + self._jitter)
        return min(base * factor, self._max_reconnect_delay)

    def _status(self, status: Status) -> None:
        # Statuses never block the connection loop: when the consumer is far behind, the
        # newest state is still readable from the properties.
        logger.info("wsbridge client: %s %s", status.kind, status.detail)
        items = self._items_in
        if items is not None:
            with contextlib.suppress(
                anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError
            ):
                items.send_nowait(status)

    async def _run(self) -> None:
        failures = 0  # failed connection attempts in a row
        try:
            while not self._closing.is_set():  # one pass per connection attempt
                try:
                    ws = await connect(self.url, **self._connect_options)
                except Exception as exc:  # any failure to connect is retried, as the hook does
                    self._close_code = None
                    self._close_reason = str(exc)
                    self._status(Status("disconnected", f"cannot connect: {exc}"))
                    failures += 1
                else:
                    failures = 0
                    await self._serve(ws)
                if self._closing.is_set() or not self._reconnect:
                    break
                if self._max_attempts is not None and failures > self._max_attempts:
                    self._status(Status("disconnected", "giving up: too many failed attempts"))
                    break
                # The first retry after a close or a failure waits reconnect_delay; each
                # further failure doubles it.
                delay = self._next_delay(max(failures - 1, 0))
                self._status(Status("reconnecting", f"in {delay:.1f} s", retry_in=delay))
                with anyio.move_on_after(delay):
                    await self._closing.wait()
        finally:
            self._connected = False
            self._closing.set()
            self._ready.set()  # wake waiters: they see the client closed
            if self._items_in is not None:
                self._items_in.close()

    async def _serve(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._connected = True
        self._broker_connected = True
        self._connections += 1
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._restore, ws)
                if self._ping_interval:
                    tg.start_soon(self._ping, ws, self._ping_interval)
                await self._read(ws)
                tg.cancel_scope.cancel()
        finally:
            self._ws = None
            self._connected = False
            self._ready = anyio.Event()
            for request in self._pending.values():
                request.failure = ConnectionLostError("the connection closed before the answer")
                request.done.set()
            with anyio.move_on_after(self._close_timeout, shield=True):
                await ws.close()
            code, reason = ws.protocol.close_code, ws.protocol.close_reason or ""
            self._close_code, self._close_reason = code, reason
            self._status(Status("disconnected", reason or "connection closed", code=code))

    async def _restore(self, ws: ClientConnection) -> None:
        # Re-send the subscription choices before callers may send new ones, so the server
        # ends with the state the caller expects. The server answers in order, so the
        # answer to the last request marks the connection ready: a wsbridge server has
        # then also set up the default subscriptions, and what is published afterwards
        # arrives. With nothing to restore, a ping is that request.
        frames: list[str] = []
        self._restoring.clear()
        self._probes.clear()
        # Channels with a known position are asked again with "since": the server replays
        # what this client missed, default subscriptions included.
        since = {
            ch: {"epoch": p[0], "offset": p[1]}
            for ch, p in self._positions.items()
            if p[0] is not None and ch not in self._removed
        }
        # A channel reached through a pattern is resumed through that pattern, not
        # subscribed on its own; as many as every server accepts. One left out is not
        # lost silently: its next event's offset shows whether events were missed.
        covered = [ch for ch in since if self._through_pattern(ch)]
        resumed = dict.fromkeys([*self._added, *(ch for ch in since if ch not in covered)])
        room = max(len(resumed), MAX_SINCE) - (len(since) - len(covered))
        for ch in covered[max(room, 0) :]:
            del since[ch]
        for kind, channels in (("subscribe", resumed), ("unsubscribe", self._removed)):
            if channels:
                request_id = next(self._ids)
                self._restoring.add(request_id)
                request: dict[str, Any] = {
                    "type": kind,
                    "channels": list(channels),
                    "id": request_id,
                }
                if kind == "subscribe" and since:
                    request["since"] = since
                frames.append(_DUMPS(request))
        self._awaiting_pong = not frames
        try:
            for frame in frames or [_PING]:
                await ws.send(frame)
        except ConnectionClosed:
            return
        with anyio.move_on_after(self._request_timeout):
            await self._ready.wait()
        self._mark_ready()  # the server did not answer in time: go on without it

    def _through_pattern(self, channel: str) -> bool:
        return channel not in self._added and any(
            is_pattern(w) and glob_match(w, channel) for w in self._added
        )

    def _mark_ready(self) -> None:
        if not self._ready.is_set():
            self._awaiting_pong = False
            self._restoring.clear()
            self._status(Status("connected", self.url))
            self._ready.set()

    @staticmethod
    async def _ping(ws: ClientConnection, interval: float) -> None:
        while True:  # ends when the connection closes or the task group is cancelled
            await anyio.sleep(interval)
            try:
                await ws.send(_PING)
            except ConnectionClosed:
                return

    async def _read(self, ws: ClientConnection) -> None:
        items = self._items_in
        assert items is not None
        while True:  # one frame per pass; ends when the connection closes
            try:
                message = await ws.recv()
            except ConnectionClosed:
                return
            if isinstance(message, bytes):
                logger.debug("wsbridge client: ignored a binary frame")
                continue
            try:
                frame = json.loads(message)
            except ValueError:
                # The reference: "Client ignores or logs malformed messages".
                logger.warning("wsbridge client: ignored a frame that is not JSON: %.80r", message)
                continue
            if not isinstance(frame, dict):
                continue
            kind = frame.get("type")
            if kind is None:
                event = self._event(frame)
                if event is not None:
                    try:
                        await items.send(event)
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                        return
                if self._probes:
                    # Ask the server the epoch of channels it delivers with offsets.
                    probes = list(self._probes)
                    self._probes.clear()
                    try:
                        await ws.send(_DUMPS({"type": "subscribe", "channels": probes, "id": 0}))
                    except ConnectionClosed:
                        return
            else:
                self._control(kind, frame)

    def _track(self, channel: str, offset: object) -> int | None:
        """Follow the channel's position; the event's offset, or ``None`` if it has none."""
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 1:
            return None
        position = self._positions.get(channel)
        if position is None:
            if len(self._positions) >= 10_000:
                return offset  # a client of that many channels gets no resume for more
            self._positions[channel] = [None, offset]
            if not any(is_pattern(w) and glob_match(w, channel) for w in self._added):
                self._probes[channel] = None  # asking for a pattern's channel would add it
            return offset
        if offset <= position[1]:
            # Offsets went back: the server's history was lost and started again.
            if position[0] is not None:
                self._status(Status("not_recovered", channel))
            position[0] = None
            if not any(is_pattern(w) and glob_match(w, channel) for w in self._added):
                self._probes[channel] = None
        elif position[0] is not None and offset > position[1] + 1:
            self._status(Status("not_recovered", channel))
        position[1] = offset
        return offset

    def _event(self, frame: dict[str, Any]) -> Event | None:
        channel = frame.get("channel")
        if not isinstance(channel, str) or not self._delivers(channel):
            return None
        offset = self._track(channel, frame.get("offset"))
        data = frame.get("data")
        schema = self.registry.schema_for(channel)
        if schema is None:
            return Event(channel, data, offset=offset)
        try:
            return Event(channel, data, schema.validate(data, channel=channel), offset=offset)
        except EventValidationError as exc:
            return Event(channel, data, None, exc, offset=offset)

    def _positioned(self, positions: object) -> None:
        """Take the positions of a ``subscribed`` acknowledgement."""
        if not isinstance(positions, dict):
            return
        for channel, found in positions.items():
            if not isinstance(channel, str) or not isinstance(found, dict):
                continue
            epoch, offset = found.get("epoch"), found.get("offset")
            recovered = found.get("recovered")
            if recovered is False:
                self._status(Status("not_recovered", channel))
            if not isinstance(epoch, str) or not isinstance(offset, int):
                continue
            position = self._positions.get(channel)
            if position is None or len(self._positions) >= 10_000:
                if position is None and len(self._positions) < 10_000:
                    self._positions[channel] = [epoch, offset]
                continue
            if recovered is True and position[0] == epoch:
                continue  # the missed events follow; the offset advances with them
            if position[0] in (None, epoch) and recovered is None:
                position[0], position[1] = epoch, max(position[1], offset)
            else:
                position[0], position[1] = epoch, offset

    def _repositioned(self, positions: object) -> None:
        """Take a ``position`` frame: where channels' next events start."""
        if not isinstance(positions, dict):
            return
        for channel, found in positions.items():
            if not isinstance(channel, str) or not isinstance(found, dict):
                continue
            epoch, offset = found.get("epoch"), found.get("offset")
            if (
                not isinstance(epoch, str)
                or not isinstance(offset, int)
                or isinstance(offset, bool)
                or offset < 0
            ):
                continue
            position = self._positions.get(channel)
            lost = found.get("recovered") is False or (
                position is not None and position[0] not in (None, epoch)
            )
            if lost:
                self._status(Status("not_recovered", channel))
            self._probes.pop(channel, None)
            if position is None:
                if len(self._positions) < 10_000:
                    self._positions[channel] = [epoch, offset]
            elif lost:
                position[0], position[1] = epoch, offset
            elif position[0] is None:
                position[0], position[1] = epoch, max(position[1], offset)

    def _control(self, kind: object, frame: dict[str, Any]) -> None:
        if kind == "pong":
            self._last_pong = time.monotonic()
            if self._awaiting_pong:
                self._mark_ready()
            return
        if kind == "subscribed":
            self._positioned(frame.get("positions"))
        elif kind == "position":
            self._repositioned(frame.get("positions"))
            return
        request_id = frame.get("id")
        if isinstance(request_id, int) and request_id in self._restoring:
            self._restored(kind, request_id, frame)
            return
        request = self._pending.get(request_id) if isinstance(request_id, int) else None
        if kind in ("subscribed", "unsubscribed"):
            if request is not None:
                channels = frame.get("channels")
                request.channels = (
                    [c for c in channels if isinstance(c, str)]
                    if isinstance(channels, list)
                    else []
                )
                request.done.set()
        elif kind == "error":
            error = SubscriptionError(
                str(frame.get("code", "error")), str(frame.get("message", ""))
            )
            if request is None:
                self._status(Status("error", str(error)))
            elif error.code in _PARTIAL:
                pass  # the acknowledgement follows, without the refused channel
            else:
                request.failure = error
                request.done.set()
        elif kind == "broker":
            up = frame.get("status") == "up"
            self._broker_connected = up
            self._status(Status("broker_up" if up else "broker_down", str(frame.get("status"))))
        # Other types are ignored: later protocol versions may add frames.

    def _restored(self, kind: object, request_id: int, frame: dict[str, Any]) -> None:
        if kind == "error":
            error = f"{frame.get('code', 'error')}: {frame.get('message', '')}"
            self._status(Status("error", f"restoring the subscriptions: {error}"))
            if frame.get("code") in _PARTIAL:
                return  # the acknowledgement of the other channels follows
        self._restoring.discard(request_id)
        if not self._restoring:
            self._mark_ready()
