"""Direct writes from the fan-out, without waking a task per client (asyncio only).

A connection's send loop costs one task wake-up per client per event at steady rates:
that wake-up, not the write, dominated the ASGI adapters' CPU profile. While the send
loop is idle and the outbox empty, :class:`DirectWriter` runs the transport's ``send()``
coroutine in place, inside the fan-out. Servers write to a socket without suspending
unless it is paused, so the coroutine almost always finishes there and then. When it
does suspend, a task takes it over from that exact point, and until that task is done
every later frame goes to the outbox, so frames stay in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Generator
from typing import Any

from wsbridge.broadcaster import Frame

__all__ = ["DirectWriter"]

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


class DirectWriter:
    """A subscriber sink that writes through ``send`` in place while the send loop idles.

    ``fail`` is called, at most once, when a direct write raises: the connection is gone
    or broken, and the caller ends it.
    """

    __slots__ = ("_fail", "_failed", "_loop", "_send", "idle", "inflight")

    def __init__(
        self,
        send: Callable[[str], Coroutine[Any, Any, None]],
        fail: Callable[[BaseException], None],
    ) -> None:
        self._send = send
        self._fail = fail
        self._failed = False
        self._loop = asyncio.get_running_loop()
        #: True while the send loop waits for frames; only then may the sink write.
        self.idle = False
        #: The task finishing a write that suspended, while it runs.
        self.inflight: asyncio.Task[None] | None = None

    def __call__(self, frame: Frame) -> bool:
        """Write ``frame`` now if nothing else is being written; True if it was taken."""
        if not self.idle or self.inflight is not None or self._failed:
            return False
        coro = self._send(frame.text)
        try:
            first = coro.send(None)
        except StopIteration:
            return True
        except Exception as exc:
            # Never let one client's error reach the fan-out that called us.
            self._give_up(exc)
            return True
        self.inflight = self._loop.create_task(self._finish(coro, first))
        return True

    async def _finish(self, coro: Coroutine[Any, Any, None], first: Any) -> None:
        try:
            await _Resume(coro, first)
        except Exception as exc:
            self._give_up(exc)
        else:
            self.inflight = None

    def _give_up(self, exc: BaseException) -> None:
        if not self._failed:
            self._failed = True
            self._fail(exc)

    async def drain(self) -> None:
        """Wait until a write that suspended has finished (the send loop calls this)."""
        task = self.inflight
        if task is not None:
            await asyncio.wait((task,))
            if task.cancelled():  # the frame may not have gone out: do not carry on silently
                self._give_up(asyncio.CancelledError())

    def cancel(self) -> None:
        """Abandon a write still in flight: the connection is ending."""
        task, self.inflight = self.inflight, None
        if task is not None and not task.done():
            task.cancel()
