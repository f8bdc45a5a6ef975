"""Authentication at the handshake, authorization per channel, and an Origin allow-list."""

from fastapi import FastAPI

from wsbridge import Broadcaster, Channel, ConnectionInfo, Endpoint
from wsbridge.fastapi import create_router
from wsbridge.trading import registry

# Stands for your session store or token verifier.
SESSIONS = {
    "op-7f3a": {"user": "ann", "role": "operator"},
    "vw-91c2": {"user": "bob", "role": "viewer"},
}


async def authenticate(info: ConnectionInfo) -> dict[str, str] | None:
    """Return the principal, or None to refuse the handshake with HTTP 403."""
    token = info.cookies.get("session")
    if token is None:  # clients that cannot send cookies may use ?token=...
        token = next(iter(info.query.get("token", [])), None)
    return SESSIONS.get(token or "")


def authorize(principal: dict[str, str], channel: str) -> bool:
    """Asked about default and requested channels, patterns, and each channel a pattern reaches."""
    if principal["role"] == "operator":
        return True
    # Everyone else: anything but the approval queue, including through a pattern
    # such as "trade:*" (Channel.matches handles exact names and patterns alike).
    return not Channel(channel).matches("trade:pending_approval")


broadcaster = Broadcaster("redis://localhost:6379/0", registry=registry)
endpoint = Endpoint(
    broadcaster,
    authenticate=authenticate,
    authorize=authorize,
    allowed_origins=["https://dashboard.example.com", "http://localhost:8000"],
)

app = FastAPI(lifespan=broadcaster.lifespan)
app.include_router(create_router(endpoint, path="/ws"))
