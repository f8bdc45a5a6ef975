from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from wsbridge import ConfigurationError, Session, SessionLimits
from wsbridge.protocol import subscription_ack
from wsbridge.session import Close, Reply, Subscribe, Unsubscribe


def replies(commands: list[object]) -> list[dict[str, object]]:
    """The frames the client gets, if the broker confirms every subscription."""
    out: list[dict[str, object]] = []
    for c in commands:
        if isinstance(c, Reply):
            out.append(json.loads(c.text))
        elif isinstance(c, Subscribe) and c.ack is not None:  # as the endpoint answers
            ack = subscription_ack("subscribed", list(c.ack), request_id=c.request_id)
            out.append(json.loads(ack))
    return out


def test_start_subscribes_default_channels_silently() -> None:
    session = Session(default_channels=["a", "b"])
    assert session.start() == [Subscribe(("a", "b"))]
    assert session.subscriptions == ("a", "b")


def test_start_skips_forbidden_defaults() -> None:
    session = Session(default_channels=["a", "secret"], authorize=lambda ch: ch != "secret")
    assert session.start() == [Subscribe(("a",))]


def test_ping_gets_pong() -> None:
    assert Session().receive_text('{"type": "ping"}') == [Reply('{"type":"pong"}')]


def test_subscribe_is_acknowledged_after_the_subscription() -> None:
    session = Session()
    commands = session.receive_text(
        '{"type": "subscribe", "channels": ["risk:*", "a", "a"], "id": 9}'
    )
    assert commands == [Subscribe(("risk:*", "a"), ack=("risk:*", "a"), request_id=9)]
    assert replies(commands) == [{"type": "subscribed", "channels": ["risk:*", "a"], "id": 9}]


def test_a_refused_subscription_is_forgotten_and_reported() -> None:
    session = Session(default_channels=["a"])
    session.start()
    session.receive_text('{"type": "subscribe", "channels": ["b", "c"], "id": 4}')
    out = [json.loads(r.text) for r in session.refused(["c"], 4)]
    assert out == [
        {
            "type": "error",
            "code": "subscription_refused",
            "message": "the broker refused the subscription to 'c'",
            "id": 4,
            "channel": "c",
        }
    ]
    assert session.subscriptions == ("a", "b")
    # Asking again tries the broker again.
    commands = session.receive_text('{"type": "subscribe", "channels": ["c"]}')
    assert commands == [Subscribe(("c",), ack=("c",))]


def test_resubscribe_is_idempotent() -> None:
    session = Session(default_channels=["a"])
    session.start()
    commands = session.receive_text('{"type": "subscribe", "channels": ["a"]}')
    # Nothing new to subscribe; the driver acknowledges, with the channel's position.
    assert commands == [Subscribe((), ack=("a",))]
    assert session.subscriptions == ("a",)


def test_unsubscribe_only_what_is_held() -> None:
    session = Session(default_channels=["a"])
    session.start()
    commands = session.receive_text('{"type": "unsubscribe", "channels": ["a", "zzz"]}')
    assert commands[0] == Unsubscribe(("a",))
    assert replies(commands) == [{"type": "unsubscribed", "channels": ["a", "zzz"]}]
    assert session.subscriptions == ()


def test_forbidden_channel_gets_an_error_naming_it() -> None:
    session = Session(authorize=lambda ch: not ch.startswith("trade:pending"))
    commands = session.receive_text(
        '{"type": "subscribe", "channels": ["trade:pending_approval", "x"]}'
    )
    out = replies(commands)
    assert out[0]["code"] == "forbidden"
    assert out[0]["channel"] == "trade:pending_approval"
    assert out[1] == {"type": "subscribed", "channels": ["x"]}
    assert session.subscriptions == ("x",)
    # Nothing accepted: still one answer, so a client waiting for it is not left hanging.
    out = replies(session.receive_text('{"type": "subscribe", "channels": ["trade:pending_x"]}'))
    assert [f.get("code") for f in out] == ["forbidden", None]
    assert out[1] == {"type": "subscribed", "channels": []}


