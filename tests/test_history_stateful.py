"""A state machine against a real redis-server: publishes, clients that drop and resume,
the bridge's broker connection killed (``CLIENT KILL TYPE pubsub``) and the history
trimmed, at random. One of the clients holds the channels through a pattern.

The model is the published sequence per channel. At the end every client, connected or
resumed once more, must have seen exactly that sequence from where it started, each
event once and in order; or, for a channel it was told it could not recover (by the
acknowledgement of its resume, or by a ``position`` frame when the bridge itself could
not read back what it missed), a gapless run of it from the position it was given up to
the end.
"""

from __future__ import annotations

import json
import uuid
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
import redis
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

from tests.support.redis_server import scaled
from wsbridge import Broadcaster
from wsbridge.backends.redis import history_keys
from wsbridge.broadcaster import Subscriber
from wsbridge.history import History, Position
from wsbridge.schema import Registry

pytestmark = pytest.mark.redis

CLIENTS = 3  # the last one subscribes to the pattern of the channels


@dataclass
class Seen:
    """What one client saw of one channel."""

    epoch: str = ""
    start: int = 0  # the position it started from (or was given after recovered: false)
    offsets: list[int] = field(default_factory=list)

    @property
    def last(self) -> int:
        return self.offsets[-1] if self.offsets else self.start


@dataclass
class Model:
    """A client: its subscriber while connected, and what it saw per channel."""

    context: AbstractContextManager[Subscriber] | None = None
    subscriber: Subscriber | None = None
    seen: dict[str, Seen] = field(default_factory=dict)


