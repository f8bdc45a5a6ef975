"""The per-client protocol logic as a sans-I/O object.

A :class:`Session` is fed the frames one client sends and answers with a list of
commands for its driver: frames to send back, subscriptions to add or drop, or a close.
It never touches a socket, a broker or a clock of its own (time is passed in), so it is
tested without an event loop and every adapter shares it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from wsbridge import protocol
from wsbridge.channel import DEFAULT_MAX_CHANNEL_LENGTH, glob_match, is_pattern, validate_channel
from wsbridge.exceptions import ConfigurationError, InvalidChannelError
from wsbridge.history import MAX_OFFSET, Position, valid_epoch
from wsbridge.protocol import MAX_SINCE, ErrorCode

__all__ = [
    "Close",
    "Command",
    "Reply",
    "Session",
    "SessionLimits",
    "Subscribe",
    "Unsubscribe",
]


@dataclass(frozen=True, slots=True)
class Reply:
    """Send ``text`` to this client only (a pong, an acknowledgement, an error)."""

    text: str


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Start delivering these channels or patterns to this client.

    Once the broker confirmed them, the driver acknowledges ``ack`` (with
    ``request_id``), leaving out any the broker refused; ``ack=None``: no acknowledgement.
    ``since`` maps channels to the position the client has seen: it resumes them from
    there. A channel of ``since`` may be in ``ack`` but not in ``channels`` (the client
    holds it already and resumes it on this connection), or only matched by a pattern of
    ``ack`` (it is resumed through that pattern).
    """

    channels: tuple[str, ...]
    ack: tuple[str, ...] | None = None
    request_id: object = None
    since: Mapping[str, Position] | None = None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """Stop delivering these channels or patterns to this client."""

    channels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Close:
    """Close the connection with a WebSocket close code and reason."""

    code: int
    reason: str


#: What a session asks its driver to do, in order.
Command = Reply | Subscribe | Unsubscribe | Close


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """Limits on what one client may send. Each has a safe default.

    ``max_frame_bytes``: largest client frame (UTF-8 bytes); a larger one closes with 1009.
    ``max_subscriptions``: channels and patterns one client may hold at once, counting
    its default channels. The defaults are the server's choice and always subscribed, so
    the limit bounds what a client adds: ``0`` means the default channels only, and every
    ``subscribe`` request is refused with ``too_many_subscriptions``.
    ``max_channel_length``: longest channel name or pattern, in UTF-8 bytes.
    ``rate`` and ``burst``: a token bucket of client frames per second; a client that
    exceeds it is closed with 1008. ``rate=None`` disables it.
    """

    max_frame_bytes: int = 64 * 1024
    max_subscriptions: int = 100
    max_channel_length: int = DEFAULT_MAX_CHANNEL_LENGTH
    rate: float | None = 20.0
    burst: int = 100

    def __post_init__(self) -> None:
        if self.max_frame_bytes < 64:
            raise ConfigurationError("max_frame_bytes must be at least 64")
        if self.max_subscriptions < 0:
            raise ConfigurationError("max_subscriptions must not be negative")
        if self.max_channel_length < 1:
            raise ConfigurationError("max_channel_length must be positive")
        if self.rate is not None and not (self.rate > 0 and math.isfinite(self.rate)):
            raise ConfigurationError("rate must be a positive number or None")
        if self.burst < 1:
            raise ConfigurationError("burst must be at least 1")


_CONTROL_TYPES = ("ping", "subscribe", "unsubscribe")


