"""The WebSocket endpoint, independent of any web framework.

An :class:`Endpoint` holds what one WebSocket route serves: its broadcaster, the default
channels, limits, and the authentication and authorization hooks. Adapters (ASGI,
Starlette, FastAPI, aiohttp) turn a framework's connection into a :class:`Transport`
and call :meth:`Endpoint.handshake` then :meth:`Endpoint.serve`; everything else is here.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
from collections.abc import (
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from http.cookies import SimpleCookie
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import anyio

from wsbridge import protocol
from wsbridge.broadcaster import Broadcaster, Subscriber
from wsbridge.channel import validate_channel
from wsbridge.delivery import Suspended, flusher, start_send
from wsbridge.exceptions import (
    AuthenticationError,
    BrokerUnavailableError,
    ConfigurationError,
    SubscriptionRefusedError,
)
from wsbridge.history import Resumed
from wsbridge.outbox import Connection, ConnectionGroup, Frame, OverflowPolicy
from wsbridge.permissions import AllowList
from wsbridge.session import Close, Command, Reply, Session, SessionLimits, Subscribe, Unsubscribe

__all__ = [
    "Authenticate",
    "Authorize",
    "ConnectionInfo",
    "Endpoint",
    "HTTPAnswer",
    "Handshake",
    "Transport",
    "TransportClosed",
    "as_endpoint",
]

logger = logging.getLogger("wsbridge")


class TransportClosed(Exception):
    """Raised by a transport when the peer is gone; the connection ends quietly."""


class Transport(Protocol):
    """What an adapter provides for one accepted WebSocket connection.

    A transport may also have ``send_direct(text) -> Awaitable[None]``: the server's own
    send without :meth:`send`'s error mapping, for the hot path (any error it raises is
    taken to mean the client has gone).
    """

    async def receive(self) -> str | bytes | None:
        """Return the next client frame, or ``None`` once the client has gone."""
        ...

    async def send(self, text: str) -> None:
        """Send one text frame; raise :class:`TransportClosed` if the client has gone."""
        ...

    async def close(self, code: int, reason: str) -> None:
        """Close the connection with a close code; never raises."""
        ...


@dataclass(frozen=True)
class ConnectionInfo:
    """The request data of a WebSocket handshake, as the authentication hook sees it.

    Header names are lower case; a repeated header keeps its last value.
    """

    path: str
    headers: Mapping[str, str]
    query_string: str = ""
    client: tuple[str, int] | None = None
    subprotocols: Sequence[str] = ()
    cookies: Mapping[str, str] = field(default_factory=dict)

    @property
    def query(self) -> dict[str, list[str]]:
        """The query string, parsed."""
        return parse_qs(self.query_string)

    @property
    def origin(self) -> str | None:
        """The ``Origin`` header, if the client sent one (browsers always do)."""
        return self.headers.get("origin")

    @classmethod
    def build(
        cls,
        *,
        path: str,
        headers: Sequence[tuple[str, str]] | Mapping[str, str],
        query_string: str = "",
        client: tuple[str, int] | None = None,
        subprotocols: Sequence[str] = (),
    ) -> ConnectionInfo:
        """Build from raw parts; cookies are parsed from the ``Cookie`` header."""
        items = headers.items() if isinstance(headers, Mapping) else headers
        normalised = {k.lower(): v for k, v in items}
        cookies: dict[str, str] = {}
        raw_cookie = normalised.get("cookie")
        if raw_cookie:
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(raw_cookie)
            except Exception:
                jar = SimpleCookie()
            cookies = {k: m.value for k, m in jar.items()}
        return cls(
            path=path,
            headers=normalised,
            query_string=query_string,
            client=client,
            subprotocols=tuple(subprotocols),
            cookies=cookies,
        )


#: Returns a principal (any object but ``None``) to accept, ``None`` to refuse (HTTP 403);
#: or raises :class:`~wsbridge.exceptions.AuthenticationError` to refuse with its status
#: and reason. A principal with an ``expires_at`` attribute (a POSIX timestamp, or ``None``)
#: has its connection closed with 4001 (``CLOSE_TOKEN_EXPIRED``) at that time.
Authenticate = Callable[[ConnectionInfo], "Awaitable[object | None] | object | None"]
#: Returns whether ``principal`` may receive ``channel``.
Authorize = Callable[[object, str], bool]


@dataclass(frozen=True)
class Handshake:
    """The outcome of :meth:`Endpoint.handshake`: accept with a principal, or refuse.

    ``subprotocol``: the WebSocket subprotocol the adapter selects when it accepts
    (``"wsbridge"`` if the client offered it), or ``None``.
    """

    accepted: bool
    principal: object = None
    status: int = 200
    reason: str = ""
    subprotocol: str | None = None


@dataclass(frozen=True)
class HTTPAnswer:
    """A plain HTTP response an adapter sends as it is: status, reason phrase, headers, body.

    Built by :meth:`Endpoint.answer_http` and :meth:`refusal`, so that every adapter
    answers a refused handshake, and a plain ``GET`` on its WebSocket path, alike.
    """

    status: int
    phrase: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    @classmethod
    def refusal(cls, status: int, reason: str) -> HTTPAnswer:
        """A refused handshake's answer: its status, with the reason as a text body."""
        return cls._text(status, reason + "\n")

    @classmethod
    def upgrade_required(cls) -> HTTPAnswer:
        """The answer to a plain request that a WebSocket handshake would have accepted."""
        answer = cls._text(426, "WebSocket endpoint: connect with a WebSocket client\n")
        return replace(answer, headers=(*answer.headers, ("Upgrade", "websocket")))

    @classmethod
    def _text(cls, status: int, text: str) -> HTTPAnswer:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:  # a status of the application's own AuthenticationError
            phrase = "Refused"
        headers = (
            ("Content-Type", "text/plain; charset=utf-8"),
            # The answer depends on the token and on the load: never from a cache.
            ("Cache-Control", "no-store"),
        )
        return cls(status, phrase, headers, text.encode())


