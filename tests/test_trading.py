from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from tests.support.samples import REFERENCE_EXAMPLES
from wsbridge import trading
from wsbridge.exceptions import ConfigurationError, EventValidationError
from wsbridge.export import json_schema
from wsbridge.schema import DeliveryKind
from wsbridge.testing import strategies

registry = trading.registry


# The Redis CLI test section of the reference: PUBLISH <channel> '<json>'.
CLI_PORTFOLIO = '{"total_equity": 26000, "cash": 6000, "positions_value": 20000}'
CLI_SIGNAL = '{"symbol": "AAPL", "direction": "BUY", "strength": 0.8, "strategy_name": "test"}'


def roundtrip_ok(channel: str, payload: dict[str, Any]) -> bytes:
    """Check ``payload`` as a broker message and as a publish; return the wire bytes."""
    assert registry.check(channel, payload) is None
    wire = registry.encode(channel, payload)
    schema = registry.schema_for(channel)
    assert schema is not None
    assert schema.validate_json(wire) == schema.validate(payload)
    return wire


# -- the registry ----------------------------------------------------------------------------


def test_the_ten_channels_in_the_reference_order() -> None:
    assert trading.CHANNELS == (
        "portfolio:update",
        "trade:executed",
        "trade:pending_approval",
        "order:status",
        "signal:generated",
        "risk:alert",
        "risk:circuit_breaker",
        "risk:kill_switch",
        "system:feed:disconnected",
        "system:feed:reconnected",
    )
    assert registry.channels() == list(trading.CHANNELS)
    assert registry.patterns() == []
    assert all(schema.description for schema in registry)


def test_only_the_portfolio_is_a_state_channel() -> None:
    kinds = {channel: registry.kind_for(channel) for channel in trading.CHANNELS}
    assert kinds.pop("portfolio:update") is DeliveryKind.STATE
    assert set(kinds.values()) == {DeliveryKind.EVENT}


def test_the_registry_is_frozen() -> None:
    assert registry.frozen
    with pytest.raises(ConfigurationError):
        registry.register("trade:cancelled", trading.TradeExecuted)


def test_every_public_name_is_documented() -> None:
    for name in trading.__all__:
        value = getattr(trading, name)
        if isinstance(value, type):
            assert value.__doc__, name
    assert trading.__doc__


# -- the reference examples, one test each ---------------------------------------------------


def test_reference_portfolio_update() -> None:
    wire = roundtrip_ok("portfolio:update", REFERENCE_EXAMPLES["portfolio:update"])
    update = trading.PortfolioUpdate.model_validate_json(wire)
    assert update.positions is not None
    assert [p.symbol for p in update.positions] == ["AAPL", "JNJ"]
    assert update.sector_exposure == {"Technology": 42.82, "Healthcare": 37.18}


def test_reference_trade_executed() -> None:
    wire = roundtrip_ok("trade:executed", REFERENCE_EXAMPLES["trade:executed"])
    assert b'"entry_time":"2026-03-12T14:30:00Z"' in wire
    trade = trading.TradeExecuted.model_validate_json(wire)
    assert trade.side is trading.Side.BUY
    assert trade.entry_time == datetime(2026, 3, 12, 14, 30, tzinfo=timezone.utc)


def test_reference_trade_pending_approval() -> None:
    wire = roundtrip_ok("trade:pending_approval", REFERENCE_EXAMPLES["trade:pending_approval"])
    assert b'"requires_approval_by":"2026-03-12T14:45:00Z"' in wire
    assert b'"risk_assessment":{"position_limit_ok":true' in wire


def test_reference_order_status() -> None:
    wire = roundtrip_ok("order:status", REFERENCE_EXAMPLES["order:status"])
    assert json.loads(wire)["status"] == "FILLED"
    assert b'"filled_at":"2026-03-12T14:32:11Z"' in wire


def test_reference_signal_generated() -> None:
    wire = roundtrip_ok("signal:generated", REFERENCE_EXAMPLES["signal:generated"])
    assert json.loads(wire)["metadata"] == {"indicators": {"rsi": 42.5, "macd": 2.3}}


def test_reference_risk_alert() -> None:
    wire = roundtrip_ok("risk:alert", REFERENCE_EXAMPLES["risk:alert"])
    assert json.loads(wire)["type"] == "position_limit"