def test_subscription_limit() -> None:
    session = Session(limits=SessionLimits(max_subscriptions=2))
    session.receive_text('{"type": "subscribe", "channels": ["a", "b"]}')
    out = replies(session.receive_text('{"type": "subscribe", "channels": ["c"]}'))
    assert out == [
        {"type": "error", "code": "too_many_subscriptions", "message": out[0]["message"]}
    ]
    assert session.subscriptions == ("a", "b")


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("nope", "invalid_json"),
        ("[]", "not_an_object"),
        ("null", "not_an_object"),
        ("{}", "missing_type"),
        ('{"type": null}', "missing_type"),
        ('{"type": []}', "invalid_field"),
        ('{"type": "pong"}', "unknown_type"),
        ('{"type": "subscribe"}', "invalid_field"),
        ('{"type": "subscribe", "channels": []}', "invalid_field"),
        ('{"type": "subscribe", "channels": [""]}', "invalid_channel"),
        ('{"type": "subscribe", "channels": ["a\\nb"]}', "invalid_channel"),
    ],
)
def test_bad_frames_get_error_codes(text: str, code: str) -> None:
    out = replies(Session().receive_text(text))
    assert len(out) == 1
    assert out[0]["type"] == "error"
    assert out[0]["code"] == code


def test_error_echoes_request_id() -> None:
    out = replies(Session().receive_text('{"type": "subscribe", "channels": 3, "id": "abc"}'))
    assert out[0]["id"] == "abc"


def test_binary_frame_gets_an_error() -> None:
    out = replies(Session().receive_bytes(b"\x00"))
    assert out[0]["code"] == "binary_unsupported"


def test_oversize_frame_closes_1009() -> None:
    session = Session(limits=SessionLimits(max_frame_bytes=100))
    assert session.receive_text("x" * 101) == [Close(1009, "frame too large")]
    assert session.closed
    assert session.receive_text('{"type":"ping"}') == []


def test_oversize_is_measured_in_utf8_bytes() -> None:
    session = Session(limits=SessionLimits(max_frame_bytes=100))
    assert session.receive_text('"' + "é" * 40 + '"') != [Close(1009, "frame too large")]
    assert session.receive_text('"' + "é" * 60 + '"') == [Close(1009, "frame too large")]


def test_rate_limit_closes_1008() -> None:
    session = Session(limits=SessionLimits(rate=10, burst=5))
    for i in range(5):
        assert session.receive_text('{"type":"ping"}', now=0.0) == [Reply('{"type":"pong"}')], i
    assert session.receive_text('{"type":"ping"}', now=0.0) == [Close(1008, "too many messages")]


def test_rate_limit_refills_with_time() -> None:
    session = Session(limits=SessionLimits(rate=10, burst=1))
    assert isinstance(session.receive_text('{"type":"ping"}', now=0.0)[0], Reply)
    assert isinstance(session.receive_text('{"type":"ping"}', now=0.2)[0], Reply)


def test_limits_are_validated() -> None:
    with pytest.raises(ConfigurationError):
        SessionLimits(max_frame_bytes=1)
    with pytest.raises(ConfigurationError):
        SessionLimits(rate=0)


CONTROL = {"pong", "subscribed", "unsubscribed", "error"}


def check_commands(commands: list[object]) -> None:
    for command in commands:
        assert isinstance(command, (Reply, Subscribe, Unsubscribe, Close))
        if isinstance(command, Reply):
            frame = json.loads(command.text)
            assert frame["type"] in CONTROL
            if frame["type"] == "error":
                assert isinstance(frame["code"], str)
                assert isinstance(frame["message"], str)


frames = st.one_of(
    st.text(max_size=300),
    st.builds(
        json.dumps,
        st.dictionaries(
            st.sampled_from(["type", "channels", "id", "x"]),
            st.one_of(
                st.sampled_from(["ping", "subscribe", "unsubscribe", "other"]),
                st.lists(st.text(max_size=20), max_size=5),
                st.integers(),
                st.none(),
            ),
        ),
    ),
)