def _origin_of(referer: str) -> str | None:
    """The origin (``scheme://host[:port]``) of a ``Referer`` URL, or ``None``."""
    try:
        parts = urlsplit(referer)
        host = parts.hostname
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not host:
        return None
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" if port is None else f"{parts.scheme}://{host}:{port}"


class _Handoff:
    """Between :meth:`_SendGroup.offer` and a driver: whose write suspended, what it queued."""

    __slots__ = ("connection", "queued", "taken")

    def __init__(self) -> None:
        self.connection: _SendPath | None = None
        self.queued = 0
        self.taken = False


async def _drive(
    frame: Frame, connections: Iterator[_SendPath], epoch: int, handoff: _Handoff
) -> None:
    # _SendPath.offer for each connection, as plain awaits in one coroutine: a send that
    # finishes at once costs no StopIteration. Everything a client's write raises is that
    # client's end, never the fan-out's. Only the frames queued are counted: at a steady
    # rate there are none, and a count per write would cost every delivery.
    text = frame.text
    for connection in connections:
        subscriber = connection._subscriber
        if not (connection._ready and subscriber.direct) or connection._epoch == epoch:
            subscriber.enqueue(frame)
            handoff.queued += 1
            continue
        connection._epoch = epoch
        handoff.connection = connection
        try:
            await connection._send(text)
        except Exception as exc:
            connection._fail(exc)
        if handoff.taken:  # resumed by the task finishing this write: the rest went on
            return


async def _send_each(send: Callable[[str], Awaitable[None]], frames: Sequence[Frame]) -> None:
    for frame in frames:
        await send(frame.text)


