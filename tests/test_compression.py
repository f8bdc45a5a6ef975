"""permessage-deflate in wsbridge's own server: negotiation, shared compressed frames, bombs.

Clients are real sockets against a real server: the ``websockets`` client (which offers
deflate by default, as browsers do) and a raw-socket client that sends exactly the offer,
and the frames, a test needs. What each client decodes is compared byte for byte with what
a client that offered nothing received.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from tests.support.client import Client
from tests.support.processes import Child, child_env, wsbridge_command
from tests.support.rawws import CLOSE, RawClient, deflate, inflate
from tests.support.redis_server import TIMEOUT_SCALE_ENV, free_port, scaled
from tests.support.samples import REFERENCE_EXAMPLES
from tests.support.servers import AiohttpServer, BridgeServer, UvicornServer
from tests.test_demo_browser import browser_tools  # noqa: F401  (a fixture)
from wsbridge import Broadcaster, Endpoint, outbox
from wsbridge import deflate as wsdeflate
from wsbridge.asgi import WebSocketApp
from wsbridge.exceptions import ConfigurationError
from wsbridge.history import History
from wsbridge.outbox import Frame
from wsbridge.schema import Registry
from wsbridge.server import Server

if TYPE_CHECKING:
    import redis

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[1]

CHANNEL = "portfolio:update"


def portfolio(positions: int) -> dict[str, Any]:
    """A portfolio snapshot with ``positions`` positions (20 make about 3 KB of JSON)."""
    rows = [
        {
            "symbol": f"SYM{i:02d}",
            "quantity": 10 + i,
            "entry_price": 100.0 + i,
            "current_price": 101.5 + i,
            "market_value": (10 + i) * (101.5 + i),
            "unrealized_pnl": (10 + i) * 1.5,
            "sector": ("Technology", "Energy", "Healthcare")[i % 3],
        }
        for i in range(positions)
    ]
    return {"total_equity": 30000.0, "cash": 5000.0, "positions_value": 25000.0, "positions": rows}


# What Chromium (and Firefox) offer on every WebSocket.
CHROMIUM_OFFER = "permessage-deflate; client_max_window_bits"

SMALL = {"total_equity": 1.0, "cash": 1.0, "positions_value": 0.0}
LARGE = portfolio(20)


# -- the pure part ------------------------------------------------------------------------


@pytest.mark.parametrize("bits", range(9, 16))
def test_a_message_compressed_alone_decodes_with_its_window(bits: int) -> None:
    payload = json.dumps(LARGE).encode()
    data = wsdeflate.compress_message(payload, bits)
    assert len(data) < len(payload) / 2
    assert inflate(data, bits) == payload


def test_window_bits_zlib_cannot_compress_with_are_refused() -> None:
    with pytest.raises(ValueError, match="window_bits"):
        wsdeflate.compress_message(b"x", 8)


def test_a_frame_is_compressed_once_per_window_size() -> None:
    frame = Frame(CHANNEL, json.dumps({"channel": CHANNEL, "data": LARGE}))
    wire = frame.deflated(15)
    assert wire is frame.deflated(15)  # cached: every client of that window shares it
    assert wire[0] == 0xC1  # FIN, RSV1 (compressed), text
    assert frame.deflated(10) is not wire
    assert frame.deflated(10) is frame.deflated(10)
    # A frame that compression would not shrink is sent plain.
    tiny = Frame("", '{"type":"pong"}')
    assert tiny.deflated(15) is tiny.wire


# -- negotiation --------------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[BridgeServer]:
    endpoint = Endpoint(Broadcaster("memory://"), channels=[CHANNEL])
    with BridgeServer(endpoint) as running:
        assert isinstance(running, BridgeServer)
        yield running


def publish(server: BridgeServer, data: object) -> None:
    server.call(server.server.broadcaster.publish, CHANNEL, data)


async def ready(client: RawClient, compressor: Any = None, client_bits: int = 15) -> None:
    """Ping (compressed when the extension is on) and wait for the pong: subscribed."""
    ping = b'{"type":"ping"}'
    if client.extension is not None:
        await client.send_frame(deflate(ping, compressor, client_bits), rsv1=True)
    else:
        await client.send_frame(ping)
    frame = await client.recv_data()
    assert not frame.rsv1  # under the threshold: plain
    assert json.loads(frame.payload) == {"type": "pong"}


def text_of(client: RawClient, frame: Any) -> bytes:
    """The message text a client decodes from ``frame``."""
    if not frame.rsv1:
        return bytes(frame.payload)
    ext = client.extension
    assert ext is not None, "RSV1 set without the extension"
    bits = int(ext.get("server_max_window_bits") or 15)
    return inflate(frame.payload, bits)


# Every answer has both: each message is compressed on its own, either way.
NO_TAKEOVER: dict[str, str | None] = {
    "server_no_context_takeover": None,
    "client_no_context_takeover": None,
}
ANSWER = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"

OFFERS = [
    # (offer, the parameters of the answer; None: no extension)
    ("permessage-deflate", NO_TAKEOVER),
    # What Chromium and Firefox send.
    ("permessage-deflate; client_max_window_bits", NO_TAKEOVER),
    ("permessage-deflate; client_no_context_takeover", NO_TAKEOVER),
    (
        "permessage-deflate; server_max_window_bits=10",
        {**NO_TAKEOVER, "server_max_window_bits": "10"},
    ),
    (
        "permessage-deflate; client_max_window_bits=9",
        {**NO_TAKEOVER, "client_max_window_bits": "9"},
    ),
    # zlib cannot compress raw deflate with a 256-byte window: that offer is declined ...
    ("permessage-deflate; server_max_window_bits=8", None),
    # ... and the client's next offer taken.
    ("permessage-deflate; server_max_window_bits=8, permessage-deflate", NO_TAKEOVER),
    ("permessage-deflate; unknown_parameter", None),
    ("x-webkit-deflate-frame", None),
    (None, None),
]


@pytest.mark.parametrize(("offer", "answer"), OFFERS)
async def test_negotiation_and_the_payload_each_client_decodes(
    server: BridgeServer, offer: str | None, answer: dict[str, str | None] | None
) -> None:
    client = await RawClient.connect(server.port, extensions=offer)
    plain = await RawClient.connect(server.port)
    try:
        assert client.status == 101
        assert client.extension == answer
        client_bits = int((answer or {}).get("client_max_window_bits") or 15)
        for _ in range(2):  # each compressed on its own, as the answer asks
            await ready(client, None, client_bits)
        await ready(plain)
        for data in (SMALL, LARGE):
            publish(server, data)
            got, reference = await client.recv_data(), await plain.recv_data()
            assert not reference.rsv1
            # What the client decodes is byte for byte what a plain client gets.
            assert text_of(client, got) == reference.payload
            assert json.loads(reference.payload) == {"channel": CHANNEL, "data": data}
            large = data is LARGE
            assert got.rsv1 is (answer is not None and large)
            if got.rsv1:
                assert len(got.payload) < len(reference.payload) / 3
    finally:
        await client.close()
        await plain.close()


async def test_clients_with_the_same_window_get_the_same_bytes(
    server: BridgeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    compressed: list[int] = []
    original = wsdeflate.deflate_text_frame

    def counting(payload: bytes, window_bits: int = 15) -> bytes | None:
        compressed.append(window_bits)
        return original(payload, window_bits)

    monkeypatch.setattr(wsdeflate, "deflate_text_frame", counting)
    offers = ["permessage-deflate"] * 3 + ["permessage-deflate; server_max_window_bits=10"] * 2
    clients = [await RawClient.connect(server.port, extensions=offer) for offer in offers]
    try:
        for client in clients:
            await ready(client)
        publish(server, LARGE)
        frames = [await client.recv_data() for client in clients]
        assert all(frame.rsv1 for frame in frames)
        assert frames[0].wire == frames[1].wire == frames[2].wire
        assert frames[3].wire == frames[4].wire
        # Compressed once per window size, whatever the number of clients.
        assert sorted(compressed) == [10, 15]
        assert inflate(frames[3].payload, 10) == inflate(frames[0].payload, 15)
    finally:
        for client in clients:
            await client.close()


@pytest.mark.parametrize(
    ("options", "small_compressed", "negotiated"),
    [
        ({}, False, True),
        ({"compression_threshold": 0}, True, True),
        ({"compression": False}, False, False),
    ],
)
async def test_threshold_and_switch(
    options: dict[str, Any], small_compressed: bool, negotiated: bool
) -> None:
    endpoint = Endpoint(Broadcaster("memory://"), channels=[CHANNEL])
    with BridgeServer(endpoint, **options) as server:
        assert isinstance(server, BridgeServer)
        client = await RawClient.connect(server.port, extensions="permessage-deflate")
        try:
            assert (client.extension is not None) is negotiated
            await ready(client)
            publish(server, SMALL)
            frame = await client.recv_data()
            assert frame.rsv1 is small_compressed
            assert json.loads(text_of(client, frame)) == {"channel": CHANNEL, "data": SMALL}
        finally:
            await client.close()


async def send_json(client: RawClient, message: dict[str, Any]) -> None:
    data = json.dumps(message).encode()
    if client.extension is not None:
        await client.send_frame(deflate(data), rsv1=True)
    else:
        await client.send_frame(data)


async def test_a_replay_decodes_the_same_compressed_or_not() -> None:
    # Replayed events go to each client as one write of a page's frames, joined once
    # per compression setting: each frame must still decode on its own, in order.
    registry = Registry(history={CHANNEL: History(size=300, ttl=60)})
    endpoint = Endpoint(Broadcaster("memory://", registry=registry), allow=[CHANNEL])
    with BridgeServer(endpoint) as server:
        assert isinstance(server, BridgeServer)
        probe = await RawClient.connect(server.port)
        try:
            await send_json(probe, {"type": "subscribe", "channels": [CHANNEL]})
            ack = json.loads((await probe.recv_data()).payload)
            epoch = ack["positions"][CHANNEL]["epoch"]
        finally:
            await probe.close()
        sent = [LARGE if i % 3 == 0 else {**SMALL, "cash": i} for i in range(250)]
        for data in sent:
            publish(server, data)
        clients = [
            await RawClient.connect(server.port, extensions="permessage-deflate"),
            await RawClient.connect(
                server.port, extensions="permessage-deflate; server_max_window_bits=10"
            ),
            await RawClient.connect(server.port),
        ]
        try:
            since = {CHANNEL: {"epoch": epoch, "offset": 0}}
            for client in clients:
                await send_json(
                    client, {"type": "subscribe", "channels": [CHANNEL], "since": since}
                )
            for client in clients:
                ack = json.loads(text_of(client, await client.recv_data()))
                assert ack["positions"][CHANNEL]["recovered"] is True, ack
                got = []
                for _ in sent:
                    frame = await client.recv_data()
                    event = json.loads(text_of(client, frame))
                    large = event["data"] == LARGE
                    assert frame.rsv1 is (client.extension is not None and large)
                    got.append(event)
                assert [e["offset"] for e in got] == list(range(1, len(sent) + 1))
                assert [e["data"] for e in got] == sent
        finally:
            for client in clients:
                await client.close()


def test_a_negative_threshold_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        Server(Broadcaster("memory://"), compression_threshold=-1)


# -- hostile compressed frames ------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        # 16 MB of spaces, about 16 KB compressed: far over the 64 KiB frame limit.
        (deflate(b" " * (16 << 20)), 1009),
        # Not deflate data at all.
        (b"\xff\xfe\xfd" * 10, 1002),
    ],
    ids=["deflate-bomb", "not-deflate"],
)
async def test_hostile_compressed_frames_close_that_client_only(
    server: BridgeServer, payload: bytes, code: int
) -> None:
    hostile = await RawClient.connect(server.port, extensions="permessage-deflate")
    bystander = await Client.connect(server.url)  # the websockets client: deflate too
    try:
        await bystander.pinged()
        await ready(hostile)
        assert len(payload) < 64 * 1024
        await hostile.send_frame(payload, rsv1=True)
        for _ in range(100):
            frame = await hostile.recv_frame()
            if frame.opcode == CLOSE:
                break
        assert frame.opcode == CLOSE
        assert frame.close_code == code
        # Counted; the server, and the other client, carry on.
        assert await server.acall(counted, server.server, code) == 1
        publish(server, LARGE)
        assert await bystander.recv_event() == {"channel": CHANNEL, "data": LARGE}
        late = await Client.connect(server.url)
        await late.pinged()
        await late.close()
    finally:
        await hostile.close()
        await bystander.close()


async def test_a_client_that_keeps_its_context_is_closed_with_1002(server: BridgeServer) -> None:
    # Told client_no_context_takeover, this client compresses its second ping with a
    # reference back into the first: the server keeps no context, so it cannot decode it.
    hostile = await RawClient.connect(server.port, extensions="permessage-deflate")
    try:
        assert hostile.extension == NO_TAKEOVER
        compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
        await ready(hostile, compressor)
        await hostile.send_frame(deflate(b'{"type":"ping"}', compressor), rsv1=True)
        for _ in range(100):
            frame = await hostile.recv_frame()
            if frame.opcode == CLOSE:
                break
        assert frame.opcode == CLOSE
        assert frame.close_code == 1002
        assert await server.acall(counted, server.server, 1002) == 1
    finally:
        await hostile.close()


async def counted(server: Server, code: int) -> int:
    """Read the counter in the server's loop: after the frame that closed the client."""
    return server.protocol_errors[code]


