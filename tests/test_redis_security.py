"""Redis authentication and TLS settings reach redis-py unchanged."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.support.redis_server import free_port, scaled
from wsbridge import Broadcaster, BrokerUnavailableError

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
