"""A standalone WebSocket server: wsbridge's fastest path (``wsbridge serve`` runs it).

It speaks HTTP and WebSocket through the ``websockets`` library's sans-I/O protocol and
drives the same :class:`~wsbridge.Endpoint` and :class:`~wsbridge.session.Session` as the
ASGI and aiohttp adapters, but it delivers events without a task per client:

* each event's frame is encoded once, as WebSocket bytes shared by every client (server
  frames are unmasked, so they are identical);
* fan-out appends those bytes to each ready client's pending list, and once per event-loop
  iteration every client gets one ``writelines()`` for everything pending: one system call
  for many frames in a burst;
* a client whose socket cannot take more (the transport paused writing) falls back to its
  bounded outbox and the overflow policy, exactly as in the other adapters;
* permessage-deflate (RFC 7692), which browsers always offer, is negotiated with
  ``server_no_context_takeover``: every message is compressed on its own, so an event is
  compressed once per window size (:meth:`~wsbridge.outbox.Frame.deflated`) and the same
  compressed bytes go to every client that negotiated that size. Frames under
  ``compression_threshold`` bytes go uncompressed. The answer also has
  ``client_no_context_takeover``: a client compresses each message it sends on its own
  too, so the server keeps no decompressor between a client's messages (one would hold
  about 40 KB of zlib state for each connection for as long as it lives). Compressed
  client frames are decompressed up to the endpoint's frame limit: beyond it the client
  is closed with 1009.

asyncio only; uvloop is used by ``wsbridge serve`` when installed.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections import Counter, deque
from collections.abc import Coroutine
from typing import Any, cast

from websockets.datastructures import Headers
from websockets.extensions.base import ServerExtensionFactory
from websockets.extensions.permessage_deflate import (
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
)
from websockets.frames import Frame as WireFrame
from websockets.frames import Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from wsbridge import deflate, health, protocol
from wsbridge.broadcaster import Broadcaster, Subscriber
from wsbridge.delivery import flusher
from wsbridge.endpoint import ConnectionInfo, Endpoint, HTTPAnswer, as_endpoint
from wsbridge.exceptions import ConfigurationError
from wsbridge.outbox import Connection as OutboxConnection
from wsbridge.outbox import ConnectionGroup, Frame, FrameBatch
from wsbridge.session import Command, Session, Subscribe, Unsubscribe

__all__ = ["Server"]

logger = logging.getLogger("wsbridge")
_MAX_PENDING_OPS = 1000


class Server:
    """Serve an :class:`Endpoint` (or a :class:`Broadcaster`) at ``ws://host:port{path}``.

    With an ``ssl`` context (``ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)`` with
    a certificate chain loaded), it serves ``wss://`` instead.

    With ``sock`` (a bound socket: one of several worker processes sharing a port, see
    :mod:`wsbridge.workers`), it serves on that socket and ignores ``host`` and ``port``.

    ``healthz`` and ``readyz`` are the paths of the health checks (:mod:`wsbridge.health`)
    for load balancers; ``None`` turns one off.

    ``await server.serve()`` runs the broadcaster and the server until :meth:`shutdown`
    is called; then every client is closed with 1001, within ``shutdown_timeout``
    seconds, and every task the server started has ended when ``serve`` returns.

    ``compression`` negotiates permessage-deflate with clients that offer it (browsers
    do); frames shorter than ``compression_threshold`` bytes are sent uncompressed.
    """

    def __init__(
        self,
        target: Endpoint | Broadcaster,
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        path: str = "/ws",
        close_timeout: float = 5.0,
        backlog: int = 2048,
        ssl: ssl.SSLContext | None = None,
        healthz: str | None = health.HEALTHZ,
        readyz: str | None = health.READYZ,
        compression: bool = True,
        compression_threshold: int = deflate.DEFAULT_THRESHOLD,
        sock: socket.socket | None = None,
    ) -> None:
        if compression_threshold < 0:
            raise ConfigurationError("compression_threshold must be 0 or more")
        self.endpoint = as_endpoint(target)
        self.host = host
        self.port = port
        self.path = path
        # Plain GETs on these paths get the health checks of wsbridge.health.
        self.checks = {p: p == readyz for p in (healthz, readyz) if p is not None and p != path}
        self.close_timeout = close_timeout
        self.backlog = backlog
        self.ssl = ssl
        self.compression = compression
        self.compression_threshold = compression_threshold
        #: Connections the WebSocket protocol closed because of what the client sent, by
        #: close code: 1009 for a frame, or a decompressed message, over the frame limit
        #: (a deflate bomb), 1002 for a protocol error such as undecodable deflate data.
        self.protocol_errors: Counter[int] = Counter()
        # Shared by every connection: it keeps no per-connection state.
        self._extensions: list[ServerExtensionFactory] | None = (
            [
                ServerPerMessageDeflateFactory(
                    server_no_context_takeover=True, client_no_context_takeover=True
                )
            ]
            if compression
            else None
        )
        self.sock = sock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started: asyncio.Event | None = None
        self._connections: set[_Connection] = set()
        self._tasks: dict[asyncio.Task[Any], bool] = {}

    @property
    def broadcaster(self) -> Broadcaster:
        """The broadcaster this server runs."""
        return self.endpoint.broadcaster

    async def started(self) -> None:
        """Wait until the server accepts connections (``port`` is then the bound port)."""
        if self._started is None:
            self._started = asyncio.Event()
        await self._started.wait()

    def shutdown(self) -> None:
        """Ask :meth:`serve` to close every client with 1001 and return. Thread-unsafe."""
        if self._stop is not None:
            self._stop.set()

    async def serve(self) -> None:
        """Run until :meth:`shutdown`."""
        loop = self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self._started is None:
            self._started = asyncio.Event()
        async with self.broadcaster:
            if self.sock is not None:
                server = await loop.create_server(
                    lambda: _Connection(self), sock=self.sock, backlog=self.backlog, ssl=self.ssl
                )
            else:
                server = await loop.create_server(
                    lambda: _Connection(self),
                    self.host,
                    self.port,
                    backlog=self.backlog,
                    ssl=self.ssl,
                )
            self.port = server.sockets[0].getsockname()[1]
            idle = self._spawn(self._sweep_idle())
            self._started.set()
            try:
                await self._stop.wait()
            finally:
                server.close()
                idle.cancel()
                await self.broadcaster.close_clients(
                    protocol.CLOSE_GOING_AWAY, "server shutting down"
                )
                for connection in list(self._connections):
                    connection.abort()
                await self._drain_tasks()
                try:
                    await asyncio.wait_for(server.wait_closed(), self.close_timeout)
                except TimeoutError:  # pragma: no cover - defensive
                    logger.warning("wsbridge: server sockets did not close in time")

    async def _drain_tasks(self) -> None:
        # Handshakes and request workers are cancelled; releasing subscriptions is not.
        for task, cancellable in list(self._tasks.items()):
            if cancellable:
                task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self.close_timeout)

    def _spawn(
        self, coroutine: Coroutine[Any, Any, Any], *, cancellable: bool = True
    ) -> asyncio.Task[Any]:
        assert self._loop is not None
        task = self._loop.create_task(coroutine)
        self._tasks[task] = cancellable
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            logger.error("wsbridge: server task failed", exc_info=task.exception())

    async def _sweep_idle(self) -> None:
        timeout = self.endpoint.idle_timeout
        if timeout is None:
            return
        assert self._loop is not None
        interval = min(1.0, timeout / 4)
        while True:
            await asyncio.sleep(interval)
            deadline = self._loop.time() - timeout
            for connection in list(self._connections):
                if connection.last_seen < deadline and connection.subscriber is not None:
                    connection.subscriber.close(protocol.CLOSE_IDLE_TIMEOUT, "idle timeout")


class _WireGroup:
    """Every server connection's :attr:`~wsbridge.outbox.Connection.group`.

    It appends an event's shared wire bytes to each ready client's pending list, as
    :meth:`_Connection.offer` does, in one loop for all of them.
    """

    __slots__ = ()

    def offer(self, frame: Frame, connections: list[OutboxConnection]) -> int:
        """Take ``frame`` for each connection whose socket takes data; queue the others."""
        members = cast("list[_Connection]", connections)  # all of this group
        plain = frame.wire
        size = frame.size
        taken = 0
        for connection in members:
            subscriber = connection.subscriber
            if subscriber is None:
                continue  # gone: nothing to write to
            if not subscriber.direct or connection.paused or connection.transport is None:
                subscriber.enqueue(frame)
                continue
            bits = connection.window_bits
            connection.pending.append(
                frame.deflated(bits) if bits and size >= connection.threshold else plain
            )
            if not connection.dirty:
                connection.dirty = True
                connection.flusher.add(connection)
            taken += 1
        return taken


_WIRE_GROUP = _WireGroup()


class _Connection(asyncio.Protocol):
    """One client: the websockets protocol state, the session, and the subscriber.

    It is its subscriber's :class:`~wsbridge.outbox.Connection`: ``offer`` appends a
    frame's shared wire bytes to the pending list while the socket takes data (for an
    event, :class:`_WireGroup` does that for every client in one loop), and the loop's
    flusher writes that list with one ``writelines()`` as the iteration ends.
    """

    __slots__ = (
        "close_timer",
        "counted",
        "dirty",
        "ended",
        "expiry",
        "flusher",
        "fragments",
        "last_seen",
        "ops",
        "paused",
        "pending",
        "server",
        "session",
        "subscriber",
        "threshold",
        "transport",
        "window_bits",
        "worker",
        "ws",
    )

    group: ConnectionGroup | None = _WIRE_GROUP

    def __init__(self, server: Server) -> None:
        self.server = server
        self.ws = ServerProtocol(
            max_size=server.endpoint.limits.max_frame_bytes, extensions=server._extensions
        )
        # The negotiated server_max_window_bits; 0: no compression for this client.
        self.window_bits = 0
        self.threshold = server.compression_threshold
        self.counted = False
        self.transport: asyncio.Transport | None = None
        self.session: Session | None = None
        self.subscriber: Subscriber | None = None
        self.pending: list[bytes] = []
        self.dirty = False
        self.paused = False
        # Commands waiting for the broker, in order; created when the first one waits,
        # so that an idle connection holds no queue.
        self.ops: deque[Command] | None = None
        self.worker: asyncio.Task[None] | None = None
        self.close_timer: asyncio.TimerHandle | None = None
        self.expiry: asyncio.TimerHandle | None = None
        # A fragmented message so far: its opcode and its parts (websockets bounds the
        # total by max_size).
        self.fragments: tuple[Opcode, list[bytes]] | None = None
        # True once the stream is ended (EOF or close written): nothing more may follow.
        self.ended = False
        found = flusher()
        assert server._loop is not None
        assert found is not None
        self.flusher = found
        self.last_seen = server._loop.time()

    # -- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)
        self.server._connections.add(self)

    def data_received(self, data: bytes) -> None:
        assert self.server._loop is not None
        self.last_seen = self.server._loop.time()
        self.ws.receive_data(data)
        self._process()
        if self.ws.state is not State.OPEN and self.subscriber is not None:
            self._protocol_closing()

    def eof_received(self) -> bool | None:
        self.ws.receive_eof()
        self._process()
        if self.ws.state is not State.OPEN and self.subscriber is not None:
            self._protocol_closing()
        return None

    def _protocol_closing(self) -> None:
        # The client closed, or sent a frame the protocol refuses (a deflate bomb, bad
        # data) and the close frame is sent: nothing may be written after it, so the
        # fan-out must stop offering frames to this connection.
        if self.ws.parser_exc is not None and not self.counted:
            self._count_protocol_error()
        subscriber = self.subscriber
        if subscriber is not None and not subscriber.closed:
            close = self.ws.close_sent or self.ws.close_rcvd
            if close is None:
                subscriber.close(protocol.CLOSE_GOING_AWAY, "connection closed")
            else:
                subscriber.close(int(close.code), close.reason)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._drain_outbox()

    def _drain_outbox(self) -> None:
        # Write the outbox that filled while the socket was busy, after what is pending;
        # offers are taken again from now on.
        subscriber = self.subscriber
        if subscriber is None or subscriber.closed or self.transport is None or self.ended:
            return
        backlog = subscriber.get_nowait()
        if backlog:
            self.write_pending()
            self.transport.writelines([self._wire(frame) for frame in backlog])

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._connections.discard(self)
        if self.close_timer is not None:
            self.close_timer.cancel()
        if self.expiry is not None:
            self.expiry.cancel()
        if self.worker is not None:
            self.worker.cancel()
        self.transport = None
        subscriber, self.subscriber = self.subscriber, None
        if subscriber is not None:
            subscriber.attach(None)
            self.server._spawn(self.server.endpoint.release(subscriber), cancellable=False)

    def abort(self) -> None:
        """Drop the TCP connection at once (shutdown of clients that did not leave)."""
        if self.transport is not None:
            self.transport.abort()

    # -- frames in -----------------------------------------------------------------

    def _process(self) -> None:
        for event in self.ws.events_received():
            if isinstance(event, Request):
                self._on_request(event)
            elif isinstance(event, WireFrame):
                self._on_frame(event)
        self._send_protocol_data()

    def _on_request(self, request: Request) -> None:
        path, _, query = request.path.partition("?")
        ready = self.server.checks.get(path)
        if ready is not None:
            status, text = health.check(self.server.endpoint, ready=ready)
            body = text.encode()
            headers = Headers(
                [
                    ("Content-Type", "application/json"),
                    ("Cache-Control", "no-store"),
                    ("Content-Length", str(len(body))),
                    ("Connection", "close"),
                ]
            )
            reason = "OK" if status == 200 else "Service Unavailable"
            self.ws.send_response(Response(status, reason, headers, body))
            return
        if path != self.server.path:
            self.ws.send_response(self.ws.reject(404, "Not Found\n"))
            return
        peer = self.transport.get_extra_info("peername") if self.transport else None
        info = ConnectionInfo.build(
            path=path,
            headers=list(request.headers.raw_items()),
            query_string=query,
            client=(str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None,
            subprotocols=_subprotocols(request.headers),
        )
        assert self.transport is not None
        self.transport.pause_reading()
        # get_all: a repeated header must not raise (Headers.get would).
        upgrade = ",".join(request.headers.get_all("Upgrade"))
        if "websocket" not in upgrade.lower():
            # A plain GET: the JavaScript client asking why its handshake was refused.
            self.worker = self.server._spawn(self._answer_http(info))
            return
        self.worker = self.server._spawn(self._handshake(request, info))

    async def _answer_http(self, info: ConnectionInfo) -> None:
        answer = await self.server.endpoint.answer_http(info)
        if self.transport is not None:
            self.ws.send_response(_response(answer))
            self._send_protocol_data()

    async def _handshake(self, request: Request, info: ConnectionInfo) -> None:
        endpoint = self.server.endpoint
        handshake = await endpoint.handshake(info)
        if self.transport is None:
            return
        if not handshake.accepted:
            answer = HTTPAnswer.refusal(handshake.status, handshake.reason)
            self.ws.send_response(_response(answer))
            self._send_protocol_data()
            return
        self.ws.available_subprotocols = (
            None if handshake.subprotocol is None else [Subprotocol(handshake.subprotocol)]
        )
        response = self.ws.accept(request)
        # The websockets parser keeps the request for the connection's lifetime; its
        # headers are no longer needed once the response is built (ConnectionInfo has a
        # copy for the handshake): about 1.5 KB per idle connection.
        request.headers.clear()
        self.ws.send_response(response)
        self._send_protocol_data()
        if self.ws.state is not State.OPEN:
            return
        for extension in self.ws.extensions:
            if isinstance(extension, PerMessageDeflate):
                self.window_bits = extension.local_max_window_bits
        subscriber = endpoint.open()
        self.subscriber = subscriber
        subscriber.attach(self)
        self.session = endpoint.connect(subscriber, handshake.principal)
        expires_in = endpoint.expires_in(handshake.principal)
        if expires_in is not None and self.server._loop is not None:
            self.expiry = self.server._loop.call_later(
                expires_in, subscriber.close, protocol.CLOSE_TOKEN_EXPIRED, "token expired"
            )
        start = self.session.start()
        if start:
            self.ops = deque(start)
        self.transport.resume_reading()
        await self._work()

    def _on_frame(self, frame: WireFrame) -> None:
        session = self.session
        if session is None or self.subscriber is None:
            return
        assert self.server._loop is not None
        opcode = frame.opcode
        data = bytes(frame.data)
        if opcode is Opcode.CONT or not frame.fin:
            if opcode is not Opcode.CONT:
                self.fragments = (opcode, [data])
                return
            if self.fragments is None:  # pragma: no cover - websockets refuses this
                return
            self.fragments[1].append(data)
            if not frame.fin:
                return
            opcode, parts = self.fragments
            self.fragments = None
            data = b"".join(parts)
        now = self.server._loop.time()
        if opcode is Opcode.TEXT:
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                # RFC 6455: a text message that is not UTF-8 fails the connection.
                self.subscriber.close(protocol.CLOSE_INVALID_DATA, "invalid UTF-8")
                return
            commands = session.receive_text(text, now)
        elif opcode is Opcode.BINARY:
            commands = session.receive_bytes(data, now)
        else:
            return  # ping, pong and close are answered by the websockets protocol
        if self.worker is None and not any(
            isinstance(c, (Subscribe, Unsubscribe)) for c in commands
        ):
            for command in commands:
                Endpoint.apply_now(command, self.subscriber)
            return
        ops = self.ops
        if ops is None:
            ops = self.ops = deque()
        if len(ops) + len(commands) > _MAX_PENDING_OPS:
            self.subscriber.close(protocol.CLOSE_POLICY_VIOLATION, "too many pending requests")
            return
        # Subscriptions wait for the broker: run them, and what follows, in order.
        ops.extend(commands)
        if self.worker is None:
            self.worker = self.server._spawn(self._work())

    async def _work(self) -> None:
        try:
            for _ in range(_MAX_PENDING_OPS * 4):
                ops = self.ops
                if not ops or self.subscriber is None:
                    break
                command = ops.popleft()
                if not Endpoint.apply_now(command, self.subscriber):
                    assert self.session is not None
                    await self.server.endpoint.apply([command], self.subscriber, self.session)
        finally:
            self.worker = None
            if not self.ops:
                self.ops = None  # drained: an idle connection keeps no queue

    # -- frames out ----------------------------------------------------------------

    def offer(self, frame: Frame) -> bool:
        """Take the frame's wire bytes for this iteration's write, unless the socket is full."""
        if self.paused or self.transport is None:
            return False
        self.pending.append(
            frame.deflated(self.window_bits)
            if self.window_bits and frame.size >= self.threshold
            else frame.wire
        )
        if not self.dirty:
            self.dirty = True
            self.flusher.add(self)
        return True

    def offer_batch(self, batch: FrameBatch) -> bool:
        """Take a batch's joined wire bytes (shared by every client), as :meth:`offer`."""
        if self.paused or self.transport is None:
            return False
        self.pending.append(batch.wire(self.window_bits, self.threshold))
        if not self.dirty:
            self.dirty = True
            self.flusher.add(self)
        return True

    def wake(self) -> None:
        """The subscriber closed (send the close frame), or frames wait in its outbox."""
        subscriber = self.subscriber
        if subscriber is not None and subscriber.closed:
            self._on_subscriber_closed()
        elif not self.paused:
            self._drain_outbox()  # not expected: frames queue only while paused

    def flush(self) -> None:
        """Write every pending frame with one call (the loop's flusher calls this)."""
        self.write_pending()

    def _wire(self, frame: Frame) -> bytes:
        if self.window_bits and frame.size >= self.threshold:
            return frame.deflated(self.window_bits)
        return frame.wire

    def _count_protocol_error(self) -> None:
        self.counted = True
        close = self.ws.close_sent
        if close is not None:
            self.server.protocol_errors[int(close.code)] += 1

    def write_pending(self) -> None:
        """Write every pending frame with one call."""
        self.dirty = False
        pending = self.pending
        if pending:
            self.pending = []
            if self.transport is not None and not self.ended:
                self.transport.writelines(pending)

    def _send_protocol_data(self) -> None:
        transport = self.transport
        if transport is None:
            return
        self.write_pending()  # events queued before a pong or a close go first
        for data in self.ws.data_to_send():
            if self.ended:
                break
            if data:
                transport.write(data)
            else:
                self.ended = True
                if transport.can_write_eof():
                    transport.write_eof()
        if self.ws.close_expected() and self.close_timer is None and self.server._loop is not None:
            self.close_timer = self.server._loop.call_later(
                self.server.close_timeout, self._close_timed_out
            )
        if self.ws.state is State.CLOSED:
            self.ended = True
            transport.close()

    def _close_timed_out(self) -> None:
        transport = self.transport
        loop = self.server._loop
        if transport is None or loop is None:
            return
        if transport.is_closing() or not transport.get_write_buffer_size():
            transport.abort()
            return
        # The client stopped reading before our close frame reached its socket (a slow
        # consumer, say). Aborting now would drop the close frame and cut a frame in
        # half: close gracefully instead, so that what is buffered, the close frame
        # last, is still delivered if the client reads again within the idle timeout.
        self.ended = True
        transport.close()
        grace = max(self.server.endpoint.idle_timeout or 0.0, self.server.close_timeout)
        self.close_timer = loop.call_later(grace, transport.abort)

    def _on_subscriber_closed(self) -> None:
        subscriber = self.subscriber
        if subscriber is None or self.ws.state is not State.OPEN:
            return
        if subscriber.close_code == protocol.CLOSE_SLOW_CONSUMER:
            self.pending = []  # the client is not reading: do not pile more on
        self.ws.send_close(
            subscriber.close_code or protocol.CLOSE_GOING_AWAY, subscriber.close_reason[:120]
        )
        self._send_protocol_data()


def _response(answer: HTTPAnswer) -> Response:
    headers = Headers(answer.headers)
    headers["Content-Length"] = str(len(answer.body))
    headers["Connection"] = "close"
    return Response(answer.status, answer.phrase, headers, answer.body)


def _subprotocols(headers: Headers) -> list[str]:
    offered = ",".join(headers.get_all("Sec-WebSocket-Protocol"))
    return [p.strip() for p in offered.split(",") if p.strip()]
