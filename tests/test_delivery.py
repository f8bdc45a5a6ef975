"""wsbridge.delivery: sends started in place, and the one flusher per event loop.

``start_send`` is the one place that steps a coroutine by hand; these check it with a
``send()`` that finishes at once, suspends, raises before or after suspending, and is
cancelled while suspended. asyncio only, as the code it tests.
"""

from __future__ import annotations

import asyncio

import pytest

from wsbridge.delivery import Flusher, Suspended, flusher, start_send

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Send:
    """A stand-in for a server's ``send()``: records what ran, optionally waits or fails."""

    def __init__(self) -> None:
        self.gate: asyncio.Future[None] | None = None
        self.error: Exception | None = None
        self.late_error: Exception | None = None
        self.log: list[str] = []

    async def __call__(self, text: str) -> None:
        self.log.append(f"start {text}")
        if self.error is not None:
            raise self.error
        try:
            if self.gate is not None:
                await self.gate
        except asyncio.CancelledError:
            self.log.append(f"cancelled {text}")
            raise
        if self.late_error is not None:
            raise self.late_error
        self.log.append(f"done {text}")


async def test_a_send_that_does_not_wait_finishes_in_place() -> None:
    send = Send()
    assert start_send(send("a")) is None
    assert send.log == ["start a", "done a"]


async def test_a_send_that_raises_at_once_raises_to_the_caller() -> None:
    send = Send()
    send.error = ConnectionError("gone")
    with pytest.raises(ConnectionError):
        start_send(send("a"))


async def test_a_send_that_suspends_is_finished_by_whoever_awaits_the_rest() -> None:
    send = Send()
    send.gate = asyncio.get_running_loop().create_future()
    rest = start_send(send("a"))
    assert isinstance(rest, Suspended)
    assert send.log == ["start a"]
    task = asyncio.get_running_loop().create_task(_await(rest))
    await asyncio.sleep(0)
    assert not task.done()
    send.gate.set_result(None)
    await asyncio.wait_for(task, 5)
    assert send.log == ["start a", "done a"]


async def test_an_error_after_suspending_reaches_the_awaiting_task() -> None:
    send = Send()
    send.gate = asyncio.get_running_loop().create_future()
    send.late_error = ConnectionResetError("reset")
    rest = start_send(send("a"))
    assert rest is not None
    task = asyncio.get_running_loop().create_task(_await(rest))
    send.gate.set_result(None)
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(task, 5)


async def test_cancelling_the_awaiting_task_cancels_the_send_where_it_waits() -> None:
    send = Send()
    send.gate = asyncio.get_running_loop().create_future()
    rest = start_send(send("a"))
    assert rest is not None
    task = asyncio.get_running_loop().create_task(_await(rest))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert send.log == ["start a", "cancelled a"]


async def test_an_awaitable_that_is_not_a_coroutine_is_started_too() -> None:
    done = asyncio.get_running_loop().create_future()
    rest = start_send(done)
    assert rest is not None
    done.set_result(None)
    await asyncio.wait_for(_await(rest), 5)
    finished = asyncio.get_running_loop().create_future()
    finished.set_result(None)
    assert start_send(finished) is None


async def _await(rest: Suspended) -> None:
    await rest


class Recorded:
    def __init__(self, log: list[tuple[str, int]], name: str, flush: Flusher) -> None:
        self.log, self.name, self.flusher = log, name, flush

    def flush(self) -> None:
        self.log.append((self.name, self.flusher.epoch))


async def test_one_flusher_per_loop_runs_every_connection_once_per_iteration() -> None:
    shared = flusher()
    assert shared is not None
    assert flusher() is shared
    log: list[tuple[str, int]] = []
    epoch = shared.epoch
    for name in ("a", "b"):
        shared.add(Recorded(log, name, shared))
    assert log == []  # nothing runs before the iteration ends
    await asyncio.sleep(0)
    assert log == [("a", epoch + 1), ("b", epoch + 1)]
    shared.touch()
    shared.touch()
    await asyncio.sleep(0)
    assert shared.epoch == epoch + 2  # one run per iteration, however often touched


async def test_there_is_no_flusher_outside_asyncio() -> None:
    assert flusher() is not None
    assert await asyncio.to_thread(flusher) is None
