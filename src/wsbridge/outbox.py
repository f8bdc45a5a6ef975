"""One client's outbound side, without I/O: its frames, its bounded outbox, its writer.

* A :class:`Frame` is one outbound frame, built once and shared by every recipient.
* A :class:`FrameBatch` is frames delivered together, in order (a page of replayed
  events), also shared: a connection that takes it whole writes its bytes at once.
* An :class:`Outbox` is a client's bounded queue of frames. It is a plain object: no
  event loop, no clock, no socket. :meth:`Outbox.push` applies the bounds, the
  conflation of state channels and the overflow policy, and says what it did;
  :meth:`Outbox.take` hands over everything queued; :meth:`Outbox.close` discards it.
* A :class:`Connection` is what writes a client's frames: every way wsbridge writes to a
  socket (the endpoint's send path for the ASGI and aiohttp adapters, the standalone
  server's protocol, a subscriber read with ``async for``) implements it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from wsbridge import deflate, protocol
from wsbridge.exceptions import ConfigurationError

__all__ = [
    "QUEUED",
    "REFUSED",
    "Connection",
    "ConnectionGroup",
    "Frame",
    "FrameBatch",
    "Outbox",
    "OverflowPolicy",
    "Pushed",
]


class OverflowPolicy(str, Enum):
    """What a subscriber does when its outbox is full.

    In both cases ``state`` channels are conflated first: only the newest unsent value
    per channel is kept. ``DISCONNECT`` (the default) then closes the client with
    :data:`~wsbridge.protocol.CLOSE_SLOW_CONSUMER` so it reconnects and resynchronises;
    ``DROP`` discards the new frame and counts it.
    """

    DISCONNECT = "disconnect"
    DROP = "drop"


class Frame:
    """One outbound frame, built once and shared by every recipient.

    ``text`` is the frame's JSON text; ``wire`` its bytes as one WebSocket frame, built on
    first use, for servers that write to sockets directly, and :meth:`deflated` the same
    compressed (permessage-deflate), built on first use for each window size. ``channel``
    is empty for a control frame (a pong, an acknowledgement), which is never dropped. An
    event of a channel with history has its ``offset`` (0 otherwise) and the ``epoch`` it
    belongs to.
    """

    __slots__ = (
        "_deflated",
        "_wire",
        "channel",
        "conflatable",
        "epoch",
        "offset",
        "size",
        "text",
    )

    def __init__(
        self,
        channel: str,
        text: str,
        *,
        conflatable: bool = False,
        offset: int = 0,
        epoch: str = "",
    ) -> None:
        self.channel = channel
        self.text = text
        self.size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
        self.conflatable = conflatable
        self.offset = offset
        self.epoch = epoch
        self._wire: bytes | None = None
        self._deflated: dict[int, bytes] | None = None

    @property
    def wire(self) -> bytes:
        """The frame as WebSocket wire bytes (unmasked text frame), computed once."""
        wire = self._wire
        if wire is None:
            payload = self.text.encode("utf-8", "surrogatepass")
            wire = self._wire = protocol.websocket_text_frame(payload)
        return wire

    def deflated(self, window_bits: int = deflate.MAX_WINDOW_BITS) -> bytes:
        """The frame as a compressed WebSocket frame, computed once per window size.

        For clients that negotiated permessage-deflate with ``server_no_context_takeover``
        and this ``server_max_window_bits``. When compression does not make the frame
        smaller, these are the plain :attr:`wire` bytes.
        """
        cache = self._deflated
        if cache is None:
            cache = self._deflated = {}
        wire = cache.get(window_bits)
        if wire is None:
            payload = self.text.encode("utf-8", "surrogatepass")
            wire = deflate.deflate_text_frame(payload, window_bits) or self.wire
            cache[window_bits] = wire
        return wire

    def __repr__(self) -> str:
        return f"Frame({self.channel!r}, {self.text[:60]!r})"


class FrameBatch:
    """Frames delivered together, in order, built once and shared like a :class:`Frame`.

    A page of replayed events is one: the same publications go to every client that
    resumes from the same place. ``frames`` are the frames, oldest first, and ``size``
    the bytes of their text. :meth:`wire` is their WebSocket frames joined into one bytes
    object, built on first use for each compression setting, so that a server writing to
    sockets directly (``offer_batch``, see :class:`Connection`) hands a client a whole
    page in one write without joining it again for each client.
    """

    __slots__ = ("_wire", "frames", "size")

    def __init__(self, frames: Iterable[Frame]) -> None:
        self.frames = tuple(frames)
        self.size = sum(frame.size for frame in self.frames)
        self._wire: dict[tuple[int, int], bytes] | None = None

    def __len__(self) -> int:
        return len(self.frames)

    def wire(self, window_bits: int = 0, threshold: int = 0) -> bytes:
        """Every frame's wire bytes, in order, as one bytes object, joined once.

        With ``window_bits``, frames of ``threshold`` bytes or more are compressed
        (:meth:`Frame.deflated`), the others plain; without it every frame is plain.
        """
        key = (window_bits, threshold if window_bits else 0)
        cache = self._wire
        if cache is None:
            cache = self._wire = {}
        data = cache.get(key)
        if data is None:
            data = cache[key] = b"".join(
                frame.deflated(window_bits)
                if window_bits and frame.size >= threshold
                else frame.wire
                for frame in self.frames
            )
        return data

    def __repr__(self) -> str:
        return f"FrameBatch({len(self.frames)} frames, {self.size} bytes)"


@dataclass(frozen=True, slots=True)
class Pushed:
    """What :meth:`Outbox.push` did with a frame.

    ``queued``: the frame is in the outbox. ``conflated``: older frames of its state
    channel removed to make room. ``dropped``: the frame was discarded (policy ``DROP``).
    ``overflow``: the outbox was full and the policy is ``DISCONNECT``: the outbox closed
    itself, and the client must be disconnected as a slow consumer.
    """

    queued: bool
    conflated: int = 0
    dropped: bool = False
    overflow: bool = False


#: The frames of every outbox that never queued one: shared and always empty (maxlen 0).
#: An idle client then holds no deque of its own (760 bytes each); the methods replace it
#: with a deque of the outbox's own before they append.
_NO_FRAMES: deque[Frame] = deque(maxlen=0)

#: The usual outcome: queued, nothing else happened. Compare with ``is``.
QUEUED = Pushed(True)
#: The outbox is closed: the frame was ignored.
REFUSED = Pushed(False)


class Outbox:
    """A bounded queue of frames for one client, with its overflow policy. No I/O.

    It holds at most ``max_messages`` frames and ``max_bytes`` bytes of frame text (UTF-8).
    A frame that does not fit first makes room by conflation, if its channel carries state
    (every older queued frame of that channel goes); if it still does not fit, ``DROP``
    discards it (control frames are never dropped: they overflow instead) and
    ``DISCONNECT`` closes the outbox.
    """

    __slots__ = ("_bytes", "_closed", "frames", "max_bytes", "max_messages", "policy")

    def __init__(
        self,
        *,
        max_messages: int = 1000,
        max_bytes: int = 4 * 1024 * 1024,
        policy: OverflowPolicy | str = OverflowPolicy.DISCONNECT,
    ) -> None:
        if max_messages < 1 or max_bytes < 1:
            raise ConfigurationError("outbox limits must be positive")
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.policy = OverflowPolicy(policy)
        #: The queued frames, oldest first: read them; change them only through the methods.
        self.frames: deque[Frame] = _NO_FRAMES
        self._bytes = 0
        self._closed = False

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def bytes(self) -> int:
        """Bytes of frame text queued."""
        return self._bytes

    @property
    def closed(self) -> bool:
        """True once closed, by :meth:`close` or by an overflow: pushes are then refused."""
        return self._closed

    def push(self, frame: Frame) -> Pushed:
        """Queue ``frame``, or apply the overflow policy when it does not fit."""
        if self._closed:
            return REFUSED
        frames = self.frames
        if len(frames) < self.max_messages and self._bytes + frame.size <= self.max_bytes:
            if frames is _NO_FRAMES:
                frames = self.frames = deque()
            frames.append(frame)
            self._bytes += frame.size
            return QUEUED
        conflated = 0
        if frame.conflatable:
            channel = frame.channel
            keep = [f for f in frames if f.channel != channel]
            conflated = len(frames) - len(keep)
            if conflated:
                frames.clear()
                frames.extend(keep)
                self._bytes = sum(f.size for f in keep)
            # It fits now only if frames were removed: ``frames`` is then a deque of its own.
            if len(frames) < self.max_messages and self._bytes + frame.size <= self.max_bytes:
                frames.append(frame)
                self._bytes += frame.size
                return Pushed(True, conflated=conflated)
        if self.policy is OverflowPolicy.DROP and frame.channel:
            return Pushed(False, conflated=conflated, dropped=True)
        self.close()
        return Pushed(False, conflated=conflated, overflow=True)

    def take(self) -> list[Frame]:
        """Remove and return every queued frame, oldest first."""
        frames = list(self.frames)
        self.frames.clear()
        self._bytes = 0
        return frames

    def close(self) -> None:
        """Discard every queued frame and refuse later pushes."""
        self._closed = True
        self.frames.clear()
        self._bytes = 0


class Connection(Protocol):
    """What writes one client's frames: the seam between fan-out and sockets.

    The broadcaster calls :meth:`offer` for a frame when the client's outbox is empty; a
    connection that can write it at once without waiting does so and returns True.
    Otherwise the frame goes to the outbox, and :meth:`wake` says there is something to
    take: the connection takes it with ``subscriber.take()`` when its socket allows.
    :meth:`wake` is also called once when the subscriber is closed. Neither may raise or
    wait: a connection that fails ends itself.

    A connection may also have ``offer_batch(batch: FrameBatch) -> bool``: it writes the
    whole batch at once, as ``offer`` would write each of its frames in turn, and returns
    True; or it takes none of them and returns False. The broadcaster offers a batch
    (replayed events) that way when the outbox is empty; without the method, or when it
    refuses, each frame is offered and queued as a single one would be.

    A connection whose :attr:`group` is not ``None`` is offered an event's frame together
    with the other connections of its group, in one :meth:`ConnectionGroup.offer` call,
    instead of one :meth:`offer` call each: a connection that writes through a coroutine
    then pays for one driver per event rather than one per client, and the broadcaster
    keeps each channel's connections cut into groups between events instead of sorting
    them for each one.
    """

    @property
    def group(self) -> ConnectionGroup | None:
        """The group that takes this connection's frames with its peers', or ``None``."""
        ...

    def offer(self, frame: Frame) -> bool:
        """Write ``frame`` now, without waiting, and return True; or return False."""
        ...

    def wake(self) -> None:
        """The outbox has frames to take, or the subscriber was closed."""
        ...


class ConnectionGroup(Protocol):
    """Connections of one kind, offered a frame together (see :attr:`Connection.group`)."""

    def offer(self, frame: Frame, connections: list[Connection]) -> int:
        """Offer ``frame`` to each of ``connections`` (all of this group, each once).

        A connection whose subscriber is ready for it (``Subscriber.direct``: open,
        nothing queued or held) writes the frame as :meth:`Connection.offer` would; for
        every other connection, and where ``offer`` would refuse it, the group has the
        subscriber queue it (``Subscriber.enqueue``), which also keeps the frames of a
        channel being resumed and ignores a closed subscriber. Returns how many frames
        were written here, for the broadcaster's counters. Never raises or waits.
        """
        ...
