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
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Protocol
from urllib.parse import parse_qs

import anyio

from wsbridge import protocol
from wsbridge._direct import DirectWriter
from wsbridge.broadcaster import Broadcaster, OverflowPolicy, Subscriber
from wsbridge.channel import validate_channel
from wsbridge.exceptions import (
    AuthenticationError,
    BrokerUnavailableError,
    ConfigurationError,
    SubscriptionRefusedError,
)
from wsbridge.permissions import AllowList
from wsbridge.session import Close, Command, Reply, Session, SessionLimits, Subscribe, Unsubscribe

__all__ = [
    "Authenticate",
    "Authorize",
    "ConnectionInfo",
    "Endpoint",
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


def _direct_writer(
    subscriber: Subscriber, transport: Transport, done: anyio.Event, scope: anyio.CancelScope
) -> DirectWriter | None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # trio: frames always go through the send loop
        return None
    # A transport may offer its server's send() unwrapped: one coroutine less per frame
    # and client. Its errors are not mapped, so all of them mean the client has gone.
    raw = getattr(transport, "send_direct", None)
    send = raw if raw is not None else transport.send

    def fail(exc: BaseException) -> None:
        if raw is None and not isinstance(exc, TransportClosed):
            logger.error("wsbridge: sending to a client failed; closing it", exc_info=exc)
        else:
            logger.debug("wsbridge: a client has gone: %r", exc)
        done.set()
        scope.cancel()

    return DirectWriter(subscriber, send, fail)


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
    beyond this many open connections.

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

    async def serve(self, transport: Transport, principal: object = True) -> None:
        """Run one accepted connection until the client leaves or is closed."""
        self._open += 1
        try:
            subscriber = self.broadcaster.subscriber(
                max_messages=self.max_buffer_messages,
                max_bytes=self.max_buffer_bytes,
                overflow=self.overflow,
            )
            session = self.connect(subscriber, principal)
            sent_close = anyio.Event()
            expires_in = self.expires_in(principal)
            async with subscriber, anyio.create_task_group() as tg:
                tg.start_soon(self._send_loop, transport, subscriber, sent_close, tg.cancel_scope)
                if expires_in is not None:
                    tg.start_soon(_expire, subscriber, expires_in)
                try:
                    await self._apply(session.start(), subscriber, session)
                    await self._receive_loop(transport, session, subscriber)
                    if subscriber.closed:
                        # Let the send loop deliver the close frame, within a bound.
                        with anyio.move_on_after(5):
                            await sent_close.wait()
                finally:
                    tg.cancel_scope.cancel()
        finally:
            self._open -= 1

    async def _send_loop(
        self,
        transport: Transport,
        subscriber: Subscriber,
        done: anyio.Event,
        scope: anyio.CancelScope,
    ) -> None:
        direct = _direct_writer(subscriber, transport, done, scope)
        if direct is not None:
            subscriber._attach_writer(direct)
        try:
            while True:
                if direct is None:
                    frames = await subscriber.get()
                else:
                    direct.idle = True
                    try:
                        frames = await subscriber.get()
                    finally:
                        direct.idle = False
                    await direct.drain()
                if not frames:
                    break
                for frame in frames:
                    await transport.send(frame.text)
            code = subscriber.close_code or protocol.CLOSE_GOING_AWAY
            with anyio.CancelScope(shield=True):
                await transport.close(code, subscriber.close_reason)
        except TransportClosed:
            pass
        finally:
            if direct is not None:
                subscriber._attach_writer(None)
                direct.cancel()
            done.set()
            scope.cancel()

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
            await self._apply(commands, subscriber, session)
            if session.closed:
                return

    async def _apply(
        self, commands: list[Command], subscriber: Subscriber, session: Session
    ) -> None:
        for command in commands:
            if isinstance(command, Reply):
                subscriber.send_text(command.text)
            elif isinstance(command, Subscribe):
                refused: list[str] = []
                try:
                    await subscriber.subscribe(command.channels)
                except SubscriptionRefusedError as exc:
                    refused = exc.channels
                    for reply in session.refused(refused, command.request_id):
                        subscriber.send_text(reply.text)
                except BrokerUnavailableError as exc:
                    logger.warning("wsbridge: subscription failed: %s", exc)
                if command.ack is not None:
                    acked = [ch for ch in command.ack if ch not in refused]
                    subscriber.send_text(
                        protocol.subscription_ack(
                            "subscribed", acked, request_id=command.request_id
                        )
                    )
            elif isinstance(command, Unsubscribe):
                await subscriber.unsubscribe(command.channels)
            elif isinstance(command, Close):
                subscriber.close(command.code, command.reason)
