"""The errors wsbridge raises, as one tree.

.. code-block:: text

    WsbridgeError
    ├── ConfigurationError (ValueError)      the caller configured something wrongly
    ├── InvalidChannelError (ValueError)     a channel name or pattern breaks the rules
    ├── EventValidationError (ValueError)    a payload does not fit its channel's schema
    ├── AuthenticationError                  a handshake's credentials are missing or bad
    └── BrokerError
        ├── BrokerUnavailableError (ConnectionError)  the broker cannot be reached now
        ├── BrokerClosedError (RuntimeError)          the broadcaster is not running
        └── SubscriptionRefusedError                  the broker refused a subscription

A client's mistakes raise nothing: the session answers them with error frames and close
codes. Errors caused by the program that uses wsbridge are ``ValueError`` or
``RuntimeError`` subclasses, so ordinary ``except`` clauses keep working.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "BrokerClosedError",
    "BrokerError",
    "BrokerUnavailableError",
    "ConfigurationError",
    "EventValidationError",
    "InvalidChannelError",
    "SubscriptionRefusedError",
    "WsbridgeError",
]


class WsbridgeError(Exception):
    """Base class of every error wsbridge raises on purpose."""


class ConfigurationError(WsbridgeError, ValueError):
    """An argument or setting given to wsbridge is invalid."""


class InvalidChannelError(WsbridgeError, ValueError):
    """A channel name or pattern is empty, too long or holds a forbidden character."""

    def __init__(self, channel: str, reason: str) -> None:
        self.channel = channel
        self.reason = reason
        super().__init__(f"invalid channel {channel!r}: {reason}")


class EventValidationError(WsbridgeError, ValueError):
    """A payload does not match the schema registered for its channel.

    ``errors`` holds pydantic's error list; ``fields`` the dotted paths of the fields at fault.
    """

    def __init__(self, channel: str, errors: list[dict[str, object]]) -> None:
        self.channel = channel
        self.errors = errors
        self.fields = [".".join(str(p) for p in e.get("loc", ())) for e in errors]  # type: ignore[attr-defined]
        details = "; ".join(
            f"{field or '<payload>'}: {e.get('msg', 'invalid')}"
            for field, e in zip(self.fields, errors, strict=False)
        )
        super().__init__(f"invalid payload for channel {channel!r}: {details}")


class AuthenticationError(WsbridgeError):
    """Raised by an ``authenticate`` hook to refuse a handshake with a status and a reason.

    The endpoint answers ``status`` (401 by default) with ``reason`` as the body, and logs
    nothing: a refused client is not a server error. ``reason`` is sent to the client, so
    it must not hold a secret (a token, say).
    """

    def __init__(self, reason: str, status: int = 401) -> None:
        self.reason = reason
        self.status = status
        super().__init__(reason)


class BrokerError(WsbridgeError):
    """Something went wrong between wsbridge and the message broker."""


class BrokerUnavailableError(BrokerError, ConnectionError):
    """The broker cannot be reached, or did not answer in time."""


class BrokerClosedError(BrokerError, RuntimeError):
    """The broadcaster is not running: it was never started, or it was closed."""


class SubscriptionRefusedError(BrokerError):
    """The broker answered a subscription with an error (a Redis ACL denial, say).

    The connection to the broker is fine: only ``channels`` were not subscribed.
    ``reason`` is the broker's error message.
    """

    def __init__(self, channels: list[str], reason: str) -> None:
        self.channels = channels
        self.reason = reason
        super().__init__(f"the broker refused {', '.join(map(repr, channels))}: {reason}")
