"""Fuzz the bridge end to end: generated client frames and broker payloads, real servers.

Each example is one batch: a client sends generated frames (text and binary, deep
nesting, sizes around the frame limit, invalid UTF-8, odd unicode, every message type
with fields of the wrong type) while generated payloads are published on Redis between
normal events. After each batch the server process still runs, a watching client got
every normal event in order, the log holds no traceback, and memory stays bounded.

The examples per server follow the hypothesis profile: a few under the default ``ci``
profile, many more with ``HYPOTHESIS_PROFILE=thorough`` (see docs/howto/testing.md).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.support.bridges import KINDS, BridgeProcess
from tests.support.client import Client
from tests.support.redis_server import scaled
from wsbridge.protocol import ErrorCode

pytestmark = [pytest.mark.redis, pytest.mark.slow]

FRAME_LIMIT = 4096
WATCHED = "fuzz:watch"
# Memory the server may gain over the whole run, above what it held after warming up.
RSS_SLACK_KIB = 96 * 1024
ERROR_CODES = {v for k, v in vars(ErrorCode).items() if k.isupper()}
EXAMPLES = settings.default.max_examples

# -- strategies ---------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
odd_text = st.text(st.characters(codec="utf-8"), max_size=300)
brackets = st.sampled_from([("[", "]"), ("{", "}"), ('{"a":', "}"), ('{"a":[', "]}")])
deep = st.builds(lambda n, pair: pair[0] * n + ("1" if pair[0].endswith(":") else "") + pair[1] * n,
                 st.sampled_from([2000, 65, 5000, 64, 1000]) | st.integers(1, 3000),
                 brackets)  # fmt: skip
near_limit = st.integers(FRAME_LIMIT - 40, FRAME_LIMIT + 40)
typed = st.fixed_dictionaries(
    {"type": st.sampled_from(["ping", "subscribe", "unsubscribe"]) | json_values},
    optional={
        "channels": json_values
        | st.lists(st.text(max_size=40) | st.sampled_from([WATCHED, "fuzz:*", "*"]), max_size=5),
        "id": json_values,
    },
).map(json.dumps)

client_frames = st.one_of(
    st.tuples(st.just("text"), deep),
    st.tuples(st.just("text"), odd_text),
    st.tuples(st.just("text"), typed),
    st.tuples(st.just("text"), json_values.map(json.dumps)),
    st.tuples(
        st.just("text"), near_limit.map(lambda n: '{"type":"ping","pad":"' + "a" * (n - 24) + '"}')
    ),
    st.tuples(st.just("binary"), st.binary(max_size=300)),
    st.tuples(st.just("binary"), near_limit.map(lambda n: b"\x00" * n)),
    st.tuples(st.just("bad-utf8"), st.binary(max_size=100).map(lambda b: b + b"\xff" + b)),
)

broker_payloads = st.one_of(
    deep.map(str.encode),
    st.binary(max_size=2000),
    odd_text.map(str.encode),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.integers(0, 200_000).map(lambda n: json.dumps({"pad": "y" * n}).encode()),
    st.just(b"z" * (1024 * 1024 + 1)),  # over the default max_payload_bytes: dropped
)

batches = st.tuples(
    st.lists(client_frames, min_size=1, max_size=25),
    st.lists(broker_payloads, min_size=1, max_size=5),
)


# -- one batch ----------------------------------------------------------------------------


def check_reply(frame: Any) -> None:
    assert isinstance(frame, dict), frame
    # Error frames may name a channel too (`forbidden`): only a frame without a type
    # is an event.
    if "type" not in frame:
        assert {"channel", "data"} <= set(frame) <= {"channel", "data", "offset"}, frame
        return
    kind = frame["type"]
    assert kind in ("pong", "subscribed", "unsubscribed", "error", "broker"), frame
    if kind == "error":
        assert frame["code"] in ERROR_CODES, frame


def expected_close(kind: str, data: Any) -> int | None:
    """The close code a frame must earn, or None when it must be answered."""
    if kind == "bad-utf8":
        return 1007
    size = len(data.encode()) if isinstance(data, str) else len(data)
    return 1009 if size > FRAME_LIMIT else None


async def send_frames(bridge: BridgeProcess, frames: list[tuple[str, Any]]) -> None:
    """Send every frame; each one that must close the connection is checked to, and the
    next frames go on a new connection. Every frame the server sends is checked."""
    client: Client | None = None
    for kind, data in frames:
        if client is None:
            client = await Client.connect(bridge.url, max_size=None)
        if kind == "bad-utf8":
            await client.ws.send(data, text=True)
        else:
            await client.ws.send(data)
        expected = expected_close(kind, data)
        if expected is None:
            continue
        code, _ = await client.closed()
        # uvicorn's websockets-sansio protocol sometimes drops the connection after
        # invalid UTF-8 without its 1007 close frame: uvicorn's doing, not ours.
        if not (code is None and kind == "bad-utf8" and bridge.kind == "asgi"):
            assert code == expected, (code, kind, data[:100])
        client = None
    if client is None:
        client = await Client.connect(bridge.url, max_size=None)
    await answered(client)
    await client.close()


async def answered(client: Client) -> None:
    """Ping, and check every frame the server sent before its pong."""
    await client.send_json({"type": "ping"})
    for _ in range(10_000):
        frame = await client.recv(timeout=15)
        if frame == {"type": "pong"}:
            return
        check_reply(frame)
    raise AssertionError("no pong")


async def run_batch(
    bridge: BridgeProcess,
    publisher: redis.Redis,
    frames: list[tuple[str, Any]],
    payloads: list[bytes],
) -> None:
    watcher = await Client.connect(bridge.url, max_size=None)
    try:
        await watcher.pinged()
        nonce = uuid.uuid4().hex
        sender = asyncio.ensure_future(send_frames(bridge, frames))
        expected = []
        for seq in range(len(payloads) + 1):
            event = {"fuzz_seq": seq, "nonce": nonce}
            expected.append(event)
            publisher.publish(WATCHED, json.dumps(event))
            if seq < len(payloads):
                publisher.publish(WATCHED, payloads[seq])
        await asyncio.wait_for(sender, scaled(60))
        seen = []
        while len(seen) < len(expected):
            frame = await watcher.recv_event(timeout=15)
            data = frame["data"]
            if isinstance(data, dict) and data.get("nonce") == nonce:
                seen.append(data)
        assert seen == expected
    finally:
        await watcher.close()


@pytest.fixture(scope="module", params=KINDS)
def bridge(request: pytest.FixtureRequest, redis_url: str) -> Iterator[BridgeProcess]:
    with BridgeProcess(
        request.param, redis_url, [WATCHED], rate=None, max_frame_bytes=FRAME_LIMIT
    ) as bridge:
        yield bridge


@pytest.fixture(scope="module")
def publisher(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, socket_timeout=scaled(10))
    yield client
    client.close()


def test_generated_frames_and_payloads_never_take_the_bridge_down(
    bridge: BridgeProcess, publisher: redis.Redis
) -> None:
    # Warm up (imports, first connections), then measure the memory to compare against.
    asyncio.run(run_batch(bridge, publisher, [("text", "x")], [b"1"]))
    baseline = bridge.rss_kib()
    sizes: list[tuple[int, int]] = []

    @settings(
        max_examples=EXAMPLES,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(batch=batches)
    # A refused subscription's error frame names its channel: found by the fuzzer.
    @example(batch=([("text", json.dumps({"type": "subscribe", "channels": ["0"]}))], [b"1"]))
    def batch_keeps_the_bridge_healthy(batch: tuple[list[tuple[str, Any]], list[bytes]]) -> None:
        frames, payloads = batch
        asyncio.run(run_batch(bridge, publisher, frames, payloads))
        sizes.append((len(frames), len(payloads)))
        bridge.assert_clean(allow_uvicorn_utf8=bridge.kind == "asgi")
        rss = bridge.rss_kib()
        assert rss < baseline + RSS_SLACK_KIB, f"RSS grew from {baseline} to {rss} KiB"

    batch_keeps_the_bridge_healthy()
    frames, payloads = sum(f for f, _ in sizes), sum(p for _, p in sizes)
    print(f"{bridge.kind}: {len(sizes)} batches, {frames} frames, "
          f"{payloads} payloads; RSS {baseline} -> {bridge.rss_kib()} KiB")  # fmt: skip
