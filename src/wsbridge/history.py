"""Channel history without I/O: its settings, positions, and the live envelope.

A channel with history keeps its recent publications, each with an *offset* (one more
than the previous one) inside an *epoch* (a string that changes whenever the history is
lost). The broker stores them (see the backends); this module holds what does not touch
the broker:

* :class:`History`: how many publications a channel keeps, and for how long;
* :class:`Position`: an epoch and an offset, where a client or the server stands;
* :class:`Page`: one read of a channel's history;
* the *envelope*: how a publication with an offset travels on the live broker channel, so
  that it can be told apart from a plain ``PUBLISH`` of a payload.

The envelope is ``NUL "wsb1" NUL <epoch> NUL <offset> NUL <payload>``. A JSON payload never
starts with a NUL byte, so a plain publication of JSON is never mistaken for one; a
message that starts like an envelope but does not parse is rejected by
:func:`parse_envelope` (the broadcaster counts and drops it).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Final

from wsbridge.exceptions import ConfigurationError

__all__ = [
    "ENVELOPE_PREFIX",
    "MAX_OFFSET",
    "History",
    "Page",
    "Position",
    "Resumed",
    "encode_envelope",
    "is_envelope",
    "new_epoch",
    "parse_envelope",
    "valid_epoch",
]

#: The first bytes of every publication made with an offset.
ENVELOPE_PREFIX: Final = b"\x00wsb1\x00"
#: Offsets are at most this (Redis counters are signed 64-bit integers).
MAX_OFFSET: Final = 2**63 - 1

_EPOCH = re.compile(r"[A-Za-z0-9_-]{1,64}")
_OFFSET = re.compile(rb"[1-9][0-9]{0,18}")


@dataclass(frozen=True, slots=True)
class History:
    """How much of a channel's past the broker keeps.

    ``size``: publications kept (older ones are trimmed). ``ttl``: seconds the history is
    kept after the last publication. ``meta_ttl``: seconds the epoch and the top offset are
    kept after the last publication, longer than the history itself, so that a client of a
    quiet channel whose history expired still resumes (there is nothing it missed).
    """

    size: int = 1000
    ttl: float = 600.0
    meta_ttl: float = 7 * 24 * 3600.0

    def __post_init__(self) -> None:
        if not 1 <= self.size <= 1_000_000:
            raise ConfigurationError("history size must be between 1 and 1000000")
        if not 1 <= self.ttl <= self.meta_ttl:
            raise ConfigurationError("need 1 <= history ttl <= meta_ttl (seconds)")


@dataclass(frozen=True, slots=True)
class Position:
    """Where a stream of publications stands: its epoch and an offset in it."""

    epoch: str
    offset: int


@dataclass(frozen=True, slots=True)
class Page:
    """One read of a channel's history.

    ``position``: the channel's epoch and top offset when it was read. ``entries``: the
    publications after the offset asked for, oldest first, as ``(offset, payload)``, at
    most as many as asked for; the first one is not the next offset when older ones were
    trimmed.
    """

    position: Position
    entries: list[tuple[int, bytes]] = field(default_factory=list)


def new_epoch() -> str:
    """A fresh random epoch."""
    return secrets.token_hex(8)


def valid_epoch(epoch: object) -> bool:
    """Whether ``epoch`` is a well-formed epoch string (at most 64 URL-safe characters)."""
    return isinstance(epoch, str) and _EPOCH.fullmatch(epoch) is not None


def encode_envelope(epoch: str, offset: int, payload: bytes) -> bytes:
    """Build the live message for a publication at ``offset`` of ``epoch``."""
    return b"%s%s\x00%d\x00%s" % (ENVELOPE_PREFIX, epoch.encode("ascii"), offset, payload)


def is_envelope(data: bytes) -> bool:
    """Whether ``data`` starts like an envelope (it may still be malformed)."""
    return data.startswith(ENVELOPE_PREFIX)


def parse_envelope(data: bytes) -> tuple[str, int, bytes] | None:
    """Split an envelope into ``(epoch, offset, payload)``; ``None`` if it is malformed."""
    start = len(ENVELOPE_PREFIX)
    end_epoch = data.find(b"\x00", start, start + 65)
    if end_epoch < 0:
        return None
    end_offset = data.find(b"\x00", end_epoch + 1, end_epoch + 21)
    if end_offset < 0:
        return None
    raw_epoch = data[start:end_epoch]
    raw_offset = data[end_epoch + 1 : end_offset]
    if _OFFSET.fullmatch(raw_offset) is None:
        return None
    epoch = raw_epoch.decode("ascii", "replace")
    if _EPOCH.fullmatch(epoch) is None:
        return None
    offset = int(raw_offset)
    if offset > MAX_OFFSET:
        return None
    return epoch, offset, data[end_offset + 1 :]


@dataclass(frozen=True, slots=True)
class Resumed:
    """What a subscription to a channel with history (or a state channel) started from.

    ``position``: the channel's epoch and the offset after which this subscriber's events
    follow (``None`` if the broker could not be asked). ``recovered``: for a subscription
    asked with ``since``, whether every publication after that position is delivered (the
    missed ones first); ``None`` when not asked.
    """

    position: Position | None
    recovered: bool | None = None

    def as_json(self) -> dict[str, object]:
        """The ``positions`` entry of a ``subscribed`` acknowledgement."""
        out: dict[str, object] = {}
        if self.position is not None:
            out["epoch"] = self.position.epoch
            out["offset"] = self.position.offset
        if self.recovered is not None:
            out["recovered"] = self.recovered
        return out
