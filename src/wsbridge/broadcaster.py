"""The Broadcaster: one broker connection per process, and the local fan-out.

Every client is a :class:`Subscriber`: its subscriptions, its bounded
:class:`~wsbridge.outbox.Outbox`, and the :class:`~wsbridge.outbox.Connection` that writes
its frames. The broadcaster holds one upstream subscription per channel or pattern,
reference-counted across subscribers, and turns each broker message into its wire frame
once, whatever the number of recipients. It routes that frame to each subscriber and
knows nothing of how a connection writes. Delivering a frame never waits: a full outbox
is handled by the subscriber's overflow policy, so one slow client never delays another.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

import anyio

from wsbridge import protocol
from wsbridge.backends import Backend, BrokerMessage, HistoryBackend, backend_from_url
from wsbridge.channel import glob_match, is_pattern, validate_channel
from wsbridge.exceptions import (
    BrokerClosedError,
    BrokerUnavailableError,
    ConfigurationError,
    SubscriptionRefusedError,
)
from wsbridge.history import History, Page, Position, Resumed, is_envelope, parse_envelope
from wsbridge.outbox import (
    QUEUED,
    Connection,
    ConnectionGroup,
    Frame,
    FrameBatch,
    Outbox,
    OverflowPolicy,
    Pushed,
)
from wsbridge.schema import DeliveryKind, Registry

__all__ = ["Broadcaster", "Frame", "OverflowPolicy", "Stats", "Subscriber"]

logger = logging.getLogger("wsbridge")

# Endpoints enforce their own, usually tighter, limit on the names clients send.
_MAX_NAME = 4096
# How long a name the broker refused is refused again without asking: a connect storm
# must not cost the broker a refused SUBSCRIBE (and a retry per name) per client.
_REFUSAL_MEMORY = 10.0
# How long a subscription made while the broker is away waits for the reconnection.
_RESTORE_WAIT = 5.0
# Publications read from history at a time, at most, for one replay.
_REPLAY_BATCH = 100
# How long a replaying client may take to make room for its next batch.
_REPLAY_DRAIN_TIMEOUT = 10.0
# Live events held per channel while the server reads what it missed from history.
_CATCH_UP_HOLD = 10_000
# Channels whose live position the server tracks, at most.
_MAX_TRACKS = 100_000
# Latest values kept per process (state channels reached through patterns are unbounded).
_MAX_LATEST = 10_000
# Replayed frames kept for the next subscriber that replays the same publications: a
# thousand clients resuming one channel decode, check and encode each event once. The
# pages of them kept as batches (their bytes joined) hold at most as many again.
_MAX_REPLAY_FRAMES = 4096
# History pages read for a replay, kept for the replays that need the same page: within
# an epoch the publications up to a channel's top never change.
_MAX_REPLAY_PAGES = 64

#: Called once a subscription is in place, before any missed event is delivered: with the
#: names the broker refused and what each channel with history or state resumed from.
Acknowledge = Callable[[list[str], dict[str, Resumed]], None]


@dataclass
class Stats:
    """Counters of one broadcaster. ``per_channel`` maps a channel to its own counters.

    ``ready`` is :attr:`Broadcaster.ready`; ``probe_age`` is how many seconds ago the
    subscription connection last proved it delivers (``None`` with the probe off).
    """

    connections: int = 0
    subscriptions: int = 0
    upstream_subscriptions: int = 0
    messages_in: int = 0
    messages_out: int = 0
    bytes_out: int = 0
    conflated: int = 0
    dropped: int = 0
    slow_consumer_disconnects: int = 0
    broker_reconnects: int = 0
    validation_failures: int = 0
    subscriptions_refused: int = 0
    payloads_too_large: int = 0
    dispatch_errors: int = 0
    probe_failures: int = 0
    invalid_envelopes: int = 0
    replayed: int = 0
    recoveries_failed: int = 0
    broker_connected: bool = False
    ready: bool = False
    probe_age: float | None = None
    per_channel: dict[str, dict[str, int]] = field(default_factory=dict)


class _Counters:
    __slots__ = (
        "broker_reconnects",
        "bytes_out",
        "conflated",
        "dispatch_errors",
        "dropped",
        "invalid_envelopes",
        "messages_in",
        "messages_out",
        "payloads_too_large",
        "per_channel",
        "probe_failures",
        "recoveries_failed",
        "replayed",
        "slow_consumer_disconnects",
        "subscriptions_refused",
        "validation_failures",
    )

    def __init__(self) -> None:
        self.messages_in = 0
        self.messages_out = 0
        self.bytes_out = 0
        self.conflated = 0
        self.dropped = 0
        self.slow_consumer_disconnects = 0
        self.broker_reconnects = 0
        self.validation_failures = 0
        self.subscriptions_refused = 0
        self.payloads_too_large = 0
        self.dispatch_errors = 0
        self.probe_failures = 0
        self.invalid_envelopes = 0
        self.replayed = 0
        self.recoveries_failed = 0
        self.per_channel: dict[str, dict[str, int]] = {}

    def bump(self, channel: str, name: str, n: int = 1) -> None:
        counters = self.per_channel.get(channel)
        if counters is None:
            counters = self.per_channel[channel] = {}
        counters[name] = counters.get(name, 0) + n


class _Pull:
    """The connection of a subscriber read with :meth:`Subscriber.get` or ``async for``."""

    __slots__ = ("_waiter",)

    group: ConnectionGroup | None = None

    def __init__(self) -> None:
        self._waiter: asyncio.Future[None] | anyio.Event | None = None

    def offer(self, frame: Frame) -> bool:
        return False

    def wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if isinstance(waiter, asyncio.Future):
            if not waiter.done():
                waiter.set_result(None)
        elif waiter is not None:
            waiter.set()

    async def wait(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not asyncio (trio): anyio's portable event
            event = anyio.Event()
            self._waiter = event
            await event.wait()
        else:
            # On asyncio a bare future wakes the reader for a third of the CPU of an
            # anyio Event: this runs once per delivery at steady rates.
            future: asyncio.Future[None] = loop.create_future()
            self._waiter = future
            await future


class _Sink:
    """A plain callable as a connection (:attr:`Subscriber.sink`), read otherwise by pull."""

    __slots__ = ("offer", "pull")

    group: ConnectionGroup | None = None

    def __init__(self, offer: Callable[[Frame], bool], pull: _Pull) -> None:
        self.offer = offer
        self.pull = pull

    def wake(self) -> None:
        self.pull.wake()


class Subscriber:
    """One client of the broadcaster: its subscriptions, its outbox and its connection.

    Create one with :meth:`Broadcaster.subscriber` and use it as an async context
    manager; leaving it drops every subscription. Read it with ``async for`` (or
    :meth:`get`), or :meth:`attach` a :class:`~wsbridge.outbox.Connection` that writes
    its frames to a socket.
    """

    __slots__ = (
        "__weakref__",
        "_broadcaster",
        "_channels",
        "_connection",
        "_counters",
        "_drained",
        "_epochs",
        "_hold",
        "_outbox",
        "_patterns",
        "_pull",
        "_sink",
        "_started",
        "_verdicts",
        "allow",
        "close_code",
        "close_reason",
        "direct",
        "on_close",
    )

    def __init__(
        self,
        broadcaster: Broadcaster,
        *,
        max_messages: int,
        max_bytes: int,
        overflow: OverflowPolicy,
    ) -> None:
        self._outbox = Outbox(max_messages=max_messages, max_bytes=max_bytes, policy=overflow)
        self._broadcaster = broadcaster
        self._counters = broadcaster._counters
        self._pull = _Pull()
        self._connection: Connection = self._pull
        self._sink: Callable[[Frame], bool] | None = None
        # Exact channels, as a dict used as a set: a set of five names takes 728 bytes,
        # a dict 184, and every idle client holds one.
        self._channels: dict[str, None] = {}
        self._patterns: list[str] = []
        #: Set when the subscriber must be disconnected: the close code and reason.
        self.close_code: int | None = None
        self.close_reason = ""
        #: Called once when the subscriber is told to disconnect.
        self.on_close: Callable[[], None] | None = None
        #: Authorization of concrete channels reached through a pattern: an authorized
        #: ``risk:*`` must not carry a channel the client may not see. Checked once per
        #: channel and remembered.
        self.allow: Callable[[str], bool] | None = None
        self._verdicts: dict[str, bool] = {}
        # Channels whose live frames wait while the subscription is set up (its position
        # read, missed events replayed): released in order, without duplicates.
        self._hold: dict[str, list[Frame] | Position] | None = None
        #: True while a new frame may go to the connection at once: the subscriber is
        #: open, holds no channel being resumed and has nothing queued (read only). A
        #: :class:`~wsbridge.outbox.ConnectionGroup` reads it for each frame it is offered.
        self.direct = True
        self._drained: anyio.Event | None = None
        # The first live event delivered after a subscription's position, per channel.
        self._started: dict[str, Position] = {}
        # The epoch this client was told, per channel with history reached through a
        # pattern: a channel's first event (or a new epoch) is preceded by its position.
        self._epochs: dict[str, str] = {}

    # -- lifecycle -----------------------------------------------------------------

    def open(self) -> None:
        """Register with the broadcaster (``async with`` does this); it must be running."""
        self._broadcaster._attach(self)

    async def aclose(self) -> None:
        """Drop every subscription and leave the broadcaster (``async with`` does this)."""
        await self._broadcaster._detach(self)

    async def __aenter__(self) -> Subscriber:
        self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with anyio.CancelScope(shield=True):
            await self.aclose()

    # -- subscriptions -------------------------------------------------------------

    @property
    def subscriptions(self) -> frozenset[str]:
        """The channels and patterns this subscriber receives."""
        return frozenset(self._channels).union(self._patterns)

    async def subscribe(
        self,
        channels: Iterable[str],
        *,
        since: Mapping[str, Position] | None = None,
        max_replay: int = 1000,
        acknowledge: Acknowledge | None = None,
    ) -> dict[str, Resumed]:
        """Receive these channels or patterns; returns once the broker confirmed them.

        For each exact channel with history, the result says where its events start; a
        channel in ``since`` resumes after that position: the publications it missed
        (at most ``max_replay``) are delivered first, then live ones, with no duplicate
        and no gap, or the result says ``recovered=False``. A channel of ``since`` that
        is not in ``channels`` but matches a pattern of it resumes the same way, its
        live events coming through the pattern (unless ``allow`` refuses it). A new
        subscriber of a state channel first gets the channel's latest value.
        ``acknowledge`` is called before anything of that is delivered.

        Raises :class:`~wsbridge.SubscriptionRefusedError` naming the channels the broker
        refused (a Redis ACL denial); the others are subscribed. Raises ``ValueError``
        for a channel of ``since`` that neither ``channels`` nor a pattern of it covers.
        """
        return await self._broadcaster._subscribe(
            self, list(channels), since or {}, max_replay, acknowledge
        )

    async def unsubscribe(self, channels: Iterable[str]) -> None:
        """Stop receiving these channels or patterns."""
        await self._broadcaster._unsubscribe(self, list(channels))

    def _permits(self, channel: str) -> bool:
        verdict = self._verdicts.get(channel)
        if verdict is None:
            if len(self._verdicts) >= 4096:
                self._verdicts.clear()
            allow = self.allow
            verdict = self._verdicts[channel] = allow is None or bool(allow(channel))
        return verdict

    def _owns(self, channel: str, pattern: str) -> bool:
        # A subscriber whose subscriptions overlap gets each event once: through its exact
        # subscription if it has one, else through its smallest matching pattern.
        if channel in self._channels:
            return False
        patterns = self._patterns
        if len(patterns) == 1:
            return True
        for p in patterns:  # kept sorted
            if glob_match(p, channel):
                return p == pattern
        return False

    def _resumed_at(self, channel: str, since: Position | None) -> Resumed | None:
        """Where a channel already delivering events on this connection stands."""
        hold = self._hold
        floor = hold.get(channel) if hold is not None else None
        started = self._started.get(channel)
        if isinstance(floor, Position):
            start = floor  # nothing delivered yet: events follow this position
        elif started is not None:
            start = Position(started.epoch, started.offset - 1)
        else:
            return None if since is None else Resumed(None, False)
        if since is None:
            return Resumed(start)
        # Recovered when what this connection delivers joins what the client has seen.
        recovered = since.epoch == start.epoch and since.offset >= start.offset
        return Resumed(start, recovered)

    def _known_epoch(self, channel: str, epoch: str) -> None:
        epochs = self._epochs
        if len(epochs) >= 4096 and channel not in epochs:
            epochs.clear()  # bounded: at worst a position is told again
        epochs[channel] = epoch

    def _announce(self, frame: Frame) -> None:
        """Before ``frame`` (through a pattern): its channel's position, if not told yet."""
        channel, epoch = frame.channel, frame.epoch
        known = self._epochs.get(channel)
        self._known_epoch(channel, epoch)
        text = protocol.position_frame(
            channel, epoch, frame.offset - 1, recovered=None if known is None else False
        )
        if known is not None:
            self._counters.recoveries_failed += 1
            self._counters.bump(channel, "recoveries_failed")
        position = _PositionFrame(channel, text, epoch, frame.offset - 1)
        if self._hold is not None:
            self._deliver(position)
        else:
            self.push(position)

    # -- delivery ------------------------------------------------------------------

    def attach(self, connection: Connection | None) -> None:
        """Have ``connection`` write this subscriber's frames; ``None``: read by pull again."""
        self._sink = None
        self._connection = self._pull if connection is None else connection
        self._broadcaster._regroup(self)

    @property
    def sink(self) -> Callable[[Frame], bool] | None:
        """A callable that takes a frame at once (True) or refuses it (False), or ``None``.

        Setting it attaches a connection whose :meth:`~wsbridge.outbox.Connection.offer`
        is the callable; refused frames wait in the outbox for :meth:`get`.
        """
        return self._sink

    @sink.setter
    def sink(self, offer: Callable[[Frame], bool] | None) -> None:
        self.attach(None if offer is None else _Sink(offer, self._pull))
        self._sink = offer

    @property
    def pending(self) -> int:
        """Frames waiting to be sent."""
        return len(self._outbox.frames)

    @property
    def closed(self) -> bool:
        """True once the subscriber was told to disconnect."""
        return self.close_code is not None

    def push(self, frame: Frame) -> None:
        """Deliver a frame without waiting: to the connection, or into the outbox."""
        if self.close_code is not None:
            return
        outbox = self._outbox
        connection = self._connection
        # Order: a connection takes a frame itself only while nothing is queued before it.
        if not outbox.frames and connection.offer(frame):
            counters = self._counters
            counters.messages_out += 1
            counters.bytes_out += frame.size
            return
        self._enqueue(frame)

    def push_batch(self, batch: FrameBatch) -> None:
        """Deliver frames in order without waiting, as :meth:`push` of each would.

        A connection with ``offer_batch`` takes the whole batch at once while nothing is
        queued before it; otherwise each frame is offered, or queued under the outbox's
        bounds and overflow policy, in turn.
        """
        if self.close_code is not None:
            return
        if not self._outbox.frames:
            offer = getattr(self._connection, "offer_batch", None)
            if offer is not None and offer(batch):
                counters = self._counters
                counters.messages_out += len(batch.frames)
                counters.bytes_out += batch.size
                return
        push = self.push
        for frame in batch.frames:
            push(frame)

    def enqueue(self, frame: Frame) -> None:
        """Queue a frame in the outbox, without offering it, and wake the connection.

        For a :class:`~wsbridge.outbox.ConnectionGroup`, with each frame it does not write:
        the outbox's bounds and overflow policy apply as for any queued frame, a channel
        being resumed keeps its live frames in order, and a closed subscriber ignores it.
        """
        if self.close_code is None:
            if self._hold is None:
                self._enqueue(frame)
            else:
                self._deliver(frame)  # a channel being resumed holds its live frames

    def _deliver(self, frame: Frame) -> None:
        hold = self._hold
        if hold is not None:
            held = hold.get(frame.channel)
            if isinstance(held, list):
                if len(held) >= self._outbox.max_messages:
                    self._counters.slow_consumer_disconnects += 1
                    self.close(protocol.CLOSE_SLOW_CONSUMER, "slow consumer: too much to resume")
                else:
                    held.append(frame)
                return
            if held is not None:
                if isinstance(frame, _PositionFrame):
                    if not frame.covers(held):
                        self.push(frame)  # a loss after this subscription's start
                    return
                # A position this subscription starts after: what is not after it was
                # replayed, or published before the subscription.
                if frame.epoch == held.epoch and 0 < frame.offset <= held.offset:
                    return
                self._started[frame.channel] = self._broadcaster._start_of(frame)
                del hold[frame.channel]
                if not hold:
                    self._hold = None
                    self._recheck()
            self.push(frame)
            return
        self._enqueue(frame)

    def _enqueue(self, frame: Frame) -> None:
        pushed = self._outbox.push(frame)
        if pushed is not QUEUED:
            self._overflowed(frame, pushed)
            if not pushed.queued:
                return
        self.direct = False
        self._connection.wake()

    def _recheck(self) -> None:
        """Bring :attr:`direct` up to date after the hold or the outbox emptied."""
        self.direct = self.close_code is None and self._hold is None and not self._outbox.frames

    def send_text(self, text: str) -> None:
        """Queue a control frame (a pong, an acknowledgement) for this client only."""
        self.push(Frame("", text))

    def _overflowed(self, frame: Frame, pushed: Pushed) -> None:
        counters = self._counters
        if pushed.conflated:
            counters.conflated += pushed.conflated
            counters.bump(frame.channel, "conflated", pushed.conflated)
        if pushed.dropped:
            counters.dropped += 1
            counters.bump(frame.channel, "dropped")
        elif pushed.overflow:
            counters.slow_consumer_disconnects += 1
            self.close(protocol.CLOSE_SLOW_CONSUMER, "slow consumer: outbound buffer full")

    def close(self, code: int, reason: str) -> None:
        """Ask the driver to close this client; pending frames are discarded."""
        if self.close_code is not None:
            return
        self.close_code = code
        self.close_reason = reason
        self.direct = False
        self._outbox.close()
        self._connection.wake()
        if self.on_close is not None:
            self.on_close()

    def get_nowait(self) -> list[Frame]:
        """Take every pending frame, oldest first, without waiting."""
        outbox = self._outbox
        sent = outbox.bytes
        frames = outbox.take()
        self._recheck()
        drained = self._drained
        if drained is not None:
            self._drained = None
            drained.set()
        counters = self._counters
        counters.messages_out += len(frames)
        counters.bytes_out += sent
        return frames

    async def get(self) -> list[Frame]:
        """Wait for frames and take all of them; an empty list means: close now.

        Only for a subscriber read by pull (no connection attached).
        """
        while not self._outbox and self.close_code is None:
            await self._pull.wait()
        if self.close_code is not None:
            return []
        return self.get_nowait()

    def __aiter__(self) -> AsyncIterator[Frame]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Frame]:
        while True:
            frames = await self.get()
            if not frames:
                return
            for frame in frames:
                yield frame


