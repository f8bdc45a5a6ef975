"""Wire protocol v1: the frames that cross the WebSocket, built and parsed without I/O.

Server to client:

* an event: ``{"channel": "<channel>", "data": <payload>}`` (the reference format), with
  ``"offset": <n>`` on a channel with history;
* control frames, all with a ``type``: ``pong``, ``subscribed`` (with ``positions`` for
  channels with history), ``unsubscribed``, ``error``, ``broker`` and ``position``.

Client to server: ``{"type": "ping"}``, and the additive extensions
``{"type": "subscribe", "channels": [...]}`` (optionally with ``"since"`` to resume) /
``{"type": "unsubscribe", "channels": [...]}``.

Every frame is UTF-8 JSON text. See ``docs/protocol.md`` for the full description.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Mapping
from itertools import accumulate, repeat
from typing import Final

__all__ = [
    "MAX_SINCE",
    "CLOSE_GOING_AWAY",
    "CLOSE_INVALID_DATA",
    "CLOSE_IDLE_TIMEOUT",
    "CLOSE_MESSAGE_TOO_BIG",
    "CLOSE_POLICY_VIOLATION",
    "CLOSE_SLOW_CONSUMER",
    "CLOSE_TOKEN_EXPIRED",
    "CLOSE_TRY_AGAIN_LATER",
    "MAX_DEPTH",
    "PONG",
    "PROTOCOL_VERSION",
    "SUBPROTOCOL",
    "TOKEN_SUBPROTOCOL_PREFIX",
    "ErrorCode",
    "broker_status_frame",
    "decode_payload",
    "dumps",
    "encode_event",
    "error_frame",
    "loads",
    "position_frame",
    "subscription_ack",
    "websocket_text_frame",
]

PROTOCOL_VERSION: Final = 1
#: A ``subscribe`` may always name this many channels in ``since`` (more when the
#: server's subscription limit is higher).
MAX_SINCE: Final = 100

#: The server is shutting down (RFC 6455).
CLOSE_GOING_AWAY: Final = 1001
#: A text frame was not valid UTF-8 (RFC 6455).
CLOSE_INVALID_DATA: Final = 1007
#: The client broke a policy: too many messages per second (RFC 6455).
CLOSE_POLICY_VIOLATION: Final = 1008
#: A client frame exceeded the configured maximum size (RFC 6455).
CLOSE_MESSAGE_TOO_BIG: Final = 1009
#: The server refuses new work for now, e.g. too many connections (RFC 6455).
CLOSE_TRY_AGAIN_LATER: Final = 1013
#: The client read too slowly: its outbound buffer filled with events that may not be
#: dropped. It should reconnect and resynchronise.
CLOSE_SLOW_CONSUMER: Final = 4008
#: The client sent nothing, not even a ping, for longer than the idle timeout.
CLOSE_IDLE_TIMEOUT: Final = 4000
#: The credentials the connection was accepted with expired; reconnect with fresh ones.
CLOSE_TOKEN_EXPIRED: Final = 4001

#: The WebSocket subprotocol of wsbridge's frames: a handshake that offers it gets it back.
SUBPROTOCOL: Final = "wsbridge"
#: A subprotocol ``wsbridge.token.<JWT>`` carries a token, for clients (browsers) that
#: cannot set headers; it is never selected, so the token is not echoed.
TOKEN_SUBPROTOCOL_PREFIX: Final = "wsbridge.token."

PONG: Final = '{"type":"pong"}'

#: The deepest nesting of arrays and objects that is decoded, in a client frame or a
#: broker payload. Deeper text is treated as not JSON: it cannot exhaust the stack.
MAX_DEPTH: Final = 64


class ErrorCode:
    """The ``code`` values of ``{"type": "error"}`` frames."""

    INVALID_JSON: Final = "invalid_json"
    NOT_AN_OBJECT: Final = "not_an_object"
    MISSING_TYPE: Final = "missing_type"
    UNKNOWN_TYPE: Final = "unknown_type"
    INVALID_FIELD: Final = "invalid_field"
    BINARY_UNSUPPORTED: Final = "binary_unsupported"
    INVALID_CHANNEL: Final = "invalid_channel"
    FORBIDDEN: Final = "forbidden"
    TOO_MANY_SUBSCRIPTIONS: Final = "too_many_subscriptions"
    SUBSCRIPTION_REFUSED: Final = "subscription_refused"


_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def dumps(value: object) -> str:
    """Encode ``value`` as compact JSON text, as every frame is encoded."""
    return _encoder.encode(value)


def _reject_constant(name: str) -> object:
    # NaN and Infinity are not JSON: a browser's JSON.parse would fail on the whole frame.
    raise ValueError(f"{name} is not valid JSON")


# json.loads with an argument builds a decoder per call: one, shared, costs less.
_decoder = json.JSONDecoder(parse_constant=_reject_constant)


# A JSON string, escapes included; and what is left once strings are gone: brackets.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
# An opening bracket counts +1, a closing one -1: as bytes 2 and 0, less 1 each.
_STEPS = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")


def _deeper_than(text: str, max_depth: int) -> bool:
    # Most texts have too few brackets to be deep at all: two counts in C decide.
    if text.count("[") + text.count("{") <= max_depth:
        return False
    # Linear, and every step runs in C: a 1 MiB payload takes tens of milliseconds.
    steps = _NOT_BRACKET.sub("", _STRING.sub("", text)).encode("ascii").translate(_STEPS)
    return max(accumulate(map(operator.sub, steps, repeat(1))), default=0) > max_depth


def loads(text: str, *, max_depth: int = MAX_DEPTH) -> object:
    """Parse JSON text from an untrusted source, within bounded depth.

    Raises :class:`ValueError` for anything that is not a JSON value: invalid syntax,
    ``NaN`` or ``Infinity``, an integer too long to convert, or arrays and objects nested
    deeper than ``max_depth``. It never raises :class:`RecursionError`.
    """
    if _deeper_than(text, max_depth):
        raise ValueError(f"nested deeper than {max_depth} levels")
    try:
        return _decoder.decode(text)
    except RecursionError:  # pragma: no cover - the depth check comes first
        raise ValueError(f"nested deeper than {max_depth} levels") from None


def decode_payload(data: bytes | str, *, max_depth: int = MAX_DEPTH) -> tuple[object, str]:
    """Decode one broker message into ``(value, json_text)``.

    ``json_text`` is what goes into the event frame's ``data``: the message itself when it
    is valid JSON (forwarded as the publisher wrote it, so numbers keep their precision),
    or ``{"raw": "<text>"}`` when it is not, as the reference system does. JSON nested
    deeper than ``max_depth`` is forwarded as ``{"raw": ...}`` too (see :func:`loads`).
    Bytes that are not UTF-8 are decoded with replacement characters.
    """
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    try:
        value = loads(text, max_depth=max_depth)
    except ValueError:
        raw = {"raw": text}
        return raw, dumps(raw)
    return value, text


def encode_event(channel: str, payload_json: str, offset: int = 0) -> str:
    """Build an event frame from a channel and a payload that is already JSON text.

    ``offset``: the event's offset on a channel with history (added as ``"offset"``).
    """
    head = '{"channel":' + dumps(channel) + ',"data":' + payload_json
    if offset:
        return head + ',"offset":' + str(offset) + "}"
    return head + "}"


def error_frame(code: str, message: str, *, request_id: object = None, **extra: object) -> str:
    """Build ``{"type": "error", "code": ..., "message": ...}``, echoing ``id`` if given."""
    frame: dict[str, object] = {"type": "error", "code": code, "message": message}
    if request_id is not None:
        frame["id"] = request_id
    frame.update(extra)
    return dumps(frame)


def subscription_ack(
    kind: str,
    channels: list[str],
    *,
    request_id: object = None,
    positions: Mapping[str, Mapping[str, object]] | None = None,
) -> str:
    """Build ``{"type": "subscribed" | "unsubscribed", "channels": [...]}``.

    ``positions``: for channels with history, ``{"epoch", "offset"}`` and, for those
    asked with ``since``, ``"recovered"``.
    """
    frame: dict[str, object] = {"type": kind, "channels": channels}
    if positions:
        frame["positions"] = positions
    if request_id is not None:
        frame["id"] = request_id
    return dumps(frame)


def websocket_text_frame(payload: bytes) -> bytes:
    """Frame ``payload`` (UTF-8 text) as one unmasked, uncompressed WebSocket text frame.

    Server frames are never masked (RFC 6455), so without compression the bytes for an
    event are the same for every client and can be built once.
    """
    n = len(payload)
    if n < 126:
        header = bytes((0x81, n))
    elif n < 65536:
        header = bytes((0x81, 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x81, 127)) + n.to_bytes(8, "big")
    return header + payload


def broker_status_frame(status: str) -> str:
    """Build ``{"type": "broker", "status": "down" | "up"}``."""
    return dumps({"type": "broker", "status": status})


def position_frame(channel: str, epoch: str, offset: int, *, recovered: bool | None) -> str:
    """Build ``{"type": "position", "positions": {channel: {"epoch", "offset"}}}``.

    The events of ``channel`` that follow on this connection come after ``offset`` of
    ``epoch``. ``recovered=False`` (sent as ``"recovered": false``): events before that
    position were lost; ``None``: the member is left out (nothing is known to be lost).
    The frame has no ``channel`` member, so clients that dispatch on it ignore the frame.
    """
    entry: dict[str, object] = {"epoch": epoch, "offset": offset}
    if recovered is not None:
        entry["recovered"] = recovered
    return dumps({"type": "position", "positions": {channel: entry}})
