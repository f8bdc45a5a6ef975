from __future__ import annotations

import json
import time

import pytest
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


def test_loads_bounds_the_depth_exactly() -> None:
    depth = protocol.MAX_DEPTH
    assert protocol.loads("[" * depth + "]" * depth) is not None
    for deep in ("[" * (depth + 1) + "]" * (depth + 1), '{"a":' * 5000 + "1" + "}" * 5000):
        with pytest.raises(ValueError, match="nested deeper"):
            protocol.loads(deep)
    # Brackets inside strings, escaped quotes included, are not nesting.
    text = json.dumps(["[" * 500, '\\"[[[', {"k": "{" * 300}])
    assert protocol.loads(text) == ["[" * 500, '\\"[[[', {"k": "{" * 300}]


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", "1" * 5000, "[" * 100_000, '"'])
def test_loads_raises_only_value_error(text: str) -> None:
    with pytest.raises(ValueError, match=r"not valid JSON|digits|nested deeper|Unterminated"):
        protocol.loads(text)


def test_a_deep_payload_is_forwarded_as_raw() -> None:
    deep = "[" * 2000 + "]" * 2000
    value, text = protocol.decode_payload(deep.encode())
    assert value == {"raw": deep}
    assert json.loads(text) == {"raw": deep}


def test_the_depth_check_is_linear() -> None:
    # 1 MiB of worst-case nesting: well under a second, however deep.
    deep = ("[" * 5000 + "]" * 5000) * 100
    start = time.perf_counter()
    assert protocol.decode_payload(deep)[0] == {"raw": deep}
    assert time.perf_counter() - start < 1.0


@given(json_values, st.integers(1, 80))
def test_loads_agrees_with_json_within_the_depth(value: object, depth: int) -> None:
    text = json.dumps(value)
    wrapped = "[" * depth + text + "]" * depth
    try:
        assert protocol.loads(wrapped) == json.loads(wrapped)
    except ValueError:
        assert _depth(json.loads(wrapped)) > protocol.MAX_DEPTH


def _depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0
