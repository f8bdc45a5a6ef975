"""Run wsbridge on uvicorn with a shutdown that closes every client with 1001.

Left alone, uvicorn closes open WebSockets with 1012 (service restart) when it stops,
before the application's lifespan shutdown runs, and after a signal it re-raises that
signal, so the process ends killed by it. :class:`Server` closes the broadcaster's clients
with 1001 first, lets them answer the close frame, and exits with status 0::

    import uvicorn
    from wsbridge.uvicorn import Server

    Server(uvicorn.Config(app, port=8000), endpoint).run()

It also sets uvicorn's ``ws_max_size`` (16 MiB by default) to the endpoint's frame limit,
so that uvicorn refuses an oversized client frame (1009) before buffering it.
"""

from __future__ import annotations

import signal
import socket
from types import FrameType

import anyio
import uvicorn

from wsbridge import protocol
from wsbridge.broadcaster import Broadcaster
from wsbridge.endpoint import Endpoint
from wsbridge.session import SessionLimits

__all__ = ["Server"]

# uvicorn's own default: a config that still has it was not set by the application.
_UVICORN_WS_MAX_SIZE = 16 * 1024 * 1024


class Server(uvicorn.Server):
    """A ``uvicorn.Server`` whose shutdown closes the broadcaster's clients with 1001 first.

    ``target`` is the :class:`~wsbridge.Endpoint` served, or its broadcaster.
    ``drain_timeout`` bounds the wait for clients to answer the close frame.

    Unless the config sets ``ws_max_size`` itself, it is lowered from uvicorn's 16 MiB to
    the endpoint's ``limits.max_frame_bytes`` (given a broadcaster: the default limit,
    64 KiB), so that a larger client frame is refused with 1009 as it arrives instead of
    being buffered whole first. Serving endpoints with a larger limit, give the broadcaster
    and set ``ws_max_size`` in the config.

    ``per_message_deflate`` sets ``config.ws_per_message_deflate``: uvicorn compresses every
    frame again for each client that negotiated permessage-deflate, which about doubles the
    CPU time of each delivery (docs/performance.md), so it is off unless ``True`` is given;
    ``None`` keeps what ``config`` says.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        target: Endpoint | Broadcaster,
        *,
        drain_timeout: float = 2.0,
        per_message_deflate: bool | None = False,
    ) -> None:
        if per_message_deflate is not None:
            config.ws_per_message_deflate = per_message_deflate
        super().__init__(config)
        if isinstance(target, Endpoint):
            self.broadcaster = target.broadcaster
            limit = target.limits.max_frame_bytes
        else:
            self.broadcaster = target
            limit = SessionLimits().max_frame_bytes
        if config.ws_max_size == _UVICORN_WS_MAX_SIZE:
            config.ws_max_size = limit
        self.drain_timeout = drain_timeout

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Stop on SIGTERM/SIGINT without re-raising the signal: a clean stop exits 0."""
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Close every client with 1001, wait for them (bounded), then shut uvicorn down."""
        for server in getattr(self, "servers", ()):
            server.close()  # accept nobody new while the others leave
        await self.broadcaster.close_clients(protocol.CLOSE_GOING_AWAY, "server shutting down")
        # Let clients answer the close frame, so TCP closes after the closing handshake.
        with anyio.move_on_after(self.drain_timeout):
            while any(  # noqa: ASYNC110 - uvicorn offers no event for its connection set
                type(c).__module__.startswith("uvicorn.protocols.websockets")
                for c in self.server_state.connections
            ):
                await anyio.sleep(0.02)
        await super().shutdown(sockets=sockets)
