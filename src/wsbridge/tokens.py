"""Token authentication: signed JWTs checked at the handshake, with a channel claim.

A :class:`TokenAuth` verifies a JSON Web Token that the client presents when it connects,
and turns it into a :class:`TokenPrincipal` whose ``channels`` claim says what the client
may subscribe to. ``wsbridge serve --jwt-...`` uses it; in Python, give its hooks to an
:class:`~wsbridge.Endpoint`::

    from wsbridge import Broadcaster, Endpoint
    from wsbridge.tokens import TokenAuth

    auth = TokenAuth(secret=os.environ["WSBRIDGE_JWT_SECRET"])
    endpoint = Endpoint(broadcaster, authenticate=auth.authenticate, authorize=auth.authorize)

The client presents the token in one of three places, looked up in this order:

* an ``Authorization: Bearer <token>`` header (clients that can set headers);
* a WebSocket subprotocol ``wsbridge.token.<token>``, offered next to ``wsbridge``
  (browsers: ``new WebSocket(url, ["wsbridge", "wsbridge.token." + token])``); the
  server selects ``wsbridge``, so the token is not echoed back;
* the query parameter ``token`` (``wss://host/ws?token=...``).

Keys: an HMAC secret (HS256, HS384, HS512), or a PEM public key (RSA: RS256; EC: ES256
for P-256, ES384 for P-384, ES512 for P-521), or a JWKS document of public keys chosen by
the token's ``kid``. Each kind accepts its own algorithms only: ``none`` never, and never
an HMAC signature made with a public key. ``exp`` is required; ``exp`` and ``nbf`` are
checked with ``leeway`` seconds of clock skew (at most 300); ``aud`` and ``iss`` when
configured.

Needs the ``jwt`` extra (PyJWT with its ``crypto`` dependencies):
``pip install "wsbridge-py[jwt]"``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from wsbridge import protocol
from wsbridge.endpoint import ConnectionInfo
from wsbridge.exceptions import AuthenticationError, ConfigurationError, InvalidChannelError
from wsbridge.permissions import AllowList

__all__ = ["HMAC_ALGORITHMS", "PUBLIC_KEY_ALGORITHMS", "TokenAuth", "TokenPrincipal"]

#: Algorithms accepted with a shared secret.
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
#: Algorithms accepted with a public key or a JWKS.
PUBLIC_KEY_ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512")

#: The longest token looked at; longer ones are refused before any parsing.
MAX_TOKEN_LENGTH = 8192
# A JWS in compact form: three base64url segments. Anything else (non-ASCII bytes from a
# header, say) is refused before it reaches the JWT library.
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_=-]+\.[A-Za-z0-9_=-]+\.[A-Za-z0-9_=-]*")
_MAX_LEEWAY = 300.0
_MIN_SECRET_BYTES = 32
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


@dataclass(frozen=True)
class TokenPrincipal:
    """An accepted token: who it names, its claims, and what it lets the client read.

    ``channels`` is the token's channel claim as an :class:`AllowList`, or ``None`` when
    the token has no such claim. ``expires_at`` is when the connection is closed (4001):
    the token's ``exp`` plus the allowed clock skew.
    """

    subject: str | None
    claims: Mapping[str, Any] = field(repr=False)
    channels: AllowList | None
    expires_at: float | None


def _require_jwt() -> Any:
    try:
        import jwt
    except ModuleNotFoundError as exc:  # pragma: no cover - depends on the environment
        raise ConfigurationError(
            'token authentication needs PyJWT: pip install "wsbridge-py[jwt]"'
        ) from exc
    return jwt


class TokenAuth:
    """Verify JWTs at the handshake; authorize channels from the token's claim.

    Give exactly one of ``secret`` (bytes or text, at least 32 bytes), ``public_key`` (PEM
    text or bytes) or ``jwks`` (a JWKS document: JSON text or a mapping).
    ``algorithms`` narrows the accepted algorithms (default: HS256 for a secret; for a
    public key the one its type implies; for a JWKS each key's own). ``audience``,
    ``issuer``: if given, the token's ``aud`` / ``iss`` must match. ``leeway``: seconds of
    clock skew allowed on ``exp`` and ``nbf`` (0 to 300). ``channels_claim``: the claim
    that lists the channels and patterns the client may subscribe to. ``default_allow``:
    what a token without that claim may subscribe to (default: nothing).
    ``query_param``: the query parameter that may carry the token.
    """

    def __init__(
        self,
        *,
        secret: str | bytes | None = None,
        public_key: str | bytes | None = None,
        jwks: str | Mapping[str, Any] | None = None,
        algorithms: Sequence[str] | None = None,
        audience: str | None = None,
        issuer: str | None = None,
        leeway: float = 30.0,
        channels_claim: str = "channels",
        default_allow: AllowList | Sequence[str] | None = None,
        query_param: str = "token",
    ) -> None:
        jwt = _require_jwt()
        self._jwt = jwt
        if sum(k is not None for k in (secret, public_key, jwks)) != 1:
            raise ConfigurationError("give exactly one of secret, public_key and jwks")
        if not 0 <= leeway <= _MAX_LEEWAY:
            raise ConfigurationError(f"leeway must be between 0 and {_MAX_LEEWAY:g} seconds")
        self.audience = audience
        self.issuer = issuer
        self.leeway = float(leeway)
        self.channels_claim = channels_claim
        self.query_param = query_param
        self.default_allow = (
            default_allow
            if isinstance(default_allow, AllowList)
            else AllowList(default_allow or ())
        )
        self._key: Any = None
        self._jwks: dict[str, Any] = {}
        if secret is not None:
            key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
            if len(key) < _MIN_SECRET_BYTES:
                raise ConfigurationError(
                    f"the JWT secret must be at least {_MIN_SECRET_BYTES} bytes long"
                )
            self._key = key
            allowed: tuple[str, ...] = HMAC_ALGORITHMS
            default: tuple[str, ...] = ("HS256",)
        elif public_key is not None:
            self._key, implied = self._load_public_key(public_key)
            allowed = default = (implied,)
        else:
            assert jwks is not None
            self._jwks = self._load_jwks(jwks)
            allowed = PUBLIC_KEY_ALGORITHMS
            default = tuple(dict.fromkeys(k.algorithm_name for k in self._jwks.values()))
        chosen = tuple(algorithms) if algorithms else default
        wrong = [a for a in chosen if a not in allowed]
        if wrong:
            raise ConfigurationError(
                f"algorithm {wrong[0]!r} does not go with this key; use one of {', '.join(allowed)}"
            )
        #: The algorithms a token may be signed with.
        self.algorithms = chosen

    # -- keys ---------------------------------------------------------------------------

    def _load_public_key(self, pem: str | bytes) -> tuple[Any, str]:
        from cryptography.hazmat.primitives.asymmetric import ec, rsa
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        data = pem.encode("ascii", "replace") if isinstance(pem, str) else pem
        try:
            key = load_pem_public_key(data)
        except ValueError as exc:
            raise ConfigurationError(f"not a PEM public key: {exc}") from None
        if isinstance(key, rsa.RSAPublicKey):
            if key.key_size < 2048:
                raise ConfigurationError("an RSA key must have at least 2048 bits")
            return key, "RS256"
        if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _EC_ALGORITHMS:
            return key, _EC_ALGORITHMS[key.curve.name]
        raise ConfigurationError("the public key must be RSA or EC (P-256, P-384 or P-521)")

    def _load_jwks(self, jwks: str | Mapping[str, Any]) -> dict[str, Any]:
        jwt = self._jwt
        try:
            document = json.loads(jwks) if isinstance(jwks, str) else dict(jwks)
            keys = document.get("keys")
            if not isinstance(keys, list) or not keys:
                raise ConfigurationError('a JWKS needs a non-empty "keys" list')
            found: dict[str, Any] = {}
            for entry in keys:
                if not isinstance(entry, dict) or entry.get("kty") not in ("RSA", "EC"):
                    raise ConfigurationError("a JWKS may hold only RSA and EC public keys")
                if "d" in entry:
                    raise ConfigurationError("the JWKS holds a private key: give public keys")
                key = jwt.PyJWK(entry)
                if key.algorithm_name not in PUBLIC_KEY_ALGORITHMS:
                    raise ConfigurationError(f"unsupported JWKS algorithm {key.algorithm_name!r}")
                found[str(entry.get("kid", ""))] = key
        except (ValueError, jwt.PyJWTError) as exc:
            if isinstance(exc, ConfigurationError):
                raise
            raise ConfigurationError(f"invalid JWKS: {exc}") from None
        return found

    # -- the hooks ----------------------------------------------------------------------

    def token(self, info: ConnectionInfo) -> str | None:
        """The token the handshake presents, or ``None`` (see the module docstring)."""
        scheme, _, value = info.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        prefix = protocol.TOKEN_SUBPROTOCOL_PREFIX
        for offered in info.subprotocols:
            if offered.startswith(prefix) and len(offered) > len(prefix):
                return offered[len(prefix) :]
        values = info.query.get(self.query_param)
        return values[0] if values and values[0] else None

    def authenticate(self, info: ConnectionInfo) -> TokenPrincipal:
        """The ``authenticate`` hook: verify the handshake's token, or refuse with 401."""
        token = self.token(info)
        if token is None:
            raise AuthenticationError("token required")
        return self.verify(token)

    def authorize(self, principal: object, channel: str) -> bool:
        """The ``authorize`` hook: whether this principal may subscribe to ``channel``."""
        if not isinstance(principal, TokenPrincipal):
            return False
        allow = principal.channels if principal.channels is not None else self.default_allow
        return allow(channel)

    def verify(self, token: str) -> TokenPrincipal:
        """Verify ``token``; raise :class:`AuthenticationError` (401) with a reason if bad.

        The reasons never quote the token.
        """
        jwt = self._jwt
        if len(token) > MAX_TOKEN_LENGTH:
            raise AuthenticationError("token too long")
        if _COMPACT_JWS.fullmatch(token) is None:
            raise AuthenticationError("malformed token")
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.PyJWTError, ValueError, TypeError):
            raise AuthenticationError("malformed token") from None
        algorithm = header.get("alg")
        if algorithm not in self.algorithms:
            raise AuthenticationError("token algorithm not allowed")
        key = self._key
        if self._jwks:
            kid = header.get("kid")
            jwk = self._jwks.get(str(kid)) if kid is not None else None
            if jwk is None and kid is None and len(self._jwks) == 1:
                jwk = next(iter(self._jwks.values()))
            if jwk is None:
                raise AuthenticationError("unknown token key")
            if jwk.algorithm_name != algorithm:
                raise AuthenticationError("token algorithm not allowed")
            key = jwk.key
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={
                    "require": ["exp"],
                    "verify_aud": self.audience is not None,
                    "enforce_minimum_key_length": True,
                },
            )
        except jwt.ExpiredSignatureError:
            raise AuthenticationError("token expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthenticationError("token not yet valid") from None
        except jwt.InvalidSignatureError:
            raise AuthenticationError("invalid token signature") from None
        except jwt.MissingRequiredClaimError:
            raise AuthenticationError("token has no expiry (exp)") from None
        except jwt.InvalidAudienceError:
            raise AuthenticationError("token audience not accepted") from None
        except jwt.InvalidIssuerError:
            raise AuthenticationError("token issuer not accepted") from None
        except (jwt.PyJWTError, ValueError, TypeError, OverflowError):
            raise AuthenticationError("invalid token") from None
        return self._principal(claims)

    def _principal(self, claims: dict[str, Any]) -> TokenPrincipal:
        raw = claims.get(self.channels_claim)
        channels: AllowList | None = None
        if raw is not None:
            if not isinstance(raw, list) or not all(isinstance(c, str) for c in raw):
                raise AuthenticationError(f'the "{self.channels_claim}" claim must list strings')
            try:
                channels = AllowList(raw)
            except InvalidChannelError:
                raise AuthenticationError(
                    f'the "{self.channels_claim}" claim holds an invalid channel'
                ) from None
        subject = claims.get("sub")
        exp = claims["exp"]  # required, and checked to be a number by PyJWT
        return TokenPrincipal(
            subject=subject if isinstance(subject, str) else None,
            claims=claims,
            channels=channels,
            expires_at=float(exp) + self.leeway,
        )
