"""/healthz and /readyz over real HTTP: on ``wsbridge serve`` and through every adapter.

Readiness follows the broker: 200 while connected, 503 while Redis is down (liveness
stays 200), 200 again once the bridge reconnected and resubscribed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest

from tests.support.fixtures import RedisServerFactory
from tests.support.processes import Child, child_env, wsbridge_command
from tests.support.redis_server import free_port, scaled
from tests.support.servers import AiohttpServer, ServerThread, UvicornServer
from wsbridge import Broadcaster, Endpoint

pytestmark = pytest.mark.anyio


async def get(base: str, path: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=scaled(10)) as http:
        return await http.get(base + path)


async def wait_status(base: str, path: str, status: int, seconds: float = 30) -> httpx.Response:
    """Poll ``GET path`` until it answers ``status``, for at most ``seconds``."""
    with anyio.fail_after(scaled(seconds)):
        while True:
            response = await get(base, path)
            if response.status_code == status:
                return response
            await anyio.sleep(0.05)


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.parametrize("engine", ["wsbridge", "uvicorn"])
async def test_serve_answers_healthz_and_readyz_as_the_broker_comes_and_goes(
    engine: str, redis_server_factory: RedisServerFactory
) -> None:
    redis_server = redis_server_factory()
    port = free_port()
    args = ["serve", "--redis", redis_server.url, "--port", str(port), "--server", engine]
    child = Child(wsbridge_command(*args), env=child_env())
    base = f"http://127.0.0.1:{port}"
    try:
        child.wait_for(r"^wsbridge serve: listening on ws://", timeout=30)
        live = await get(base, "/healthz")
        assert live.status_code == 200
        assert live.json() == {"status": "ok", "connections": 0}
        assert live.headers["content-type"] == "application/json"
        ready = await get(base, "/readyz")
        assert ready.status_code == 200
        body = ready.json()
        assert body["status"] == "ready"
        assert body["broker_connected"] is True
        assert isinstance(body["probe_age"], float)  # the probe is on by default
        assert body["upstream_subscriptions"] == 0  # no client yet

        await anyio.to_thread.run_sync(redis_server.stop)
        down = await wait_status(base, "/readyz", 503)
        assert down.json()["status"] == "unavailable"
        assert down.json()["broker_connected"] is False
        assert (await get(base, "/healthz")).status_code == 200

        await anyio.to_thread.run_sync(redis_server.start)
        up = await wait_status(base, "/readyz", 200)
        assert up.json()["broker_reconnects"] >= 1
        # The WebSocket path is unchanged: a plain GET there is not a health check.
        assert (await get(base, "/ws")).status_code == 426
    finally:
        assert child.stop() == 0, child.output()
    assert "Traceback" not in child.output()


async def test_serve_turns_the_probe_off_from_the_environment() -> None:
    port = free_port()
    child = Child(
        wsbridge_command("serve", "--port", str(port)),
        env=child_env(WSBRIDGE_PROBE_INTERVAL="0"),
    )
    try:
        child.wait_for(r"^wsbridge serve: listening on ws://", timeout=30)
        ready = await get(f"http://127.0.0.1:{port}", "/readyz")
        assert ready.status_code == 200
        assert ready.json()["probe_age"] is None
    finally:
        assert child.stop() == 0, child.output()


def starlette_app(target: Endpoint) -> Any:
    from starlette.applications import Starlette

    from wsbridge.starlette import create_health_routes, create_route

    broadcaster = target.broadcaster
    return Starlette(
        routes=[create_route(target), *create_health_routes(target)],
        lifespan=broadcaster.lifespan,
    )


def fastapi_app(target: Endpoint) -> Any:
    from fastapi import FastAPI

    from wsbridge.fastapi import create_health_router, create_router

    app = FastAPI(lifespan=target.broadcaster.lifespan)
    app.include_router(create_router(target))
    app.include_router(create_health_router(target, prefix="/ops"))
    return app


def asgi_app(target: Endpoint) -> Any:
    from wsbridge.asgi import HealthApp, WebSocketApp

    ws = WebSocketApp(target)
    live, ready = HealthApp(target), HealthApp(target, ready=True)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        handler = {"/healthz": live, "/readyz": ready}.get(scope.get("path", ""), ws)
        await handler(scope, receive, send)

    return app


def aiohttp_app(target: Endpoint) -> Any:
    from aiohttp import web

    from wsbridge.aiohttp import create_health_handler, setup

    app = web.Application()
    setup(app, target)
    app.router.add_get("/healthz", create_health_handler(target))
    app.router.add_get("/readyz", create_health_handler(target, ready=True))
    return app


ADAPTERS: dict[str, tuple[Callable[[Endpoint], Any], type[ServerThread], str]] = {
    "asgi": (asgi_app, UvicornServer, ""),
    "starlette": (starlette_app, UvicornServer, ""),
    "fastapi": (fastapi_app, UvicornServer, "/ops"),
    "aiohttp": (aiohttp_app, AiohttpServer, ""),
}


@pytest.fixture(params=sorted(ADAPTERS))
def adapter(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.redis
async def test_every_adapter_serves_the_health_checks(
    adapter: str, redis_server_factory: RedisServerFactory
) -> None:
    redis_server = redis_server_factory()
    build, server_class, prefix = ADAPTERS[adapter]
    endpoint = Endpoint(Broadcaster(redis_server.url, reconnect_delay=0.05))
    server = server_class(build(endpoint)).start()
    base = server.http_url + prefix
    try:
        live = await get(base, "/healthz")
        assert live.status_code == 200
        assert live.json() == {"status": "ok", "connections": 0}
        assert live.headers["cache-control"] == "no-store"
        assert (await wait_status(base, "/readyz", 200)).json()["status"] == "ready"
        await anyio.to_thread.run_sync(redis_server.stop)
        assert (await wait_status(base, "/readyz", 503)).json()["status"] == "unavailable"
        assert (await get(base, "/healthz")).status_code == 200
        await anyio.to_thread.run_sync(redis_server.start)
        await wait_status(base, "/readyz", 200)
    finally:
        await anyio.to_thread.run_sync(server.stop)