@given(items=st.lists(st.one_of(frames, st.binary(max_size=100)), max_size=20))
def test_no_frame_ever_raises_and_every_reply_is_a_protocol_frame(items: list[str | bytes]) -> None:
    session = Session(default_channels=["a"], limits=SessionLimits(rate=None, max_subscriptions=5))
    check_commands(session.start())
    for item in items:
        commands = (
            session.receive_text(item) if isinstance(item, str) else session.receive_bytes(item)
        )
        check_commands(commands)
        assert len(session.subscriptions) <= 5


class SessionModel(RuleBasedStateMachine):
    """Subscriptions held by the session always equal a plain set model."""

    def __init__(self) -> None:
        super().__init__()
        self.session = Session(limits=SessionLimits(rate=None, max_subscriptions=6))
        self.model: set[str] = set()
        self.upstream: set[str] = set()

    def apply(self, commands: list[object]) -> None:
        for command in commands:
            if isinstance(command, Subscribe):
                assert not set(command.channels) & self.upstream
                self.upstream |= set(command.channels)
            elif isinstance(command, Unsubscribe):
                assert set(command.channels) <= self.upstream
                self.upstream -= set(command.channels)

    @rule(
        channels=st.lists(
            st.sampled_from(["a", "b", "c:*", "c:1", "d?", "e", "f", "g"]), min_size=1, max_size=4
        )
    )
    def subscribe(self, channels: list[str]) -> None:
        commands = self.session.receive_text(
            json.dumps({"type": "subscribe", "channels": channels})
        )
        self.apply(commands)
        if len(self.model | set(channels)) <= 6:
            self.model |= set(channels)

    @rule(
        channels=st.lists(st.sampled_from(["a", "b", "c:*", "c:1", "zz"]), min_size=1, max_size=3)
    )
    def unsubscribe(self, channels: list[str]) -> None:
        self.apply(
            self.session.receive_text(json.dumps({"type": "unsubscribe", "channels": channels}))
        )
        self.model -= set(channels)

    @rule(data=st.data())
    def broker_refuses(self, data: st.DataObject) -> None:
        held = sorted(self.model)
        if not held:
            return
        channel = data.draw(st.sampled_from(held))
        replies = self.session.refused([channel])
        assert [json.loads(r.text)["code"] for r in replies] == ["subscription_refused"]
        self.model.discard(channel)
        self.upstream.discard(channel)

    @rule()
    def ping(self) -> None:
        assert self.session.receive_text('{"type":"ping"}') == [Reply('{"type":"pong"}')]

    @invariant()
    def matches_model(self) -> None:
        assert set(self.session.subscriptions) == self.model == self.upstream


TestSessionModel = SessionModel.TestCase


def test_deeply_nested_frames_get_invalid_json() -> None:
    session = Session(limits=SessionLimits(rate=None))
    for text in ("[" * 5000 + "]" * 5000, '{"type":"ping","x":' + "[" * 3000 + "]" * 3000 + "}"):
        (reply,) = session.receive_text(text)
        assert isinstance(reply, Reply)
        assert json.loads(reply.text)["code"] == "invalid_json"
    assert not session.closed


def test_max_subscriptions_0_keeps_the_defaults_and_refuses_the_rest() -> None:
    session = Session(default_channels=["a", "b"], limits=SessionLimits(max_subscriptions=0))
    assert session.start() == [Subscribe(("a", "b"))]
    (reply,) = session.receive_text('{"type": "subscribe", "channels": ["c"]}')
    assert isinstance(reply, Reply)
    assert json.loads(reply.text)["code"] == "too_many_subscriptions"
    assert session.subscriptions == ("a", "b")
    # A channel held already: acknowledged by the driver (with its position, if any).
    (ack,) = session.receive_text('{"type": "subscribe", "channels": ["a"]}')
    assert ack == Subscribe((), ack=("a",))