class _SendGroup:
    """Every endpoint send path's :attr:`~wsbridge.outbox.Connection.group`.

    An event's frame is written to all ready send paths by one driver coroutine, run in
    place (:func:`~wsbridge.delivery.start_send`). When one client's write suspends, a
    task of that client's finishes it from there, and a new driver carries on with the
    next client: nobody waits for a slow socket.
    """

    __slots__ = ()

    def offer(self, frame: Frame, connections: list[Connection]) -> int:
        """Write ``frame`` to each ready connection now; queue it for the others."""
        paths: list[_SendPath] = connections  # type: ignore[assignment]  # all of this group
        flusher = paths[0]._flusher
        if flusher is None:  # not asyncio: every frame goes through the send loops
            for path in paths:
                path._subscriber.enqueue(frame)
            return 0
        if not flusher.scheduled:
            flusher.touch()  # this iteration's later frames are batched by the flusher
        epoch = flusher.epoch
        remaining = iter(paths)
        queued = 0
        # Each round ends with every connection done, or hands one write that suspended
        # to a task and starts again after it: bounded by the number of connections.
        while True:
            handoff = _Handoff()
            try:
                suspended = start_send(_drive(frame, remaining, epoch, handoff))
            finally:
                queued += handoff.queued
            if suspended is None:
                return len(paths) - queued  # each connection was written to or queued
            waiting = handoff.connection
            assert waiting is not None
            handoff.taken = True
            waiting._inflight = asyncio.get_running_loop().create_task(waiting._finish(suspended))
            waiting._ready = False


_SEND_GROUP = _SendGroup()


