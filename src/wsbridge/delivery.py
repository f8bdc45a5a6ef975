"""Delivery helpers for asyncio: one flusher per event loop, and sends started in place.

:class:`Flusher`
    Connections that batch frames (the endpoint's send path and the standalone server)
    register here when they have frames to write, and the flusher calls their ``flush()``
    once, at the end of the current event-loop iteration: a burst costs each socket one
    write of many frames. Its :attr:`~Flusher.epoch` counts those iterations, so that a
    connection can tell the first frame of an iteration (written at once) from the later
    ones (batched). There is one per event loop (:func:`flusher`).

:func:`start_send`
    Writing from the fan-out without a task per client means running a server's
    ``send()`` coroutine in place. The endpoint runs one driver coroutine per event this
    way, which awaits each ready client's ``send()`` in turn (a plain ``await`` each), and
    one per client for the frames the flusher writes together.
    Servers write without suspending unless the socket is full, so this almost always
    finishes there and then; when it suspends, the returned
    :class:`Suspended` is awaited by a task of its own, which finishes the write from the
    exact point where it stopped. This is the one place in wsbridge that steps a coroutine
    by hand.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Coroutine, Generator
from types import CoroutineType
from typing import Any, Protocol

__all__ = ["Flushable", "Flusher", "Suspended", "flusher", "start_send"]


class Flushable(Protocol):
    """A connection the flusher writes for: its frames pending, written by :meth:`flush`."""

    def flush(self) -> None:
        """Write everything pending now; never raises."""
        ...


class Flusher:
    """Calls ``flush()`` of every registered connection once, as an iteration ends."""

    __slots__ = ("_loop", "_pending", "epoch", "scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._pending: list[Flushable] = []
        #: True while a run is scheduled for the end of this iteration (read only).
        self.scheduled = False
        #: Advances once per event-loop iteration in which the flusher ran (read only).
        self.epoch = 0

    def touch(self) -> None:
        """Make sure this iteration ends with a run, which advances :attr:`epoch`."""
        if not self.scheduled:
            self.scheduled = True
            self._loop.call_soon(self._run)

    def add(self, connection: Flushable) -> None:
        """Flush ``connection`` at the end of this iteration (add it once per iteration)."""
        self._pending.append(connection)
        if not self.scheduled:
            self.scheduled = True
            self._loop.call_soon(self._run)

    def _run(self) -> None:
        self.scheduled = False
        self.epoch += 1
        pending, self._pending = self._pending, []
        for connection in pending:
            connection.flush()


_flushers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Flusher] = (
    weakref.WeakKeyDictionary()
)


def flusher() -> Flusher | None:
    """The running asyncio loop's flusher; ``None`` outside asyncio (under trio)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    found = _flushers.get(loop)
    if found is None:
        found = _flushers[loop] = Flusher(loop)
    return found


class Suspended:
    """A send that suspended: await it (in a task) to finish it from where it stopped.

    The awaiting task sees exactly what the coroutine yields from then on, and passes
    results and exceptions, cancellation included, back into it.
    """

    __slots__ = ("_coro", "_first")

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self._coro = coro
        self._first = first

    def __await__(self) -> Generator[Any, Any, None]:
        coro, value = self._coro, self._first
        while True:
            try:
                sent = yield value
            except BaseException as exc:  # handed to the coroutine, as a task would
                try:
                    value = coro.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    value = coro.send(sent)
                except StopIteration:
                    return


async def _wrap(awaitable: Awaitable[None]) -> None:
    await awaitable


def start_send(awaitable: Awaitable[None]) -> Suspended | None:
    """Run ``awaitable`` until it first suspends, in the caller's stack.

    Returns ``None`` once it has finished, raises what it raised, or returns the
    :class:`Suspended` rest of it, which must then be awaited (or closed by dropping it,
    which runs its cleanup).
    """
    coro = awaitable if type(awaitable) is CoroutineType else _wrap(awaitable)
    try:
        first = coro.send(None)
    except StopIteration:
        return None
    return Suspended(coro, first)