class Session:
    """One client's protocol state: its subscriptions, its rate budget, its replies.

    ``authorize`` is called with each channel the client would be subscribed to (its
    default channels included) and returns whether it may see it.
    """

    __slots__ = ("_authorize", "_default", "_last", "_limits", "_subs", "_tokens", "closed")

    def __init__(
        self,
        *,
        default_channels: Sequence[str] = (),
        limits: SessionLimits | None = None,
        authorize: Callable[[str], bool] | None = None,
    ) -> None:
        self._limits = limits or SessionLimits()
        self._authorize = authorize
        self._default = tuple(default_channels)
        self._subs: dict[str, None] = {}  # insertion-ordered set
        self._tokens = float(self._limits.burst)
        self._last: float | None = None
        #: True once the session asked for the connection to close.
        self.closed = False

    @property
    def subscriptions(self) -> tuple[str, ...]:
        """The channels and patterns this client is subscribed to, oldest first."""
        return tuple(self._subs)

    @property
    def limits(self) -> SessionLimits:
        """The limits this session enforces."""
        return self._limits

    def start(self) -> list[Command]:
        """Subscribe the client to the default channels it may see, silently."""
        allowed = [ch for ch in self._default if ch not in self._subs and self._allowed(ch)]
        for ch in allowed:
            self._subs[ch] = None
        return [Subscribe(tuple(allowed))] if allowed else []

    def refused(self, channels: Sequence[str], request_id: object = None) -> list[Reply]:
        """The broker refused these subscriptions: forget them and tell the client."""
        for ch in channels:
            self._subs.pop(ch, None)
        return [
            _error(
                ErrorCode.SUBSCRIPTION_REFUSED,
                f"the broker refused the subscription to {ch!r}",
                request_id,
                channel=ch,
            )
            for ch in channels
        ]

    def receive_bytes(self, data: bytes, now: float = 0.0) -> list[Command]:
        """Handle a binary frame: the protocol is text only, so it gets an error frame."""
        if self.closed:
            return []
        if len(data) > self._limits.max_frame_bytes:
            return self._close(protocol.CLOSE_MESSAGE_TOO_BIG, "frame too large")
        if not self._spend(now):
            return self._close(protocol.CLOSE_POLICY_VIOLATION, "too many messages")
        return [
            Reply(
                protocol.error_frame(
                    ErrorCode.BINARY_UNSUPPORTED, "binary frames are not supported; send JSON text"
                )
            )
        ]

    def receive_text(self, text: str, now: float = 0.0) -> list[Command]:
        """Handle one text frame from the client; ``now`` is a monotonic time in seconds."""
        if self.closed:
            return []
        limit = self._limits.max_frame_bytes
        # A character is at most 4 UTF-8 bytes: most frames skip the encode.
        if len(text) * 4 > limit and len(text.encode("utf-8", "surrogatepass")) > limit:
            return self._close(protocol.CLOSE_MESSAGE_TOO_BIG, "frame too large")
        if not self._spend(now):
            return self._close(protocol.CLOSE_POLICY_VIOLATION, "too many messages")
        try:
            frame = protocol.loads(text)
        except ValueError:
            return [_error(ErrorCode.INVALID_JSON, "frame is not valid JSON")]
        if not isinstance(frame, dict):
            return [_error(ErrorCode.NOT_AN_OBJECT, "frame must be a JSON object")]
        request_id = frame.get("id")
        if not isinstance(request_id, (str, int)) or isinstance(request_id, bool):
            request_id = None
        kind = frame.get("type")
        if kind is None:
            return [_error(ErrorCode.MISSING_TYPE, 'frame has no "type"', request_id)]
        if not isinstance(kind, str):
            return [_error(ErrorCode.INVALID_FIELD, '"type" must be a string', request_id)]
        if kind == "ping":
            return [Reply(protocol.PONG)]
        if kind == "subscribe":
            return self._subscribe(frame, request_id)
        if kind == "unsubscribe":
            return self._unsubscribe(frame, request_id)
        return [
            _error(
                ErrorCode.UNKNOWN_TYPE,
                f"unknown type {kind[:64]!r}; expected one of {', '.join(_CONTROL_TYPES)}",
                request_id,
            )
        ]

    def _subscribe(self, frame: dict[str, object], request_id: object) -> list[Command]:
        channels = self._channels_field(frame)
        if isinstance(channels, Reply):
            return [_with_id(channels, request_id)]
        out: list[Command] = []
        accepted: list[str] = []
        new: list[str] = []
        for ch in channels:
            if ch in self._subs or ch in new:
                accepted.append(ch)
            elif not self._allowed(ch):
                out.append(
                    _error(
                        ErrorCode.FORBIDDEN,
                        f"not allowed to subscribe to {ch!r}",
                        request_id,
                        channel=ch,
                    )
                )
            else:
                new.append(ch)
                accepted.append(ch)
        # Only new names count against the limit: the defaults may already fill it.
        if new and len(self._subs) + len(new) > self._limits.max_subscriptions:
            return [
                _error(
                    ErrorCode.TOO_MANY_SUBSCRIPTIONS,
                    f"at most {self._limits.max_subscriptions} subscriptions per connection",
                    request_id,
                )
            ]
        since = _since_field(frame, channels, self._limits)
        if isinstance(since, Reply):
            return [_with_id(since, request_id)]
        since = {ch: pos for ch, pos in since.items() if _covers(accepted, ch)}
        for ch in new:
            self._subs[ch] = None
        # Every well-formed request is acknowledged, with an empty list when nothing of it
        # was accepted: a client waiting for its answer must get one. Channels held already
        # go to the driver too: their acknowledgement gives their positions, and a resume
        # starts there.
        if accepted:
            out.append(
                Subscribe(
                    tuple(new), ack=tuple(accepted), request_id=request_id, since=since or None
                )
            )
        else:
            out.append(
                Reply(protocol.subscription_ack("subscribed", accepted, request_id=request_id))
            )
        return out

    def _unsubscribe(self, frame: dict[str, object], request_id: object) -> list[Command]:
        channels = self._channels_field(frame)
        if isinstance(channels, Reply):
            return [_with_id(channels, request_id)]
        gone = [ch for ch in dict.fromkeys(channels) if ch in self._subs]
        for ch in gone:
            del self._subs[ch]
        out: list[Command] = [Unsubscribe(tuple(gone))] if gone else []
        out.append(
            Reply(protocol.subscription_ack("unsubscribed", channels, request_id=request_id))
        )
        return out

    def _channels_field(self, frame: dict[str, object]) -> list[str] | Reply:
        raw = frame.get("channels")
        if not isinstance(raw, list) or not raw:
            return Reply(
                protocol.error_frame(
                    ErrorCode.INVALID_FIELD, '"channels" must be a non-empty list of strings'
                )
            )
        if len(raw) > max(self._limits.max_subscriptions, 1):
            return Reply(
                protocol.error_frame(
                    ErrorCode.TOO_MANY_SUBSCRIPTIONS,
                    f"at most {self._limits.max_subscriptions} channels per request",
                )
            )
        channels: list[str] = []
        for item in raw:
            if not isinstance(item, str):
                return Reply(
                    protocol.error_frame(
                        ErrorCode.INVALID_FIELD, '"channels" must hold only strings'
                    )
                )
            try:
                channels.append(validate_channel(item, max_length=self._limits.max_channel_length))
            except InvalidChannelError as exc:
                return Reply(protocol.error_frame(ErrorCode.INVALID_CHANNEL, str(exc)))
        return list(dict.fromkeys(channels))

    def _allowed(self, channel: str) -> bool:
        return self._authorize is None or bool(self._authorize(channel))

    def _spend(self, now: float) -> bool:
        rate = self._limits.rate
        if rate is None:
            return True
        if self._last is not None and now > self._last:
            self._tokens = min(float(self._limits.burst), self._tokens + (now - self._last) * rate)
        self._last = now if self._last is None else max(self._last, now)
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def _close(self, code: int, reason: str) -> list[Command]:
        self.closed = True
        return [Close(code, reason)]

    def forget(self, channels: Iterable[str]) -> None:
        """Drop channels from the session's state without asking the driver to unsubscribe."""
        for ch in channels:
            self._subs.pop(ch, None)