ValidationPolicy = Literal["forward", "drop", "off"]


def _size(data: bytes | str) -> int:
    return len(data) if isinstance(data, bytes) else len(data.encode("utf-8", "surrogatepass"))


@dataclass
class _Plan:
    """How a held subscription starts: what it resumed from, and what to deliver first."""

    resumed: Resumed
    latest: Frame | None = None
    top: Position | None = None
    replay: Page | None = None
    history: History | None = None
    after: int = 0


class _PositionFrame(Frame):
    """A ``position`` frame: the channel's events that follow come after ``after``."""

    __slots__ = ("after",)

    def __init__(self, channel: str, text: str, epoch: str, after: int) -> None:
        super().__init__(channel, text, epoch=epoch)
        self.after = after

    def covers(self, position: Position) -> bool:
        """Whether a subscriber starting after ``position`` lost nothing this frame reports."""
        return self.epoch == position.epoch and self.after <= position.offset


class _Track:
    """The server's own position on a channel with history, and its catch-up state."""

    __slots__ = ("catching", "epoch", "offset", "overflowed", "seeded")

    def __init__(self, epoch: str, offset: int, *, seeded: bool = False) -> None:
        self.epoch = epoch
        self.offset = offset
        # Started from a subscription's position, before any live event: the earliest
        # position a subscriber starts from wins.
        self.seeded = seeded
        # While reading missed events from history: the live ones that arrive meanwhile.
        self.catching: list[tuple[str, int, bytes]] | None = None
        self.overflowed = False