def test_reference_risk_circuit_breaker() -> None:
    wire = roundtrip_ok("risk:circuit_breaker", REFERENCE_EXAMPLES["risk:circuit_breaker"])
    assert b'"timestamp":"2026-03-12T14:50:00Z"' in wire


def test_reference_risk_kill_switch() -> None:
    wire = roundtrip_ok("risk:kill_switch", REFERENCE_EXAMPLES["risk:kill_switch"])
    assert json.loads(wire)["operator"] == "human"


def test_reference_feed_disconnected() -> None:
    wire = roundtrip_ok("system:feed:disconnected", REFERENCE_EXAMPLES["system:feed:disconnected"])
    assert b'"timestamp":"2026-03-12T16:00:00Z"' in wire


def test_reference_feed_reconnected() -> None:
    wire = roundtrip_ok("system:feed:reconnected", REFERENCE_EXAMPLES["system:feed:reconnected"])
    assert json.loads(wire)["symbol_count"] == 503


def test_reference_examples_cover_every_channel() -> None:
    assert set(REFERENCE_EXAMPLES) == set(trading.CHANNELS)


# -- the Redis CLI examples: accepted on purpose ---------------------------------------------


def test_cli_partial_portfolio_update_is_valid_and_not_padded() -> None:
    payload = json.loads(CLI_PORTFOLIO)
    assert registry.check("portfolio:update", payload) is None
    wire = registry.encode("portfolio:update", payload)
    assert json.loads(wire) == {"total_equity": 26000, "cash": 6000, "positions_value": 20000}
    assert b"null" not in wire


def test_cli_signal_without_timestamp_is_valid_and_gets_none() -> None:
    payload = json.loads(CLI_SIGNAL)
    assert registry.check("signal:generated", payload) is None
    wire = registry.encode("signal:generated", payload)
    assert b"timestamp" not in wire  # the bridge does not invent a time
    assert trading.SignalGenerated.model_validate_json(wire).timestamp is None


def test_a_portfolio_update_without_its_balances_is_rejected() -> None:
    error = registry.check("portfolio:update", {"daily_pnl": 10.0})
    assert error is not None
    assert sorted(error.fields) == ["cash", "positions_value", "total_equity"]


# -- the decisions ---------------------------------------------------------------------------


def with_field(channel: str, path: str, value: object) -> dict[str, Any]:
    payload = copy.deepcopy(REFERENCE_EXAMPLES[channel])
    *parents, last = path.split(".")
    target: Any = payload
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    target[last] = value
    return payload


def rejected_field(channel: str, payload: object) -> list[str]:
    error = registry.check(channel, payload)
    assert error is not None, f"{payload!r} should be rejected on {channel}"
    with pytest.raises(EventValidationError) as caught:
        registry.encode(channel, payload)
    assert caught.value.fields == error.fields
    return error.fields


@pytest.mark.parametrize(
    ("channel", "field", "value"),
    [
        ("trade:executed", "entry_time", "2026-03-12T14:30:00"),  # naive
        ("trade:executed", "entry_time", 1773325800),  # epoch seconds
        ("trade:executed", "entry_time", "12/03/2026 14:30"),
        ("trade:executed", "quantity", 0),
        ("trade:executed", "quantity", -10),
        ("trade:executed", "quantity", "10"),  # numbers are numbers
        ("trade:executed", "quantity", True),
        ("trade:executed", "entry_price", 0.0),
        ("trade:executed", "side", "buy"),  # enumerations are case-sensitive
        ("trade:executed", "side", "SHORT"),
        ("trade:executed", "symbol", ""),
        ("trade:executed", "symbol", "BRK B"),
        ("trade:executed", "id", ""),
        ("trade:pending_approval", "signal_strength", 1.01),
        ("trade:pending_approval", "risk_assessment.pdt_ok", "yes"),
        ("trade:pending_approval", "risk_assessment.sector_limit_ok", "yes"),
        ("order:status", "status", "PARTIALLY_FILLED"),  # a future value: rejected
        ("order:status", "filled_quantity", 0),
        ("order:status", "broker_order_id", 12345678),
        ("signal:generated", "strength", -0.1),
        ("signal:generated", "direction", "STRONG_BUY"),
        ("signal:generated", "metadata.indicators.rsi", "high"),
        ("risk:alert", "severity", "fatal"),
        ("risk:alert", "type", ""),
        ("risk:circuit_breaker", "breaker", "margin_call"),
        ("risk:circuit_breaker", "action", "activate"),  # that is the kill switch's word
        ("risk:kill_switch", "action", "activated"),
        ("risk:kill_switch", "operator", "robot"),
        ("system:feed:reconnected", "symbol_count", -1),
        ("system:feed:reconnected", "symbol_count", 503.5),
        ("portfolio:update", "total_equity", float("nan")),
        ("portfolio:update", "cash", float("inf")),
        ("portfolio:update", "max_drawdown_pct", 2.5),  # drawdowns are zero or negative
        ("portfolio:update", "positions.0.quantity", 0),
        ("portfolio:update", "sector_exposure.Technology", "42%"),
    ],
)
def test_invalid_values_are_rejected_naming_the_field(
    channel: str, field: str, value: object
) -> None:
    fields = rejected_field(channel, with_field(channel, field, value))
    assert fields, "the error names a field"
    assert all(f == field or f.startswith(field + ".") for f in fields), fields