def test_frame_cache_does_not_change_the_outbox_accounting() -> None:
    box = outbox.Outbox(max_messages=10, max_bytes=10_000)
    frame = Frame(CHANNEL, json.dumps({"channel": CHANNEL, "data": LARGE}))
    frame.deflated(15)
    assert box.push(frame) is outbox.QUEUED
    assert box.bytes == frame.size == len(frame.text)


# -- wsbridge serve, as a process ---------------------------------------------------------


def start_serve(*args: str, **env: str) -> Child:
    """``wsbridge serve`` in a child, once it listens."""
    child = Child(wsbridge_command("serve", *args), env=child_env(**env))
    try:
        child.wait_for(r"^wsbridge serve: listening on ws://", timeout=30)
    except BaseException:
        child.stop()
        raise
    return child


@pytest.mark.redis
async def test_serve_shares_compressed_frames_and_survives_a_bomb(
    redis_url: str, redis_client: redis.Redis
) -> None:
    port = free_port()
    child = start_serve("--redis", redis_url, "--port", str(port))
    try:
        url = f"ws://127.0.0.1:{port}/ws"
        browser_like = await Client.connect(url)  # offers deflate, as browsers do
        answer = browser_like.ws.response.headers["Sec-WebSocket-Extensions"]
        assert answer == ANSWER
        chromium = await RawClient.connect(port, extensions=CHROMIUM_OFFER)
        firefox = await RawClient.connect(port, extensions=CHROMIUM_OFFER)
        plain = await RawClient.connect(port)
        hostile = await RawClient.connect(port, extensions="permessage-deflate")
        await browser_like.pinged()
        for client in (chromium, firefox, plain, hostile):
            await ready(client)
        trade = REFERENCE_EXAMPLES["trade:executed"]
        for channel, data in (("trade:executed", trade), (CHANNEL, LARGE)):
            redis_client.publish(channel, json.dumps(data))
            reference = await plain.recv_data()
            assert not reference.rsv1
            sent = json.loads(reference.payload)
            assert sent["channel"] == channel
            assert sent["data"] == data  # equal as JSON values (10 and 10.0 alike)
            a, b = await chromium.recv_data(), await firefox.recv_data()
            assert a.wire == b.wire  # one compressed frame for both
            assert a.rsv1  # both are over the threshold
            assert text_of(chromium, a) == reference.payload
            assert (await browser_like.ws.recv()).encode() == reference.payload
            assert text_of(hostile, await hostile.recv_data()) == reference.payload

        await hostile.send_frame(deflate(b" " * (16 << 20)), rsv1=True)
        frame = await hostile.recv_data()
        assert frame.opcode == CLOSE
        assert frame.close_code == 1009

        redis_client.publish(CHANNEL, json.dumps(SMALL))
        assert await browser_like.recv_event() == {"channel": CHANNEL, "data": SMALL}
        small = await chromium.recv_data()
        assert not small.rsv1  # under the threshold: plain
        assert json.loads(small.payload) == {"channel": CHANNEL, "data": SMALL}
        await browser_like.close()
        for client in (chromium, firefox, plain, hostile):
            await client.close()
    finally:
        assert child.stop() == 0
    assert "Traceback" not in child.output()