def _announced(targets: Iterable[Subscriber], frame: Frame) -> Iterator[Subscriber]:
    """The targets, each told the position of ``frame``'s epoch before its first event."""
    epoch = frame.epoch
    channel = frame.channel
    for subscriber in targets:
        if subscriber._epochs.get(channel) != epoch and subscriber.close_code is None:
            subscriber._announce(frame)
        yield subscriber


class _SharedRead:
    """A replay's history read that other replays from the same place wait for."""

    __slots__ = ("done", "page")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.page: Page | None = None


class _FirstRead:
    """A subscription's first history read, shared by those set up before it is sent.

    Each of them was registered with the broker before the read, so the top it reads is
    one where their live events take over.
    """

    __slots__ = ("done", "error", "page", "sent")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.sent = False
        self.page: Page | None = None
        self.error: BrokerUnavailableError | None = None


def _entry_offset(entry: tuple[int, bytes]) -> int:
    return entry[0]


def _replay_batch(subscriber: Subscriber) -> int:
    # Half the outbox at most: live events of other channels keep room to arrive.
    return max(1, min(_REPLAY_BATCH, subscriber._outbox.max_messages // 2))


async def _drain(subscriber: Subscriber) -> bool:
    """Wait until the subscriber's outbox has room for a replay batch; False: it stalled."""
    limit = subscriber._outbox.max_messages // 2
    if len(subscriber._outbox) <= limit or subscriber.closed:
        return True  # the usual case, without a cancel scope per page
    with anyio.move_on_after(_REPLAY_DRAIN_TIMEOUT):
        while len(subscriber._outbox) > limit and not subscriber.closed:
            event = subscriber._drained = anyio.Event()
            await event.wait()
        return True
    return False


class _Segment:
    """Subscribers next to each other in a route: of one connection group, or of none."""

    __slots__ = ("connections", "group", "subscribers")

    def __init__(self, group: ConnectionGroup | None) -> None:
        self.group = group
        self.connections: list[Connection] = []  # with a group: what it is offered
        self.subscribers: list[Subscriber] = []  # without one: offered one by one


def _plan(route: dict[Subscriber, None]) -> list[_Segment]:
    """Cut a route into runs of subscribers whose connections share a group, in order."""
    plan: list[_Segment] = []
    current: _Segment | None = None
    for subscriber in route:
        connection = subscriber._connection
        group = connection.group
        if current is None or group is not current.group:
            current = _Segment(group)
            plan.append(current)
        if group is None:
            current.subscribers.append(subscriber)
        else:
            current.connections.append(connection)
    return plan


class Broadcaster:
    """Owns one broker connection per process and fans its messages out to subscribers.

    ``broker`` is a URL (``memory://``, ``redis://host:6379/0``, ``rediss://...``) or a
    ready :class:`~wsbridge.backends.Backend`. ``registry`` holds the event schemas: it
    validates what :meth:`publish` sends and tells which channels carry state.
    ``validation`` says what to do with a broker message that fails its schema (another
    process published it): ``"forward"`` it unchanged (the default, as the reference
    system does), ``"drop"`` it, or ``"off"`` to skip the check. Either way failures are
    counted, and logged at most once per ``log_interval`` seconds per channel.

    A broker message is hostile input too. One larger than ``max_payload_bytes`` (``None``:
    no limit) is dropped; one that is not JSON, or is nested deeper than
    :data:`~wsbridge.protocol.MAX_DEPTH`, is forwarded as ``{"raw": "<text>"}``. Any error
    while delivering one message skips that message only. Drops and errors are counted
    in :meth:`stats` and logged as one line, at most once per ``log_interval`` seconds.

    The liveness probe catches a subscription connection that stays open but no longer
    delivers: when no message arrived for ``probe_interval`` seconds, the broadcaster
    publishes to its own probe channel (named ``probe_prefix`` plus a random id) and
    expects it back within ``probe_timeout``; if it does not come back, the connection is
    dropped and made anew, as after any loss. ``probe_interval=0`` turns it off.

    Use it as an async context manager, or pass :meth:`lifespan` to an ASGI framework.
    """

    def __init__(
        self,
        broker: str | Backend = "memory://",
        *,
        registry: Registry | None = None,
        validation: ValidationPolicy = "forward",
        reconnect_delay: float = 0.5,
        max_reconnect_delay: float = 10.0,
        health_check_interval: float = 10.0,
        probe_interval: float = 30.0,
        probe_timeout: float = 5.0,
        probe_prefix: str = "__wsbridge:probe:",
        shutdown_timeout: float = 5.0,
        log_interval: float = 60.0,
        max_payload_bytes: int | None = 1024 * 1024,
        backend_options: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(broker, str):
            self._backend: Backend = backend_from_url(broker, **dict(backend_options or {}))
            self.url = broker
        else:
            if backend_options:
                raise ConfigurationError("backend_options only apply when the broker is a URL")
            self._backend = broker
            self.url = type(broker).__name__
        if validation not in ("forward", "drop", "off"):
            raise ConfigurationError("validation must be 'forward', 'drop' or 'off'")
        if not 0 < reconnect_delay <= max_reconnect_delay:
            raise ConfigurationError("need 0 < reconnect_delay <= max_reconnect_delay")
        if max_payload_bytes is not None and max_payload_bytes < 1:
            raise ConfigurationError("max_payload_bytes must be positive or None")
        self._max_payload = max_payload_bytes
        if not (probe_interval >= 0 and probe_timeout > 0):
            raise ConfigurationError("need probe_interval >= 0 and probe_timeout > 0")
        self.registry = registry if registry is not None else Registry()
        self._validation = validation
        self._reconnect_delay = reconnect_delay
        self._max_reconnect_delay = max_reconnect_delay
        self._health_check_interval = health_check_interval
        self._probe = _Probe(probe_interval, probe_timeout, probe_prefix + uuid.uuid4().hex)
        self._shutdown_timeout = shutdown_timeout
        self._log_interval = log_interval
        self._counters = _Counters()
        self._subscribers: set[Subscriber] = set()
        # A route is an insertion-ordered dict used as a set: clients get each event in the
        # order they subscribed, not in an order set by memory addresses.
        self._routes: dict[str, dict[Subscriber, None]] = {}
        # Each exact channel's route, cut into runs of subscribers whose connections share
        # a group, in route order: built on the first event after the route or one of its
        # connections changed, so that an event costs no sorting.
        self._plans: dict[str, list[_Segment]] = {}
        self._upstream: set[str] = set()
        self._upstream_lock = anyio.Lock()
        self._kinds: dict[str, bool] = {}
        backend = self._backend
        self._history: HistoryBackend | None = (
            backend if isinstance(backend, HistoryBackend) else None
        )
        # The last publication seen on each state channel, for new subscribers.
        self._latest: dict[str, Frame] = {}
        self._tracks: dict[str, _Track] = {}
        # The same for channels reached through a pattern, per pattern: each pattern's
        # subscription gets its own copy of an event, so each follows its own position.
        self._pattern_tracks: dict[str, dict[str, _Track]] = {}
        self._replay_frames: dict[tuple[str, str, int], Frame | None] = {}
        self._replay_pages: dict[tuple[str, str, int, int], _SharedRead] = {}
        # Replayed pages as batches, by channel, epoch, first and last offset; and how
        # many frames they hold together (at most _MAX_REPLAY_FRAMES).
        self._replay_batches: dict[tuple[str, str, int, int], FrameBatch] = {}
        self._replay_batched = 0
        # First history reads of subscriptions, by channel, offset and limit: the one
        # not sent yet, which subscriptions set up meanwhile join.
        self._first_reads: dict[tuple[str, int, int], _FirstRead] = {}
        # The last frame a subscriber started a channel at, and its position: the clients
        # that start at the same event share one Position instead of holding one each.
        self._last_start: tuple[Frame, Position] | None = None
        self._refusals: dict[str, tuple[str, float]] = {}  # name -> (reason, when)
        self._last_log: dict[str, float] = {}
        self._task_group: anyio.abc.TaskGroup | None = None
        self._running = False
        self._connected = False
        # False from a broker loss (or a subscription that failed for want of the broker)
        # until every channel clients hold is subscribed again.
        self._synced = False
        self._idle = anyio.Event()
        self._restored = anyio.Event()  # set while no reconnect is under way

    # -- lifecycle -----------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True between start and stop."""
        return self._running

    @property
    def broker_connected(self) -> bool:
        """True while the broker connection is up."""
        return self._connected

    @property
    def ready(self) -> bool:
        """True when this process can deliver: what a readiness check (``/readyz``) asks.

        Running, connected to the broker, every channel clients hold subscribed upstream
        and confirmed (names the broker refused aside), and, with the liveness probe on,
        the subscription connection seen delivering within the last two probe intervals
        plus the probe timeout.
        """
        return self._running and self._connected and self._synced and self._probe.fresh()

    async def __aenter__(self) -> Broadcaster:
        if self._running:
            raise ConfigurationError("this broadcaster is already running")
        # Created here, in the event loop that runs the broadcaster.
        self._upstream_lock = anyio.Lock()
        self._idle = anyio.Event()
        self._restored = anyio.Event()
        self._restored.set()
        await self._backend.connect()
        self._connected = True
        self._synced = True
        self._probe.reset()
        self._upstream.clear()
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        self._running = True
        task_group.start_soon(self._run)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        await self.aclose()
        return None

    async def aclose(self) -> None:
        """Stop: close every client with 1001, release the broker, end every task."""
        task_group, self._task_group = self._task_group, None
        if task_group is None:
            return
        self._running = False
        try:
            with anyio.CancelScope(shield=True):
                await self.close_clients(protocol.CLOSE_GOING_AWAY, "server shutting down")
        finally:
            task_group.cancel_scope.cancel()
            await task_group.__aexit__(None, None, None)
            self._connected = False
            with anyio.CancelScope(shield=True):
                await self._backend.close()
            self._routes.clear()
            self._plans.clear()
            self._upstream.clear()

    async def close_clients(self, code: int = protocol.CLOSE_GOING_AWAY, reason: str = "") -> None:
        """Close every subscriber and wait, at most ``shutdown_timeout`` s, for them to go."""
        for subscriber in list(self._subscribers):
            subscriber.close(code, reason)
        with anyio.move_on_after(self._shutdown_timeout):
            while self._subscribers:
                self._idle = anyio.Event()
                await self._idle.wait()

    @asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """An ASGI lifespan: ``FastAPI(lifespan=broadcaster.lifespan)``."""
        async with self:
            yield

    # -- subscribers ---------------------------------------------------------------

    def subscriber(
        self,
        *,
        max_messages: int = 1000,
        max_bytes: int = 4 * 1024 * 1024,
        overflow: OverflowPolicy | str = OverflowPolicy.DISCONNECT,
    ) -> Subscriber:
        """Create a subscriber with its own bounded outbox; use it with ``async with``."""
        return Subscriber(
            self, max_messages=max_messages, max_bytes=max_bytes, overflow=OverflowPolicy(overflow)
        )

    def _attach(self, subscriber: Subscriber) -> None:
        if not self._running:
            raise BrokerClosedError("the broadcaster is not running")
        self._subscribers.add(subscriber)

    async def _detach(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)
        keys = list(subscriber._channels) + subscriber._patterns
        subscriber._channels.clear()
        subscriber._patterns.clear()
        self._remove_routes(subscriber, keys)
        if not self._subscribers:
            self._idle.set()
        await self._sync_upstream()

    def _start_of(self, frame: Frame) -> Position:
        """``frame``'s position, the same object for every subscriber starting at it."""
        start = self._last_start
        if start is None or start[0] is not frame:
            start = self._last_start = (frame, Position(frame.epoch, frame.offset))
        return start[1]

    def _keeps(self, channel: str) -> bool:
        """Whether subscribing to ``channel`` starts from a position or a latest value."""
        return not is_pattern(channel) and (
            self.registry.history_for(channel) is not None or self._conflatable(channel)
        )

    async def _subscribe(
        self,
        subscriber: Subscriber,
        channels: list[str],
        since: Mapping[str, Position],
        max_replay: int,
        acknowledge: Acknowledge | None,
    ) -> dict[str, Resumed]:
        if subscriber not in self._subscribers:
            raise BrokerClosedError("subscribe on a subscriber that is not open")
        for channel in channels:
            validate_channel(channel, max_length=_MAX_NAME)
        refusals = self._refusals
        refused: dict[str, str] = {}
        if refusals:
            now = time.monotonic()
            for channel in channels:
                known = refusals.get(channel)
                if known is not None and now - known[1] < _REFUSAL_MEMORY:
                    refused[channel] = known[0]
        # Channels resumed through a pattern of the request: named in ``since`` only.
        covered = self._covered(subscriber, channels, since, refused)
        # Hold the live frames of what starts from a position or a latest value: new
        # subscriptions, and held ones the client resumes.
        held: list[str] = []
        already: dict[str, Resumed] = {}
        for ch in dict.fromkeys([*channels, *covered]):
            if ch in refused or not self._keeps(ch):
                continue
            current = subscriber._hold.get(ch) if subscriber._hold is not None else None
            if isinstance(current, list):
                continue  # another subscribe is setting it up
            if ch in covered and not covered[ch] and ch not in subscriber._channels:
                # Its pattern was held already: events of it may have been delivered.
                found = subscriber._resumed_at(ch, since[ch])
                if found is not None:
                    already[ch] = found
                continue
            if ch in subscriber._channels:
                if ch in since and isinstance(current, Position):
                    held.append(ch)  # nothing delivered on it yet: resume from scratch
                else:
                    found = subscriber._resumed_at(ch, since.get(ch))
                    if found is not None:
                        already[ch] = found
                continue
            held.append(ch)
        if held:
            hold = subscriber._hold
            if hold is None:
                hold = subscriber._hold = {}
                subscriber.direct = False
            for ch in held:
                hold[ch] = []
        try:
            return await self._subscribe_held(
                subscriber, channels, since, max_replay, acknowledge, refused, held, already
            )
        finally:
            hold = subscriber._hold
            if hold is not None:
                for ch in held:  # an error or a cancellation: nothing stays held
                    frames = hold.get(ch)
                    if isinstance(frames, list):
                        del hold[ch]
                        for frame in frames:
                            subscriber.push(frame)
                if not hold:
                    subscriber._hold = None
                    subscriber._recheck()

    def _covered(
        self,
        subscriber: Subscriber,
        channels: list[str],
        since: Mapping[str, Position],
        refused: Mapping[str, str],
    ) -> dict[str, bool]:
        """The channels of ``since`` that only a pattern of ``channels`` covers.

        Each maps to whether one of those patterns is new to the subscriber (its missed
        events can be replayed before the pattern's live ones). A channel the
        subscriber may not see through a pattern is left out: it is not resumed.
        """
        covered: dict[str, bool] = {}
        for ch in since:
            if ch in channels:
                continue
            validate_channel(ch, max_length=_MAX_NAME)
            patterns = [
                p for p in channels if is_pattern(p) and p not in refused and glob_match(p, ch)
            ]
            if is_pattern(ch) or not patterns:
                raise ValueError(f"since names {ch!r}, which no channel or pattern asked covers")
            if subscriber._permits(ch):
                covered[ch] = any(p not in subscriber._patterns for p in patterns)
        return covered

    async def _subscribe_held(
        self,
        subscriber: Subscriber,
        channels: list[str],
        since: Mapping[str, Position],
        max_replay: int,
        acknowledge: Acknowledge | None,
        refused: dict[str, str],
        held: list[str],
        already: dict[str, Resumed],
    ) -> dict[str, Resumed]:
        refusals = self._refusals
        for channel in channels:
            if channel in refused:
                continue
            if is_pattern(channel):
                if channel not in subscriber._patterns:
                    subscriber._patterns.append(channel)
                    subscriber._patterns.sort()
            else:
                subscriber._channels[channel] = None
            self._routes.setdefault(channel, {})[subscriber] = None
            self._plans.pop(channel, None)
        await self._sync_upstream(wait_for_broker=True)
        if refusals:
            # A refusal in this round took the name off the subscriber's own list too.
            for ch in channels:
                if (
                    ch not in refused
                    and ch in refusals
                    and ch not in subscriber._channels
                    and ch not in subscriber._patterns
                ):
                    refused[ch] = refusals[ch][0]
        plans: dict[str, _Plan] = {}
        for ch in held:
            if ch not in refused:
                plans[ch] = await self._plan(subscriber, ch, since.get(ch), max_replay)
        resumed = {ch: plan.resumed for ch, plan in plans.items()}
        resumed.update(already)
        for ch, found in resumed.items():
            if found.position is not None:
                subscriber._known_epoch(ch, found.position.epoch)
        if acknowledge is not None:
            acknowledge(list(refused), resumed)
        for ch, plan in plans.items():
            await self._start(subscriber, ch, plan)
        if refused:
            self._counters.subscriptions_refused += len(refused)
            names = list(refused)
            raise SubscriptionRefusedError(names, refused[names[0]])
        return resumed

    async def _plan(
        self, subscriber: Subscriber, channel: str, since: Position | None, max_replay: int
    ) -> _Plan:
        """Where a held subscription starts: its position, and what to replay first."""
        history = self.registry.history_for(channel)
        backend = self._history
        latest: Frame | None = None
        if self._conflatable(channel) and channel not in self._latest and backend is not None:
            try:
                data = await backend.latest(channel)
            except BrokerUnavailableError:
                data = None
            if data is not None:
                latest = self._build(channel, data)
        if history is None or backend is None:
            return _Plan(Resumed(None, None if since is None else False), latest)
        batch = _replay_batch(subscriber)
        wanted = since is not None and max_replay >= 0
        after = since.offset if since is not None else 0
        # A page another replay read from the same place: then only the top, and the first
        # publication (still kept?), are read here.
        kept = self._kept_page(channel, since, batch) if wanted else None
        limit = (batch if kept is None else 1) if wanted else 0
        try:
            page = await self._first_read(backend, channel, history, after, limit)
        except BrokerUnavailableError as exc:
            self._log_limited(
                f"history:{channel}", "wsbridge: cannot read history of %r: %s", channel, exc
            )
            if since is not None:
                self._counters.recoveries_failed += 1
            return _Plan(Resumed(None, None if since is None else False), latest)
        top = page.position
        if channel in subscriber._channels:
            self._seed(channel, top)
        else:  # resumed through a pattern: its live events come through that
            for pattern in subscriber._patterns:
                if glob_match(pattern, channel):
                    self._seed(channel, top, pattern)
        if since is None:
            return _Plan(Resumed(top), latest, top=top)
        if kept is not None:
            # History is trimmed oldest first: while the publication after ``since`` is
            # kept, so is every later one, as the page read before has them.
            first = page.entries[0][0] if page.entries else None
            if first == after + 1 and kept.entries[0][0] == first:
                page = Page(top, kept.entries)
        elif wanted and page.entries:
            self._keep_page(channel, top.epoch, after, batch, page)
        entries = page.entries
        recovered = (
            since.epoch == top.epoch
            and since.offset <= top.offset
            and top.offset - since.offset <= max_replay
            and (since.offset == top.offset or (entries and entries[0][0] == since.offset + 1))
        )
        if not recovered:
            self._counters.recoveries_failed += 1
            self._counters.bump(channel, "recoveries_failed")
            return _Plan(Resumed(top, False), latest, top=top)
        return _Plan(
            Resumed(top, True), latest, top=top, replay=page, history=history, after=since.offset
        )

    def _kept_page(self, channel: str, since: Position | None, limit: int) -> Page | None:
        """A page of publications just after ``since`` read before, with at least one."""
        if since is None:
            return None
        shared = self._replay_pages.get((channel, since.epoch, since.offset, limit))
        if shared is None or not shared.done.is_set():
            return None
        page = shared.page
        # An empty page says nothing of what follows ``since`` now: read it again.
        return page if page is not None and page.entries else None

    def _keep_page(self, channel: str, epoch: str, after: int, limit: int, page: Page) -> None:
        """Keep a subscription's first page for the replays that start at the same place.

        Within an epoch the publications up to the top never change: a page read earlier
        is still right, only possibly shorter (the replay reads on from its end). Each
        subscription still reads its top, and whether the publication after its position
        is still kept (:meth:`_plan`), as a read of the whole page would tell.
        """
        key = (channel, epoch, after, limit)
        pages = self._replay_pages
        if key not in pages:
            if len(pages) >= _MAX_REPLAY_PAGES:
                pages.clear()
            shared = pages[key] = _SharedRead()
            shared.page = page
            shared.done.set()

    async def _first_read(
        self, backend: HistoryBackend, channel: str, history: History, after: int, limit: int
    ) -> Page:
        """A subscription's first read of history, shared with the ones set up meanwhile.

        Its top must be read after the subscription was registered with the broker (live
        events after it then reach the subscriber): so a subscription joins only a read
        not sent yet. One read per key is in flight at a time; the subscriptions that come
        meanwhile wait together for the next, which goes when it returns. A thousand
        clients resuming from one place then cost the broker a few reads, not a thousand.
        """
        key = (channel, after, limit)
        reads = self._first_reads
        current = reads.get(key)
        if current is not None and not current.sent:
            await current.done.wait()
            if current.error is not None:
                raise BrokerUnavailableError(str(current.error)) from current.error
            if current.page is not None:
                return current.page
            # Its reader was cancelled before it read: read alone, later than it would have.
            return await backend.read_history(channel, history, after, limit)
        mine = reads[key] = _FirstRead()
        try:
            if current is not None:
                await current.done.wait()  # bounded by that read's own timeout
            mine.sent = True
            mine.page = await backend.read_history(channel, history, after, limit)
            return mine.page
        except BrokerUnavailableError as exc:
            mine.error = exc
            raise
        finally:
            mine.sent = True
            if reads.get(key) is mine:
                del reads[key]
            mine.done.set()

    def _seed(self, channel: str, position: Position, pattern: str | None = None) -> None:
        """Follow a channel from a subscription's position until a live event arrives.

        Without it, what is published between a subscription and a broker outage that
        comes before the first live event would not be read back after the reconnect.
        ``pattern``: the subscription its live events come through, if not its own.
        """
        tracks = self._tracks_of(pattern)
        track = tracks.get(channel)
        if track is None:
            if len(tracks) >= _MAX_TRACKS:
                tracks.clear()
            tracks[channel] = _Track(position.epoch, position.offset, seeded=True)
        elif track.seeded and track.catching is None and track.epoch == position.epoch:
            track.offset = min(track.offset, position.offset)

    async def _start(self, subscriber: Subscriber, channel: str, plan: _Plan) -> None:
        """Deliver a held subscription's latest value or missed events, then release it."""
        page = plan.replay
        position = plan.resumed.position
        top = plan.top
        if page is not None and top is not None:
            last = self._push_page(subscriber, channel, page, plan.after, top)
            backend = self._history
            while last < top.offset and backend is not None and plan.history is not None:
                if not await _drain(subscriber):
                    self._counters.slow_consumer_disconnects += 1
                    subscriber.close(protocol.CLOSE_SLOW_CONSUMER, "slow consumer: replay")
                if subscriber.closed:
                    return
                page = await self._replay_read(
                    channel, plan.history, top.epoch, last, _replay_batch(subscriber)
                )
                entries = page.entries
                if page.position.epoch != top.epoch or not entries or entries[0][0] != last + 1:
                    # Promised, then lost (trimmed or reset meanwhile): never a silent
                    # gap; the client reconnects, resumes, and learns what is lost.
                    self._counters.recoveries_failed += 1
                    subscriber.close(protocol.CLOSE_TRY_AGAIN_LATER, "history lost during replay")
                    return
                last = self._push_page(subscriber, channel, page, last, top)
            position = Position(top.epoch, last)
        hold = subscriber._hold
        frames = hold.pop(channel, None) if hold is not None else None
        if hold is None or not isinstance(frames, list):
            return
        if not frames:
            latest = self._latest.get(channel) or plan.latest
            if latest is not None:
                subscriber.push(latest)
        passed = position is None
        for frame in frames:
            if not passed:
                assert position is not None
                if isinstance(frame, _PositionFrame):
                    if not frame.covers(position):
                        subscriber.push(frame)
                    continue
                if frame.epoch == position.epoch and 0 < frame.offset <= position.offset:
                    continue  # at or before the position: replayed, or before the start
                passed = True
            subscriber.push(frame)
        if not passed and position is not None:
            # Live frames up to the position may still be on their way from the broker.
            hold[channel] = position
        elif not hold:
            subscriber._hold = None
            subscriber._recheck()

    async def _replay_read(
        self, channel: str, history: History, epoch: str, after: int, limit: int
    ) -> Page:
        """The page of history after ``after``, read once for every replay that needs it.

        A thousand clients resuming from one position would otherwise each read the same
        pages from the broker. A failed read is not kept (an empty page: the caller sees
        the history as lost); a reader that fails or is cancelled lets its waiters read
        for themselves.
        """
        key = (channel, epoch, after, limit)
        pages = self._replay_pages
        shared = pages.get(key)
        if shared is not None:
            await shared.done.wait()
            if shared.page is not None:
                return shared.page
            shared = None
        else:
            if len(pages) >= _MAX_REPLAY_PAGES:
                pages.clear()
            shared = pages[key] = _SharedRead()
        backend = self._history
        page: Page | None = None
        try:
            if backend is not None:
                page = await backend.read_history(channel, history, after, limit)
        except BrokerUnavailableError:
            page = None
        finally:
            if shared is not None:
                shared.page = page
                shared.done.set()
                if page is None and pages.get(key) is shared:
                    del pages[key]
        return page if page is not None else Page(Position("", 0))

    def _push_page(
        self, subscriber: Subscriber, channel: str, page: Page, last: int, top: Position
    ) -> int:
        """Push the page's publications after ``last`` up to ``top``; the last one pushed."""
        entries = page.entries
        if entries and entries[0][0] > last and entries[-1][0] <= top.offset:
            lo, hi = 0, len(entries)  # the usual page: all of it
        else:
            lo = bisect.bisect_right(entries, last, key=_entry_offset)
            hi = bisect.bisect_right(entries, top.offset, lo=lo, key=_entry_offset)
        if lo >= hi:
            return last
        first, last = entries[lo][0], entries[hi - 1][0]
        # Clients resuming from one place get the same pages: one batch each, shared.
        key = (channel, top.epoch, first, last)
        batches = self._replay_batches
        batch = batches.get(key)
        if batch is None:
            batch = FrameBatch(
                frame
                for frame in (
                    self._replay_frame(channel, top.epoch, offset, data)
                    for offset, data in entries[lo:hi]
                )
                if frame is not None
            )
            self._replay_batched += len(batch)
            if self._replay_batched > _MAX_REPLAY_FRAMES:
                batches.clear()
                self._replay_batched = len(batch)
            batches[key] = batch
        if batch.frames:
            subscriber.push_batch(batch)
            self._counters.replayed += len(batch.frames)
        return last

    def _replay_frame(self, channel: str, epoch: str, offset: int, data: bytes) -> Frame | None:
        # An epoch and an offset name one publication: its frame is the same for all.
        built = self._replay_frames
        key = (channel, epoch, offset)
        if key in built:
            return built[key]
        frame = self._build(channel, data, epoch, offset)
        if len(built) >= _MAX_REPLAY_FRAMES:
            built.clear()
        built[key] = frame
        return frame

    async def _unsubscribe(self, subscriber: Subscriber, channels: list[str]) -> None:
        gone = []
        hold = subscriber._hold
        for channel in channels:
            subscriber._started.pop(channel, None)
            if hold is not None:
                hold.pop(channel, None)
                if not hold:
                    hold = subscriber._hold = None
                    subscriber._recheck()
            if channel in subscriber._channels:
                del subscriber._channels[channel]
                gone.append(channel)
            elif channel in subscriber._patterns:
                subscriber._patterns.remove(channel)
                gone.append(channel)
        self._remove_routes(subscriber, gone)
        await self._sync_upstream()

    def _remove_routes(self, subscriber: Subscriber, keys: Iterable[str]) -> None:
        plans = self._plans
        for key in keys:
            plans.pop(key, None)
            route = self._routes.get(key)
            if route is not None:
                route.pop(subscriber, None)
                if not route:
                    del self._routes[key]

    def _regroup(self, subscriber: Subscriber) -> None:
        """A subscriber's connection changed: its channels' plans are out of date."""
        plans = self._plans
        if plans:
            for channel in subscriber._channels:
                plans.pop(channel, None)

    async def _sync_upstream(self, *, wait_for_broker: bool = False) -> bool:
        # Serialised: concurrent first subscriptions to one channel issue one SUBSCRIBE,
        # and every caller returns only once the broker holds what the routes need.
        # Returns False when the broker could not take them all.
        if wait_for_broker and not self._connected:
            # The reconnect resubscribes every route, this one included. Wait for it
            # (bounded): a subscription acknowledged before the broker holds it would
            # silently miss the events published in between.
            with anyio.move_on_after(_RESTORE_WAIT):
                await self._restored.wait()
        async with self._upstream_lock:
            if not self._connected:
                return False  # the reconnect resubscribes everything
            wanted = set(self._routes)
            add = wanted - self._upstream
            drop = self._upstream - wanted
            try:
                if drop:
                    self._upstream -= drop
                    for key in drop:
                        self._tracks.pop(key, None)
                        self._pattern_tracks.pop(key, None)
                    await self._backend.unsubscribe(
                        [k for k in drop if not is_pattern(k)], [k for k in drop if is_pattern(k)]
                    )
                if add:
                    try:
                        await self._backend.subscribe(
                            [k for k in add if not is_pattern(k)],
                            [k for k in add if is_pattern(k)],
                        )
                    except SubscriptionRefusedError as exc:
                        await self._subscribe_each(add, exc)
                    else:
                        self._upstream |= add
                        for key in add:
                            self._refusals.pop(key, None)
            except BrokerUnavailableError as exc:
                self._upstream -= add
                self._synced = False
                logger.warning(
                    "wsbridge: broker subscription failed, will retry on reconnect: %s", exc
                )
                return False
            # Every route is held now (a failed name is retried by each sync: it stays in
            # the routes and out of upstream), refused names aside.
            self._synced = True
            return True

    async def _subscribe_each(self, keys: set[str], first: SubscriptionRefusedError) -> None:
        # Redis refuses a whole SUBSCRIBE for one denied channel: ask for each name alone,
        # so that one client's forbidden channel costs no one else theirs.
        refused: dict[str, str] = {}
        if len(keys) == 1:
            refused[next(iter(keys))] = first.reason
        else:
            for key in sorted(keys):
                try:
                    if is_pattern(key):
                        await self._backend.subscribe([], [key])
                    else:
                        await self._backend.subscribe([key], [])
                except SubscriptionRefusedError as exc:
                    refused[key] = exc.reason
                else:
                    self._upstream.add(key)
                    self._refusals.pop(key, None)
        if len(self._refusals) + len(refused) > 1024:
            self._refusals.clear()
        now = time.monotonic()
        for key, reason in refused.items():
            self._log_limited(f"refused:{key}", "wsbridge: the broker refused %r: %s", key, reason)
            self._refusals[key] = (reason, now)
            self._plans.pop(key, None)
            for subscriber in self._routes.pop(key, ()):
                subscriber._channels.pop(key, None)
                if key in subscriber._patterns:
                    subscriber._patterns.remove(key)

    # -- publishing ----------------------------------------------------------------

    async def publish(self, channel: str, data: object) -> None:
        """Validate ``data`` against the channel's schema, then publish it to the broker.

        ``data`` is a pydantic model or anything JSON can encode. Raises
        :class:`~wsbridge.EventValidationError` (nothing is sent) when it does not match
        the schema, :class:`~wsbridge.BrokerUnavailableError` when the broker cannot be
        reached in time, :class:`~wsbridge.BrokerClosedError` when not running.
        """
        if not self._running:
            raise BrokerClosedError("the broadcaster is not running: use 'async with broadcaster:'")
        validate_channel(channel, max_length=_MAX_NAME)
        payload = self.registry.encode(channel, data)
        backend = self._history
        if backend is not None:
            history = self.registry.history_for(channel)
            latest = self._conflatable(channel)
            if history is not None or latest:
                await backend.append(channel, payload, history, latest)
                return
        await self._backend.publish(channel, payload)

    # -- fan-out -------------------------------------------------------------------

    def _conflatable(self, channel: str) -> bool:
        kind = self._kinds.get(channel)
        if kind is None:
            if len(self._kinds) > 10_000:
                self._kinds.clear()
            kind = self._kinds[channel] = self.registry.kind_for(channel) is DeliveryKind.STATE
        return kind

    def _frame(self, message: BrokerMessage) -> Frame | None:
        data = message.data
        if data[:1] == b"\x00" and is_envelope(data):
            parsed = parse_envelope(data)
            if parsed is None:
                channel = message.channel
                self._counters.invalid_envelopes += 1
                self._counters.bump(channel, "invalid_envelopes")
                self._log_limited(
                    f"envelope:{channel}", "wsbridge: malformed envelope on %r dropped", channel
                )
                return None
            epoch, offset, payload = parsed
            return self._build(message.channel, payload, epoch, offset)
        return self._build(message.channel, data)

    def _build(self, channel: str, data: bytes, epoch: str = "", offset: int = 0) -> Frame | None:
        limit = self._max_payload
        if limit is not None and len(data) > limit // 4 and _size(data) > limit:
            self._counters.payloads_too_large += 1
            self._log_limited(
                "payload-too-large",
                "wsbridge: dropped a %d-byte message on %r: larger than max_payload_bytes=%d",
                _size(data),
                channel[:200],
                limit,
            )
            return None
        value, payload_json = protocol.decode_payload(data)
        if self._validation != "off":
            error = self.registry.check(channel, value)
            if error is not None:
                self._counters.validation_failures += 1
                self._counters.bump(channel, "validation_failures")
                self._log_limited(
                    channel, "wsbridge: message on %r fails its schema: %s", channel, error
                )
                if self._validation == "drop":
                    return None
        conflatable = self._conflatable(channel)
        frame = Frame(
            channel,
            protocol.encode_event(channel, payload_json, offset),
            conflatable=conflatable,
            offset=offset,
            epoch=epoch,
        )
        if conflatable:
            latest = self._latest
            if len(latest) >= _MAX_LATEST and channel not in latest:
                latest.clear()
            latest[channel] = frame
        return frame

    def _dispatch(self, message: BrokerMessage) -> None:
        pattern = message.pattern
        route = self._routes.get(message.channel if pattern is None else pattern)
        self._counters.messages_in += 1
        if not route:
            return
        data = message.data
        if data[:1] == b"\x00" and is_envelope(data):
            parsed = parse_envelope(data)
            if parsed is not None:
                self._live(message.channel, *parsed, pattern)
                return
        frame = self._frame(message)
        if frame is None:
            return
        self._fan_out(route, frame, pattern)

    def _tracks_of(self, pattern: str | None) -> dict[str, _Track]:
        """The positions followed through ``pattern``'s subscription (``None``: by name)."""
        if pattern is None:
            return self._tracks
        tracks = self._pattern_tracks.get(pattern)
        if tracks is None:
            tracks = self._pattern_tracks[pattern] = {}
        return tracks

    def _live(
        self, channel: str, epoch: str, offset: int, payload: bytes, pattern: str | None = None
    ) -> None:
        """A live publication with an offset: deliver it in order.

        ``pattern`` is the subscription it came through (``None``: the channel's own). A
        publication that skips offsets makes the server read the missed ones from
        history first; live ones wait meanwhile (bounded), and duplicates are dropped.
        """
        tracks = self._tracks if pattern is None else self._tracks_of(pattern)
        track = tracks.get(channel)
        if track is None:
            if len(tracks) >= _MAX_TRACKS:
                tracks.clear()
            track = tracks[channel] = _Track(epoch, offset)
        elif track.catching is not None:
            if len(track.catching) < _CATCH_UP_HOLD:
                track.catching.append((epoch, offset, payload))
            else:
                track.overflowed = True  # history has them: read again when done
            return
        else:
            if epoch != track.epoch:
                # Another epoch: the history this server followed is gone. Its clients
                # are told (through a pattern, each before its first event of the new
                # epoch), then the new epoch is followed from its start.
                track.epoch, track.offset, track.seeded = epoch, 0, False
                if pattern is None:
                    self._lost(channel, epoch, 0, "was lost")
            if offset <= track.offset:
                return  # delivered already, from history
            if (
                offset > track.offset + 1
                and self._history is not None
                and self._task_group is not None
                and self.registry.history_for(channel) is not None
            ):
                track.catching = [(epoch, offset, payload)]
                self._catch_up_soon(channel, pattern)
                return
            track.offset = offset
            track.seeded = False
        route = self._routes.get(channel if pattern is None else pattern)
        frame = self._build(channel, payload, epoch, offset)
        if route and frame is not None:
            self._fan_out(route, frame, pattern)

    def _catch_up_soon(self, channel: str, pattern: str | None = None) -> None:
        task_group = self._task_group
        # Without creating the tracks of a pattern whose subscription has gone.
        tracks = self._tracks if pattern is None else self._pattern_tracks.get(pattern, {})
        track = tracks.get(channel)
        if track is None or task_group is None:
            return
        if track.catching is None:
            track.catching = []
        task_group.start_soon(self._catch_up, channel, track, pattern)

    async def _catch_up(self, channel: str, track: _Track, pattern: str | None) -> None:
        history = self.registry.history_for(channel)
        backend = self._history
        key = channel if pattern is None else pattern
        try:
            for _ in range(10_000):  # bounded: each round delivers a batch or stops
                if history is None or backend is None or key not in self._routes:
                    break
                page = await backend.read_history(channel, history, track.offset, _REPLAY_BATCH)
                top = page.position
                if top.epoch != track.epoch:
                    # The history was lost: follow the new epoch from its start.
                    track.epoch, track.offset, track.seeded = top.epoch, 0, False
                    if pattern is None:
                        self._lost(channel, top.epoch, 0, "was lost")
                    continue
                entries = page.entries
                first = entries[0][0] if entries else top.offset + 1
                if first != track.offset + 1:
                    # Trimmed or expired before the server read it.
                    track.offset = first - 1
                    self._lost(channel, top.epoch, track.offset, "was trimmed", pattern)
                route = self._routes.get(key)
                for offset, data in entries:
                    if offset <= track.offset:
                        continue
                    track.offset = offset
                    track.seeded = False
                    frame = self._build(channel, data, track.epoch, offset)
                    if route and frame is not None:
                        self._fan_out(route, frame, pattern)
                        self._counters.replayed += 1
                if len(entries) < _REPLAY_BATCH:
                    break
        except BrokerUnavailableError as exc:
            logger.info("wsbridge: cannot read the history of %r yet: %s", channel, exc)
        finally:
            pending, track.catching = track.catching or [], None
            overflowed, track.overflowed = track.overflowed, False
            for epoch, offset, payload in pending:
                self._live(channel, epoch, offset, payload, pattern)
            if overflowed and track.catching is None and self._connected:
                self._catch_up_soon(channel, pattern)

    def _lost(
        self, channel: str, epoch: str, offset: int, how: str, pattern: str | None = None
    ) -> None:
        """Tell the subscribers of ``channel`` that events before a position are lost.

        The server could not read back what it missed: never a silent gap, each client
        gets a ``position`` frame with ``recovered: false``, in order with the events.
        Through ``pattern``, only the clients that were told the channel's epoch: the
        others learn its position before their first event of it.
        """
        self._counters.recoveries_failed += 1
        self._counters.bump(channel, "recoveries_failed")
        self._log_limited(
            f"gap:{channel}", "wsbridge: history of %r %s; clients told of the gap", channel, how
        )
        route = self._routes.get(channel if pattern is None else pattern)
        if not route:
            return
        text = protocol.position_frame(channel, epoch, offset, recovered=False)
        frame = _PositionFrame(channel, text, epoch, offset)
        if pattern is None:
            self._fan_out(route, frame, None)
            return
        for subscriber in list(route):
            if (
                subscriber.close_code is None
                and subscriber._epochs.get(channel) == epoch
                and subscriber._owns(channel, pattern)
                and (subscriber.allow is None or subscriber._permits(channel))
            ):
                if subscriber._hold is not None:
                    subscriber._deliver(frame)
                else:
                    subscriber.push(frame)

    def _fan_out(self, route: dict[Subscriber, None], frame: Frame, pattern: str | None) -> None:
        if pattern is not None:
            self._fan_out_pattern(route, frame, pattern)
            return
        plan = self._plans.get(frame.channel)
        if plan is None:
            plan = self._plans[frame.channel] = _plan(route)
        # Subscriber.push, with its common case inline: this runs once per delivery. Each
        # run of connections of one group is offered the frame in one call.
        taken = 0
        for segment in plan:
            group = segment.group
            if group is not None:
                taken += group.offer(frame, segment.connections)
                continue
            for subscriber in segment.subscribers:
                if subscriber.direct:
                    if subscriber._connection.offer(frame):
                        taken += 1
                    else:
                        subscriber._enqueue(frame)
                elif subscriber.close_code is None:
                    subscriber._deliver(frame)
        if taken:
            counters = self._counters
            counters.messages_out += taken
            counters.bytes_out += taken * frame.size

    def _fan_out_pattern(self, route: dict[Subscriber, None], frame: Frame, pattern: str) -> None:
        # Who gets an event through a pattern depends on the channel: no plan is kept.
        channel = frame.channel
        targets: Iterable[Subscriber] = (
            s
            for s in route
            if s._owns(channel, pattern) and (s.allow is None or s._permits(channel))
        )
        if frame.offset:
            targets = _announced(targets, frame)
        taken = 0
        group: ConnectionGroup | None = None
        batch: list[Connection] = []
        for subscriber in targets:
            connection = subscriber._connection
            kind = connection.group
            if kind is None:
                if subscriber.direct:
                    if connection.offer(frame):
                        taken += 1
                    else:
                        subscriber._enqueue(frame)
                elif subscriber.close_code is None:
                    subscriber._deliver(frame)
            elif kind is group:
                batch.append(connection)
            else:
                if group is not None:
                    taken += group.offer(frame, batch)
                group = kind
                batch = [connection]
        if group is not None:
            taken += group.offer(frame, batch)
        if taken:
            counters = self._counters
            counters.messages_out += taken
            counters.bytes_out += taken * frame.size

    def _dispatch_failed(self, message: BrokerMessage, exc: Exception) -> None:
        self._counters.dispatch_errors += 1
        self._log_limited(
            "dispatch-error",
            "wsbridge: skipped a message on %r that could not be delivered: %s: %.200s",
            message.channel[:200],
            type(exc).__name__,
            exc,
        )
        logger.debug("wsbridge: the message that could not be delivered", exc_info=exc)

    def _log_limited(self, key: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        last = self._last_log.get(key)
        if last is None or now - last >= self._log_interval:
            if len(self._last_log) > 10_000:
                self._last_log.clear()
            self._last_log[key] = now
            logger.warning(msg, *args)

    # -- the reader and the reconnect loop ------------------------------------------

    async def _run(self) -> None:
        down_since: float | None = None
        while True:
            lost = await self._read(down_since)
            if lost is None:
                return
            self._connected = False
            self._upstream.clear()
            self._counters.broker_reconnects += 1
            self._synced = False
            if self._restored.is_set():  # a new outage, not another attempt within one
                down_since = time.monotonic()
                self._restored = anyio.Event()
                # Once per outage: clients hear "up" once every channel is back.
                self._notify(protocol.broker_status_frame("down"))
            logger.warning("wsbridge: broker connection lost (%s); reconnecting", lost)
            await self._reconnect()

    async def _read(self, down_since: float | None) -> BaseException | None:
        lost: list[BaseException] = []
        async with anyio.create_task_group() as tg:

            async def guard(fn: Any, *args: Any) -> None:
                try:
                    await fn(*args)
                except BrokerUnavailableError as exc:
                    lost.append(exc)
                    tg.cancel_scope.cancel()

            probe = self._probe

            async def read() -> None:
                probes = probe.channels
                async for message in self._backend.messages():
                    if message.channel in probes:
                        probe.echoed(message.channel)
                        continue
                    try:
                        self._dispatch(message)
                    except Exception as exc:
                        # One message must never stop the reader, whatever it holds.
                        self._dispatch_failed(message, exc)
                tg.cancel_scope.cancel()

            async def liveness() -> None:
                await probe.run(self._backend, self._counters, self._log_limited)

            async def health() -> None:
                interval = self._health_check_interval
                if not interval or not math.isfinite(interval):
                    return
                while True:
                    await anyio.sleep(interval)
                    await self._backend.health_check()

            async def restore(since: float) -> None:
                if not await self._sync_upstream():
                    # Not "up" while channels are missing: reconnect and try them again.
                    raise BrokerUnavailableError("could not subscribe every channel again")
                self._synced = True
                self._restored.set()
                # At the loss's level, so that whoever saw the loss sees its end.
                logger.warning(
                    "wsbridge: broker connection restored after %.1f s",
                    time.monotonic() - since,
                )
                self._notify(protocol.broker_status_frame("up"))
                # What was published while the connection was down is in history.
                for channel, track in list(self._tracks.items()):
                    if track.catching is None and channel in self._routes:
                        self._catch_up_soon(channel)
                for pattern, tracks in list(self._pattern_tracks.items()):
                    if pattern in self._routes:
                        for channel, track in list(tracks.items()):
                            if track.catching is None:
                                self._catch_up_soon(channel, pattern)

            tg.start_soon(guard, read)
            tg.start_soon(guard, health)
            tg.start_soon(guard, liveness)
            if down_since is not None:
                tg.start_soon(guard, restore, down_since)
        return lost[0] if lost else None

    async def _reconnect(self) -> None:
        delay = self._reconnect_delay
        while True:  # ends on success, or when the broadcaster is cancelled at shutdown
            await anyio.sleep(delay * random.uniform(0.5, 1.0))
            try:
                await self._backend.connect()
            except BrokerUnavailableError as exc:
                logger.info("wsbridge: broker still unavailable: %s", exc)
                delay = min(delay * 2, self._max_reconnect_delay)
                continue
            self._connected = True
            self._probe.reset()
            return

    def _notify(self, text: str) -> None:
        frame = Frame("", text)
        for subscriber in list(self._subscribers):
            subscriber.push(frame)

    # -- observability -------------------------------------------------------------

    def stats(self) -> Stats:
        """A snapshot of the counters."""
        c = self._counters
        return Stats(
            connections=len(self._subscribers),
            subscriptions=sum(len(s._channels) + len(s._patterns) for s in self._subscribers),
            upstream_subscriptions=len(self._upstream),
            messages_in=c.messages_in,
            messages_out=c.messages_out,
            bytes_out=c.bytes_out,
            conflated=c.conflated,
            dropped=c.dropped,
            slow_consumer_disconnects=c.slow_consumer_disconnects,
            broker_reconnects=c.broker_reconnects,
            validation_failures=c.validation_failures,
            subscriptions_refused=c.subscriptions_refused,
            payloads_too_large=c.payloads_too_large,
            dispatch_errors=c.dispatch_errors,
            probe_failures=c.probe_failures,
            invalid_envelopes=c.invalid_envelopes,
            replayed=c.replayed,
            recoveries_failed=c.recoveries_failed,
            broker_connected=self._connected,
            ready=self.ready,
            probe_age=self._probe.age(),
            per_channel={k: dict(v) for k, v in c.per_channel.items()},
        )


class _Probe:
    """The liveness probe of the subscription connection (see :class:`Broadcaster`)."""

    def __init__(self, interval: float, timeout: float, channel: str) -> None:
        self.interval = interval if math.isfinite(interval) else 0.0
        self.timeout = timeout
        self.base = channel
        # One set for the broadcaster's life: the reader holds it and sees it change.
        self.channels: set[str] = set()
        self.alive_at = time.monotonic()
        self._waiting: dict[str, anyio.Event] = {}

    def reset(self) -> None:
        # A fresh connection counts as alive until its first probe says otherwise.
        self.alive_at = time.monotonic()
        self.channels.clear()
        self._waiting = {}

    def age(self) -> float | None:
        return time.monotonic() - self.alive_at if self.interval else None

    def fresh(self) -> bool:
        age = self.age()
        return age is None or age <= 2 * self.interval + self.timeout

    def echoed(self, channel: str) -> None:
        event = self._waiting.pop(channel, None)
        if event is not None:
            event.set()

    async def run(self, backend: Backend, counters: _Counters, log: Callable[..., None]) -> None:
        if not self.interval:
            return
        # A backend with several subscription connections (one per cluster shard) names
        # one probe channel per connection.
        many = getattr(backend, "probe_channels", None)
        channels = list(many(self.base + ":")) if callable(many) else [self.base]
        try:
            await backend.subscribe(channels, [])
        except SubscriptionRefusedError as exc:
            log("probe-refused", "wsbridge: liveness probe off, the broker refused %s: %s",
                exc.channels, exc.reason)  # fmt: skip
            self.interval = 0.0
            return
        self.channels.clear()
        self.channels.update(channels)
        self.alive_at = time.monotonic()
        seen = counters.messages_in
        while True:
            await anyio.sleep(self.interval)
            # Traffic proves a single connection alive; with several, any one of them
            # could be deaf behind the others' traffic, so they are always probed.
            if len(channels) == 1 and counters.messages_in != seen:
                seen = counters.messages_in
                self.alive_at = time.monotonic()
                continue
            self._waiting = {channel: anyio.Event() for channel in channels}
            waits = list(self._waiting.values())
            for channel in channels:
                await backend.publish(channel, b"1")
            with anyio.move_on_after(self.timeout):
                for event in waits:
                    await event.wait()
            if not all(event.is_set() for event in waits):
                counters.probe_failures += 1
                raise BrokerUnavailableError(
                    f"the broker did not deliver the liveness probe back within {self.timeout:g} s"
                )
            seen = counters.messages_in
            self.alive_at = time.monotonic()
