"""A plain ASGI application serving the wsbridge endpoint.

Run it on any ASGI server (uvicorn, hypercorn, daphne), or mount it in an ASGI app::

    from wsbridge import Broadcaster, Endpoint
    from wsbridge.asgi import WebSocketApp

    app = WebSocketApp(Endpoint(Broadcaster("redis://localhost:6379/0")))

With ``lifespan=True`` (the default) it starts and stops the broadcaster on the ASGI
lifespan events; pass ``lifespan=False`` when the host application does that.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from wsbridge import health, protocol
from wsbridge.broadcaster import Broadcaster
from wsbridge.endpoint import ConnectionInfo, Endpoint, HTTPAnswer, TransportClosed, as_endpoint

__all__ = ["ASGITransport", "HealthApp", "WebSocketApp", "as_endpoint"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class ASGITransport:
    """A :class:`~wsbridge.endpoint.Transport` over an accepted ASGI WebSocket."""

    __slots__ = ("_receive", "_send")

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send

    async def receive(self) -> str | bytes | None:
        """Return the next client frame, or ``None`` on disconnect."""
        for _ in range(1000):  # servers send nothing else here; the bound guards a broken one
            message = await self._receive()
            kind = message["type"]
            if kind == "websocket.receive":
                text = message.get("text")
                if text is not None:
                    return str(text)
                return bytes(message.get("bytes") or b"")
            if kind == "websocket.disconnect":
                return None
        return None

    async def send(self, text: str) -> None:
        """Send one text frame."""
        try:
            await self._send({"type": "websocket.send", "text": text})
        except Exception as exc:  # the server raises its own error once the client has gone
            raise TransportClosed from exc

    def send_direct(self, text: str) -> Awaitable[None]:
        """The server's own ``send()`` for one text frame, without :meth:`send`'s wrapper.

        Used on the hot path, which treats any error it raises as the client having gone.
        """
        return self._send({"type": "websocket.send", "text": text})

    async def close(self, code: int, reason: str) -> None:
        """Close the connection; errors from an already closed one are ignored."""
        with contextlib.suppress(Exception):
            await self._send({"type": "websocket.close", "code": code, "reason": reason[:120]})


def connection_info(scope: Scope) -> ConnectionInfo:
    """Extract the handshake's request data from an ASGI WebSocket scope."""
    client = scope.get("client")
    return ConnectionInfo.build(
        path=str(scope.get("path", "")),
        headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope.get("headers", [])],
        query_string=bytes(scope.get("query_string", b"")).decode("latin-1"),
        client=(str(client[0]), int(client[1])) if client else None,
        subprotocols=list(scope.get("subprotocols") or ()),
    )


class WebSocketApp:
    """An ASGI app: serves WebSocket connections with an :class:`Endpoint`.

    ``path``, if given, is the only path served (others get 404); leave it ``None`` when
    a router in front already chose the path. A plain HTTP ``GET`` gets the answer of
    :meth:`Endpoint.answer_http <wsbridge.endpoint.Endpoint.answer_http>`: the reason a
    handshake would be refused, or ``426 Upgrade Required``; other methods get 426.
    """

    def __init__(
        self,
        target: Endpoint | Broadcaster,
        *,
        lifespan: bool = True,
        path: str | None = None,
    ) -> None:
        self.endpoint = as_endpoint(target)
        self.lifespan = lifespan
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection: websocket, lifespan or (refused) http."""
        kind = scope["type"]
        if kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "http":
            await self._http(scope, send)

    async def _http(self, scope: Scope, send: Send) -> None:
        # A GET is how the JavaScript client learns why its handshake was refused: it
        # gets the handshake's decision, as from every adapter (Endpoint.answer_http).
        method = scope.get("method")
        if self.path is not None and scope.get("path") != self.path:
            answer = HTTPAnswer.refusal(404, "not found")
        elif method in ("GET", "HEAD"):
            answer = await self.endpoint.answer_http(connection_info(scope))
        else:
            answer = HTTPAnswer.upgrade_required()
        headers = _headers(answer)
        body = b"" if method == "HEAD" else answer.body
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        if self.path is not None and scope.get("path") != self.path:
            await self._refuse(scope, send, 404, "not found")
            return
        handshake = await self.endpoint.handshake(connection_info(scope))
        if not handshake.accepted:
            await self._refuse(scope, send, handshake.status, handshake.reason)
            return
        accept: Message = {"type": "websocket.accept"}
        if handshake.subprotocol is not None:
            accept["subprotocol"] = handshake.subprotocol
        await send(accept)
        await self.endpoint.serve(ASGITransport(receive, send), handshake.principal)

    @staticmethod
    async def _refuse(scope: Scope, send: Send, status: int, reason: str) -> None:
        if status != 403 and "websocket.http.response" in (scope.get("extensions") or {}):
            answer = HTTPAnswer.refusal(status, reason)
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": status,
                    "headers": _headers(answer),
                }
            )
            await send({"type": "websocket.http.response.body", "body": answer.body})
        else:  # closing before accept: the server answers 403
            await send({"type": "websocket.close", "code": protocol.CLOSE_POLICY_VIOLATION})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "lifespan.startup":
            return
        if not self.lifespan:
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        broadcaster = self.endpoint.broadcaster
        try:
            await broadcaster.__aenter__()
        except Exception as exc:
            await send({"type": "lifespan.startup.failed", "message": f"wsbridge: {exc}"})
            return
        try:
            await send({"type": "lifespan.startup.complete"})
            await receive()
        finally:
            await broadcaster.aclose()
        await send({"type": "lifespan.shutdown.complete"})


def _headers(answer: HTTPAnswer) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers]


class HealthApp:
    """An ASGI app answering every HTTP request with a health check (see :mod:`wsbridge.health`).

    ``ready=False``: liveness, always 200. ``ready=True``: readiness, 200 or 503. Mount it
    at ``/healthz`` and ``/readyz``; it does not run the broadcaster.
    """

    def __init__(self, target: Endpoint | Broadcaster, *, ready: bool = False) -> None:
        self.target = target
        self.ready = ready

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer an HTTP request; other scope types are ignored."""
        if scope["type"] != "http":
            return
        status, body = health.check(self.target, ready=self.ready)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body.encode()})