def _valid_name(channel: str, limits: SessionLimits) -> bool:
    try:
        validate_channel(channel, max_length=limits.max_channel_length)
    except InvalidChannelError:
        return False
    return True


def _covers(channels: list[str], channel: str) -> bool:
    """Whether ``channel`` is in ``channels`` or, not a pattern itself, matches a pattern."""
    if channel in channels:
        return True
    return not is_pattern(channel) and any(
        is_pattern(p) and glob_match(p, channel) for p in channels
    )


def _since_field(
    frame: dict[str, object], channels: list[str], limits: SessionLimits
) -> dict[str, Position] | Reply:
    raw = frame.get("since")
    if raw is None:
        return {}
    bad = Reply(
        protocol.error_frame(
            ErrorCode.INVALID_FIELD,
            '"since" must map channels of "channels", or channels a pattern of it matches, '
            'to {"epoch": string, "offset": integer}',
        )
    )
    # Through patterns a client may resume more channels than it names: up to its
    # subscription limit, and at least MAX_SINCE.
    bound = max(len(channels), limits.max_subscriptions, MAX_SINCE)
    if not isinstance(raw, dict) or len(raw) > bound:
        return bad
    since: dict[str, Position] = {}
    for ch, position in raw.items():
        if not isinstance(position, dict) or not _valid_name(ch, limits):
            return bad
        if not _covers(channels, ch):
            return bad
        epoch = position.get("epoch")
        offset = position.get("offset")
        if (
            not valid_epoch(epoch)
            or not isinstance(offset, int)
            or isinstance(offset, bool)
            or not 0 <= offset <= MAX_OFFSET
        ):
            return bad
        since[ch] = Position(str(epoch), offset)
    return since


def _error(code: str, message: str, request_id: object = None, **extra: object) -> Reply:
    return Reply(protocol.error_frame(code, message, request_id=request_id, **extra))


def _with_id(reply: Reply, request_id: object) -> Reply:
    if request_id is None:
        return reply
    frame = json.loads(reply.text)
    frame["id"] = request_id
    return Reply(protocol.dumps(frame))