def test_an_unknown_field_is_rejected() -> None:
    fields = rejected_field("signal:generated", with_field("signal:generated", "strenght", 0.5))
    assert fields == ["strenght"]


def test_signal_metadata_is_free_form() -> None:
    payload = with_field("signal:generated", "metadata.notes", ["crossed", {"window": 20}])
    wire = roundtrip_ok("signal:generated", payload)
    assert json.loads(wire)["metadata"]["notes"] == ["crossed", {"window": 20}]


def test_risk_assessment_accepts_further_boolean_checks() -> None:
    payload = with_field("trade:pending_approval", "risk_assessment.sector_limit_ok", False)
    wire = roundtrip_ok("trade:pending_approval", payload)
    assert json.loads(wire)["risk_assessment"]["sector_limit_ok"] is False


def test_alert_type_is_an_open_set() -> None:
    roundtrip_ok("risk:alert", with_field("risk:alert", "type", "high_volatility"))


def test_optional_fields_of_an_order_and_an_alert() -> None:
    order = {"id": "order-457", "symbol": "MSFT", "status": "PENDING"}
    assert json.loads(roundtrip_ok("order:status", order)) == order
    alert = {
        "type": "drawdown",
        "severity": "critical",
        "reason": "Drawdown 8% exceeds 7%",
        "timestamp": "2026-03-12T14:40:00Z",
    }
    assert json.loads(roundtrip_ok("risk:alert", alert)) == alert


@pytest.mark.parametrize(
    ("given", "written"),
    [
        ("2026-03-12T14:30:00Z", "2026-03-12T14:30:00Z"),
        ("2026-03-12T14:30:00+00:00", "2026-03-12T14:30:00Z"),
        ("2026-03-12T10:30:00-04:00", "2026-03-12T14:30:00Z"),
        ("2026-03-12T14:30:00.250Z", "2026-03-12T14:30:00.250000Z"),
        (
            datetime(2026, 3, 12, 16, 30, tzinfo=timezone(timedelta(hours=2))),
            "2026-03-12T14:30:00Z",
        ),
    ],
)
def test_timestamps_are_written_in_utc_with_z(given: object, written: str) -> None:
    wire = registry.encode("system:feed:disconnected", {"timestamp": given, "reason": "test"})
    assert json.loads(wire)["timestamp"] == written


def test_timestamps_out_of_range_in_utc_are_rejected() -> None:
    fields = rejected_field(
        "system:feed:disconnected",
        {"timestamp": "0001-01-01T00:00:00+01:00", "reason": "too early"},
    )
    assert fields == ["timestamp"]


def test_quantities_may_be_fractional_and_money_may_be_negative() -> None:
    roundtrip_ok("trade:executed", with_field("trade:executed", "quantity", 0.5))
    roundtrip_ok("portfolio:update", with_field("portfolio:update", "cash", -1200.5))


