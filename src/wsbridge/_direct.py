"""Writing to idle connections without waking a task per client (asyncio only).

A connection's send loop costs one task wake-up per client per event at steady rates:
that wake-up, not the write, dominated the ASGI adapters' CPU profile. While a send loop
waits for frames, its :class:`DirectWriter` stands in for it:

- The first frame of a loop iteration for an idle client is written at once, from the
  fan-out itself (:func:`fan_out`): at a steady rate, that is every frame, with no
  scheduling at all.
- Later frames of the same iteration queue in the subscriber's outbox (its bounds and
  overflow policy apply unchanged) and are written together when the iteration ends, by
  one callback for every client. A burst costs each socket one batch, which the kernel
  can coalesce, as the send loop's batches could.

The fan-out awaits every idle client's ``send()`` in one coroutine, which the broadcaster
runs by hand: servers write to a socket without suspending unless it is paused, so each
``send()`` almost always finishes there and then, at the cost of a plain ``await``. When
one does suspend, a task takes the coroutine over from that exact point to finish that
client's write, and a new one carries on with the next client: nobody waits for a slow
socket. Until that task is done, the client's later frames wake its send loop as before,
which waits for the task first. Order is kept throughout.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterable, Iterator, Sequence
from types import CoroutineType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wsbridge.broadcaster import Frame, Subscriber, _Counters

__all__ = ["DirectWriter", "fan_out"]

logger = logging.getLogger("wsbridge")


class _Resume:
    """Await this to drive, in the awaiting task, a coroutine that suspended elsewhere.

    ``first`` is what the coroutine yielded when it suspended (a future, or ``None``).
    The awaiting task sees exactly what the coroutine yields from then on, and passes
    results and exceptions (cancellation included) back into it.
    """

    __slots__ = ("_coro", "_first")

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self._coro = coro
        self._first = first

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, value = self._coro, self._first
        while True:
            try:
                sent = yield value
            except BaseException as exc:  # handed to the coroutine, as a task would
                try:
                    value = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    value = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


async def _wrap(awaitable: Awaitable[None]) -> None:
    await awaitable


class _Flusher:
    """Runs the scheduled writers once per event-loop iteration, and counts iterations."""

    __slots__ = ("_loop", "_scheduled", "_writers", "epoch")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._writers: list[DirectWriter] = []
        self._scheduled = False
        #: Advances once per loop iteration in which anything was written or scheduled.
        self.epoch = 0

    def touch(self) -> None:
        """Make sure this iteration ends with a run (which advances the epoch)."""
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._run)

    def add(self, writer: DirectWriter) -> None:
        self._writers.append(writer)
        self.touch()

    def _run(self) -> None:
        self._scheduled = False
        self.epoch += 1
        writers, self._writers = self._writers, []
        for writer in writers:
            writer.flush()


_flushers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Flusher] = (
    weakref.WeakKeyDictionary()
)


def _flusher(loop: asyncio.AbstractEventLoop) -> _Flusher:
    flusher = _flushers.get(loop)
    if flusher is None:
        flusher = _flushers[loop] = _Flusher(loop)
    return flusher


class DirectWriter:
    """Writes a subscriber's frames through ``send`` while its send loop waits.

    The send loop sets :attr:`idle` around its wait for frames and calls :meth:`drain`
    after it. ``fail`` is called, at most once, when a write raises: the connection is
    gone or broken, and the caller ends it.
    """

    __slots__ = (
        "_epoch",
        "_fail",
        "_failed",
        "_flusher",
        "_idle",
        "_inflight",
        "_loop",
        "_scheduled",
        "_send",
        "_subscriber",
        "ready",
    )

    def __init__(
        self,
        subscriber: Subscriber,
        send: Callable[[str], Awaitable[None]],
        fail: Callable[[BaseException], None],
    ) -> None:
        self._subscriber = subscriber
        self._send = send
        self._fail = fail
        self._failed = False
        self._loop = asyncio.get_running_loop()
        self._flusher = _flusher(self._loop)
        self._scheduled = False
        self._epoch = -1
        self._idle = False
        self._inflight: asyncio.Task[None] | None = None
        #: True while this writer may write: idle, nothing in flight, not failed, and its
        #: subscriber not closed. Kept up to date on each change: the fan-out reads it
        #: once per client and event.
        self.ready = False

    @property
    def idle(self) -> bool:
        """True while the send loop waits for frames; only then may this writer write."""
        return self._idle

    @idle.setter
    def idle(self, value: bool) -> None:
        self._idle = value
        self._update()

    @property
    def inflight(self) -> asyncio.Task[None] | None:
        """The task finishing a write that suspended, with the rest of its batch."""
        return self._inflight

    @inflight.setter
    def inflight(self, task: asyncio.Task[None] | None) -> None:
        self._inflight = task
        self._update()

    def _update(self) -> None:
        self.ready = (
            self._idle
            and self._inflight is None
            and not self._failed
            and self._subscriber.close_code is None
        )

    def __call__(self, frame: Frame) -> bool:
        """As the subscriber's sink: write the first frame of an iteration at once.

        :func:`fan_out` writes events itself; frames pushed otherwise (replies, broker
        status) come here. Later frames of the same iteration are refused, so they queue
        and go out together at its end: a burst costs each socket one batch, and a steady
        stream costs no scheduling at all.
        """
        if not self.ready:
            return False
        flusher = self._flusher
        if self._epoch == flusher.epoch:
            return False
        self._epoch = flusher.epoch
        flusher.touch()
        self._write((frame,))
        return True

    def defer(self) -> bool:
        """Take over waking the send loop for a frame just queued; False to decline."""
        if not self.ready:
            return False
        if not self._scheduled:
            self._scheduled = True
            self._flusher.add(self)
        return True

    def flush(self) -> None:
        """Write every pending frame now (the flusher calls this)."""
        self._scheduled = False
        if not self._idle or self._failed:
            return  # the send loop is running, or the connection is ending
        subscriber = self._subscriber
        if self._inflight is not None:  # not expected: let the send loop sort it out
            subscriber._wake()
            return
        self._write(subscriber.get_nowait())

    def _write(self, frames: Sequence[Frame]) -> None:
        send = self._send
        for i, frame in enumerate(frames):
            awaitable = send(frame.text)
            coro = awaitable if type(awaitable) is CoroutineType else _wrap(awaitable)
            try:
                first = coro.send(None)
            except StopIteration:
                continue
            except Exception as exc:
                self._give_up(exc)  # never let one client's error reach its caller
                return
            self.inflight = self._loop.create_task(self._finish(coro, first, frames[i + 1 :]))
            return

    async def _finish(
        self, coro: Coroutine[Any, Any, None], first: Any, rest: Sequence[Frame]
    ) -> None:
        try:
            await _Resume(coro, first)
            for frame in rest:
                await self._send(frame.text)
        except Exception as exc:
            self._give_up(exc)
        else:
            self.inflight = None

    def _give_up(self, exc: BaseException) -> None:
        if not self._failed:
            self._failed = True
            self.ready = False
            self._fail(exc)

    async def drain(self) -> None:
        """Wait until a write that suspended, and the rest of its batch, are done."""
        task = self._inflight
        if task is not None:
            await asyncio.wait((task,))
            if task.cancelled():  # frames may not have gone out: do not carry on silently
                self._give_up(asyncio.CancelledError())

    def cancel(self) -> None:
        """Abandon writes still in flight: the connection is ending."""
        task, self._inflight = self._inflight, None
        self.ready = False
        if task is not None and not task.done():
            task.cancel()


class _Handoff:
    """Between :func:`fan_out` and one driver: whose write suspended, and who finishes it."""

    __slots__ = ("taken", "writer")

    def __init__(self) -> None:
        self.writer: DirectWriter | None = None
        self.taken = False


async def _drive(
    frame: Frame,
    subscribers: Iterator[Subscriber],
    epoch: int,
    handoff: _Handoff,
    counters: _Counters,
) -> None:
    # Everything a client's write raises is that client's end, never the fan-out's.
    text = frame.text
    sent = 0
    for subscriber in subscribers:
        writer = subscriber._writer
        if writer is None or not writer.ready or writer._epoch == epoch or subscriber._queue:
            subscriber.push(frame)
            continue
        writer._epoch = epoch
        handoff.writer = writer
        try:
            await writer._send(text)
        except Exception as exc:
            writer._give_up(exc)
        else:
            sent += 1
        if handoff.taken:  # resumed by the task that finishes this write: others go on
            break
    counters.messages_out += sent
    counters.bytes_out += sent * frame.size


def fan_out(frame: Frame, subscribers: Iterable[Subscriber], counters: _Counters) -> None:
    """Deliver ``frame`` to ``subscribers``: direct writes where possible, else push.

    Must run in the event loop of the writers. Each idle client with nothing queued and
    no frame yet in this loop iteration gets the frame written at once; the others get it
    pushed into their outbox.
    """
    flusher = _flusher(asyncio.get_running_loop())
    flusher.touch()  # this iteration's later frames are batched by the flusher
    epoch = flusher.epoch
    remaining = iter(subscribers)
    # Each round ends with the iterator exhausted, or hands one client's suspended write
    # to a task and starts the next round after that client: bounded by their number.
    while True:
        handoff = _Handoff()
        driver = _drive(frame, remaining, epoch, handoff, counters)
        try:
            first = driver.send(None)
        except StopIteration:
            return
        writer = handoff.writer
        assert writer is not None
        handoff.taken = True
        # The task finishes that client's write, as for any write that suspends.
        writer.inflight = writer._loop.create_task(writer._finish(driver, first, ()))
