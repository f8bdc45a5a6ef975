"""``wsbridge serve`` exposed: the default allow-list, JWT authentication, TLS.

Every test runs ``wsbridge serve`` as a process and talks to it over real sockets; the
tokens are signed here with PyJWT or by hand (for the forgeries PyJWT refuses to make).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import os
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import jwt
import pytest
import websockets
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from tests.support.client import Client
from tests.support.processes import Child, child_env, wsbridge_command
from tests.support.redis_server import TIMEOUT_SCALE_ENV, free_port, scaled
from tests.support.samples import REFERENCE_EXAMPLES
from tests.test_demo_browser import browser_tools  # noqa: F401  (a fixture)

if TYPE_CHECKING:
    import redis

pytestmark = pytest.mark.anyio

ENGINES = ["wsbridge", "uvicorn"]
ROOT = Path(__file__).resolve().parents[1]
SECRET = "test-secret-for-hs256-" + "k" * 32
TRADE = REFERENCE_EXAMPLES["trade:executed"]
KILL_SWITCH = REFERENCE_EXAMPLES["risk:kill_switch"]
ALERT = REFERENCE_EXAMPLES["risk:alert"]


def start_serve(*args: str, tls: bool = False, **env: str) -> Child:
    """``wsbridge serve`` in a child, once it listens."""
    command = wsbridge_command("serve", "--log-level", "info", *args)
    child = Child(command, env=child_env(**env))
    try:
        child.wait_for(rf"^wsbridge serve: listening on {'wss' if tls else 'ws'}://", timeout=30)
    except BaseException:
        child.stop()
        raise
    return child


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "alice", "iat": now, "exp": now + 300, "channels": ["trade:*"], **overrides}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], payload: dict[str, Any], key: bytes | None) -> str:
    """A token signed by hand: HS256 with any key bytes, or unsigned (``alg: none``)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = (
        b"" if key is None else hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    )
    return f"{signing_input}.{b64(signature)}"


def with_token(token: str) -> dict[str, Any]:
    """Connect options that present ``token`` the browser way: a subprotocol."""
    return {"subprotocols": ["wsbridge", f"wsbridge.token.{token}"]}


async def refusal(url: str, **options: Any) -> tuple[int, str]:
    with pytest.raises(websockets.InvalidStatus) as info:
        await Client.connect(url, **options)
    response = info.value.response
    return response.status_code, response.body.decode(errors="replace").strip()


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# -- the default allow-list ---------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.parametrize("engine", ENGINES)
async def test_star_is_refused_by_default_and_receives_nothing(
    engine: str, redis_url: str, redis_client: redis.Redis
) -> None:
    port = free_port()
    child = start_serve("--redis", redis_url, "--port", str(port), "--server", engine)
    try:
        client = await Client.connect(f"ws://127.0.0.1:{port}/ws")
        await client.pinged()
        await client.send_json(
            {"type": "subscribe", "channels": ["*", "internal:*", "internal:payroll"], "id": 1}
        )
        for name in ("*", "internal:*", "internal:payroll"):
            assert await client.recv() == {
                "type": "error",
                "code": "forbidden",
                "message": f"not allowed to subscribe to {name!r}",
                "id": 1,
                "channel": name,
            }
        assert await client.recv() == {"type": "subscribed", "channels": [], "id": 1}
        assert redis_client.pubsub_numpat() == 0  # no PSUBSCRIBE reached Redis
        # Published before the alert on the same connection: it would arrive first.
        redis_client.publish("internal:payroll", json.dumps({"salary": 1}))
        redis_client.publish("risk:alert", json.dumps(ALERT))
        assert await client.recv_event() == {"channel": "risk:alert", "data": ALERT}
        await client.close()
    finally:
        assert child.stop() == 0