class Recovery(RuleBasedStateMachine):
    url: str

    def __init__(self) -> None:
        super().__init__()
        prefix = uuid.uuid4().hex[:8]
        self.channels = [f"ev:{prefix}:a", f"ev:{prefix}:b"]
        self.pattern = f"ev:{prefix}:*"
        self.published = dict.fromkeys(self.channels, 0)
        registry = Registry(history={"ev:*": History(size=10_000, ttl=600)})
        self.portal_cm = start_blocking_portal()
        self.portal: BlockingPortal = self.portal_cm.__enter__()
        self.bridge_cm = self.portal.wrap_async_context_manager(
            Broadcaster(
                self.url,
                registry=registry,
                reconnect_delay=0.02,
                max_reconnect_delay=0.1,
                health_check_interval=0,
            )
        )
        self.bridge = self.bridge_cm.__enter__()
        self.publisher_cm = self.portal.wrap_async_context_manager(
            Broadcaster(self.url, registry=registry)
        )
        self.publisher = self.publisher_cm.__enter__()
        self.admin = redis.Redis.from_url(self.url)
        self.clients = [Model() for _ in range(CLIENTS)]
        for index in range(CLIENTS):
            self._connect(index)

    # -- helpers ---------------------------------------------------------------------

    def _connect(self, index: int) -> None:
        client = self.clients[index]
        context = self.portal.wrap_async_context_manager(self.bridge.subscriber())
        subscriber = context.__enter__()
        since = {
            ch: Position(seen.epoch, seen.last) for ch, seen in client.seen.items() if seen.epoch
        }
        through_pattern = index == CLIENTS - 1
        names = [self.pattern] if through_pattern else self.channels
        resumed = self.portal.call(
            lambda: subscriber.subscribe(names, since=since, max_replay=100_000)
        )
        for ch in self.channels:
            if through_pattern and ch not in since:
                continue  # its position comes before its first event
            result = resumed[ch]
            assert result.position is not None
            seen = client.seen.setdefault(ch, Seen())
            if ch not in since:
                seen.epoch, seen.start = result.position.epoch, result.position.offset
            elif result.recovered is not True:
                # Told so: from here on, a gapless run from the position given.
                seen.epoch, seen.start = result.position.epoch, result.position.offset
                seen.offsets = []
        client.context, client.subscriber = context, subscriber

    def _read(self, client: Model) -> None:
        subscriber = client.subscriber
        assert subscriber is not None
        frames = self.portal.call(self._take, subscriber)
        for frame in frames:
            self._see(client, json.loads(frame.text))

    @staticmethod
    def _see(client: Model, frame: dict[str, Any]) -> None:
        if frame.get("type") == "position":
            for channel, position in frame["positions"].items():
                if "recovered" in position:
                    # The server could not fill a gap: a gapless run from the position given.
                    assert position["recovered"] is False, frame
                    seen = client.seen[channel]
                else:  # the first event of a channel reached through the pattern follows
                    assert not client.seen.get(channel, Seen()).epoch, frame
                    seen = client.seen.setdefault(channel, Seen())
                seen.epoch, seen.start, seen.offsets = position["epoch"], position["offset"], []
        elif "type" not in frame:
            client.seen[frame["channel"]].offsets.append(frame["offset"])

    @staticmethod
    async def _take(subscriber: Subscriber) -> list[Any]:
        return subscriber.get_nowait()

    async def _read_for(self, client: Model, seconds: float) -> None:
        subscriber = client.subscriber
        assert subscriber is not None
        with anyio.move_on_after(seconds):
            frames = await subscriber.get()
            assert frames, (subscriber.close_code, subscriber.close_reason)
            for frame in frames:
                self._see(client, json.loads(frame.text))

    async def _collect(self, client: Model) -> None:
        subscriber = client.subscriber
        assert subscriber is not None
        with anyio.fail_after(scaled(15)):
            while any(
                client.seen.get(ch, Seen()).last < self.published[ch] for ch in self.channels
            ):
                frames = await subscriber.get()
                assert frames, (subscriber.close_code, subscriber.close_reason)
                for frame in frames:
                    self._see(client, json.loads(frame.text))

    # -- rules -------------------------------------------------------------------------

    @rule(channel=st.sampled_from([0, 1]), n=st.integers(1, 5))
    def publish(self, channel: int, n: int) -> None:
        name = self.channels[channel]
        for _ in range(n):
            self.portal.call(self.publisher.publish, name, {"n": self.published[name] + 1})
            self.published[name] += 1

    @rule(index=st.integers(0, CLIENTS - 1))
    def read(self, index: int) -> None:
        if self.clients[index].subscriber is not None:
            self._read(self.clients[index])

    @rule(index=st.integers(0, CLIENTS - 1))
    def drop(self, index: int) -> None:
        client = self.clients[index]
        if client.context is None:
            return
        self._read(client)  # what arrived before the drop was seen; the rest is missed
        client.context.__exit__(None, None, None)
        client.context = client.subscriber = None

    @rule(index=st.integers(0, CLIENTS - 1))
    def resume(self, index: int) -> None:
        if self.clients[index].context is None:
            self._connect(index)

    @rule()
    def kill_the_bridges_broker_connection(self) -> None:
        self.admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")

    @rule(channel=st.sampled_from([0, 1]))
    def trim_the_history(self, channel: int) -> None:
        # As MAXLEN or an expiry would: the epoch stays, the events are gone.
        self.admin.xtrim(history_keys(self.channels[channel])[0], maxlen=0)

    @invariant()
    def never_a_duplicate_or_a_gap(self) -> None:
        for client in self.clients:
            for seen in client.seen.values():
                expected = list(range(seen.start + 1, seen.start + 1 + len(seen.offsets)))
                assert seen.offsets == expected, (seen.start, seen.offsets)

    def teardown(self) -> None:
        try:
            for index, client in enumerate(self.clients):
                if client.context is None:
                    self._connect(index)
            # The pattern's client may not know a channel yet (none of its events came
            # through the pattern): it learns of it from its first event. One published
            # while the bridge's broker connection is down is not delivered through the
            # pattern (docs/guarantees.md): publish again until each one is known.
            watcher = self.clients[-1]
            for _ in range(50):
                unseen = [
                    i
                    for i, ch in enumerate(self.channels)
                    if not watcher.seen.get(ch, Seen()).epoch
                ]
                if not unseen:
                    break
                for i in unseen:
                    self.publish(i, 1)
                self.portal.call(self._read_for, watcher, 0.5)
            else:
                raise AssertionError("the pattern's client never heard of a channel")
            # Everything published reaches everyone, in a bounded time.
            for client in self.clients:
                self.portal.call(self._collect, client)
                for ch in self.channels:
                    seen = client.seen[ch]
                    whole = list(range(seen.start + 1, self.published[ch] + 1))
                    assert seen.offsets == whole, (ch, seen, self.published[ch])
        finally:
            for client in self.clients:
                if client.context is not None:
                    client.context.__exit__(None, None, None)
            self.publisher_cm.__exit__(None, None, None)
            self.bridge_cm.__exit__(None, None, None)
            self.portal_cm.__exit__(None, None, None)
            self.admin.close()


def test_every_client_ends_with_the_published_sequence(redis_url: str) -> None:
    Recovery.url = redis_url
    run_state_machine_as_test(
        Recovery,
        settings=settings(
            max_examples=30,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
