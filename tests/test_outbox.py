"""The outbox alone: bounds, conflation of state channels, overflow policies. No event loop.

A hypothesis state machine checks it against a model written the obvious way: a list of
frames, rebuilt on every push.
"""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from wsbridge import ConfigurationError, Frame, OverflowPolicy
from wsbridge.outbox import QUEUED, REFUSED, Outbox, Pushed


def frame(channel: str, text: str = "x", *, state: bool = False) -> Frame:
    return Frame(channel, text, conflatable=state)


def test_frames_come_out_in_order_and_the_outbox_is_then_empty() -> None:
    box = Outbox(max_messages=3)
    frames = [frame("a", str(i)) for i in range(3)]
    assert all(box.push(f) is QUEUED for f in frames)
    assert len(box) == 3
    assert box.bytes == 3
    assert box.take() == frames
    assert len(box) == 0
    assert box.bytes == 0
    assert box.take() == []


def test_the_byte_bound_counts_utf8_bytes() -> None:
    box = Outbox(max_bytes=5)
    assert box.push(frame("a", "é")) is QUEUED  # 2 bytes
    assert box.push(frame("a", "abc")) is QUEUED
    assert box.bytes == 5
    assert box.push(frame("a", "z")) == Pushed(False, overflow=True)


def test_a_full_outbox_conflates_a_state_channel_first() -> None:
    box = Outbox(max_messages=3)
    box.push(frame("price", "1", state=True))
    box.push(frame("trade", "t"))
    box.push(frame("price", "2", state=True))
    newest = frame("price", "3", state=True)
    assert box.push(newest) == Pushed(True, conflated=2)
    assert box.bytes == 2
    assert [f.text for f in box.take()] == ["t", "3"]


def test_conflation_that_frees_too_little_still_overflows() -> None:
    box = Outbox(max_messages=2, max_bytes=10, policy=OverflowPolicy.DROP)
    box.push(frame("price", "1", state=True))
    box.push(frame("trade", "123456789"))
    assert box.push(frame("price", "1234", state=True)) == Pushed(False, conflated=1, dropped=True)
    assert [f.text for f in box.take()] == ["123456789"]


def test_drop_discards_the_new_frame_and_keeps_the_outbox_open() -> None:
    box = Outbox(max_messages=1, policy="drop")
    kept = frame("a", "1")
    box.push(kept)
    assert box.push(frame("a", "2")) == Pushed(False, dropped=True)
    assert not box.closed
    assert box.take() == [kept]


def test_a_control_frame_is_never_dropped_it_overflows() -> None:
    box = Outbox(max_messages=1, policy=OverflowPolicy.DROP)
    box.push(frame("a"))
    assert box.push(frame("", '{"type":"pong"}')) == Pushed(False, overflow=True)
    assert box.closed


def test_disconnect_closes_the_outbox_and_discards_everything() -> None:
    box = Outbox(max_messages=1)
    box.push(frame("a"))
    assert box.push(frame("a")) == Pushed(False, overflow=True)
    assert box.closed
    assert len(box) == 0
    assert box.push(frame("a")) is REFUSED


def test_close_discards_and_refuses() -> None:
    box = Outbox()
    box.push(frame("a"))
    box.close()
    assert box.take() == []
    assert box.push(frame("a")) is REFUSED


@pytest.mark.parametrize(("messages", "size"), [(0, 1), (1, 0), (-1, 10)])
def test_limits_must_be_positive(messages: int, size: int) -> None:
    with pytest.raises(ConfigurationError):
        Outbox(max_messages=messages, max_bytes=size)


class OutboxModel(RuleBasedStateMachine):
    """The outbox against a model that recomputes everything from a plain list."""

    @initialize(
        max_messages=st.integers(1, 6),
        max_bytes=st.integers(1, 12),
        policy=st.sampled_from(list(OverflowPolicy)),
    )
    def setup(self, max_messages: int, max_bytes: int, policy: OverflowPolicy) -> None:
        self.box = Outbox(max_messages=max_messages, max_bytes=max_bytes, policy=policy)
        self.limits = (max_messages, max_bytes)
        self.policy = policy
        self.model: list[Frame] = []
        self.closed = False

    def _fits(self, frames: list[Frame], new: Frame) -> bool:
        count, size = self.limits
        return len(frames) + 1 <= count and sum(f.size for f in frames) + new.size <= size

    @rule(
        channel=st.sampled_from(["", "a", "s1", "s1", "s2"]),
        text=st.text(alphabet="xé€", min_size=1, max_size=3),
    )
    def push(self, channel: str, text: str) -> None:
        new = Frame(channel, text, conflatable=channel.startswith("s"))
        result = self.box.push(new)
        if self.closed:
            assert result is REFUSED
            return
        if self._fits(self.model, new):
            self.model.append(new)
            assert result is QUEUED
            return
        kept = self.model
        if new.conflatable:
            kept = [f for f in self.model if f.channel != new.channel]
        conflated = len(self.model) - len(kept)
        self.model = kept
        if new.conflatable and self._fits(kept, new):
            self.model.append(new)
            assert result == Pushed(True, conflated=conflated)
        elif self.policy is OverflowPolicy.DROP and new.channel:
            assert result == Pushed(False, conflated=conflated, dropped=True)
        else:
            assert result == Pushed(False, conflated=conflated, overflow=True)
            self.model = []
            self.closed = True

    @rule()
    def take(self) -> None:
        assert self.box.take() == self.model
        self.model = []

    @rule()
    def close(self) -> None:
        self.box.close()
        self.model = []
        self.closed = True

    @invariant()
    def matches_the_model(self) -> None:
        count, size = self.limits
        assert len(self.box) == len(self.model) <= count
        assert self.box.bytes == sum(f.size for f in self.model) <= size
        assert self.box.closed == self.closed


TestOutboxModel = OutboxModel.TestCase
# Small bounds and many steps: most runs fill the outbox and conflate several times.
TestOutboxModel.settings = settings(
    max_examples=max(200, settings.default.max_examples), stateful_step_count=40
)