class _SendPath:
    """The endpoint's :class:`~wsbridge.outbox.Connection`: a send loop, and direct writes.

    The send loop waits for frames and writes them through the transport. On asyncio,
    while it waits, frames do not wake it: the first frame of an event-loop iteration is
    written at once from the fan-out (by :class:`_SendGroup`, or by ``offer``), and
    frames queued after it in the same iteration are written together as the iteration
    ends, by the loop's flusher. Waking one task per client per event was the largest
    cost of the ASGI adapters at a steady rate. A write that suspends (a full socket) is
    finished by a task of its own, and the connection's later frames queue behind it for
    the send loop, in order.
    """

    __slots__ = (
        "_done",
        "_epoch",
        "_failed",
        "_flusher",
        "_idle",
        "_inflight",
        "_raw",
        "_ready",
        "_scheduled",
        "_scope",
        "_send",
        "_subscriber",
        "_transport",
        "_waiter",
    )

    group: ConnectionGroup | None = _SEND_GROUP

    def __init__(
        self,
        subscriber: Subscriber,
        transport: Transport,
        done: anyio.Event,
        scope: anyio.CancelScope,
    ) -> None:
        self._subscriber = subscriber
        self._transport = transport
        self._done = done
        self._scope = scope
        # A transport may offer its server's send() unwrapped: one coroutine less per frame
        # and client. Its errors are not mapped, so all of them mean the client has gone.
        raw = getattr(transport, "send_direct", None)
        self._raw = raw is not None
        self._send: Callable[[str], Awaitable[None]] = raw if raw is not None else transport.send
        self._flusher = flusher()  # None under trio: every frame goes through the send loop
        self._waiter: asyncio.Future[None] | anyio.Event | None = None
        self._idle = False
        self._inflight: asyncio.Task[None] | None = None
        self._failed = False
        self._scheduled = False
        self._epoch = -1
        # Idle, nothing in flight, not failed: kept up to date on each change, because
        # the fan-out reads it once per client and event.
        self._ready = False

    # -- Connection ------------------------------------------------------------------

    def offer(self, frame: Frame) -> bool:
        """Write the first frame of an event-loop iteration at once, if the loop waits."""
        flusher = self._flusher
        if not self._ready or flusher is None or self._epoch == flusher.epoch:
            return False
        self._epoch = flusher.epoch
        if not flusher.scheduled:
            flusher.touch()  # this iteration's later frames are batched by the flusher
        try:
            suspended = start_send(self._send(frame.text))
        except Exception as exc:
            self._fail(exc)  # never let one client's error reach the fan-out
            return True
        if suspended is not None:
            self._inflight = asyncio.get_running_loop().create_task(self._finish(suspended))
            self._ready = False
        return True

    def wake(self) -> None:
        """Frames are queued, or the subscriber closed: flush them, or wake the send loop."""
        flusher = self._flusher
        if flusher is not None and self._ready and self._subscriber.close_code is None:
            if not self._scheduled:
                self._scheduled = True
                flusher.add(self)
            return
        self._wake_loop()

    def flush(self) -> None:
        """Write every queued frame now (the flusher calls this)."""
        self._scheduled = False
        if not self._idle or self._failed:
            return  # the send loop is running, or the connection is ending
        if self._inflight is not None or self._subscriber.close_code is not None:
            self._wake_loop()
            return
        self._write(self._subscriber.get_nowait())

    # -- writes from outside the send loop --------------------------------------------

    def _write(self, frames: Sequence[Frame]) -> None:
        # One driver for the whole batch: each frame is then a plain await, where a
        # start_send per frame would pay for a StopIteration each (a burst's frames).
        send = self._send
        try:
            if len(frames) == 1:
                suspended = start_send(send(frames[0].text))
            else:
                suspended = start_send(_send_each(send, frames))
        except Exception as exc:
            self._fail(exc)  # never let one client's error reach the fan-out
            return
        if suspended is not None:
            # The rest of the batch goes on inside the suspended driver, in order.
            self._inflight = asyncio.get_running_loop().create_task(self._finish(suspended))
            self._ready = False

    async def _finish(self, suspended: Suspended) -> None:
        try:
            await suspended
        except Exception as exc:
            self._fail(exc)
        else:
            self._inflight = None
            self._update()
            if self._subscriber.pending or self._subscriber.closed:
                self._wake_loop()

    def _fail(self, exc: BaseException) -> None:
        if self._failed:
            return
        self._failed = True
        self._ready = False
        if not self._raw and not isinstance(exc, TransportClosed):
            logger.error("wsbridge: sending to a client failed; closing it", exc_info=exc)
        else:
            logger.debug("wsbridge: a client has gone: %r", exc)
        self._done.set()
        self._scope.cancel()

    def _update(self) -> None:
        self._ready = self._idle and self._inflight is None and not self._failed

    def _wake_loop(self) -> None:
        waiter, self._waiter = self._waiter, None
        if isinstance(waiter, asyncio.Future):
            if not waiter.done():
                waiter.set_result(None)
        elif waiter is not None:
            waiter.set()

    # -- the send loop -------------------------------------------------------------------

    async def _wait(self) -> None:
        if self._flusher is None:
            event = anyio.Event()
            self._waiter = event
            await event.wait()
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiter = future
        self._idle = True
        self._update()
        try:
            await future
        finally:
            self._idle = self._ready = False

    async def run(self) -> None:
        """Write the subscriber's frames until it closes, then close the transport."""
        subscriber = self._subscriber
        transport = self._transport
        try:
            while True:
                while not subscriber.pending and not subscriber.closed:
                    await self._wait()
                task = self._inflight
                if task is not None:  # a direct write suspended: it goes first
                    await asyncio.wait((task,))
                    if task.cancelled():  # its frames may not have gone out
                        self._fail(asyncio.CancelledError())
                    self._inflight = None
                    self._update()
                if subscriber.closed:
                    break
                for frame in subscriber.get_nowait():
                    await transport.send(frame.text)
            code = subscriber.close_code or protocol.CLOSE_GOING_AWAY
            with anyio.CancelScope(shield=True):
                await transport.close(code, subscriber.close_reason)
        except TransportClosed:
            pass
        finally:
            self._failed = True
            self._ready = False
            task, self._inflight = self._inflight, None
            if task is not None and not task.done():
                task.cancel()
            self._done.set()
            self._scope.cancel()


async def _expire(subscriber: Subscriber, delay: float) -> None:
    await anyio.sleep(delay)
    subscriber.close(protocol.CLOSE_TOKEN_EXPIRED, "token expired")


def as_endpoint(target: Endpoint | Broadcaster) -> Endpoint:
    """Accept an :class:`Endpoint`, or a :class:`Broadcaster` served with the defaults."""
    return target if isinstance(target, Endpoint) else Endpoint(target)


