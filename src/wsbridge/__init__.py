"""wsbridge: bridge a pub/sub broker (Redis or in-memory) to WebSocket clients.

The core is framework-agnostic; adapters live in ``wsbridge.asgi``,
``wsbridge.starlette``, ``wsbridge.fastapi`` and ``wsbridge.aiohttp``.
"""

from wsbridge._version import __version__
from wsbridge.broadcaster import Broadcaster, Frame, OverflowPolicy, Stats, Subscriber
from wsbridge.channel import Channel, glob_match, is_pattern, validate_channel
from wsbridge.endpoint import ConnectionInfo, Endpoint, Handshake, Transport, TransportClosed
from wsbridge.exceptions import (
    AuthenticationError,
    BrokerClosedError,
    BrokerError,
    BrokerUnavailableError,
    ConfigurationError,
    EventValidationError,
    InvalidChannelError,
    SubscriptionRefusedError,
    WsbridgeError,
)
from wsbridge.history import History, Position, Resumed
from wsbridge.permissions import AllowList
from wsbridge.schema import DeliveryKind, EventSchema, Registry
from wsbridge.session import Session, SessionLimits

__all__ = [
    "AllowList",
    "AuthenticationError",
    "Broadcaster",
    "BrokerClosedError",
    "BrokerError",
    "BrokerUnavailableError",
    "Channel",
    "ConfigurationError",
    "ConnectionInfo",
    "DeliveryKind",
    "Endpoint",
    "EventSchema",
    "EventValidationError",
    "Frame",
    "Handshake",
    "History",
    "InvalidChannelError",
    "OverflowPolicy",
    "Position",
    "Registry",
    "Resumed",
    "Session",
    "SessionLimits",
    "Stats",
    "Subscriber",
    "SubscriptionRefusedError",
    "Transport",
    "TransportClosed",
    "WsbridgeError",
    "__version__",
    "glob_match",
    "is_pattern",
    "validate_channel",
]