@pytest.mark.redis
async def test_allow_widens_what_clients_may_subscribe_to(
    redis_url: str, redis_client: redis.Redis
) -> None:
    port = free_port()
    child = start_serve(
        "--redis", redis_url, "--port", str(port), "--channel", "risk:alert",
        WSBRIDGE_ALLOW="internal:* audit:log",
    )  # fmt: skip
    try:
        client = await Client.connect(f"ws://127.0.0.1:{port}/ws")
        await client.pinged()
        assert (await client.subscribe(["internal:*", "audit:log"]))["channels"] == [
            "internal:*",
            "audit:log",
        ]
        await client.send_json({"type": "subscribe", "channels": ["audit:*"]})
        assert (await client.recv())["code"] == "forbidden"  # a pattern must be allowed itself
        assert (await client.recv())["channels"] == []
        redis_client.publish("internal:payroll", json.dumps({"salary": 1}))
        redis_client.publish("risk:alert", json.dumps(ALERT))  # served: still delivered
        assert await client.recv_event() == {
            "channel": "internal:payroll",
            "data": {"salary": 1},
        }
        assert await client.recv_event() == {"channel": "risk:alert", "data": ALERT}
        await client.close()
    finally:
        assert child.stop() == 0


# -- tokens ---------------------------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.parametrize("engine", ENGINES)
async def test_a_token_for_trade_star_reaches_trades_and_nothing_else(
    engine: str, redis_url: str, redis_client: redis.Redis
) -> None:
    port = free_port()
    child = start_serve(
        "--redis", redis_url, "--port", str(port), "--server", engine,
        WSBRIDGE_JWT_SECRET=SECRET,
    )  # fmt: skip
    url = f"ws://127.0.0.1:{port}/ws"
    try:
        token = jwt.encode(claims(channels=["trade:*"]), SECRET, algorithm="HS256")
        client = await Client.connect(url, **with_token(token))
        assert client.ws.subprotocol == "wsbridge"
        await client.pinged()
        assert (await client.subscribe(["trade:executed"], request_id=1))["channels"] == [
            "trade:executed"
        ]
        await client.send_json({"type": "subscribe", "channels": ["risk:kill_switch"], "id": 2})
        assert await client.recv() == {
            "type": "error",
            "code": "forbidden",
            "message": "not allowed to subscribe to 'risk:kill_switch'",
            "id": 2,
            "channel": "risk:kill_switch",
        }
        assert await client.recv() == {"type": "subscribed", "channels": [], "id": 2}
        # risk:kill_switch is one of the channels served, but the token does not allow it.
        redis_client.publish("risk:kill_switch", json.dumps(KILL_SWITCH))
        redis_client.publish("trade:executed", json.dumps(TRADE))
        event = await client.recv_event()
        assert event["channel"] == "trade:executed"
        await client.close()
        # The same token in the query string, and as a bearer header.
        by_query = await Client.connect(f"{url}?token={token}")
        await by_query.pinged()
        await by_query.close()
        by_header = await Client.connect(
            url, additional_headers={"Authorization": f"Bearer {token}"}
        )
        await by_header.pinged()
        await by_header.close()
    finally:
        assert child.stop() == 0
    assert "Traceback" not in child.output()


