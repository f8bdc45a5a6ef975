"""aiohttp integration: a WebSocket handler plus startup and cleanup hooks.

::

    from aiohttp import web
    from wsbridge import Broadcaster
    from wsbridge.aiohttp import setup

    app = web.Application()
    setup(app, Broadcaster("redis://localhost:6379/0"), path="/ws")
    web.run_app(app)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import WSMsgType, web

from wsbridge import health
from wsbridge.broadcaster import Broadcaster
from wsbridge.endpoint import ConnectionInfo, Endpoint, HTTPAnswer, TransportClosed, as_endpoint

__all__ = ["AiohttpTransport", "create_handler", "create_health_handler", "lifecycle", "setup"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AiohttpTransport:
    """A :class:`~wsbridge.endpoint.Transport` over an aiohttp ``WebSocketResponse``."""

    __slots__ = ("_ws",)

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self._ws = ws

    async def receive(self) -> str | bytes | None:
        """Return the next client frame, or ``None`` once the connection is closing."""
        message = await self._ws.receive()
        if message.type is WSMsgType.TEXT:
            return str(message.data)
        if message.type is WSMsgType.BINARY:
            return bytes(message.data)
        return None  # CLOSE, CLOSING, CLOSED, ERROR (aiohttp answered a too large frame with 1009)

    async def send(self, text: str) -> None:
        """Send one text frame."""
        if self._ws.closed:
            raise TransportClosed
        try:
            await self._ws.send_str(text)
        except (ConnectionError, RuntimeError) as exc:
            raise TransportClosed from exc

    def send_direct(self, text: str) -> Awaitable[None]:
        """The server's own ``send_str()`` for one text frame, without :meth:`send`'s wrapper.

        Used on the hot path, which treats any error it raises as the client having gone
        (aiohttp refuses to write once its closing handshake has started).
        """
        return self._ws.send_str(text)

    async def close(self, code: int, reason: str) -> None:
        """Close with ``code``; errors from an already closed connection are ignored."""
        with contextlib.suppress(Exception):
            await self._ws.close(code=code, message=reason[:120].encode())


def create_handler(target: Endpoint | Broadcaster, *, compress: bool = False) -> Handler:
    """An aiohttp request handler that serves ``target`` over WebSocket.

    A plain ``GET`` (no upgrade) gets the answer of
    :meth:`Endpoint.answer_http <wsbridge.endpoint.Endpoint.answer_http>`: the reason a
    handshake would be refused, or ``426 Upgrade Required``.

    ``compress`` accepts permessage-deflate from clients that offer it. aiohttp then
    compresses every frame again for each such client, which about doubles the CPU time
    of each delivery (docs/performance.md): it is off unless asked for.
    """
    endpoint = as_endpoint(target)

    async def handler(request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        offered = request.headers.get("Sec-WebSocket-Protocol", "")
        info = ConnectionInfo.build(
            path=request.path,
            headers=list(request.headers.items()),
            query_string=request.query_string,
            client=(str(peer[0]), int(peer[1]))
            if isinstance(peer, tuple) and len(peer) >= 2
            else None,
            subprotocols=[p.strip() for p in offered.split(",") if p.strip()],
        )
        if "websocket" not in request.headers.get("Upgrade", "").lower():
            # A plain GET: the JavaScript client asking why its handshake was refused.
            return _response(await endpoint.answer_http(info))
        handshake = await endpoint.handshake(info)
        if not handshake.accepted:
            return _response(HTTPAnswer.refusal(handshake.status, handshake.reason))
        ws = web.WebSocketResponse(
            # aiohttp refuses a frame of max_msg_size bytes or more; the endpoint's limit is
            # the largest frame allowed. Anything past it still closes with 1009, in the
            # session if not in aiohttp.
            max_msg_size=endpoint.limits.max_frame_bytes + 1,
            autoping=True,
            compress=compress,
            protocols=() if handshake.subprotocol is None else (handshake.subprotocol,),
        )
        await ws.prepare(request)
        await endpoint.serve(AiohttpTransport(ws), handshake.principal)
        return ws

    return handler


def _response(answer: HTTPAnswer) -> web.Response:
    return web.Response(
        status=answer.status, reason=answer.phrase, headers=dict(answer.headers), body=answer.body
    )


def create_health_handler(target: Endpoint | Broadcaster, *, ready: bool = False) -> Handler:
    """A handler answering a liveness (or, with ``ready``, readiness) check.

    ``app.router.add_get("/readyz", create_health_handler(broadcaster, ready=True))``;
    see :mod:`wsbridge.health`.
    """

    async def handler(request: web.Request) -> web.StreamResponse:
        status, body = health.check(target, ready=ready)
        return web.Response(
            status=status,
            text=body,
            content_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    return handler


def lifecycle(broadcaster: Broadcaster) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx`` entry that runs the broadcaster for the application's lifetime.

    The broadcaster lives in a task of its own, owned and awaited here, so it does not
    matter which task aiohttp uses for startup and for cleanup.
    """

    async def context(app: web.Application) -> AsyncIterator[None]:
        started = asyncio.Event()
        stop = asyncio.Event()

        async def hold() -> None:
            async with broadcaster:
                started.set()
                await stop.wait()

        task = asyncio.get_running_loop().create_task(hold(), name="wsbridge-broadcaster")
        waiter = asyncio.get_running_loop().create_task(started.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if not started.is_set():
            waiter.cancel()
            await task  # raises the startup error
        try:
            yield
        finally:
            stop.set()
            await task

    return context


def setup(
    app: web.Application,
    target: Endpoint | Broadcaster,
    *,
    path: str = "/ws",
    compress: bool = False,
) -> Endpoint:
    """Add the WebSocket route and the broadcaster's startup, shutdown and cleanup hooks.

    On shutdown every client is closed with 1001 before aiohttp waits for handlers.
    ``compress``: see :func:`create_handler`.
    """
    endpoint = as_endpoint(target)
    app.router.add_get(path, create_handler(endpoint, compress=compress))
    app.cleanup_ctx.append(lifecycle(endpoint.broadcaster))

    async def close_clients(_: web.Application) -> None:
        await endpoint.broadcaster.close_clients()

    app.on_shutdown.append(close_clients)
    return endpoint