def test_publishing_a_model_instance() -> None:
    trade = trading.TradeExecuted(
        id="t-1",
        symbol="AAPL",
        side=trading.Side.SELL,
        quantity=3,
        entry_price=180.0,
        entry_time=datetime(2026, 3, 12, 14, 30, tzinfo=timezone.utc),
        strategy_name="manual",
    )
    assert registry.encode("trade:executed", trade) == (
        b'{"id":"t-1","symbol":"AAPL","side":"SELL","quantity":3.0,"entry_price":180.0,'
        b'"entry_time":"2026-03-12T14:30:00Z","strategy_name":"manual"}'
    )
    with pytest.raises(EventValidationError):
        registry.encode("order:status", trade)


def test_models_are_immutable() -> None:
    schema = registry.schema_for("trade:executed")
    assert schema is not None
    trade = schema.validate(REFERENCE_EXAMPLES["trade:executed"])
    with pytest.raises(ValueError, match="frozen"):
        trade.symbol = "MSFT"


# -- properties ------------------------------------------------------------------------------

channels = st.sampled_from(trading.CHANNELS)


def _model(channel: str) -> type[BaseModel]:
    schema = registry.schema_for(channel)
    assert schema is not None
    return schema.model


def _wire_payload(data: st.DataObject, channel: str) -> dict[str, Any]:
    instance = data.draw(strategies.payloads(registry, channel), label="instance")
    payload = json.loads(registry.encode(channel, instance))
    assert isinstance(payload, dict)
    return payload


@given(data=st.data(), channel=channels)
def test_model_to_wire_to_model_is_unchanged(data: st.DataObject, channel: str) -> None:
    instance = data.draw(strategies.payloads(registry, channel))
    wire = registry.encode(channel, instance)
    back = _model(channel).model_validate_json(wire)
    assert back == instance
    assert registry.encode(channel, back) == wire
    assert registry.check(channel, json.loads(wire)) is None


def _timestamp_fields(channel: str) -> list[str]:
    properties = json_schema(registry, channel)["properties"]
    return [
        name
        for name, prop in properties.items()
        if "date-time" in json.dumps(prop)  # direct, or inside anyOf for optional ones
    ]


def _enum_fields(channel: str) -> list[tuple[str, type[Enum]]]:
    found = []
    for name, field in _model(channel).model_fields.items():
        for candidate in (field.annotation, *getattr(field.annotation, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, Enum):
                found.append((name, candidate))
    return found


ENUM_FIELDS = [
    (channel, name, enum) for channel in trading.CHANNELS for name, enum in _enum_fields(channel)
]
TIMESTAMP_FIELDS = [
    (channel, name) for channel in trading.CHANNELS for name in _timestamp_fields(channel)
]


def test_the_mutation_tables_are_not_empty() -> None:
    assert len(ENUM_FIELDS) == 9
    assert len(TIMESTAMP_FIELDS) == 9


@given(data=st.data(), channel=channels)
def test_removing_a_required_field_is_rejected(data: st.DataObject, channel: str) -> None:
    payload = _wire_payload(data, channel)
    required = json_schema(registry, channel)["required"]
    field = data.draw(st.sampled_from(required), label="field")
    del payload[field]
    assert rejected_field(channel, payload) == [field]


@given(data=st.data(), case=st.sampled_from(ENUM_FIELDS))
def test_changing_an_enum_value_is_rejected(
    data: st.DataObject, case: tuple[str, str, type[Enum]]
) -> None:
    channel, field, enum = case
    payload = _wire_payload(data, channel)
    known = {member.value for member in enum}
    payload[field] = data.draw(st.text(max_size=20).filter(lambda v: v not in known), label="value")
    assert rejected_field(channel, payload) == [field]


@given(
    data=st.data(),
    case=st.sampled_from(
        [("signal:generated", "strength"), ("trade:pending_approval", "signal_strength")]
    ),
    strength=st.floats().filter(lambda x: not 0 <= x <= 1),
)
def test_a_strength_out_of_range_is_rejected(
    data: st.DataObject, case: tuple[str, str], strength: float
) -> None:
    channel, field = case
    payload = _wire_payload(data, channel)
    payload[field] = strength
    assert rejected_field(channel, payload) == [field]


@given(data=st.data(), case=st.sampled_from(TIMESTAMP_FIELDS), moment=st.datetimes())
def test_a_naive_timestamp_is_rejected(
    data: st.DataObject, case: tuple[str, str], moment: datetime
) -> None:
    channel, field = case
    payload = _wire_payload(data, channel)
    payload[field] = moment.isoformat()
    assert rejected_field(channel, payload) == [field]
