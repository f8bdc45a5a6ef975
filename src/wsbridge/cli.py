"""The ``wsbridge`` command line: ``serve``, ``publish``, ``listen``, ``schema`` and ``demo``.

``wsbridge serve`` runs a standalone bridge (Redis to WebSocket) on wsbridge's own server
(``wsbridge.server``), or on uvicorn with ``--server uvicorn``; ``publish`` sends one
validated event, ``listen`` prints the events of an endpoint, ``schema`` exports the
trading registry, and ``demo`` runs the trading dashboard. ``wsbridge --help`` and
``wsbridge COMMAND --help`` describe every option; ``docs/cli.md`` too.

Needs the ``server`` extra (click, uvicorn and websockets). Run as ``wsbridge ...`` or
``python -m wsbridge ...``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import re
import signal
import ssl
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn, TypeVar
from urllib.parse import urlsplit, urlunsplit

try:
    import click
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the environment
    raise SystemExit(
        "wsbridge: the command line needs click and uvicorn: pip install 'wsbridge-py[server]'"
    ) from exc

import anyio

from wsbridge import health, protocol
from wsbridge._version import __version__
from wsbridge.asgi import HealthApp, Message, Receive, Scope, Send, WebSocketApp
from wsbridge.broadcaster import Broadcaster, OverflowPolicy
from wsbridge.channel import validate_channel
from wsbridge.deflate import DEFAULT_THRESHOLD
from wsbridge.endpoint import Endpoint
from wsbridge.exceptions import (
    BrokerError,
    ConfigurationError,
    EventValidationError,
    InvalidChannelError,
)
from wsbridge.session import SessionLimits

if TYPE_CHECKING:
    import socket

    import uvicorn

    from wsbridge.client import Event, Status
    from wsbridge.tokens import TokenAuth

__all__ = ["ENV", "CommandError", "InputError", "cli", "main"]

#: The environment variables the commands read, by option.
ENV = {
    "redis": "WSBRIDGE_REDIS_URL",
    "host": "WSBRIDGE_HOST",
    "port": "WSBRIDGE_PORT",
    "channel": "WSBRIDGE_CHANNELS",
    "path": "WSBRIDGE_PATH",
    "max_frame_bytes": "WSBRIDGE_MAX_FRAME_BYTES",
    "max_connections": "WSBRIDGE_MAX_CONNECTIONS",
    "idle_timeout": "WSBRIDGE_IDLE_TIMEOUT",
    "max_subscriptions": "WSBRIDGE_MAX_SUBSCRIPTIONS",
    "rate": "WSBRIDGE_RATE",
    "buffer_messages": "WSBRIDGE_BUFFER_MESSAGES",
    "buffer_bytes": "WSBRIDGE_BUFFER_BYTES",
    "max_replay": "WSBRIDGE_MAX_REPLAY",
    "overflow": "WSBRIDGE_OVERFLOW",
    "allowed_origin": "WSBRIDGE_ALLOWED_ORIGINS",
    "allow": "WSBRIDGE_ALLOW",
    "jwt_secret": "WSBRIDGE_JWT_SECRET",
    "jwt_public_key": "WSBRIDGE_JWT_PUBLIC_KEY",
    "jwt_jwks": "WSBRIDGE_JWT_JWKS",
    "jwt_algorithm": "WSBRIDGE_JWT_ALGORITHMS",
    "jwt_audience": "WSBRIDGE_JWT_AUDIENCE",
    "jwt_issuer": "WSBRIDGE_JWT_ISSUER",
    "jwt_leeway": "WSBRIDGE_JWT_LEEWAY",
    "certfile": "WSBRIDGE_CERTFILE",
    "keyfile": "WSBRIDGE_KEYFILE",
    "token": "WSBRIDGE_TOKEN",
    "health_path": "WSBRIDGE_HEALTH_PATH",
    "probe_interval": "WSBRIDGE_PROBE_INTERVAL",
    "server": "WSBRIDGE_SERVER",
    "compression": "WSBRIDGE_COMPRESSION",
    "compression_threshold": "WSBRIDGE_COMPRESSION_THRESHOLD",
    "workers": "WSBRIDGE_WORKERS",
    "log_level": "WSBRIDGE_LOG_LEVEL",
}

_LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
_DEFAULT_LIMITS = SessionLimits()
_DEFAULT_PUBLISH_URL = "redis://localhost:6379/0"
# How long SIGTERM waits for clients to answer their 1001 close frame before uvicorn's own
# shutdown runs; the broadcaster bounds the close itself (shutdown_timeout).
_DRAIN_SECONDS = 2.0

_F = TypeVar("_F", bound=Callable[..., Any])


def _option(*decls: str, env: str, **attrs: Any) -> Callable[[_F], _F]:
    """A ``click.option`` that also reads ``ENV[env]`` and shows it in ``--help``."""
    return click.option(*decls, envvar=ENV[env], show_envvar=True, **attrs)


class CommandError(click.ClickException):
    """A failure reported as one line, ``wsbridge: error: ...``; exit status 1.

    Used when the broker cannot be reached or the work fails at run time.
    """

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))

    def show(self, file: IO[Any] | None = None) -> None:
        """Print the one-line message on standard error."""
        click.echo(f"wsbridge: error: {self.format_message()}", err=True, file=file)


class InputError(CommandError):
    """Bad input (an option, invalid JSON, a payload off its schema); exit status 2."""

    exit_code = 2


def _fail(message: str, exit_code: int = 1) -> NoReturn:
    raise (InputError if exit_code == 2 else CommandError)(message)


def _redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _backend_options(url: str, timeout: float) -> dict[str, float]:
    # Only the Redis backend takes timeouts; the memory backend has none to take.
    if url.partition("://")[0].lower() in (
        "redis",
        "rediss",
        "unix",
        "redis+cluster",
        "rediss+cluster",
    ):
        return {"connect_timeout": timeout, "command_timeout": timeout}
    return {}


class _LogFormatter(logging.Formatter):
    # wsbridge's own messages already start with "wsbridge: "; others get their logger's name.
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.name == "wsbridge" or record.name.startswith("wsbridge."):
            return f"{record.levelname}:     {text}"
        return f"{record.levelname}:     {record.name}: {text}"


# Anything shaped like a JWT, or carried where clients put tokens, is masked in log lines:
# uvicorn logs request paths with their query, websockets logs headers at debug level.
_SECRETS = re.compile(
    r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*"
    r"|(?<=wsbridge\.token\.)[^\s,'\"]+"
    r"|(?<=[?&]token=)[^&\s'\"]+"
    r"|(?i:(?<=bearer )[^\s'\"]+)"
)


class _RedactTokens(logging.Filter):
    """Masks tokens in a log record's message; never drops the record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format: let the handler report it as usual
            return True
        redacted = _SECRETS.sub("***", message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def _redact_logs(*names: str) -> None:
    # Handler filters see every record the handler writes, whichever logger made it.
    for name in ("", *names):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, _RedactTokens) for f in handler.filters):
                handler.addFilter(_RedactTokens())


