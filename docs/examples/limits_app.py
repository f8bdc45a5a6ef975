"""Limits on what one client may send, on what it may hold, and on how slowly it may read."""

from fastapi import FastAPI

from wsbridge import Broadcaster, Endpoint, OverflowPolicy, SessionLimits
from wsbridge.fastapi import create_router
from wsbridge.trading import registry

broadcaster = Broadcaster("redis://localhost:6379/0", registry=registry)
endpoint = Endpoint(
    broadcaster,
    limits=SessionLimits(
        max_frame_bytes=16 * 1024,  # a larger client frame closes the connection with 1009
        max_subscriptions=20,  # channels and patterns held at once
        max_channel_length=128,  # UTF-8 bytes per channel name or pattern
        rate=5.0,  # client frames per second, on average...
        burst=20,  # ...with bursts of up to 20; beyond: close 1008
    ),
    max_buffer_messages=500,  # outbox per client, in frames...
    max_buffer_bytes=1024 * 1024,  # ...and in bytes
    overflow=OverflowPolicy.DISCONNECT,  # full outbox: close 4008 (the default)
    idle_timeout=75.0,  # nothing received for 75 s: close 4000
    max_connections=2000,  # per process; beyond: the handshake is refused
)

app = FastAPI(lifespan=broadcaster.lifespan)
app.include_router(create_router(endpoint, path="/ws"))