class Endpoint:
    """One WebSocket route's configuration and behaviour.

    ``channels``: what a new client is subscribed to without asking (default: the exact
    channels of the broadcaster's registry). ``limits``: per-client limits of the
    protocol. ``max_buffer_messages`` / ``max_buffer_bytes`` / ``overflow``: each client's
    outbox (see :class:`~wsbridge.OverflowPolicy`). ``idle_timeout``: close a client that
    sent nothing for this many seconds (``None`` disables). ``authenticate``,
    ``authorize``: the hooks. ``allowed_origins``: if given, a handshake whose ``Origin``
    is not in it is refused (``"*"`` allows any). ``max_connections``: refuse handshakes
    beyond this many open connections. ``max_replay``: at most this many missed events are
    replayed to a client that resumes a channel; further behind, it is told
    ``recovered: false``.

    ``allow``: channels and patterns a client may subscribe to besides ``channels``, an
    :class:`~wsbridge.permissions.AllowList` or its entries (``["trade:*"]``; ``["*"]``
    allows everything). Without ``allow`` and without ``authorize``, a client may
    subscribe only to ``channels``: the endpoint exposes what it serves and nothing else
    on the broker. With an ``authorize`` hook and no ``allow``, the hook alone decides.
    With both, a channel must pass both.
    """

    def __init__(
        self,
        broadcaster: Broadcaster,
        *,
        channels: Sequence[str] | None = None,
        limits: SessionLimits | None = None,
        max_buffer_messages: int = 1000,
        max_buffer_bytes: int = 4 * 1024 * 1024,
        overflow: OverflowPolicy | str = OverflowPolicy.DISCONNECT,
        idle_timeout: float | None = 75.0,
        authenticate: Authenticate | None = None,
        authorize: Authorize | None = None,
        allowed_origins: Sequence[str] | None = None,
        max_connections: int | None = None,
        allow: AllowList | Sequence[str] | None = None,
        max_replay: int = 1000,
    ) -> None:
        self.broadcaster = broadcaster
        self.limits = limits or SessionLimits()
        if channels is None:
            channels = broadcaster.registry.channels()
        self.channels = tuple(
            validate_channel(ch, max_length=self.limits.max_channel_length) for ch in channels
        )
        if max_buffer_messages < 1 or max_buffer_bytes < 1:
            raise ConfigurationError("buffer limits must be positive")
        if idle_timeout is not None and idle_timeout <= 0:
            raise ConfigurationError("idle_timeout must be positive or None")
        if max_connections is not None and max_connections < 0:
            raise ConfigurationError("max_connections must not be negative")
        self.max_buffer_messages = max_buffer_messages
        self.max_buffer_bytes = max_buffer_bytes
        self.overflow = OverflowPolicy(overflow)
        self.idle_timeout = idle_timeout
        self.authenticate = authenticate
        self.authorize = authorize
        self.allowed_origins = None if allowed_origins is None else frozenset(allowed_origins)
        self.max_connections = max_connections
        if allow is None and authorize is None:
            allow = ()
        extra = allow.entries if isinstance(allow, AllowList) else allow
        #: What a client may subscribe to (``None``: only the ``authorize`` hook decides).
        self.allow = None if extra is None else AllowList([*self.channels, *extra])
        #: Handshakes refused so far: origin, connection limit, authentication.
        self.refused_handshakes = 0
        if max_replay < 0:
            raise ConfigurationError("max_replay must not be negative")
        self.max_replay = max_replay
        self._open = 0

    @property
    def connections(self) -> int:
        """Connections this endpoint is serving now."""
        return self._open

    async def handshake(self, info: ConnectionInfo) -> Handshake:
        """Decide whether to accept a connection, before the WebSocket is accepted.

        Each refusal is counted in :attr:`refused_handshakes`.
        """
        decision = await self._decide(info)
        if not decision.accepted:
            self.refused_handshakes += 1
        return decision

    async def answer_http(self, info: ConnectionInfo) -> HTTPAnswer:
        """Answer a plain HTTP ``GET`` on the WebSocket path with the handshake's decision.

        Browsers hide the status of a refused WebSocket handshake: the JavaScript client
        asks the same URL with a plain ``GET`` (its token as ``?token=``) to learn why.
        Refused: the status and reason a handshake gets (:meth:`HTTPAnswer.refusal`);
        accepted: ``426 Upgrade Required``. The ``authenticate`` hook runs as for a
        handshake; the answer is not counted in :attr:`refused_handshakes`.

        Browsers send no ``Origin`` with a same-origin ``GET`` (they always do with a
        WebSocket handshake), so a request without one is judged with the origin of its
        ``Referer``. The answer only tells a reason: it opens no connection.
        """
        if info.origin is None and "referer" in info.headers:
            origin = _origin_of(info.headers["referer"])
            if origin is not None:
                info = replace(info, headers={**info.headers, "origin": origin})
        decision = await self._decide(info)
        if decision.accepted:
            return HTTPAnswer.upgrade_required()
        return HTTPAnswer.refusal(decision.status, decision.reason)

    async def _decide(self, info: ConnectionInfo) -> Handshake:
        origins = self.allowed_origins
        if origins is not None and "*" not in origins and info.origin not in origins:
            return Handshake(False, status=403, reason="origin not allowed")
        if self.max_connections is not None and self._open >= self.max_connections:
            return Handshake(False, status=503, reason="too many connections")
        if not self.broadcaster.running:
            return Handshake(False, status=503, reason="broadcaster not running")
        principal: object = True
        if self.authenticate is not None:
            try:
                result = self.authenticate(info)
                if inspect.isawaitable(result):
                    result = await result
            except AuthenticationError as exc:
                return Handshake(False, status=exc.status, reason=exc.reason)
            except Exception:
                logger.exception("wsbridge: the authenticate hook raised; refusing the connection")
                return Handshake(False, status=403, reason="authentication failed")
            if result is None or result is False:
                return Handshake(False, status=403, reason="authentication refused")
            principal = result
        selected = protocol.SUBPROTOCOL if protocol.SUBPROTOCOL in info.subprotocols else None
        return Handshake(True, principal=principal, subprotocol=selected)

    @staticmethod
    def expires_in(principal: object) -> float | None:
        """Seconds until ``principal.expires_at`` (a POSIX timestamp), or ``None``."""
        expires_at = getattr(principal, "expires_at", None)
        if not isinstance(expires_at, (int, float)) or isinstance(expires_at, bool):
            return None
        delay = float(expires_at) - time.time()
        return max(0.0, delay) if math.isfinite(delay) else None

    def _authorizer(self, principal: object) -> Callable[[str], bool] | None:
        authorize = self.authorize
        allow = self.allow
        if authorize is None:
            return allow

        def check(channel: str) -> bool:
            if allow is not None and not allow(channel):
                return False
            try:
                return bool(authorize(principal, channel))
            except Exception:
                logger.exception("wsbridge: the authorize hook raised; denying %r", channel)
                return False

        return check

    def connect(self, subscriber: Subscriber, principal: object) -> Session:
        """Prepare one accepted connection: its session, and its subscriber's authorization.

        The hook sees the channels and patterns a client asks for, and also each concrete
        channel that reaches it through a pattern.
        """
        check = self._authorizer(principal)
        subscriber.allow = check
        return Session(default_channels=self.channels, limits=self.limits, authorize=check)

    def open(self) -> Subscriber:
        """Open a subscriber for one accepted connection, with this endpoint's outbox limits.

        It is registered with the broadcaster and counted in :attr:`connections` until
        :meth:`release`. :meth:`serve` does both; a server that drives connections itself
        (the standalone server) calls them.
        """
        subscriber = self.broadcaster.subscriber(
            max_messages=self.max_buffer_messages,
            max_bytes=self.max_buffer_bytes,
            overflow=self.overflow,
        )
        subscriber.open()
        self._open += 1
        return subscriber

    def release(self, subscriber: Subscriber) -> Coroutine[Any, Any, None]:
        """Stop counting a connection :meth:`open` counted; await the result to detach it."""
        self._open -= 1
        return subscriber.aclose()

    async def serve(self, transport: Transport, principal: object = True) -> None:
        """Run one accepted connection until the client leaves or is closed."""
        subscriber = self.open()
        try:
            session = self.connect(subscriber, principal)
            sent_close = anyio.Event()
            expires_in = self.expires_in(principal)
            async with anyio.create_task_group() as tg:
                path = _SendPath(subscriber, transport, sent_close, tg.cancel_scope)
                subscriber.attach(path)
                tg.start_soon(path.run)
                if expires_in is not None:
                    tg.start_soon(_expire, subscriber, expires_in)
                try:
                    await self.apply(session.start(), subscriber, session)
                    await self._receive_loop(transport, session, subscriber)
                    if subscriber.closed:
                        # Let the send loop deliver the close frame, within a bound.
                        with anyio.move_on_after(5):
                            await sent_close.wait()
                finally:
                    tg.cancel_scope.cancel()
        finally:
            subscriber.attach(None)
            with anyio.CancelScope(shield=True):
                await self.release(subscriber)

    async def _receive_loop(
        self, transport: Transport, session: Session, subscriber: Subscriber
    ) -> None:
        idle = self.idle_timeout
        while True:
            with anyio.move_on_after(idle if idle is not None else float("inf")) as scope:
                try:
                    data = await transport.receive()
                except TransportClosed:
                    data = None
            if scope.cancelled_caught:
                subscriber.close(protocol.CLOSE_IDLE_TIMEOUT, "idle timeout")
                return
            if data is None:
                return
            now = anyio.current_time()
            commands = (
                session.receive_text(data, now)
                if isinstance(data, str)
                else session.receive_bytes(data, now)
            )
            await self.apply(commands, subscriber, session)
            if session.closed:
                return

    async def _subscribe(
        self, command: Subscribe, subscriber: Subscriber, session: Session
    ) -> None:
        acknowledged = False

        def acknowledge(refused: list[str], resumed: dict[str, Resumed]) -> None:
            # Before any missed event or latest value: the client learns its position first.
            nonlocal acknowledged
            acknowledged = True
            if refused:
                for reply in session.refused(refused, command.request_id):
                    subscriber.send_text(reply.text)
            if command.ack is not None:
                acked = [ch for ch in command.ack if ch not in refused]
                since = command.since or {}
                positions = {
                    ch: r.as_json() for ch, r in resumed.items() if ch in acked or ch in since
                }
                subscriber.send_text(
                    protocol.subscription_ack(
                        "subscribed", acked, request_id=command.request_id, positions=positions
                    )
                )

        try:
            await subscriber.subscribe(
                command.channels if command.ack is None else command.ack,
                since=command.since,
                max_replay=self.max_replay,
                acknowledge=acknowledge,
            )
        except SubscriptionRefusedError as exc:
            if not acknowledged:
                acknowledge(exc.channels, {})
        except BrokerUnavailableError as exc:
            logger.warning("wsbridge: subscription failed: %s", exc)
            if not acknowledged:
                acknowledge([], {})

    @staticmethod
    def apply_now(command: Command, subscriber: Subscriber) -> bool:
        """Carry out a command that needs no waiting (a reply, a close); False otherwise."""
        if isinstance(command, Reply):
            subscriber.send_text(command.text)
        elif isinstance(command, Close):
            subscriber.close(command.code, command.reason)
        else:
            return False
        return True

    async def apply(
        self, commands: Iterable[Command], subscriber: Subscriber, session: Session
    ) -> None:
        """Carry out a session's commands for its subscriber, in order.

        Subscriptions wait for the broker; a refusal is reported to the client, and the
        acknowledgement leaves out what was refused.
        """
        for command in commands:
            if self.apply_now(command, subscriber):
                continue
            if isinstance(command, Subscribe):
                await self._subscribe(command, subscriber, session)
            elif isinstance(command, Unsubscribe):
                await subscriber.unsubscribe(command.channels)