async def test_serve_without_compression_from_the_environment() -> None:
    port = free_port()
    child = start_serve("--port", str(port), WSBRIDGE_COMPRESSION="false")
    try:
        client = await RawClient.connect(port, extensions=CHROMIUM_OFFER)
        assert client.status == 101
        assert client.extension is None
        await ready(client)
        await client.close()
    finally:
        assert child.stop() == 0


# -- Chromium -----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.redis
async def test_the_dashboard_in_chromium_decodes_compressed_frames(
    redis_url: str,
    redis_client: redis.Redis,
    browser_tools: tuple[str, str],  # noqa: F811  (the fixture imported above)
) -> None:
    browser_dir = ROOT / "tests" / "browser"
    node, chromium = browser_tools
    port = free_port()
    child = start_serve("--redis", redis_url, "--port", str(port))
    env = child_env(
        WS_PORT=str(port),
        STATIC_DIR=str(ROOT / "src" / "wsbridge" / "demo" / "static"),
        CHROMIUM_PATH=chromium,
        **{TIMEOUT_SCALE_ENV: str(scaled(1.0))},
    )
    plain = await RawClient.connect(port)
    try:
        await ready(plain)
        with Child([node, str(browser_dir / "compression.mjs")], env=env, cwd=browser_dir) as page:
            await anyio.to_thread.run_sync(
                lambda: page.wait_for("^@@ready$", stream="stdout", timeout=90)
            )
            redis_client.publish(CHANNEL, json.dumps(LARGE))
            reference = await plain.recv_data()
            assert await anyio.to_thread.run_sync(lambda: page.wait(120)) == 0, page.output()
            outcome = json.loads(page.lines("stdout")[-1])
    finally:
        await plain.close()
        assert child.stop() == 0
    assert outcome["extensions"] == ANSWER
    # What Chromium decoded is, byte for byte, what a client without compression received.
    assert reference.payload.decode() in outcome["frames"]
    assert outcome["rows"] == 20
    assert "Traceback" not in child.output()


