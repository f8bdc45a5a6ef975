"""Direct writes: on asyncio idle connections are written to without waking a task each.

These drive :class:`~wsbridge.Endpoint` over a recording transport (a stand-in for a
web framework's socket, not for the broker: the broker is the real in-memory one).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from typing import Any

import anyio
import pytest

from wsbridge import Broadcaster, Endpoint, Frame, Subscriber, protocol
from wsbridge.endpoint import TransportClosed

pytestmark = pytest.mark.anyio


class Recorder:
    """A transport that records each frame with the task that wrote it."""

    def __init__(self) -> None:
        self.frames: list[tuple[dict[str, object], asyncio.Task[object] | None]] = []
        self._inbox: deque[str | None] = deque()
        self._arrived = anyio.Event()
        self.gate: anyio.Event | None = None
        self.error: Exception | None = None
        self.closed: tuple[int, str] | None = None
        self._waiters: list[tuple[int, anyio.Event]] = []

    def client_sends(self, text: str | None) -> None:
        """Hand the server a client frame (``None``: the client leaves)."""
        self._inbox.append(text)
        self._arrived.set()

    async def receive(self) -> str | bytes | None:
        while not self._inbox:
            self._arrived = anyio.Event()
            await self._arrived.wait()
        return self._inbox.popleft()

    async def send(self, text: str) -> None:
        if self.error is not None:
            raise self.error
        if self.gate is not None:
            await self.gate.wait()
        self.frames.append((json.loads(text), asyncio.current_task()))
        for n, event in self._waiters:
            if len(self.frames) >= n:
                event.set()

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    async def wait_for(self, n: int) -> None:
        """Return once ``n`` frames were written (bounded)."""
        event = anyio.Event()
        self._waiters.append((n, event))
        if len(self.frames) >= n:
            event.set()
        with anyio.fail_after(5):
            await event.wait()

    def events(self) -> list[object]:
        return [f["data"] for f, _ in self.frames if "channel" in f]


class Recording(Endpoint):
    """An endpoint that keeps the subscriber of each connection it opens, in order."""

    def __init__(self, broadcaster: Broadcaster, **options: Any) -> None:
        super().__init__(broadcaster, **options)
        self.opened: list[Subscriber] = []

    def open(self) -> Subscriber:
        subscriber = super().open()
        self.opened.append(subscriber)
        return subscriber


async def connect(tg: anyio.abc.TaskGroup, endpoint: Endpoint, t: Recorder) -> None:
    """Serve ``t`` and return once its default subscriptions are in place."""
    tg.start_soon(endpoint.serve, t)
    already = len(t.frames)
    t.client_sends('{"type": "ping"}')  # answered after the subscriptions are made
    await t.wait_for(already + 1)
    assert t.frames[-1][0] == {"type": "pong"}


async def pair(
    tg: anyio.abc.TaskGroup, b: Broadcaster, channel: str, **options: Any
) -> tuple[Endpoint, Recorder, Recorder]:
    """An endpoint serving two connected clients of ``channel``."""
    endpoint = Endpoint(b, channels=[channel], idle_timeout=None, **options)
    first, second = Recorder(), Recorder()
    await connect(tg, endpoint, first)
    await connect(tg, endpoint, second)
    return endpoint, first, second


async def until_connections(endpoint: Endpoint, n: int) -> None:
    """Return once ``endpoint`` serves ``n`` connections (bounded)."""
    with anyio.fail_after(5):
        while endpoint.connections != n:
            await anyio.wait_all_tasks_blocked()


def not_a_send_loop(task: asyncio.Task[object] | None) -> bool:
    # The endpoint's send loop is the coroutine of its connection's run() method.
    return task is None or task.get_coro().__qualname__ != "_SendPath.run"


async def test_one_task_writes_every_event_to_every_idle_connection() -> None:
    async with Broadcaster() as b, anyio.create_task_group() as tg:
        endpoint = Endpoint(b, channels=["prices"], idle_timeout=None)
        clients = [Recorder() for _ in range(4)]
        for c in clients:
            await connect(tg, endpoint, c)
        for i in range(5):
            await b.publish("prices", {"i": i})
        for c in clients:
            await c.wait_for(6)
            assert c.events() == [{"i": i} for i in range(5)]
        # With a send loop per connection, each connection's frames would come from its own
        # task. Here the fan-out task writes the first frame of each loop iteration, and the
        # flush at the iteration's end (in no task at all) writes the rest.
        writers = {task for c in clients for f, task in c.frames if "channel" in f}
        assert len(writers) <= 2 < len(clients)
        assert all(not_a_send_loop(w) for w in writers)
        for c in clients:
            c.client_sends(None)
        tg.cancel_scope.cancel()


async def test_a_write_that_suspends_keeps_every_frame_in_order() -> None:
    async with Broadcaster() as b, anyio.create_task_group() as tg:
        _, slow, other = await pair(tg, b, "prices")
        slow.gate = anyio.Event()
        for i in range(20):
            await b.publish("prices", {"i": i})
        await other.wait_for(21)  # the paused connection holds nobody up
        assert other.events() == [{"i": i} for i in range(20)]
        assert slow.events() == []
        slow.gate.set()
        await slow.wait_for(21)
        assert slow.events() == [{"i": i} for i in range(20)]
        # Once the paused write is done, the send loop is out of the way again.
        slow.gate = None
        await b.publish("prices", {"i": 20})
        await slow.wait_for(22)
        assert not_a_send_loop(slow.frames[-1][1])
        tg.cancel_scope.cancel()


@pytest.mark.parametrize("channel", ["prices", "prices:*"])
async def test_the_fan_out_hands_a_suspended_write_to_a_task_and_goes_on(channel: str) -> None:
    # Half the clients' writes suspend. Whatever order the fan-out visits them in, each
    # paused write is finished by a task of its own and the fan-out goes on with the next
    # client, so every other client has the event before any paused one is let through.
    async with Broadcaster() as b, anyio.create_task_group() as tg:
        endpoint = Endpoint(b, channels=[channel], idle_timeout=None)
        clients = [Recorder() for _ in range(6)]
        for c in clients:
            await connect(tg, endpoint, c)
        paused, free = clients[::2], clients[1::2]
        gate = anyio.Event()
        for c in paused:
            c.gate = gate
        before = b.stats().messages_out
        await b.publish("prices:a" if channel.endswith("*") else channel, {"i": 0})
        for c in free:
            await c.wait_for(2)
            assert c.events() == [{"i": 0}]
            assert not_a_send_loop(c.frames[-1][1])
        assert all(c.events() == [] for c in paused)
        gate.set()
        for c in paused:
            await c.wait_for(2)
            assert c.events() == [{"i": 0}]
            assert not_a_send_loop(c.frames[-1][1])
        assert len({c.frames[-1][1] for c in paused}) == len(paused)  # a task each
        assert b.stats().messages_out - before == len(clients)  # counted once each
        tg.cancel_scope.cancel()


async def test_a_closed_connection_gets_no_direct_write() -> None:
    # Closing a subscriber (an idle timeout, say) wakes its send loop to close the socket;
    # an event fanned out before that loop runs must not be written after the close.
    async with Broadcaster() as b, anyio.create_task_group() as tg:
        endpoint = Recording(b, channels=["prices"], idle_timeout=None)
        closing, ok = Recorder(), Recorder()
        await connect(tg, endpoint, closing)
        await connect(tg, endpoint, ok)
        opened = endpoint.opened
        first, _ = opened
        first.close(4000, "idle timeout")
        frame = Frame("prices", protocol.encode_event("prices", '{"i": 0}'))
        for subscriber in opened:  # what the fan-out does, in the same loop iteration
            subscriber.push(frame)
        await ok.wait_for(2)
        with anyio.fail_after(5):
            while closing.closed is None:
                await anyio.wait_all_tasks_blocked()
        assert closing.closed == (4000, "idle timeout")
        assert closing.events() == []
        tg.cancel_scope.cancel()


async def test_a_connection_whose_write_fails_ends_alone() -> None:
    async with Broadcaster() as b, anyio.create_task_group() as tg:
        endpoint, gone, ok = await pair(tg, b, "prices")
        gone.error = TransportClosed()
        await b.publish("prices", {"i": 0})
        await b.publish("prices", {"i": 1})
        await ok.wait_for(3)
        assert ok.events() == [{"i": 0}, {"i": 1}]
        await until_connections(endpoint, 1)
        assert b.running
        await b.publish("prices", {"i": 2})
        await ok.wait_for(4)
        tg.cancel_scope.cancel()


async def test_an_unexpected_send_error_is_logged_and_ends_that_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with Broadcaster() as b, anyio.create_task_group() as tg:
        endpoint, broken, ok = await pair(tg, b, "prices")
        broken.error = ValueError("framework bug")
        with caplog.at_level(logging.ERROR, logger="wsbridge"):
            await b.publish("prices", {"i": 0})
            await ok.wait_for(2)
            await until_connections(endpoint, 1)
        assert "sending to a client failed" in caplog.text
        assert "framework bug" in caplog.text
        assert b.running
        tg.cancel_scope.cancel()


async def test_a_slow_connection_is_closed_as_a_slow_consumer() -> None:
    async with Broadcaster() as b, anyio.create_task_group() as tg:
        _, slow, ok = await pair(tg, b, "trades", max_buffer_messages=5)
        slow.gate = anyio.Event()
        for i in range(10):
            await b.publish("trades", {"i": i})
        await ok.wait_for(11)
        assert ok.events() == [{"i": i} for i in range(10)]
        assert b.stats().slow_consumer_disconnects == 1
        slow.gate.set()  # the client reads again: the write it blocked, then the close
        with anyio.fail_after(5):
            while slow.closed is None:
                await anyio.wait_all_tasks_blocked()
        assert slow.closed[0] == 4008
        got = slow.events()
        assert 0 < len(got) < 10
        assert got == [{"i": i} for i in range(len(got))]  # in order, nothing skipped
        tg.cancel_scope.cancel()


@pytest.mark.parametrize("channel", ["prices", "prices:*"])
async def test_connections_of_different_kinds_on_one_channel_each_get_every_event(
    channel: str,
) -> None:
    # The fan-out offers a frame to each group of connections in one call: clients read
    # with ``async for`` (no group) joining between endpoint clients (one group) must
    # split nobody's events, and each delivery is counted once.
    published = "prices:a" if channel.endswith("*") else channel
    async with Broadcaster() as b, anyio.create_task_group() as tg:
        endpoint = Endpoint(b, channels=[channel], idle_timeout=None)
        clients: list[Recorder] = []
        readers: list[Subscriber] = []
        for _ in range(3):
            client = Recorder()
            await connect(tg, endpoint, client)
            clients.append(client)
            reader = b.subscriber()
            await reader.__aenter__()
            await reader.subscribe([channel])
            readers.append(reader)
        before = b.stats().messages_out
        for i in range(3):
            await b.publish(published, {"i": i})
        for client in clients:
            await client.wait_for(4)
            assert client.events() == [{"i": i} for i in range(3)]
        for reader in readers:
            got: list[object] = []
            with anyio.fail_after(5):
                while len(got) < 3:
                    got += [json.loads(f.text)["data"] for f in await reader.get()]
            assert got == [{"i": i} for i in range(3)]
            await reader.aclose()
        assert b.stats().messages_out - before == 3 * (len(clients) + len(readers))
        tg.cancel_scope.cancel()


class Stepped(Recorder):
    """A recorder whose ``n``-th event frame (from 0) suspends until ``gate``, or raises."""

    def __init__(self, n: int, *, error: Exception | None = None) -> None:
        super().__init__()
        self.n = n
        self.fail_with = error
        self.step_gate = anyio.Event()
        self.seen = 0

    async def send(self, text: str) -> None:
        if "channel" in json.loads(text):
            index, self.seen = self.seen, self.seen + 1
            if index == self.n:
                if self.fail_with is not None:
                    raise self.fail_with
                await self.step_gate.wait()
        await super().send(text)


async def burst(
    tg: anyio.abc.TaskGroup, b: Broadcaster, clients: list[Recorder], count: int
) -> Endpoint:
    """Connect ``clients``, then push ``count`` frames to each in one loop iteration."""
    endpoint = Recording(b, channels=["prices"], idle_timeout=None)
    for c in clients:
        await connect(tg, endpoint, c)
    frames = [
        Frame("prices", protocol.encode_event("prices", json.dumps({"i": i}))) for i in range(count)
    ]
    for frame in frames:  # as the fan-out does with a burst from the broker
        for subscriber in endpoint.opened:
            subscriber.push(frame)
    return endpoint


async def test_a_batch_whose_write_suspends_midway_finishes_in_order() -> None:
    # The first frame of the iteration is written at once; the rest go out together as
    # the iteration ends, in one driver per connection. The third suspends: the others
    # of its batch follow it in order, and the other connection is not held up.
    async with Broadcaster() as b, anyio.create_task_group() as tg:
        paused, free = Stepped(2), Recorder()
        await burst(tg, b, [paused, free], 6)
        await free.wait_for(7)
        assert free.events() == [{"i": i} for i in range(6)]
        await paused.wait_for(3)
        assert paused.events() == [{"i": 0}, {"i": 1}]
        paused.step_gate.set()
        await paused.wait_for(7)
        assert paused.events() == [{"i": i} for i in range(6)]
        assert all(not_a_send_loop(task) for _, task in paused.frames[1:])
        assert b.running
        tg.cancel_scope.cancel()


async def test_a_batch_whose_write_fails_midway_ends_that_connection_alone() -> None:
    async with Broadcaster() as b, anyio.create_task_group() as tg:
        broken, ok = Stepped(2, error=TransportClosed()), Recorder()
        endpoint = await burst(tg, b, [broken, ok], 6)
        await ok.wait_for(7)
        assert ok.events() == [{"i": i} for i in range(6)]
        await until_connections(endpoint, 1)
        assert broken.events() == [{"i": 0}, {"i": 1}]  # nothing after the failed write
        assert b.running
        await b.publish("prices", {"i": 6})
        await ok.wait_for(8)
        tg.cancel_scope.cancel()