def _configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(_LogFormatter("%(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=False)
    _redact_logs()


def _run_async(fn: Any, *args: Any, uvloop: bool = True) -> Any:
    """Run ``fn(*args)`` on asyncio, on uvloop when it is installed (as uvicorn does)."""
    use_uvloop = (
        uvloop and sys.platform != "win32" and importlib.util.find_spec("uvloop") is not None
    )
    return anyio.run(fn, *args, backend="asyncio", backend_options={"use_uvloop": use_uvloop})


# -- the group -----------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "-V", "--version", prog_name="wsbridge")
def cli() -> None:
    """Bridge a pub/sub broker (Redis or in-memory) to WebSocket clients.

    Every command has --help. Options that read an environment variable show it there.
    """


def main(argv: Sequence[str] | None = None) -> None:
    """The console script ``wsbridge`` (and ``python -m wsbridge``)."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="wsbridge")


# -- serve ---------------------------------------------------------------------------------


class _Checks:
    """Answers ``GET /healthz`` and ``/readyz`` (:mod:`wsbridge.health`) in front of ``app``."""

    def __init__(self, app: WebSocketApp, endpoint: Endpoint, path: str) -> None:
        self.app = app
        self.endpoint = endpoint
        self.checks = {
            p: HealthApp(endpoint, ready=p == health.READYZ)
            for p in (health.HEALTHZ, health.READYZ)
            if p != path
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve a health check, or hand the connection to the WebSocket app."""
        check = self.checks.get(scope.get("path", "")) if scope["type"] == "http" else None
        await (check or self.app)(scope, receive, send)


class _HealthApp:
    """Answers ``GET <path>`` with the bridge's health; passes everything else on."""

    def __init__(self, app: _Checks, path: str) -> None:
        self.app = app
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the health path, or hand the connection to the WebSocket app."""
        if scope["type"] != "http" or scope.get("path") != self.path:
            await self.app(scope, receive, send)
            return
        endpoint = self.app.endpoint
        broadcaster = endpoint.broadcaster
        healthy = broadcaster.running and broadcaster.broker_connected
        body = protocol.dumps(
            {
                "status": "ok" if healthy else "unavailable",
                "broker_connected": broadcaster.broker_connected,
                "connections": endpoint.connections,
            }
        )
        start: Message = {
            "type": "http.response.start",
            "status": 200 if healthy else 503,
            "headers": [(b"content-type", b"application/json"), (b"cache-control", b"no-store")],
        }
        await send(start)
        await send({"type": "http.response.body", "body": body.encode() + b"\n"})


def _uvicorn_server(
    config: uvicorn.Config, endpoint: Endpoint, banner: Callable[[int], str]
) -> uvicorn.Server:
    """Wsbridge's graceful uvicorn server (1001 to every client, exit 0), with a banner."""
    from wsbridge.uvicorn import Server

    class BridgeServer(Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                bound = self.servers[0].sockets[0].getsockname()[1] if self.servers else 0
                click.echo(banner(bound), err=True)

    # The config says whether to compress (--compression).
    return BridgeServer(config, endpoint, drain_timeout=_DRAIN_SECONDS, per_message_deflate=None)


async def _run_uvicorn(server: uvicorn.Server, broadcaster: Broadcaster, broker: str) -> None:
    # The broadcaster runs around the server (not in the ASGI lifespan): an unreachable
    # broker is then reported as one line, before uvicorn starts.
    try:
        await broadcaster.__aenter__()
    except BrokerError as exc:
        _fail(f"cannot reach the broker at {_redact(broker)}: {exc}")
    try:
        await server.serve()
    finally:
        await broadcaster.aclose()


async def _run_own(
    endpoint: Endpoint,
    host: str,
    port: int,
    path: str,
    announce: Callable[[int], None],
    tls: ssl.SSLContext | None = None,
    compression: bool = True,
    threshold: int = DEFAULT_THRESHOLD,
    sock: socket.socket | None = None,
) -> None:
    from wsbridge.server import Server

    server = Server(
        endpoint,
        host=host,
        port=port,
        path=path,
        ssl=tls,
        compression=compression,
        compression_threshold=threshold,
        sock=sock,
    )
    failure: Exception | None = None

    async def stop_on_signal() -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                server.shutdown()  # closes every client with 1001, then serve() returns

    async def started() -> None:
        await server.started()
        announce(server.port)

    async with anyio.create_task_group() as tg:
        tg.start_soon(stop_on_signal)
        tg.start_soon(started)
        try:
            await server.serve()
        except (BrokerError, OSError) as exc:
            failure = exc
        finally:
            tg.cancel_scope.cancel()
    if isinstance(failure, BrokerError):
        _fail(f"cannot reach the broker at {_redact(endpoint.broadcaster.url)}: {failure}")
    if failure is not None:
        _fail(f"cannot listen on {host}:{port}: {failure}")


def _channel_list(channels: Sequence[str]) -> list[str]:
    try:
        return [validate_channel(c) for c in channels]
    except InvalidChannelError as exc:
        _fail(str(exc), 2)


@cli.command()
@_option(
    "--redis",
    "broker_url",
    env="redis",
    metavar="URL",
    help="Broker URL: redis://[user:password@]host:port/db, rediss://... (TLS), "
    "unix:///path, or memory:// (this process only). Default: memory://, with a warning.",
)
@_option(
    "--host",
    env="host",
    default="127.0.0.1",
    show_default=True,
    help="Interface to listen on; 0.0.0.0 for every IPv4 interface.",
)
@_option(
    "--port",
    env="port",
    type=click.IntRange(0, 65535),
    default=8000,
    show_default=True,
)
@_option(
    "-c",
    "--channel",
    "channels",
    multiple=True,
    env="channel",
    metavar="NAME|PATTERN",
    help="A channel or glob pattern (risk:*) every client receives; repeat it for more "
    "(space-separated in the variable). Default: the ten trading channels.",
)
@_option(
    "--path",
    env="path",
    default="/ws",
    show_default=True,
    help="The WebSocket path; other paths get 404.",
)
@_option(
    "--max-frame-bytes",
    env="max_frame_bytes",
    type=click.IntRange(min=64),
    default=_DEFAULT_LIMITS.max_frame_bytes,
    show_default=True,
    help="Largest client frame; a larger one closes the connection with 1009.",
)
@_option(
    "--max-connections",
    env="max_connections",
    type=click.IntRange(min=0),
    default=None,
    help="Refuse handshakes (HTTP 503) beyond this many open connections. Default: no limit.",
)
@_option(
    "--idle-timeout",
    env="idle_timeout",
    type=click.FloatRange(min=0),
    default=75.0,
    show_default=True,
    help="Close (4000) a client that sent nothing, not even a ping, for this many seconds; "
    "0 disables.",
)
@_option(
    "--max-subscriptions",
    env="max_subscriptions",
    type=click.IntRange(min=0),
    default=_DEFAULT_LIMITS.max_subscriptions,
    show_default=True,
    help="Channels and patterns one client may hold, its default --channel ones included; "
    "those are always subscribed, so 0 means: the default channels only, every subscribe "
    "request refused.",
)
@_option(
    "--rate",
    env="rate",
    type=click.FloatRange(min=0),
    default=_DEFAULT_LIMITS.rate,
    show_default=True,
    help="Client frames per second allowed (bursts of 100); beyond, close 1008. 0 disables.",
)
@_option(
    "--buffer-messages",
    env="buffer_messages",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Frames queued for one client before --overflow applies.",
)
@_option(
    "--buffer-bytes",
    env="buffer_bytes",
    type=click.IntRange(min=1),
    default=4 * 1024 * 1024,
    show_default=True,
    help="Bytes queued for one client before --overflow applies.",
)
@_option(
    "--max-replay",
    env="max_replay",
    type=click.IntRange(min=0),
    default=1000,
    show_default=True,
    help="Missed events replayed, at most, to a client that resumes a channel with history; "
    "one further behind is told recovered: false. 0: resume only what missed nothing.",
)
@_option(
    "--overflow",
    env="overflow",
    type=click.Choice([p.value for p in OverflowPolicy]),
    default=OverflowPolicy.DISCONNECT.value,
    show_default=True,
    help="A full buffer: close the slow client (4008) so it resyncs, or drop and count.",
)
@_option(
    "--allowed-origin",
    "allowed_origins",
    multiple=True,
    env="allowed_origin",
    metavar="ORIGIN",
    help="Accept browsers from this Origin only (https://app.example.com); repeat it for "
    "more. Default: any origin.",
)
@_option(
    "--allow",
    "allow",
    multiple=True,
    env="allow",
    metavar="NAME|PATTERN",
    help="Also let clients subscribe to this channel or pattern (trade:*; * for "
    "everything); repeat it for more. Default: only the channels served (--channel, or "
    "the ten trading channels); anything else gets a forbidden error. With --jwt-*, the "
    "token's channels claim decides; this applies to tokens without the claim.",
)
@_option(
    "--jwt-secret",
    env="jwt_secret",
    metavar="SECRET",
    help="Require a JWT signed with this HMAC secret (HS256; at least 32 bytes). Prefer "
    "the environment variable: a command line is visible to other users.",
)
@_option(
    "--jwt-public-key",
    env="jwt_public_key",
    type=click.Path(exists=True, dir_okay=False),
    metavar="FILE",
    help="Require a JWT signed with the private half of this PEM public key "
    "(RSA: RS256; EC P-256: ES256).",
)
@_option(
    "--jwt-jwks",
    env="jwt_jwks",
    type=click.Path(exists=True, dir_okay=False),
    metavar="FILE",
    help="Require a JWT signed by one of this JWKS file's public keys (chosen by kid).",
)
@_option(
    "--jwt-algorithm",
    "jwt_algorithms",
    multiple=True,
    env="jwt_algorithm",
    type=click.Choice(
        ["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512"]
    ),
    help="Accept only this signature algorithm; repeat for more. Default: HS256 with a "
    "secret, the key's own with a public key or a JWKS. Never none.",
)
@_option("--jwt-audience", env="jwt_audience", metavar="AUD", help="Require this aud claim.")
@_option("--jwt-issuer", env="jwt_issuer", metavar="ISS", help="Require this iss claim.")
@_option(
    "--jwt-leeway",
    env="jwt_leeway",
    type=click.FloatRange(0, 300),
    default=30.0,
    show_default=True,
    help="Seconds of clock skew allowed on the exp and nbf claims.",
)
@_option(
    "--certfile",
    env="certfile",
    type=click.Path(exists=True, dir_okay=False),
    metavar="FILE",
    help="Serve wss:// (TLS) with this PEM certificate chain.",
)
@_option(
    "--keyfile",
    env="keyfile",
    type=click.Path(exists=True, dir_okay=False),
    metavar="FILE",
    help="The certificate's PEM private key, if --certfile does not hold it.",
)
@_option(
    "--server",
    "engine",
    env="server",
    type=click.Choice(["wsbridge", "uvicorn"]),
    default="wsbridge",
    show_default=True,
    help="wsbridge's own server (wsbridge.server: each frame encoded once, written in "
    "batches), or the ASGI app on uvicorn.",
)
@_option(
    "--workers",
    env="workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker processes sharing the port (SO_REUSEPORT on Linux), each with its own "
    "broker connection; a crashed worker is restarted. Needs --server wsbridge and a POSIX "
    "system.",
)
@_option(
    "--probe-interval",
    env="probe_interval",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="After this many seconds without a broker message, check that the subscription "
    "still delivers (a probe published to itself, 5 s to come back); 0 disables.",
)
@_option(
    "--compression/--no-compression",
    env="compression",
    default=None,
    help="Negotiate permessage-deflate with clients that offer it (browsers do). Default: on "
    "with --server wsbridge (each event compressed once, the bytes shared by every client), "
    "off with --server uvicorn (which compresses every frame again for each client).",
)
@_option(
    "--compression-threshold",
    env="compression_threshold",
    type=click.IntRange(min=0),
    default=DEFAULT_THRESHOLD,
    show_default=True,
    metavar="BYTES",
    help="With --server wsbridge: frames shorter than this go uncompressed.",
)
@_option(
    "--health-path",
    env="health_path",
    metavar="PATH",
    help='With --server uvicorn: GET PATH answers {"status": "ok"} (200), or "unavailable" '
    "(503) while the broker is down.",
)
@_option(
    "--log-level",
    env="log_level",
    type=click.Choice(_LOG_LEVELS),
    default="info",
    show_default=True,
)
def serve(
    broker_url: str | None,
    host: str,
    port: int,
    channels: tuple[str, ...],
    path: str,
    max_frame_bytes: int,
    max_connections: int | None,
    idle_timeout: float,
    max_subscriptions: int,
    rate: float,
    buffer_messages: int,
    buffer_bytes: int,
    max_replay: int,
    overflow: str,
    allowed_origins: tuple[str, ...],
    allow: tuple[str, ...],
    jwt_secret: str | None,
    jwt_public_key: str | None,
    jwt_jwks: str | None,
    jwt_algorithms: tuple[str, ...],
    jwt_audience: str | None,
    jwt_issuer: str | None,
    jwt_leeway: float,
    certfile: str | None,
    keyfile: str | None,
    engine: str,
    compression: bool | None,
    compression_threshold: int,
    workers: int,
    health_path: str | None,
    probe_interval: float,
    log_level: str,
) -> None:
    """Run a standalone bridge: broker channels to WebSocket clients at --path.

    With no --channel it serves the ten trading channels of the built-in registry, so
    `wsbridge serve --redis URL` reproduces the reference system. SIGTERM or Ctrl+C close
    every client with 1001 (going away), then the process exits with status 0.

    Anyone who can reach the port can connect, and may subscribe to the channels served
    and to --allow; nothing else on the broker. With --jwt-secret, --jwt-public-key or
    --jwt-jwks, a client needs a valid token, and its channels claim says what it may
    read. --certfile serves wss://. See docs/howto/serve-security.md.
    """
    from wsbridge import trading

    if not path.startswith("/"):
        _fail(f"--path must start with '/': {path!r}", 2)
    if health_path is not None:
        if engine != "uvicorn":
            _fail("--health-path needs --server uvicorn", 2)
        if not health_path.startswith("/") or health_path == path:
            _fail("--health-path must start with '/' and differ from --path", 2)
    if workers > 1:
        if engine != "wsbridge":
            _fail(
                "--workers needs --server wsbridge; with uvicorn, run the ASGI app under "
                "uvicorn --workers or gunicorn (docs/howto/scaling.md)",
                2,
            )
        if not hasattr(os, "fork"):
            _fail("--workers needs a POSIX system (the workers are forked)", 2)
    if broker_url is None:
        broker_url = "memory://"
        click.echo(
            "wsbridge serve: no --redis URL (or WSBRIDGE_REDIS_URL) given: using the in-process "
            "memory:// broker, so nothing outside this process can publish to the clients",
            err=True,
        )
    if workers > 1 and broker_url.partition("://")[0].lower() == "memory":
        click.echo(
            "wsbridge serve: with --workers, each worker has a memory:// broker of its own: "
            "give a Redis URL for events to reach every client",
            err=True,
        )
    if keyfile is not None and certfile is None:
        _fail("--keyfile needs --certfile", 2)
    tls = _tls_context(certfile, keyfile) if certfile is not None else None
    try:
        broadcaster = Broadcaster(
            broker_url, registry=trading.registry, probe_interval=probe_interval
        )
        limits = SessionLimits(
            max_frame_bytes=max_frame_bytes,
            max_subscriptions=max_subscriptions,
            rate=rate or None,
            burst=_DEFAULT_LIMITS.burst,
        )
        served = _channel_list(channels) if channels else trading.registry.channels()
        extra = _channel_list(allow)
        auth = _token_auth(
            secret=jwt_secret,
            public_key=jwt_public_key,
            jwks=jwt_jwks,
            algorithms=jwt_algorithms,
            audience=jwt_audience,
            issuer=jwt_issuer,
            leeway=jwt_leeway,
            default_allow=[*served, *extra],
        )
        endpoint = Endpoint(
            broadcaster,
            channels=served,
            allow=None if auth is not None else extra,
            authenticate=None if auth is None else auth.authenticate,
            authorize=None if auth is None else auth.authorize,
            limits=limits,
            max_buffer_messages=buffer_messages,
            max_buffer_bytes=buffer_bytes,
            max_replay=max_replay,
            overflow=overflow,
            idle_timeout=idle_timeout or None,
            allowed_origins=list(allowed_origins) or None,
            max_connections=max_connections,
        )
    except ConfigurationError as exc:
        _fail(str(exc), 2)
    shown_host = f"[{host}]" if ":" in host else host
    shown = ", ".join(served) if len(served) <= 4 else f"{len(served)} channels"
    scheme = "ws" if tls is None else "wss"
    access = "tokens required" if auth is not None else "no authentication"

    processes = f", {workers} workers" if workers > 1 else ""

    def banner(bound: int) -> str:
        return (
            f"wsbridge serve: listening on {scheme}://{shown_host}:{bound}{path} "
            f"({engine}{processes}; broker {_redact(broker_url)}; {shown}; {access})"
        )

    def announce(bound: int) -> None:
        click.echo(banner(bound), err=True)

    _configure_logging(log_level)
    if engine == "uvicorn":
        try:
            import uvicorn
        except ModuleNotFoundError:
            _fail("--server uvicorn needs uvicorn: pip install 'wsbridge-py[server]'")
        checks = _Checks(WebSocketApp(endpoint, lifespan=False, path=path), endpoint, path)
        app: Any = _HealthApp(checks, health_path) if health_path else checks
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            lifespan="off",  # the broadcaster runs around the server: see _run_uvicorn
            log_level=log_level,
            ws_max_size=max_frame_bytes,
            ws_per_message_deflate=bool(compression),
            timeout_graceful_shutdown=5,
            ssl_certfile=certfile,
            ssl_keyfile=keyfile,
        )
        _redact_logs("uvicorn", "uvicorn.error", "uvicorn.access")
        server = _uvicorn_server(config, endpoint, banner)
        _run_async(_run_uvicorn, server, broadcaster, broker_url)
    else:
        if importlib.util.find_spec("websockets") is None:
            _fail("--server wsbridge needs websockets: pip install 'wsbridge-py[server]'")
        own = (compression is not False, compression_threshold)
        if workers > 1:
            sys.exit(_serve_workers(workers, endpoint, host, port, path, announce, tls, *own))
        _run_async(_run_own, endpoint, host, port, path, announce, tls, *own)


def _serve_workers(
    workers: int,
    endpoint: Endpoint,
    host: str,
    port: int,
    path: str,
    announce: Callable[[int], None],
    tls: ssl.SSLContext | None,
    compression: bool,
    threshold: int,
) -> int:
    """Run ``workers`` forked servers on one port (wsbridge.workers); the exit status."""
    from wsbridge.workers import supervise

    def work(sock: socket.socket, ready: Callable[[], None]) -> int:
        # In the forked worker: the same server as a single process, on the shared port.
        try:
            _run_async(
                _run_own,
                endpoint,
                host,
                port,
                path,
                lambda _: ready(),
                tls,
                compression,
                threshold,
                sock,
            )
        except click.ClickException as exc:
            exc.show()
            return exc.exit_code
        return 0

    try:
        return supervise(workers, work, host=host, port=port, announce=announce)
    except OSError as exc:
        _fail(f"cannot listen on {host}:{port}: {exc}")


def _tls_context(certfile: str, keyfile: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as exc:
        _fail(f"cannot load the TLS certificate or key: {exc}", 2)
    return context


def _read(path: str, option: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"cannot read {option} {path}: {exc}", 2)


def _token_auth(
    *,
    secret: str | None,
    public_key: str | None,
    jwks: str | None,
    algorithms: Sequence[str],
    audience: str | None,
    issuer: str | None,
    leeway: float,
    default_allow: Sequence[str],
) -> TokenAuth | None:
    """The token check the --jwt-* options ask for, or ``None`` without any of them."""
    if secret is None and public_key is None and jwks is None:
        if algorithms or audience or issuer:
            _fail("--jwt-algorithm, --jwt-audience and --jwt-issuer need a --jwt-* key", 2)
        return None
    if sum(k is not None for k in (secret, public_key, jwks)) > 1:
        _fail("give only one of --jwt-secret, --jwt-public-key and --jwt-jwks", 2)
    if importlib.util.find_spec("jwt") is None:
        _fail("token authentication needs PyJWT: pip install 'wsbridge-py[jwt]'")
    from wsbridge.tokens import TokenAuth

    return TokenAuth(
        secret=secret,
        public_key=_read(public_key, "--jwt-public-key") if public_key else None,
        jwks=_read(jwks, "--jwt-jwks") if jwks else None,
        algorithms=list(algorithms) or None,
        audience=audience,
        issuer=issuer,
        leeway=leeway,
        default_allow=default_allow,
    )


# -- publish -------------------------------------------------------------------------------


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


async def _publish(url: str, channel: str, data: object, wait: float) -> None:
    from wsbridge import trading

    broadcaster = Broadcaster(
        url, registry=trading.registry, backend_options=_backend_options(url, wait)
    )
    try:
        # Each step is bounded by the backend; this bounds them all together.
        with anyio.fail_after(wait * 2):
            async with broadcaster:
                await broadcaster.publish(channel, data)
    except TimeoutError:
        _fail(f"the broker at {_redact(url)} did not answer within {wait * 2:g} s")
    except BrokerError as exc:
        _fail(f"cannot publish to the broker at {_redact(url)}: {exc}")


@cli.command(
    epilog="\b\nExample:\n  wsbridge publish signal:generated \\\n"
    """    '{"symbol": "AAPL", "direction": "BUY", "strength": 0.8, "strategy_name": "t"}'"""
)
@click.argument("channel")
@click.argument("payload", metavar="JSON")
@_option(
    "--redis",
    "broker_url",
    env="redis",
    default=_DEFAULT_PUBLISH_URL,
    show_default=True,
    metavar="URL",
    help="Broker URL: redis://host:port/db, rediss://... or unix:///path.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    help="Seconds to wait for the broker, to connect and to publish (each).",
)
@click.option(
    "--check", is_flag=True, help="Only validate; print the JSON that would be published."
)
def publish(channel: str, payload: str, broker_url: str, timeout: float, check: bool) -> None:
    """Publish one event: JSON (or - to read it from stdin) on CHANNEL.

    The payload is validated against the channel's schema in the trading registry first
    (channels without a schema take any JSON). Errors are one line on stderr; the exit
    status is 2 for invalid JSON or a schema violation, 1 when the broker cannot be
    reached within --timeout.
    """
    from wsbridge import trading

    if payload == "-":
        payload = sys.stdin.read()
    try:
        data = json.loads(payload, parse_constant=_reject_constant)
    except ValueError as exc:
        _fail(f"invalid JSON: {exc}", 2)
    try:
        validate_channel(channel)
        encoded = trading.registry.encode(channel, data)
    except (InvalidChannelError, EventValidationError) as exc:
        _fail(str(exc), 2)
    if check:
        click.echo(encoded.decode("utf-8"))
        return
    if broker_url.partition("://")[0].lower() == "memory":
        _fail("memory:// exists inside one process only: give a Redis URL with --redis", 2)
    try:
        Broadcaster(broker_url)  # checks the URL before any network wait
    except ConfigurationError as exc:
        _fail(str(exc), 2)
    _run_async(_publish, broker_url, channel, data, timeout)
    click.echo(f"wsbridge publish: sent to {channel} ({len(encoded)} bytes)", err=True)


# -- listen --------------------------------------------------------------------------------


def _pretty(event: Event) -> str:
    stamp = datetime.fromtimestamp(event.received_at).strftime("%H:%M:%S.%f")[:-3]
    head = f"{stamp} {click.style(event.channel, fg='cyan', bold=True)}"
    if event.model is not None:
        head += f" ({type(event.model).__name__})"
    body = json.dumps(event.data, indent=2, ensure_ascii=False)
    lines = [head, *("  " + line for line in body.splitlines())]
    if event.error is not None:
        lines.append(click.style(f"  ! does not match its schema: {event.error}", fg="yellow"))
    return "\n".join(lines)


def _status_line(status: Status) -> str:
    if status.kind == "disconnected":
        code = f" ({status.code})" if status.code is not None else ""
        return f"disconnected{code}: {status.detail}"
    if status.kind == "reconnecting":
        return f"reconnecting in {status.retry_in or 0:.1f} s"
    if status.kind == "connected":
        return f"connected to {status.detail}"
    if status.kind == "not_recovered":
        return f"events of {status.detail} were missed and could not be recovered"
    if status.kind in ("broker_down", "broker_up"):
        return f"the server's broker is {'up' if status.kind == 'broker_up' else 'down'}"
    return f"{status.kind}: {status.detail}"


async def _listen(
    url: str,
    channels: list[str] | None,
    as_json: bool,
    count: int | None,
    duration: float | None,
    ping_interval: float,
    reconnect_delay: float,
    quiet: bool,
    token: str | None = None,
) -> int:
    from wsbridge.client import Client, Event

    received = 0
    client = Client(
        url,
        channels=channels,
        headers={"Authorization": f"Bearer {token}"} if token else None,
        ping_interval=ping_interval or None,
        reconnect_delay=reconnect_delay,
        max_reconnect_delay=max(30.0, reconnect_delay),
    )
    with anyio.move_on_after(duration):
        async with client:
            async for item in client.updates():
                if isinstance(item, Event):
                    click.echo(item.to_json() if as_json else _pretty(item))
                    received += 1
                    if count is not None and received >= count:
                        break
                elif not quiet:
                    click.echo(f"wsbridge listen: {_status_line(item)}", err=True)
    return received


@cli.command(
    epilog="\b\nExample:\n"
    "  wsbridge listen ws://127.0.0.1:8000/ws --channel risk:alert --json | jq .data"
)
@click.argument("url")
@click.option(
    "-c",
    "--channel",
    "channels",
    multiple=True,
    metavar="NAME|PATTERN",
    help="Subscribe to this channel or pattern and print only these; repeat for more. "
    "Default: whatever the server sends (its default channels).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON event frame per line.")
@click.option("--count", type=click.IntRange(min=1), help="Exit after this many events (status 0).")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Exit after this many seconds; the status is 1 if --count was not reached.",
)
@click.option(
    "--ping-interval",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help='Seconds between {"type": "ping"} frames; 0 disables them.',
)
@click.option(
    "--reconnect-delay",
    type=click.FloatRange(min=0, min_open=True),
    default=3.0,
    show_default=True,
    help="First reconnection delay; doubles per failed attempt (cap 30 s), with jitter.",
)
@click.option("-q", "--quiet", is_flag=True, help="No connection status lines on stderr.")
@_option(
    "--token",
    env="token",
    metavar="JWT",
    help="Present this token (Authorization: Bearer) to a server that requires one.",
)
def listen(
    url: str,
    channels: tuple[str, ...],
    as_json: bool,
    count: int | None,
    timeout: float | None,
    ping_interval: float,
    reconnect_delay: float,
    quiet: bool,
    token: str | None,
) -> None:
    """Connect to a WebSocket endpoint and print its events until stopped.

    Keeps the connection alive with pings and reconnects after any close or error,
    resuming channels with history where it left off (missed events first, none twice).
    Events go to stdout (pretty, or --json for piping); connection changes to stderr.
    """
    try:
        from wsbridge.client import Client
    except ImportError as exc:
        _fail(str(exc))
    try:
        Client(url)  # checks the URL before connecting
    except ConfigurationError as exc:
        _fail(str(exc), 2)
    selected = _channel_list(channels) if channels else None
    try:
        received = _run_async(
            _listen,
            url,
            selected,
            as_json,
            count,
            timeout,
            ping_interval,
            reconnect_delay,
            quiet,
            token,
        )
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        # The reader of a pipe left (| head): stop quietly, without flushing into it again.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    if count is not None and received < count:
        _fail(f"received {received} of {count} events within {timeout:g} s")


# -- schema --------------------------------------------------------------------------------


@cli.command(
    epilog="\b\nExamples:\n  wsbridge schema --format typescript -o src/wsmessage.d.ts\n"
    "  wsbridge schema --channel trade:executed"
)
@click.option(
    "-f",
    "--format",
    "fmt",
    type=click.Choice(["jsonschema", "asyncapi", "typescript"]),
    default="jsonschema",
    show_default=True,
    help="JSON Schema 2020-12, an AsyncAPI 3.0 document, or TypeScript declarations.",
)
@click.option(
    "-c",
    "--channel",
    metavar="NAME",
    help="Only this channel (for jsonschema: the schema of its payload).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write to this file instead of stdout.",
)
@click.option(
    "--path",
    "ws_path",
    default="/ws",
    show_default=True,
    help="The WebSocket path written in the AsyncAPI document.",
)
def schema(fmt: str, channel: str | None, output: Path | None, ws_path: str) -> None:
    """Export the trading registry's event schemas (to stdout, or -o FILE)."""
    from wsbridge import export, trading
    from wsbridge.schema import Registry

    registry = trading.registry
    try:
        if channel is None:
            text = export.render(registry, fmt, path=ws_path)  # type: ignore[arg-type]
        else:
            found = registry.get(channel) or registry.schema_for(channel)
            if found is None:
                known = ", ".join(registry.channels())
                _fail(f"no schema for channel {channel!r}; known channels: {known}", 2)
            if fmt == "jsonschema":
                document = export.json_schema(registry, found.channel)
                text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
            else:
                text = export.render(Registry([found]), fmt, path=ws_path)  # type: ignore[arg-type]
    except ConfigurationError as exc:
        _fail(str(exc), 2)
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8", newline="\n")
    except OSError as exc:
        _fail(f"cannot write {output}: {exc.strerror or exc}")
    click.echo(f"wsbridge schema: wrote {output}", err=True)


# -- demo ----------------------------------------------------------------------------------


@cli.command()
@_option("--host", env="host", default="127.0.0.1", show_default=True)
@_option(
    "--port",
    env="port",
    type=click.IntRange(0, 65535),
    default=8000,
    show_default=True,
)
@_option(
    "--redis",
    "broker_url",
    env="redis",
    default="memory://",
    show_default=True,
    metavar="URL",
    help="Broker URL; the embedded memory:// broker needs no Redis.",
)
@click.option("--seed", type=int, help="Make the simulated market deterministic.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Seconds between two simulator steps.",
)
@click.option("--log-level", type=click.Choice(_LOG_LEVELS), default="info", show_default=True)
def demo(
    host: str, port: int, broker_url: str, seed: int | None, interval: float, log_level: str
) -> None:
    """Run the live trading dashboard at http://HOST:PORT/ with a simulated market.

    Every channel of the reference is fed by a simulator; the page shows it live.
    """
    try:
        from wsbridge.demo import serve as serve_demo
    except ImportError as exc:
        _fail(f"the demo needs FastAPI and uvicorn: pip install 'wsbridge-py[all]' ({exc})")
    try:
        serve_demo(
            host=host,
            port=port,
            broker_url=broker_url,
            seed=seed,
            interval=interval,
            log_level=log_level,
        )
    except ConfigurationError as exc:
        _fail(str(exc), 2)
