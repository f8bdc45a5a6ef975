from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from wsbridge import protocol

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def test_valid_json_is_forwarded_as_written() -> None:
    value, text = protocol.decode_payload(b'{"total_equity": 25000.00, "cash": 5000.0}')
    assert value == {"total_equity": 25000.0, "cash": 5000.0}
    # Publisher's text is kept: 25000.00 keeps its form on the wire.
    assert text == '{"total_equity": 25000.00, "cash": 5000.0}'


def test_invalid_json_is_wrapped_in_raw() -> None:
    value, text = protocol.decode_payload(b"hello")
    assert value == {"raw": "hello"}
    assert json.loads(text) == {"raw": "hello"}


def test_nan_and_infinity_are_not_json() -> None:
    for raw in (b"NaN", b"[Infinity]", b'{"x": -Infinity}'):
        value, _ = protocol.decode_payload(raw)
        assert value == {"raw": raw.decode()}


def test_undecodable_bytes_are_replaced_not_fatal() -> None:
    value, text = protocol.decode_payload(b"\xff\xfe")
    assert value == {"raw": "\ufffd\ufffd"}
    json.loads(text)


def test_non_object_json_goes_out_as_is() -> None:
    assert protocol.decode_payload(b"[1,2]")[0] == [1, 2]
    assert protocol.decode_payload(b'"s"')[0] == "s"
    assert protocol.decode_payload(b"3.5")[0] == 3.5


@given(channel=st.text(min_size=1), value=json_values)
def test_event_frame_round_trips(channel: str, value: object) -> None:
    _, text = protocol.decode_payload(protocol.dumps(value).encode("utf-8", "surrogatepass"))
    frame = json.loads(protocol.encode_event(channel, text))
    assert frame == {"channel": channel, "data": value}


@given(raw=st.binary(max_size=64))
def test_any_broker_bytes_make_a_valid_frame(raw: bytes) -> None:
    _, text = protocol.decode_payload(raw)
    frame = json.loads(protocol.encode_event("c", text))
    assert frame["channel"] == "c"
    assert "data" in frame


def test_control_frames() -> None:
    assert json.loads(protocol.PONG) == {"type": "pong"}
    assert json.loads(protocol.error_frame("x", "msg", request_id=3)) == {
        "type": "error",
        "code": "x",
        "message": "msg",
        "id": 3,
    }
    assert json.loads(protocol.subscription_ack("subscribed", ["a"])) == {
        "type": "subscribed",
        "channels": ["a"],
    }
    assert json.loads(protocol.broker_status_frame("down")) == {"type": "broker", "status": "down"}
