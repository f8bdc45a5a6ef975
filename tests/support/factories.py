"""App factories for :class:`tests.support.proc.AppProcess`: a bridge plus a stats route."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

from wsbridge import Broadcaster, Endpoint, SessionLimits
from wsbridge.asgi import Receive, Scope, Send, WebSocketApp


def _endpoint(config: dict[str, Any]) -> Endpoint:
    return Endpoint(
        Broadcaster(
            config.get("broker", "memory://"),
            health_check_interval=config.get("health_check_interval", 10.0),
        ),
        channels=config.get("channels", []),
        limits=SessionLimits(**config.get("limits", {})),
        max_buffer_messages=config.get("max_buffer_messages", 1000),
        max_buffer_bytes=config.get("max_buffer_bytes", 4 * 1024 * 1024),
        idle_timeout=config.get("idle_timeout", 75.0),
        allow=config.get("allow"),
        overflow=config.get("overflow", "disconnect"),
    )


def stats_json(broadcaster: Broadcaster) -> bytes:
    """The broadcaster's counters plus the number of asyncio tasks, as JSON."""
    stats = dataclasses.asdict(broadcaster.stats())
    stats["tasks"] = len(asyncio.all_tasks())
    return json.dumps(stats).encode()


def bridge_server(config: dict[str, Any]) -> Any:
    """wsbridge's own server; the process serves ``/stats`` on a second port."""
    from wsbridge.server import Server

    return Server(_endpoint(config), path="/ws", close_timeout=config.get("close_timeout", 5.0))


def bridge_aiohttp(config: dict[str, Any]) -> Any:
    """The aiohttp adapter; ``GET /stats`` returns the broadcaster's counters as JSON."""
    from aiohttp import web

    from wsbridge.aiohttp import setup

    endpoint = _endpoint(config)

    async def stats(request: web.Request) -> web.Response:
        return web.Response(body=stats_json(endpoint.broadcaster), content_type="application/json")

    app = web.Application()
    setup(app, endpoint, path="/ws")
    app.router.add_get("/stats", stats)
    return app


def bridge_app(config: dict[str, Any]) -> Any:
    """``/ws`` is the bridge; ``GET /stats`` returns the broadcaster's counters as JSON."""
    endpoint = _endpoint(config)
    broadcaster = endpoint.broadcaster
    bridge = WebSocketApp(endpoint)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/stats":
            body = stats_json(broadcaster)
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await bridge(scope, receive, send)

    return app
