"""Redis authentication and TLS settings reach redis-py unchanged."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis

from tests.support.redis_server import free_port, scaled
from wsbridge import Broadcaster, BrokerUnavailableError, Endpoint, SubscriptionRefusedError

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


async def roundtrip(broadcaster: Broadcaster) -> None:
    async with broadcaster, broadcaster.subscriber() as sub:
        await sub.subscribe(["secure"])
        await broadcaster.publish("secure", {"ok": True})
        with anyio.fail_after(scaled(5)):
            (frame,) = await sub.get()
        assert json.loads(frame.text) == {"channel": "secure", "data": {"ok": True}}


async def test_password_in_the_url(redis_server_factory: Any) -> None:
    server = redis_server_factory(args=["--requirepass", "s3cret"])
    await roundtrip(Broadcaster(server.url.replace("redis://", "redis://:s3cret@")))


async def test_acl_user_and_password_as_options(redis_server_factory: Any) -> None:
    server = redis_server_factory(args=["--user", "bridge", "on", ">pw", "~*", "&*", "+@all"])
    await roundtrip(
        Broadcaster(server.url, backend_options={"username": "bridge", "password": "pw"})
    )


async def test_a_wrong_password_fails_clearly(redis_server_factory: Any) -> None:
    server = redis_server_factory(args=["--requirepass", "s3cret"])
    broadcaster = Broadcaster(server.url.replace("redis://", "redis://:wrong@"))
    with anyio.fail_after(scaled(15)), pytest.raises(BrokerUnavailableError):
        await broadcaster.__aenter__()


def make_certificates(directory: Path) -> None:
    def run(*args: str) -> None:
        subprocess.run(
            ["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=60
        )

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "1", "-subj", "/CN=wsbridge-test-ca")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1")  # fmt: skip
    (directory / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "1", "-extfile", "ext.cnf")  # fmt: skip


async def test_tls_with_certificate_verification(redis_server_factory: Any, tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make test certificates")
    make_certificates(tmp_path)
    tls_port = free_port()
    redis_server_factory(
        args=[
            "--tls-port",
            str(tls_port),
            "--tls-cert-file",
            str(tmp_path / "server.crt"),
            "--tls-key-file",
            str(tmp_path / "server.key"),
            "--tls-ca-cert-file",
            str(tmp_path / "ca.crt"),
            "--tls-auth-clients",
            "no",
        ]
    )
    url = f"rediss://127.0.0.1:{tls_port}/0"
    await roundtrip(Broadcaster(url, backend_options={"ssl_ca_certs": str(tmp_path / "ca.crt")}))
    # Without the CA the server's certificate is not trusted: a clear failure, not a hang.
    with anyio.fail_after(scaled(15)), pytest.raises(BrokerUnavailableError):
        await Broadcaster(url, backend_options={"connect_timeout": 2}).__aenter__()


async def test_a_missing_password_fails_at_startup(redis_server_factory: Any) -> None:
    server = redis_server_factory(args=["--requirepass", "s3cret"])
    with anyio.fail_after(scaled(15)), pytest.raises(BrokerUnavailableError):
        await Broadcaster(server.url).__aenter__()


# A user that may read only `open:*`: Redis refuses every other SUBSCRIBE with NOPERM.
RESTRICTED = ["--user", "bridge", "on", ">pw", "~*", "resetchannels", "&open:*", "+@all"]
AS_BRIDGE = {"username": "bridge", "password": "pw"}


async def test_the_backend_reports_a_refused_subscription_and_keeps_its_connection(
    redis_server_factory: Any,
) -> None:
    from wsbridge.backends.redis import RedisBackend

    server = redis_server_factory(args=RESTRICTED)
    backend = RedisBackend(server.url, **AS_BRIDGE)
    await backend.connect()
    try:
        async with anyio.create_task_group() as tg:
            received: list[bytes] = []
            got = anyio.Event()

            async def read() -> None:
                async for message in backend.messages():
                    received.append(message.data)
                    got.set()

            tg.start_soon(read)
            with pytest.raises(SubscriptionRefusedError) as caught:
                await backend.subscribe(["closed:a"], [])
            assert caught.value.channels == ["closed:a"]
            assert "no permissions" in caught.value.reason
            # One denied name refuses the whole command, as Redis does.
            with pytest.raises(SubscriptionRefusedError) as caught:
                await backend.subscribe(["open:b", "closed:b"], ["closed:*"])
            assert sorted(caught.value.channels) == ["closed:*", "closed:b", "open:b"]
            # The connection is intact: a permitted subscription works, and so does PING.
            await backend.subscribe(["open:a"], [])
            await backend.health_check()
            await backend.publish("open:a", b"hello")
            with anyio.fail_after(scaled(5)):
                await got.wait()
            assert received == [b"hello"]
            await backend.health_check()  # the PING before was answered
            tg.cancel_scope.cancel()
    finally:
        await backend.close()


async def refused_subscribes(client: aioredis.Redis) -> int:
    """SUBSCRIBE and PSUBSCRIBE calls the server refused, from its command statistics."""
    stats = await client.info("commandstats")
    return sum(
        int(stats.get(f"cmdstat_{name}", {}).get("rejected_calls", 0))
        for name in ("subscribe", "psubscribe")
    )


async def test_a_refused_channel_costs_no_one_else_their_subscriptions(
    redis_server_factory: Any,
) -> None:
    server = redis_server_factory(args=RESTRICTED)
    broadcaster = Broadcaster(server.url, backend_options=AS_BRIDGE)
    async with broadcaster, broadcaster.subscriber() as sub, broadcaster.subscriber() as other:
        await other.subscribe(["open:x"])
        with pytest.raises(SubscriptionRefusedError) as caught:
            await sub.subscribe(["open:a", "closed:a", "closed:*"])
        assert sorted(caught.value.channels) == ["closed:*", "closed:a"]
        assert sub.subscriptions == {"open:a"}
        stats = broadcaster.stats()
        assert stats.subscriptions_refused == 2
        assert stats.broker_reconnects == 0
        assert stats.upstream_subscriptions == 2
        # A name just refused is refused again without asking Redis: a connect storm must
        # not cost one refused SUBSCRIBE per client.
        admin = aioredis.from_url(server.url)
        try:
            before = await refused_subscribes(admin)
            async with broadcaster.subscriber() as third:
                with pytest.raises(SubscriptionRefusedError) as caught:
                    await third.subscribe(["closed:a"])
                assert caught.value.channels == ["closed:a"]
            assert await refused_subscribes(admin) == before > 0
        finally:
            await admin.aclose()
        assert broadcaster.stats().subscriptions_refused == 3
        await broadcaster.publish("open:a", {"n": 1})
        await broadcaster.publish("open:x", {"n": 2})
        with anyio.fail_after(scaled(5)):
            (frame,) = await sub.get()
            (other_frame,) = await other.get()
        assert json.loads(frame.text) == {"channel": "open:a", "data": {"n": 1}}
        assert json.loads(other_frame.text) == {"channel": "open:x", "data": {"n": 2}}


async def test_a_client_asking_for_a_refused_channel_gets_an_error_and_stays(
    redis_server_factory: Any,
) -> None:
    from tests.support.apps import serve
    from tests.support.client import Client

    server = redis_server_factory(args=RESTRICTED)
    broadcaster = Broadcaster(server.url, backend_options=AS_BRIDGE)
    app = serve("asgi", Endpoint(broadcaster, channels=["open:feed"], allow=["open:*", "closed:*"]))
    try:
        client = await Client.connect(app.url)
        await client.send_json(
            {"type": "subscribe", "channels": ["open:more", "closed:x"], "id": 7}
        )
        assert await client.recv() == {
            "type": "error",
            "code": "subscription_refused",
            "message": "the broker refused the subscription to 'closed:x'",
            "id": 7,
            "channel": "closed:x",
        }
        assert await client.recv() == {"type": "subscribed", "channels": ["open:more"], "id": 7}
        await broadcaster.publish("open:more", {"n": 1})
        assert await client.recv() == {"channel": "open:more", "data": {"n": 1}}
        # The bridge did not take the refusal for an outage: no reconnect, no "down" frame.
        await client.send_json({"type": "ping"})
        assert await client.recv() == {"type": "pong"}
        assert broadcaster.stats().broker_reconnects == 0
        await client.close()
    finally:
        app.stop()
