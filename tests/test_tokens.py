"""Allow-lists, the endpoint's safe default, and TokenAuth: unit tests, then every adapter."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
import websockets
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.support.apps import ADAPTERS, serve
from tests.support.client import Client
from tests.support.samples import REFERENCE_EXAMPLES
from wsbridge import AllowList, AuthenticationError, Broadcaster, ConnectionInfo, Endpoint
from wsbridge.exceptions import ConfigurationError, InvalidChannelError
from wsbridge.tokens import TokenAuth, TokenPrincipal

SECRET = "unit-test-secret-for-hs256-" + "s" * 32


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "alice", "exp": now + 300, "channels": ["trade:*"], **overrides}


def info(*, query: str = "", subprotocols: tuple[str, ...] = (), **headers: str) -> ConnectionInfo:
    return ConnectionInfo.build(
        path="/ws", headers=headers, query_string=query, subprotocols=subprotocols
    )


# -- AllowList ------------------------------------------------------------------------------


def test_an_allow_list_permits_names_and_the_channels_of_its_patterns() -> None:
    allow = AllowList(["trade:*", "risk:alert", "feed:[ab]"])
    assert allow("trade:executed")
    assert allow("risk:alert")
    assert allow("feed:a")
    assert not allow("risk:kill_switch")
    assert not allow("feed:c")
    assert not allow("tradex")


def test_a_pattern_needs_itself_or_a_wider_prefix_pattern() -> None:
    allow = AllowList(["trade:*", "feed:[ab]"])
    assert allow("trade:*")
    assert allow("trade:exec*")
    assert allow("trade:?")
    assert allow("feed:[ab]")
    assert not allow("feed:[abc]")  # listed patterns other than prefix* contain only themselves
    assert not allow("*")
    assert not allow("tr*")
    assert not allow("risk:*")
    everything = AllowList(["*"])
    assert everything("*")
    assert everything("risk:*")
    assert everything("anything")
    assert not AllowList([])("*")


def test_an_escaped_wildcard_is_a_literal_name() -> None:
    allow = AllowList(["news\\*"])
    assert allow("news\\*")
    assert not allow("news:today")
    assert not AllowList(["a\\**"])("a\\*b*")  # not of the form prefix*: only itself


def test_an_allow_list_refuses_invalid_entries() -> None:
    with pytest.raises(InvalidChannelError):
        AllowList(["ok", "bad name"])


def test_an_endpoint_without_hooks_allows_only_its_channels() -> None:
    broadcaster = Broadcaster()
    endpoint = Endpoint(broadcaster, channels=["risk:alert", "trade:*"])
    assert endpoint.allow is not None
    assert endpoint.allow("risk:alert")
    assert endpoint.allow("trade:executed")
    assert not endpoint.allow("*")
    assert not endpoint.allow("internal:payroll")
    wider = Endpoint(broadcaster, channels=["risk:alert"], allow=["internal:*"])
    assert wider.allow is not None
    assert wider.allow("risk:alert")
    assert wider.allow("internal:payroll")
    assert Endpoint(broadcaster, authorize=lambda principal, channel: True).allow is None


# -- TokenAuth --------------------------------------------------------------------------------


def test_the_token_comes_from_a_header_a_subprotocol_or_the_query() -> None:
    auth = TokenAuth(secret=SECRET)
    assert auth.token(info(authorization="Bearer abc")) == "abc"
    assert auth.token(info(subprotocols=("wsbridge", "wsbridge.token.def"))) == "def"
    assert auth.token(info(query="token=ghi&x=1")) == "ghi"
    assert auth.token(info(query="other=1", subprotocols=("wsbridge",))) is None
    with pytest.raises(AuthenticationError) as refused:
        auth.authenticate(info())
    assert (refused.value.status, refused.value.reason) == (401, "token required")


def test_a_verified_token_becomes_a_principal_with_its_channels() -> None:
    auth = TokenAuth(secret=SECRET, leeway=10, default_allow=["public:news"])
    exp = int(time.time()) + 60
    principal = auth.verify(jwt.encode(claims(exp=exp), SECRET, algorithm="HS256"))
    assert isinstance(principal, TokenPrincipal)
    assert principal.subject == "alice"
    assert principal.expires_at == exp + 10
    assert auth.authorize(principal, "trade:executed")
    assert not auth.authorize(principal, "public:news")
    without_claim = auth.verify(jwt.encode({"exp": exp, "sub": "bob"}, SECRET, algorithm="HS256"))
    assert without_claim.channels is None
    assert auth.authorize(without_claim, "public:news")
    assert not auth.authorize(without_claim, "trade:executed")
    assert not auth.authorize("not a principal", "public:news")
    assert SECRET not in repr(principal)


def test_audience_and_issuer_are_checked_when_configured() -> None:
    auth = TokenAuth(secret=SECRET, audience="dash", issuer="https://auth.example")
    ok = claims(aud="dash", iss="https://auth.example")
    assert auth.verify(jwt.encode(ok, SECRET, algorithm="HS256")).subject == "alice"
    for wrong, reason in (
        ({"aud": "other"}, "token audience not accepted"),
        ({"iss": "https://evil.example"}, "token issuer not accepted"),
    ):
        with pytest.raises(AuthenticationError) as refused:
            auth.verify(jwt.encode({**ok, **wrong}, SECRET, algorithm="HS256"))
        assert refused.value.reason == reason


def test_a_token_too_long_is_refused_before_parsing() -> None:
    with pytest.raises(AuthenticationError) as refused:
        TokenAuth(secret=SECRET).verify("x" * 10_000)
    assert refused.value.reason == "token too long"


def test_bad_configurations_fail_at_construction() -> None:
    with pytest.raises(ConfigurationError, match="at least 32 bytes"):
        TokenAuth(secret="short")
    with pytest.raises(ConfigurationError, match="exactly one"):
        TokenAuth()
    with pytest.raises(ConfigurationError, match="does not go with this key"):
        TokenAuth(secret=SECRET, algorithms=["RS256"])
    with pytest.raises(ConfigurationError, match="leeway"):
        TokenAuth(secret=SECRET, leeway=3600)
    with pytest.raises(ConfigurationError, match="PEM public key"):
        TokenAuth(public_key="not a key")
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ConfigurationError):
        TokenAuth(public_key=private)
    jwk = jwt.algorithms.ECAlgorithm.to_jwk(key, as_dict=True)
    with pytest.raises(ConfigurationError, match="private key"):
        TokenAuth(jwks={"keys": [jwk]})
    with pytest.raises(ConfigurationError, match="RSA and EC"):
        TokenAuth(jwks={"keys": [{"kty": "oct", "k": "c2VjcmV0"}]})
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert TokenAuth(public_key=public).algorithms == ("ES256",)
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    with pytest.raises(ConfigurationError, match="2048"):
        TokenAuth(
            public_key=small.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )


# -- the helper behind every adapter ------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("adapter", ADAPTERS)
async def test_token_auth_behind_each_adapter(adapter: str) -> None:
    auth = TokenAuth(secret=SECRET)
    broadcaster = Broadcaster()
    endpoint = Endpoint(
        broadcaster,
        channels=["trade:executed", "risk:kill_switch"],
        authenticate=auth.authenticate,
        authorize=auth.authorize,
    )
    app = serve(adapter, endpoint)
    try:
        with pytest.raises(websockets.InvalidStatus) as refused:
            await Client.connect(app.url)
        assert refused.value.response.status_code == 401
        assert refused.value.response.body.strip() == b"token required"
        expired = jwt.encode(claims(exp=int(time.time()) - 600), SECRET, algorithm="HS256")
        with pytest.raises(websockets.InvalidStatus) as refused:
            await Client.connect(app.url, subprotocols=["wsbridge", f"wsbridge.token.{expired}"])
        assert refused.value.response.status_code == 401
        assert refused.value.response.body.strip() == b"token expired"
        assert endpoint.refused_handshakes == 2

        token = jwt.encode(claims(channels=["trade:*"]), SECRET, algorithm="HS256")
        client = await Client.connect(app.url, subprotocols=["wsbridge", f"wsbridge.token.{token}"])
        assert client.ws.subprotocol == "wsbridge"
        await client.pinged()
        await client.send_json({"type": "subscribe", "channels": ["risk:kill_switch"], "id": 1})
        assert (await client.recv())["code"] == "forbidden"
        assert await client.recv() == {"type": "subscribed", "channels": [], "id": 1}
        # Served to everyone by default, but this token does not allow it.
        await app.acall(
            broadcaster.publish, "risk:kill_switch", REFERENCE_EXAMPLES["risk:kill_switch"]
        )
        trade = REFERENCE_EXAMPLES["trade:executed"]
        await app.acall(broadcaster.publish, "trade:executed", trade)
        assert (await client.recv_event())["channel"] == "trade:executed"
        await client.close()
    finally:
        app.stop()


def test_expires_in_reads_a_principals_expiry() -> None:
    class Expiring:
        def __init__(self, expires_at: object) -> None:
            self.expires_at = expires_at

    assert Endpoint.expires_in(object()) is None
    assert Endpoint.expires_in(Expiring(None)) is None
    assert Endpoint.expires_in(Expiring(float("inf"))) is None
    assert Endpoint.expires_in(Expiring(True)) is None
    assert Endpoint.expires_in(Expiring(time.time() - 10)) == 0.0
    remaining = Endpoint.expires_in(Expiring(time.time() + 100))
    assert remaining is not None
    assert 90 < remaining <= 100


@pytest.mark.parametrize(
    "token",
    ["a.b\udc80.c", "é.e30.x", "a.b", "a.b.c.d.e", "", "eyJhbGciOiJIUzI1NiJ9.e30.\x00"],
)
def test_a_token_that_is_not_a_compact_jws_is_malformed(token: str) -> None:
    with pytest.raises(AuthenticationError) as refused:
        TokenAuth(secret=SECRET).verify(token)
    assert refused.value.reason == "malformed token"
