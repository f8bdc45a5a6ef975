"""A plain HTTP GET on the WebSocket path gets the handshake's decision, from every server.

Browsers hide the status of a refused WebSocket handshake; the JavaScript client asks the
same URL with a plain GET to learn why (``Endpoint.answer_http``). Each adapter runs on a
real server (uvicorn, hypercorn, aiohttp, the standalone server) and is asked over TCP.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import jwt
import pytest
import websockets

from tests.support.apps import serve
from tests.support.client import Client, close_all, connect_many
from tests.support.redis_server import scaled
from wsbridge import Broadcaster, Endpoint
from wsbridge.endpoint import ConnectionInfo, HTTPAnswer
from wsbridge.tokens import TokenAuth

pytestmark = pytest.mark.anyio

# Each ASGI route on uvicorn, plain ASGI on hypercorn (trio) too, aiohttp, and `wsbridge serve`.
SERVERS = ("asgi", "asgi-trio", "starlette", "fastapi", "aiohttp", "server")
SECRET = "a-secret-for-the-handshake-answers-" + "x" * 16
PLAIN = "text/plain; charset=utf-8"


async def get(url: str, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=scaled(10)) as http:
        return await http.get(url.replace("ws://", "http://"), headers=headers)


def assert_answer(response: httpx.Response, status: int, reason: str) -> None:
    assert (response.status_code, response.text) == (status, reason + "\n")
    assert response.headers["content-type"] == PLAIN
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("adapter", SERVERS)
async def test_a_refused_token_is_answered_with_its_reason(adapter: str) -> None:
    auth = TokenAuth(secret=SECRET)
    endpoint = Endpoint(Broadcaster(), authenticate=auth.authenticate, authorize=auth.authorize)
    app = serve(adapter, endpoint)
    try:
        assert_answer(await get(app.url), 401, "token required")
        assert_answer(await get(app.url + "?token=not-a-token"), 401, "malformed token")
        expired = jwt.encode({"exp": int(time.time()) - 600}, SECRET, algorithm="HS256")
        assert_answer(await get(app.url + f"?token={expired}"), 401, "token expired")
        # The handshake with the same token is refused with the same status and reason.
        with pytest.raises(websockets.InvalidStatus) as refused:
            await Client.connect(app.url + "?token=not-a-token")
        assert refused.value.response.status_code == 401
        assert refused.value.response.body == b"malformed token\n"
        # A good token: the handshake would be accepted, so the GET is told to upgrade.
        good = jwt.encode({"exp": int(time.time()) + 600}, SECRET, algorithm="HS256")
        accepted = await get(app.url + f"?token={good}")
        assert accepted.status_code == 426
        assert accepted.headers["upgrade"] == "websocket"
        # Only the real handshake counts as a refusal.
        assert endpoint.refused_handshakes == 1
    finally:
        app.stop()


@pytest.mark.parametrize("adapter", SERVERS)
async def test_an_origin_not_allowed_is_answered_with_its_reason(adapter: str) -> None:
    endpoint = Endpoint(Broadcaster(), allowed_origins=["https://app.example"])
    app = serve(adapter, endpoint)
    try:
        assert_answer(await get(app.url, Origin="https://evil.example"), 403, "origin not allowed")
        assert (await get(app.url, Origin="https://app.example")).status_code == 426
        # Browsers send no Origin with a same-origin GET: its Referer's origin is judged.
        assert (await get(app.url, Referer="https://app.example/trading?x=1")).status_code == 426
        evil = await get(app.url, Referer="https://evil.example/page")
        assert_answer(evil, 403, "origin not allowed")
        for junk in ("http://[", "javascript:alert(1)", "https://", "https://app.example:99999/"):
            assert_answer(await get(app.url, Referer=junk), 403, "origin not allowed")
        assert_answer(await get(app.url), 403, "origin not allowed")
        client = await Client.connect(app.url, origin="https://app.example")
        await client.pinged()
        await client.close()
    finally:
        app.stop()


@pytest.mark.parametrize("adapter", SERVERS)
async def test_the_connection_limit_is_answered_with_its_reason(adapter: str) -> None:
    endpoint = Endpoint(Broadcaster(), channels=["a"], max_connections=1)
    app = serve(adapter, endpoint)
    try:
        assert (await get(app.url)).status_code == 426
        clients = await connect_many(app.url, 1)
        assert_answer(await get(app.url), 503, "too many connections")
        await close_all(clients)
    finally:
        app.stop()


async def test_every_adapter_answers_alike() -> None:
    bodies: dict[str, tuple[int, str, str]] = {}
    for adapter in SERVERS:
        app = serve(adapter, Endpoint(Broadcaster(), allowed_origins=["https://app.example"]))
        try:
            response = await get(app.url, Origin="https://evil.example")
        finally:
            app.stop()
        bodies[adapter] = (
            response.status_code,
            response.headers["content-type"],
            response.text,
        )
    assert set(bodies.values()) == {(403, PLAIN, "origin not allowed\n")}, bodies


async def test_the_answer_of_the_core() -> None:
    def refuse(info: ConnectionInfo) -> Any:
        from wsbridge import AuthenticationError

        raise AuthenticationError("payment required", status=499)

    async with Broadcaster() as broadcaster:
        endpoint = Endpoint(broadcaster, authenticate=refuse)
        info = ConnectionInfo.build(path="/ws", headers={})
        answer = await endpoint.answer_http(info)
        assert answer == HTTPAnswer(
            499,
            "Refused",
            (("Content-Type", PLAIN), ("Cache-Control", "no-store")),
            b"payment required\n",
        )
        assert endpoint.refused_handshakes == 0
    # A stopped broadcaster refuses handshakes, and says so.
    stopped = await Endpoint(Broadcaster()).answer_http(info)
    assert (stopped.status, stopped.body) == (503, b"broadcaster not running\n")


@pytest.mark.parametrize("adapter", ["asgi", "asgi-trio", "starlette", "aiohttp"])
async def test_head_gets_the_status_without_a_body(adapter: str) -> None:
    app = serve(adapter, Endpoint(Broadcaster(), max_connections=0))
    try:
        async with httpx.AsyncClient(timeout=scaled(10)) as http:
            response = await http.head(app.url.replace("ws://", "http://"))
        assert response.status_code == 503
        assert response.content == b""
    finally:
        app.stop()


@pytest.mark.parametrize("adapter", SERVERS)
async def test_hostile_plain_requests_get_an_answer(adapter: str) -> None:
    app = serve(adapter, Endpoint(Broadcaster(), allowed_origins=["https://app.example"]))
    requests = [
        b"Upgrade: foo\r\nUpgrade: bar\r\n",  # a repeated header
        b"Referer: http://[\r\nOrigin:\r\n",
        b"Referer: " + b"https://app.example/" + b"a" * 4000 + b"\r\n",
    ]
    try:
        for extra in requests:
            reader, writer = await asyncio.open_connection("127.0.0.1", app.port)
            writer.write(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra + b"\r\n")
            await writer.drain()
            status = await asyncio.wait_for(reader.readline(), scaled(10))
            writer.close()
            assert status.startswith(b"HTTP/1.1 "), (extra, status)
            assert int(status.split()[1]) in (400, 403, 426), (extra, status)
        # Still serving.
        assert (await get(app.url, Origin="https://app.example")).status_code == 426
    finally:
        app.stop()
