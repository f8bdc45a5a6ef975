"""One message must never take the bridge down: hostile broker payloads and client frames.

Each test runs the bridge as production does (``wsbridge serve``, the ASGI adapter on
uvicorn, the aiohttp adapter, each in a process of its own) on a real redis-server, and
checks that the process stays up, other clients keep receiving, and the log holds no
traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct
import time
import uuid
from typing import Any

import anyio
import pytest
import redis
import redis.asyncio as aioredis
import websockets

from tests.support.bridges import KINDS, BridgeProcess
from tests.support.client import Client, StalledClient
from tests.support.proc import AppProcess
from tests.support.redis_server import scaled
from tests.support.servers import UvicornServer
from wsbridge import Broadcaster, Endpoint, SessionLimits, protocol
from wsbridge.schema import Registry

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

DEEP = "[" * 2000 + "]" * 2000  # about 4 KB: far under any frame or payload limit
PORTFOLIO = {"total_equity": 26000, "cash": 6000, "positions_value": 20000}


async def watching(url: str) -> Client:
    """A client whose default subscriptions are in place (its ping was answered after)."""
    client = await Client.connect(url)
    await client.pinged()
    return client


def assert_clean(bridge: BridgeProcess, *, allow_uvicorn_utf8: bool = False) -> None:
    bridge.assert_clean(allow_uvicorn_utf8=allow_uvicorn_utf8)


# -- 1. broker payloads -----------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_a_deeply_nested_broker_payload_is_forwarded_as_raw(
    kind: str, redis_url: str, redis_client: redis.Redis
) -> None:
    with BridgeProcess(kind, redis_url, ["portfolio:update"]) as bridge:
        watcher = await watching(bridge.url)
        redis_client.publish("portfolio:update", DEEP)
        assert await watcher.recv_event() == {
            "channel": "portfolio:update",
            "data": {"raw": DEEP},
        }
        redis_client.publish("portfolio:update", json.dumps(PORTFOLIO))
        assert await watcher.recv_event() == {"channel": "portfolio:update", "data": PORTFOLIO}
        # A client arriving afterwards is served too: the reader is still running.
        late = await watching(bridge.url)
        redis_client.publish("portfolio:update", json.dumps(PORTFOLIO))
        for client in (watcher, late):
            assert await client.recv_event() == {"channel": "portfolio:update", "data": PORTFOLIO}
            await client.close()
        assert_clean(bridge)


@pytest.mark.parametrize("kind", KINDS)
async def test_an_oversized_broker_payload_is_dropped_counted_and_logged_once(
    kind: str, redis_url: str, redis_client: redis.Redis
) -> None:
    channel = f"big:{uuid.uuid4().hex[:8]}"
    with BridgeProcess(kind, redis_url, [channel]) as bridge:
        watcher = await watching(bridge.url)
        too_big = json.dumps({"blob": "x" * (1024 * 1024)})
        for _ in range(3):
            redis_client.publish(channel, too_big)
        redis_client.publish(channel, '{"n": 1}')
        # Messages arrive in order: the small one coming first means the big ones are gone.
        assert await watcher.recv_event() == {"channel": channel, "data": {"n": 1}}
        await watcher.close()
        log = bridge.log()
        assert log.count("larger than max_payload_bytes") == 1, log
        assert_clean(bridge)


class _Exploding(Registry):
    """A registry whose check fails unexpectedly for one payload: a bug, say."""

    def check(self, channel: str, value: object) -> str | None:
        if value == {"explode": True}:
            raise RuntimeError("boom")
        return super().check(channel, value)


async def test_the_reader_survives_any_error_in_one_message(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "wsbridge")
    channel = f"err:{uuid.uuid4().hex[:8]}"
    publisher = aioredis.from_url(redis_url)
    broadcaster = Broadcaster(redis_url, registry=_Exploding(), log_interval=3600)
    try:
        async with broadcaster, broadcaster.subscriber() as sub:
            await sub.subscribe([channel])
            for _ in range(3):
                await publisher.publish(channel, '{"explode": true}')
            await publisher.publish(channel, '{"n": 1}')
            with anyio.fail_after(scaled(10)):
                (frame,) = await sub.get()
            assert json.loads(frame.text) == {"channel": channel, "data": {"n": 1}}
            stats = broadcaster.stats()
            assert stats.dispatch_errors == 3
            assert stats.broker_reconnects == 0
    finally:
        await publisher.aclose()
    lines = [r for r in caplog.records if "could not be delivered" in r.getMessage()]
    assert len(lines) == 1  # rate-limited
    assert lines[0].exc_info is None
    assert "RuntimeError: boom" in lines[0].getMessage()


async def test_dispatch_errors_and_dropped_payloads_are_prometheus_counters() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from wsbridge.prometheus import register

    registry = CollectorRegistry()
    broadcaster = Broadcaster(max_payload_bytes=64)
    register(broadcaster, registry)
    async with broadcaster, broadcaster.subscriber() as sub:
        await sub.subscribe(["a"])
        await broadcaster.publish("a", "x" * 100)
        await broadcaster.publish("a", 1)
        with anyio.fail_after(scaled(5)):
            (frame,) = await sub.get()
        assert json.loads(frame.text) == {"channel": "a", "data": 1}
    text = generate_latest(registry).decode()
    assert "wsbridge_payloads_too_large_total 1.0" in text
    assert "wsbridge_dispatch_errors_total 0.0" in text


# -- 2. client frames -------------------------------------------------------------------

UNPARSABLE = [
    DEEP,
    "{" * 3000,
    '{"type": "ping"' + "," * 10,
    "NaN",
    '{"a": [1, 2',
    '{"type":"subscribe","channels":' + "[" * 5000 + "]" * 5000 + "}",
]


@pytest.mark.parametrize("kind", KINDS)
async def test_unparsable_client_frames_get_invalid_json_and_no_traceback(
    kind: str, redis_url: str
) -> None:
    with BridgeProcess(kind, redis_url, ["a"]) as bridge:
        client = await watching(bridge.url)
        for i in range(200):
            await client.send_raw(UNPARSABLE[i % len(UNPARSABLE)])
        for _ in range(200):
            reply = await client.recv()
            assert (reply["type"], reply["code"]) == ("error", "invalid_json"), reply
        await client.pinged()  # still connected, still answered
        await client.close()
        assert_clean(bridge)


async def test_the_rate_limit_still_applies_to_unparsable_frames(redis_url: str) -> None:
    with BridgeProcess("serve", redis_url, ["a"], rate=5) as bridge:
        client = await Client.connect(bridge.url)
        for _ in range(150):
            try:
                await client.send_raw(DEEP)
            except websockets.ConnectionClosed:
                break
        code, _ = await client.closed()
        assert code == protocol.CLOSE_POLICY_VIOLATION
        assert_clean(bridge)


# -- 3. health check without subscriptions ------------------------------------------------


def _pings(client: redis.Redis) -> int:
    stats = client.info("commandstats").get("cmdstat_ping", {})
    return int(stats.get("calls", 0))


async def test_no_false_broker_lost_while_no_subscription_is_held(
    redis_server_factory: Any,
) -> None:
    server = redis_server_factory()
    probe = redis.Redis.from_url(server.url, socket_timeout=scaled(5))
    broadcaster = Broadcaster(server.url, health_check_interval=0.05)
    try:
        async with broadcaster:
            start = _pings(probe)
            with anyio.fail_after(scaled(15)):
                # Ten health checks answered with +PONG (Redis has no event for its counters).
                while _pings(probe) < start + 10:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            assert broadcaster.stats().broker_reconnects == 0
            # And the connection still works when a subscription comes.
            async with broadcaster.subscriber() as sub:
                await sub.subscribe(["after"])
                probe.publish("after", "1")
                with anyio.fail_after(scaled(5)):
                    (frame,) = await sub.get()
                assert json.loads(frame.text) == {"channel": "after", "data": 1}
    finally:
        probe.close()


async def test_a_client_that_unsubscribes_from_everything_sees_no_broker_flapping(
    redis_server_factory: Any,
) -> None:
    server = redis_server_factory()
    probe = redis.Redis.from_url(server.url, socket_timeout=scaled(5))
    config = {"broker": server.url, "channels": ["a"], "health_check_interval": 0.05}
    try:
        with AppProcess("tests.support.factories:bridge_app", config) as app:
            client = await watching(app.url)
            await client.send_json({"type": "unsubscribe", "channels": ["a"]})
            assert await client.recv() == {"type": "unsubscribed", "channels": ["a"]}
            start = _pings(probe)
            with anyio.fail_after(scaled(15)):
                while _pings(probe) < start + 10:  # noqa: ASYNC110 - as above
                    await anyio.sleep(0.05)
            # The next frame is the pong: no {"type": "broker", "status": "down"} before it.
            await client.send_json({"type": "ping"})
            assert await client.recv() == {"type": "pong"}
            await client.close()
            assert "broker connection lost" not in app.output()
    finally:
        probe.close()


async def test_a_subscription_made_during_an_outage_is_acknowledged_once_held(
    redis_server_factory: Any,
) -> None:
    server = redis_server_factory()
    broadcaster = Broadcaster(server.url, reconnect_delay=0.5, max_reconnect_delay=0.5)
    async with broadcaster, broadcaster.subscriber() as first, broadcaster.subscriber() as late:
        await first.subscribe(["x"])
        server.stop()
        with anyio.fail_after(scaled(10)):
            (down,) = await first.get()
        assert json.loads(down.text) == {"type": "broker", "status": "down"}
        async with anyio.create_task_group() as tg:
            tg.start_soon(late.subscribe, ["during"])
            server.start()
        # The subscription has returned: the broker holds it, so this event arrives.
        probe = redis.Redis.from_url(server.url, socket_timeout=scaled(5))
        try:
            assert probe.publish("during", "2") == 1
        finally:
            probe.close()
        seen: list[object] = []
        with anyio.fail_after(scaled(5)):
            while {"channel": "during", "data": 2} not in seen:
                seen += [json.loads(f.text) for f in await late.get()]
        assert seen[-1] == {"channel": "during", "data": 2}


# -- 4. invalid UTF-8 -------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_invalid_utf8_in_a_text_frame_closes_with_1007(kind: str, redis_url: str) -> None:
    with BridgeProcess(kind, redis_url, ["a"]) as bridge:
        client = await watching(bridge.url)
        other = await watching(bridge.url)
        await client.ws.send(b'{"type": "ping", "x": "\xff\xfe"}', text=True)
        code, _ = await client.closed()
        assert code == protocol.CLOSE_INVALID_DATA
        await other.pinged()
        await other.close()
        assert_clean(bridge, allow_uvicorn_utf8=kind == "asgi")


async def test_a_fragmented_text_message_is_reassembled_by_serve(redis_url: str) -> None:
    with BridgeProcess("serve", redis_url, ["a"]) as bridge:
        client = await watching(bridge.url)
        # "é" split across two fragments: valid once the message is whole.
        data = '{"type": "ping", "x": "é"}'.encode()
        cut = data.index(b"\xc3") + 1
        await client.ws.send([data[:cut], data[cut:]], text=True)
        assert await client.recv() == {"type": "pong"}
        await client.close()
        assert_clean(bridge)


# -- 5. the close frame of a stalled slow consumer --------------------------------------


async def test_a_client_stalled_past_the_close_timeout_still_gets_4008(
    redis_url: str, redis_client: redis.Redis
) -> None:
    channel = f"stall:{uuid.uuid4().hex[:8]}"
    close_timeout = 0.3
    config = {
        "broker": redis_url,
        "channels": [channel],
        "max_buffer_messages": 20,
        "close_timeout": close_timeout,
    }
    with AppProcess("tests.support.factories:bridge_server", config) as app:
        stalled = StalledClient(app.port)
        try:
            payload = json.dumps({"pad": "x" * 2000})
            deadline = time.monotonic() + scaled(20)
            # Publish until the server gives up on the stalled client.
            while '"slow_consumer_disconnects": 1' not in await _stats(app):
                assert time.monotonic() < deadline, "the stalled client was never closed"
                pipe = redis_client.pipeline()
                for _ in range(50):
                    pipe.publish(channel, payload)
                pipe.execute()
            # The scenario itself: the client stays stalled well past the close timeout.
            await anyio.sleep(close_timeout * 6)
            texts, code = await anyio.to_thread.run_sync(stalled.drain)
            assert code == protocol.CLOSE_SLOW_CONSUMER
            # Every frame before the close is whole.
            assert texts
            assert all(json.loads(t)["channel"] == channel for t in texts)
        finally:
            stalled.close()
        assert "Traceback" not in app.output()


async def _stats(app: AppProcess) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", app.stats_port)
    writer.write(b"GET /stats HTTP/1.1\r\nhost: x\r\n\r\n")
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), scaled(10))
    writer.close()
    return data.decode()


# -- 6. uvicorn refuses oversized frames before buffering them --------------------------


def _handshake(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=scaled(10))
    sock.sendall(
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def _close_code(sock: socket.socket) -> int:
    """Read frames until a close frame; return its code (server frames are unmasked)."""
    data = b""
    for _ in range(1000):
        chunk = sock.recv(65536)
        assert chunk, "connection ended without a close frame"
        data += chunk
        while len(data) >= 2:
            opcode, length = data[0] & 0x0F, data[1] & 0x7F
            offset = 2
            if length == 126:
                (length,) = struct.unpack("!H", data[2:4])
                offset = 4
            if len(data) < offset + length:
                break
            if opcode == 0x8:
                return int(struct.unpack("!H", data[offset : offset + 2])[0])
            data = data[offset + length :]
    raise AssertionError("no close frame")


@pytest.mark.parametrize("ws", ["websockets-sansio", "wsproto"])
async def test_wsbridge_uvicorn_server_refuses_an_oversized_frame_as_it_arrives(ws: str) -> None:
    from wsbridge.asgi import WebSocketApp
    from wsbridge.uvicorn import Server

    endpoint = Endpoint(Broadcaster(), channels=["a"], limits=SessionLimits(max_frame_bytes=4096))
    thread = UvicornServer(WebSocketApp(endpoint, path="/ws"), ws=ws)
    thread.server = Server(thread.server.config, endpoint)
    assert thread.server.config.ws_max_size == 4096
    thread.start()
    try:
        sock = await anyio.to_thread.run_sync(_handshake, thread.port)
        try:
            # The header announces 8 MiB; only 8 KiB follow. A server that buffers the
            # whole frame before checking its size would wait for the rest forever.
            size = 8 * 1024 * 1024
            header = bytes((0x81, 0x80 | 127)) + struct.pack("!Q", size) + b"\x00\x00\x00\x00"
            sock.sendall(header + b"a" * 8192)
            code = await anyio.to_thread.run_sync(_close_code, sock)
            assert code == protocol.CLOSE_MESSAGE_TOO_BIG
        finally:
            sock.close()
    finally:
        thread.stop()


def test_an_explicit_ws_max_size_is_kept() -> None:
    import uvicorn

    from wsbridge.uvicorn import Server

    broadcaster = Broadcaster()
    config = uvicorn.Config(app=None, ws_max_size=1024 * 1024)
    assert Server(config, broadcaster).config.ws_max_size == 1024 * 1024
    config = uvicorn.Config(app=None)
    assert Server(config, broadcaster).config.ws_max_size == 64 * 1024


# -- 7. --max-subscriptions 0 ------------------------------------------------------------


async def test_max_subscriptions_0_serves_the_default_channels_only(
    redis_url: str, redis_client: redis.Redis
) -> None:
    channel = f"only:{uuid.uuid4().hex[:8]}"
    args = ["--max-subscriptions", "0", "--allow", "extra:*"]
    with BridgeProcess("serve", redis_url, [channel], args=args) as bridge:
        client = await watching(bridge.url)
        # Holding its default channel again is fine; anything more is refused.
        assert (await client.subscribe([channel]))["channels"] == [channel]
        await client.send_json({"type": "subscribe", "channels": ["extra:1"], "id": 1})
        reply = await client.recv()
        assert reply["code"] == "too_many_subscriptions"
        assert reply["id"] == 1
        redis_client.publish(channel, "7")
        assert await client.recv_event() == {"channel": channel, "data": 7}
        await client.close()
        assert_clean(bridge)