# -- uvicorn: per-client compression, off by default --------------------------------------


async def check_negotiated(
    server: UvicornServer | AiohttpServer, broadcaster: Broadcaster, negotiated: bool
) -> None:
    """A client offering deflate, as browsers do, gets it only when ``negotiated``, and
    the large event either way."""
    client = await Client.connect(server.url)
    try:
        answer = client.ws.response.headers.get("Sec-WebSocket-Extensions")
        assert (answer is not None) is negotiated, answer
        await client.pinged()
        server.call(broadcaster.publish, CHANNEL, LARGE)
        assert await client.recv_event() == {"channel": CHANNEL, "data": LARGE}
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("options", "negotiated"),
    [({}, False), ({"per_message_deflate": True}, True), ({"per_message_deflate": None}, True)],
)
@pytest.mark.parametrize("ws", ["websockets-sansio", "wsproto"])
async def test_wsbridge_uvicorn_server_compresses_only_when_asked(
    options: dict[str, Any], negotiated: bool, ws: str
) -> None:
    broadcaster = Broadcaster("memory://")
    app = WebSocketApp(Endpoint(broadcaster, channels=[CHANNEL]), path="/ws")
    with UvicornServer(app, ws=ws, bridge={"target": broadcaster, **options}) as server:
        await check_negotiated(server, broadcaster, negotiated)