@pytest.fixture(scope="module")
def rs256_server(
    rsa_key: rsa.RSAPrivateKey, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A ``wsbridge serve`` accepting RS256 tokens signed by ``rsa_key``; yields its URL."""
    key_file = tmp_path_factory.mktemp("keys") / "public.pem"
    key_file.write_bytes(public_pem(rsa_key))
    port = free_port()
    child = start_serve("--port", str(port), "--jwt-public-key", str(key_file), "--jwt-leeway", "5")
    try:
        yield f"ws://127.0.0.1:{port}/ws"
    finally:
        assert child.stop() == 0
        assert "Traceback" not in child.output()


async def test_bad_tokens_are_refused_at_the_handshake(
    rs256_server: str, rsa_key: rsa.RSAPrivateKey
) -> None:
    url = rs256_server
    good = claims()
    valid = jwt.encode(good, rsa_key, algorithm="RS256")
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    head, _, signature = valid.split(".")
    widened = b64(json.dumps({**good, "channels": ["*"]}).encode())
    cases = {
        "missing": (None, "token required"),
        "expired": (
            jwt.encode(claims(exp=now - 60), rsa_key, algorithm="RS256"),
            "token expired",
        ),
        "not yet valid": (
            jwt.encode(claims(nbf=now + 60), rsa_key, algorithm="RS256"),
            "token not yet valid",
        ),
        "tampered": (f"{head}.{widened}.{signature}", "invalid token signature"),
        "alg none": (
            forge({"alg": "none", "typ": "JWT"}, good, None),
            "token algorithm not allowed",
        ),
        "HS256 with the public key": (
            forge({"alg": "HS256", "typ": "JWT"}, good, public_pem(rsa_key)),
            "token algorithm not allowed",
        ),
        "wrong key": (
            jwt.encode(good, other_key, algorithm="RS256"),
            "invalid token signature",
        ),
        "no exp": (
            jwt.encode({"sub": "alice", "channels": ["trade:*"]}, rsa_key, algorithm="RS256"),
            "token has no expiry (exp)",
        ),
        "garbage": ("not.a.token", "malformed token"),
    }
    for name, (token, reason) in cases.items():
        options = {} if token is None else with_token(token)
        assert await refusal(url, **options) == (401, reason), name
    client = await Client.connect(url, **with_token(valid))
    await client.pinged()
    await client.close()


async def test_an_hs256_server_refuses_other_keys_and_algorithms(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    port = free_port()
    child = start_serve("--port", str(port), "--jwt-secret", SECRET)
    url = f"ws://127.0.0.1:{port}/ws"
    try:
        wrong_secret = jwt.encode(claims(), "another-secret-" + "x" * 32, algorithm="HS256")
        assert await refusal(url, **with_token(wrong_secret)) == (401, "invalid token signature")
        rs256 = jwt.encode(claims(), rsa_key, algorithm="RS256")
        assert await refusal(url, **with_token(rs256)) == (401, "token algorithm not allowed")
        bad_claim = jwt.encode(claims(channels="trade:*"), SECRET, algorithm="HS256")
        assert await refusal(url, **with_token(bad_claim)) == (
            401,
            'the "channels" claim must list strings',
        )
    finally:
        assert child.stop() == 0


async def test_a_jwks_file_selects_the_key_by_kid(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "alg": "ES256", "use": "sig"}]}))
    port = free_port()
    child = start_serve("--port", str(port), "--jwt-jwks", str(jwks))
    url = f"ws://127.0.0.1:{port}/ws"
    try:
        token = jwt.encode(claims(), key, algorithm="ES256", headers={"kid": "k1"})
        client = await Client.connect(url, **with_token(token))
        await client.pinged()
        await client.close()
        unknown = jwt.encode(claims(), key, algorithm="ES256", headers={"kid": "k2"})
        assert await refusal(url, **with_token(unknown)) == (401, "unknown token key")
    finally:
        assert child.stop() == 0


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_connection_is_closed_with_4001_when_its_token_expires(engine: str) -> None:
    port = free_port()
    child = start_serve(
        "--port", str(port), "--server", engine, "--jwt-leeway", "0",
        WSBRIDGE_JWT_SECRET=SECRET,
    )  # fmt: skip
    try:
        # Long enough to connect on a loaded machine; exp is whole seconds.
        token = jwt.encode(claims(exp=int(time.time()) + 5), SECRET, algorithm="HS256")
        client = await Client.connect(f"ws://127.0.0.1:{port}/ws", **with_token(token))
        await client.pinged()
        assert await client.closed(timeout=20) == (4001, "token expired")
    finally:
        assert child.stop() == 0


@pytest.mark.parametrize("engine", ENGINES)
async def test_tokens_never_reach_the_log(engine: str) -> None:
    port = free_port()
    child = Child(
        wsbridge_command(
            "serve", "--port", str(port), "--server", engine, "--log-level", "debug",
        ),
        env=child_env(WSBRIDGE_JWT_SECRET=SECRET),
    )  # fmt: skip
    url = f"ws://127.0.0.1:{port}/ws"
    try:
        child.wait_for(r"^wsbridge serve: listening on ws://", timeout=30)
        token = jwt.encode(claims(), SECRET, algorithm="HS256")
        expired = jwt.encode(claims(exp=int(time.time()) - 600), SECRET, algorithm="HS256")
        for options in (
            with_token(token),
            {"additional_headers": {"Authorization": f"Bearer {token}"}},
        ):
            client = await Client.connect(url, **options)
            await client.send_json({"type": "subscribe", "channels": ["risk:*"]})
            assert (await client.recv())["code"] == "forbidden"
            await client.close()
        client = await Client.connect(f"{url}?token={token}")
        await client.pinged()
        await client.close()
        assert await refusal(f"{url}?token={expired}") == (401, "token expired")
        assert await refusal(url, **with_token(expired)) == (401, "token expired")
    finally:
        assert child.stop() == 0
    log = child.output()
    assert "token=***" in log  # the query string was logged, masked
    for secret in (token, expired, token.split(".")[2], expired.split(".")[2]):
        assert secret not in log


# -- TLS ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("tls")
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.mark.parametrize("engine", ENGINES)
async def test_tls_clients_connect_and_a_plain_client_fails_cleanly(
    engine: str, certificate: tuple[Path, Path]
) -> None:
    cert_file, key_file = certificate
    port = free_port()
    child = start_serve(
        "--port", str(port), "--server", engine,
        "--certfile", str(cert_file), "--keyfile", str(key_file),
        tls=True,
    )  # fmt: skip
    context = ssl.create_default_context(cafile=str(cert_file))
    try:
        first = await Client.connect(f"wss://127.0.0.1:{port}/ws", ssl=context)
        await first.pinged()
        # Refused at once (the server answers a TLS alert or closes), not left hanging.
        with anyio.fail_after(scaled(10)):
            try:
                await Client.connect(f"ws://127.0.0.1:{port}/ws")
            except TimeoutError:
                raise AssertionError("the plain client was left waiting") from None
            except (websockets.InvalidMessage, websockets.InvalidHandshake, OSError, EOFError):
                pass
            else:
                raise AssertionError("a plain client connected to the TLS port")
        # An untrusted certificate is refused by a verifying client.
        with pytest.raises(ssl.SSLCertVerificationError):
            await Client.connect(f"wss://127.0.0.1:{port}/ws", ssl=ssl.create_default_context())
        second = await Client.connect(f"wss://127.0.0.1:{port}/ws", ssl=context)
        await second.pinged()
        await first.pinged()  # the first connection was not disturbed either
        await first.close()
        await second.close()
    finally:
        assert child.stop() == 0
    assert "Traceback" not in child.output()


# -- a token issued outside Python -------------------------------------------------------


@pytest.mark.parametrize("issuer", ["node", "openssl"])
async def test_a_token_issued_without_python_is_accepted(issuer: str) -> None:
    if shutil.which(issuer) is None or shutil.which("sh") is None:
        pytest.skip(f"{issuer} is not installed")
    if issuer == "node":
        command = ["node", str(ROOT / "examples/tokens/issue_token.mjs"), "bob", "trade:*"]
    else:
        command = ["sh", str(ROOT / "examples/tokens/issue_token.sh"), "bob", '["trade:*"]']
    result = await anyio.to_thread.run_sync(
        lambda: subprocess.run(
            command,
            env={**child_env(), "WSBRIDGE_JWT_SECRET": SECRET},
            capture_output=True,
            text=True,
            timeout=scaled(30),
            check=True,
        )
    )
    token = result.stdout.strip()
    assert jwt.decode(token, SECRET, algorithms=["HS256"])["channels"] == ["trade:*"]
    port = free_port()
    child = start_serve("--port", str(port), WSBRIDGE_JWT_SECRET=SECRET)
    url = f"ws://127.0.0.1:{port}/ws"
    try:
        client = await Client.connect(url, **with_token(token))
        assert (await client.subscribe(["trade:executed"]))["channels"] == ["trade:executed"]
        await client.send_json({"type": "subscribe", "channels": ["risk:alert"]})
        assert (await client.recv())["code"] == "forbidden"
        await client.close()
        # wsbridge listen presents the same token; it connects and subscribes.
        listener = Child(
            wsbridge_command("listen", url, "--channel", "trade:*", "--timeout", "30"),
            env=child_env(WSBRIDGE_TOKEN=token),
        )
        try:
            listener.wait_for(r"wsbridge listen: connected to ", timeout=30)
        finally:
            listener.stop()
        assert token not in listener.output()
    finally:
        assert child.stop() == 0


def test_every_serve_variable_is_documented() -> None:
    from wsbridge.cli import ENV

    configuration = (ROOT / "docs/reference/configuration.md").read_text("utf-8")
    cli_page = (ROOT / "docs/cli.md").read_text("utf-8")
    for variable in ENV.values():
        assert f"`{variable}`" in configuration, variable
        assert f"`{variable}`" in cli_page, variable


def test_bad_security_options_fail_before_serving(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from wsbridge.cli import cli

    not_a_key = tmp_path / "key.pem"
    not_a_key.write_text("hello")
    cases = {
        ("--jwt-secret", "short"): "at least 32 bytes",
        ("--jwt-secret", SECRET, "--jwt-public-key", str(not_a_key)): "only one of",
        ("--jwt-public-key", str(not_a_key)): "not a PEM public key",
        ("--jwt-audience", "dash"): "need a --jwt-* key",
        ("--jwt-secret", SECRET, "--jwt-algorithm", "RS256"): "does not go with this key",
        ("--keyfile", str(not_a_key)): "--keyfile needs --certfile",
        ("--certfile", str(not_a_key)): "cannot load the TLS certificate",
        ("--allow", "bad name"): "invalid channel",
    }
    for args, message in cases.items():
        result = CliRunner().invoke(cli, ["serve", *args], prog_name="wsbridge")
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
        assert SECRET not in result.output  # a secret is never echoed


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_token_of_raw_bytes_is_refused_without_a_traceback(engine: str) -> None:
    port = free_port()
    child = start_serve("--port", str(port), "--server", engine, WSBRIDGE_JWT_SECRET=SECRET)
    request = (
        b"GET /ws?token=%FF%FE.%00.x HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: wsbridge\r\n"
        b"Authorization: Bearer \xff\xfe\x80.e30.\xc3\r\n\r\n"
    )
    try:
        with anyio.fail_after(scaled(10)):
            stream = await anyio.connect_tcp("127.0.0.1", port)
            async with stream:
                await stream.send(request)
                head = await stream.receive()
        assert head.startswith(b"HTTP/1.1 401"), head
        client = await Client.connect(
            f"ws://127.0.0.1:{port}/ws", **with_token(jwt.encode(claims(), SECRET))
        )
        await client.pinged()  # still serving
        await client.close()
    finally:
        assert child.stop() == 0
    assert "Traceback" not in child.output()


# -- a real browser ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
async def test_a_browser_presents_its_token_as_a_subprotocol(
    engine: str,
    browser_tools: tuple[str, str],  # noqa: F811  (the fixture imported above)
) -> None:
    browser_dir = ROOT / "tests" / "browser"
    node, chromium = browser_tools
    port = free_port()
    child = start_serve("--port", str(port), "--server", engine, WSBRIDGE_JWT_SECRET=SECRET)
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    try:
        result = await anyio.to_thread.run_sync(
            lambda: subprocess.run(
                [node, str(browser_dir / "token.mjs")],
                cwd=browser_dir,
                env={
                    **os.environ,
                    "WS_URL": f"ws://127.0.0.1:{port}/ws",
                    "TOKEN": token,
                    "CHROMIUM_PATH": chromium,
                    TIMEOUT_SCALE_ENV: str(scaled(1.0)),
                },
                capture_output=True,
                text=True,
                timeout=scaled(120),
                check=False,
            )
        )
        assert result.returncode == 0, result.stdout + result.stderr
        outcome = json.loads(result.stdout.strip().splitlines()[-1])
    finally:
        assert child.stop() == 0
    assert outcome["token"] == {"protocol": "wsbridge"}
    for refused in ("wrongToken", "noToken"):
        assert "error" in outcome[refused], outcome
    # Offered alone, the token subprotocol cannot be selected, and Chromium fails a
    # handshake whose offered subprotocols were all declined: offer "wsbridge" too.
    assert "error" in outcome["tokenAlone"], outcome
    assert token not in child.output()