@pytest.mark.parametrize(("args", "negotiated"), [((), False), (("--compression",), True)])
async def test_serve_on_uvicorn_compresses_only_when_asked(
    args: tuple[str, ...], negotiated: bool
) -> None:
    port = free_port()
    child = start_serve("--port", str(port), "--server", "uvicorn", *args)
    try:
        client = await RawClient.connect(port, extensions=CHROMIUM_OFFER)
        assert client.status == 101
        assert (client.extension is not None) is negotiated
        await client.close()
    finally:
        assert child.stop() == 0


@pytest.mark.parametrize(("options", "negotiated"), [({}, False), ({"compress": True}, True)])
async def test_aiohttp_compresses_only_when_asked(
    options: dict[str, Any], negotiated: bool
) -> None:
    from aiohttp import web

    from wsbridge.aiohttp import setup

    broadcaster = Broadcaster("memory://")
    app = web.Application()
    setup(app, Endpoint(broadcaster, channels=[CHANNEL]), **options)
    with AiohttpServer(app) as server:
        await check_negotiated(server, broadcaster, negotiated)


@pytest.mark.parametrize("compress", [False, True])
async def test_aiohttp_takes_a_frame_of_exactly_the_limit(compress: bool) -> None:
    from aiohttp import web

    from wsbridge.aiohttp import setup
    from wsbridge.session import SessionLimits

    limit = 4096
    endpoint = Endpoint(
        Broadcaster("memory://"), channels=[CHANNEL], limits=SessionLimits(max_frame_bytes=limit)
    )
    app = web.Application()
    setup(app, endpoint, compress=compress)
    with AiohttpServer(app) as server:
        client = await Client.connect(server.url, max_size=None)
        try:
            ping = json.dumps({"type": "ping", "pad": ""})
            await client.send_raw(ping[:-2] + "x" * (limit - len(ping)) + '"}')
            assert await client.recv() == {"type": "pong"}
            await client.send_raw(ping[:-2] + "x" * (limit + 1 - len(ping)) + '"}')
            assert (await client.closed())[0] == 1009
        finally:
            await client.close()
