from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any

import pytest
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from wsbridge.exceptions import (
    ConfigurationError,
    EventValidationError,
    InvalidChannelError,
    WsbridgeError,
)
from wsbridge.schema import DeliveryKind, EventSchema, Registry


class Color(str, Enum):
    RED = "red"
    BLUE = "blue"


class Point(BaseModel):
    model_config = ConfigDict(extra="forbid")

    x: int
    y: int
    color: Color = Color.RED
    label: str | None = None


class Tick(BaseModel):
    at: AwareDatetime
    price: float = Field(gt=0)


class Other(BaseModel):
    name: str


def make_registry() -> Registry:
    registry = Registry()
    registry.register("shape:point", Point, description="A point.")
    registry.register("market:tick", Tick, kind=DeliveryKind.STATE)
    registry.register("market:*", Other)
    registry.register("*:tick", Point)
    return registry


# -- DeliveryKind and EventSchema ---------------------------------------------------------


def test_delivery_kinds_are_strings() -> None:
    assert DeliveryKind.STATE.value == "state"
    assert DeliveryKind.EVENT.value == "event"
    assert DeliveryKind("state") is DeliveryKind.STATE
    assert json.dumps(DeliveryKind.STATE) == '"state"'


def test_event_schema_defaults_and_kind_given_as_text() -> None:
    schema = EventSchema("shape:point", Point)
    assert schema.kind is DeliveryKind.EVENT
    assert schema.description == ""
    assert not schema.is_pattern
    state = EventSchema("shape:point", Point, "state")  # type: ignore[arg-type]
    assert state.kind is DeliveryKind.STATE


def test_event_schema_is_frozen_and_comparable() -> None:
    schema = EventSchema("shape:point", Point)
    with pytest.raises(AttributeError):
        schema.channel = "other"  # type: ignore[misc]
    assert schema == EventSchema("shape:point", Point)
    assert schema != EventSchema("shape:point", Point, DeliveryKind.STATE)


@pytest.mark.parametrize("model", [dict, Point(x=1, y=2), "Point", None])
def test_event_schema_rejects_a_model_that_is_not_a_pydantic_class(model: Any) -> None:
    with pytest.raises(ConfigurationError, match="BaseModel"):
        EventSchema("shape:point", model)


def test_event_schema_rejects_an_unknown_kind() -> None:
    with pytest.raises(ConfigurationError, match="kind"):
        EventSchema("shape:point", Point, "sometimes")  # type: ignore[arg-type]


@pytest.mark.parametrize("channel", ["", "has space", "tab\there", 42])
def test_event_schema_rejects_invalid_channels(channel: Any) -> None:
    with pytest.raises(InvalidChannelError):
        EventSchema(channel, Point)


def test_pattern_schema_matches_as_redis_does() -> None:
    schema = EventSchema("market:*", Other)
    assert schema.is_pattern
    assert schema.matches("market:tick")
    assert not schema.matches("marketing")
    escaped = EventSchema("market\\*", Other)
    assert not escaped.is_pattern
    assert escaped.matches("market\\*")
    assert not escaped.matches("market:tick")


def test_validate_returns_the_model_instance() -> None:
    schema = EventSchema("shape:point", Point)
    point = schema.validate({"x": 1, "y": 2})
    assert point == Point(x=1, y=2)
    assert schema.validate_json(b'{"x": 1, "y": 2, "color": "blue"}').color is Color.BLUE


def test_validation_errors_name_the_channel_and_the_fields() -> None:
    schema = EventSchema("shape:point", Point)
    with pytest.raises(EventValidationError) as caught:
        schema.validate({"x": "one", "color": "green"})
    error = caught.value
    assert error.channel == "shape:point"
    assert sorted(error.fields) == ["color", "x", "y"]
    assert "shape:point" in str(error)
    assert isinstance(error, ValueError)
    assert isinstance(error, WsbridgeError)
    # Input values stay out of the error: they may be large or private.
    assert all("input" not in item for item in error.errors)
    assert "one" not in str(error)


def test_validation_errors_of_a_pattern_name_the_concrete_channel() -> None:
    schema = EventSchema("market:*", Other)
    with pytest.raises(EventValidationError) as caught:
        schema.validate({}, channel="market:tick")
    assert caught.value.channel == "market:tick"


def test_validate_json_rejects_text_that_is_not_json() -> None:
    with pytest.raises(EventValidationError) as caught:
        EventSchema("shape:point", Point).validate_json("{not json")
    assert caught.value.channel == "shape:point"


# -- building registries --------------------------------------------------------------------


def test_register_returns_the_schema_and_the_decorator_returns_the_class() -> None:
    registry = Registry()
    schema = registry.register("shape:point", Point, kind=DeliveryKind.STATE, description="d")
    assert schema == EventSchema("shape:point", Point, DeliveryKind.STATE, "d")

    @registry.event("shape:other", description="other things")
    class Decorated(BaseModel):
        value: int

    assert isinstance(Decorated, type)
    found = registry.get("shape:other")
    assert found is not None
    assert found.model is Decorated
    assert found.description == "other things"
    assert found.kind is DeliveryKind.EVENT


def test_registering_a_channel_twice_fails() -> None:
    registry = Registry()
    registry.register("shape:point", Point)
    with pytest.raises(ConfigurationError, match="already registered"):
        registry.register("shape:point", Other)
    with pytest.raises(ConfigurationError, match="already registered"):
        registry.register("shape:point", Point)
    registry.register("shape:*", Other)
    with pytest.raises(ConfigurationError, match="already registered"):
        registry.register("shape:*", Other)


def test_add_rejects_things_that_are_not_schemas() -> None:
    with pytest.raises(ConfigurationError):
        Registry().add(Point)  # type: ignore[arg-type]


def test_a_frozen_registry_refuses_registrations_but_merges() -> None:
    registry = Registry([EventSchema("shape:point", Point)]).freeze()
    assert registry.frozen
    with pytest.raises(ConfigurationError, match="frozen"):
        registry.register("shape:other", Other)
    with pytest.raises(ConfigurationError, match="frozen"):
        registry.event("shape:other")(Other)
    extended = registry | Registry([EventSchema("shape:other", Other)])
    assert not extended.frozen
    assert extended.channels() == ["shape:point", "shape:other"]
    assert len(registry) == 1


def test_collection_protocol() -> None:
    registry = make_registry()
    assert len(registry) == 4
    assert [schema.channel for schema in registry] == [
        "shape:point",
        "market:tick",
        "market:*",
        "*:tick",
    ]
    assert "market:*" in registry
    assert "market:tick" in registry
    assert "market:open" not in registry  # a pattern matches it, but no key is that name
    assert 42 not in registry
    assert "market:*" in repr(registry)


def test_channels_lists_exact_names_in_order_and_patterns_apart() -> None:
    registry = make_registry()
    assert registry.channels() == ["shape:point", "market:tick"]
    assert registry.patterns() == ["market:*", "*:tick"]
    # A copy: changing it does not change the registry.
    registry.channels().append("x")
    assert registry.channels() == ["shape:point", "market:tick"]


# -- lookups ---------------------------------------------------------------------------------


def test_schema_for_prefers_the_exact_name_then_the_first_matching_pattern() -> None:
    registry = make_registry()
    tick = registry.schema_for("market:tick")
    assert tick is not None
    assert tick.model is Tick  # exact, although "market:*" and "*:tick" match too
    market = registry.schema_for("market:open")
    assert market is not None
    assert market.channel == "market:*"
    other = registry.schema_for("crypto:tick")
    assert other is not None
    assert other.channel == "*:tick"
    assert registry.schema_for("weather:rain") is None
    assert registry.get("market:open") is None
    assert registry.get("market:*") is market


def test_lookups_see_schemas_registered_after_a_miss() -> None:
    registry = Registry()
    registry.register("a:exact", Point)
    assert registry.schema_for("b:thing") is None
    registry.register("b:*", Other)
    found = registry.schema_for("b:thing")
    assert found is not None
    assert found.channel == "b:*"
    assert registry.schema_for("b:thing") is found  # cached, and still right
    registry.register("b:thing", Point)
    exact = registry.schema_for("b:thing")
    assert exact is not None
    assert exact.model is Point


def test_the_lookup_cache_stays_correct_past_its_size() -> None:
    registry = Registry([EventSchema("n:*", Other)])
    names = [f"n:{i}" for i in range(10_000)]
    assert all(registry.schema_for(name) is not None for name in names)
    assert all(registry.schema_for(f"m:{i}") is None for i in range(100))
    assert len(registry._cache) <= 4096


def test_kind_for_defaults_to_event() -> None:
    registry = make_registry()
    assert registry.kind_for("market:tick") is DeliveryKind.STATE
    assert registry.kind_for("shape:point") is DeliveryKind.EVENT
    assert registry.kind_for("weather:rain") is DeliveryKind.EVENT
    assert Registry().kind_for("anything") is DeliveryKind.EVENT


# -- merging ---------------------------------------------------------------------------------


def test_merge_keeps_order_and_builds_a_new_registry() -> None:
    first = Registry([EventSchema("a", Point), EventSchema("b:*", Other)])
    second = Registry([EventSchema("c", Tick)])
    merged = first.merge(second)
    assert [schema.channel for schema in merged] == ["a", "b:*", "c"]
    assert [schema.channel for schema in first | second] == ["a", "b:*", "c"]
    assert len(first) == 2
    assert len(second) == 1
    assert merged is not first


def test_merge_accepts_identical_schemas_and_rejects_conflicts() -> None:
    shared = EventSchema("a", Point)
    first = Registry([shared])
    assert len(first | Registry([EventSchema("a", Point)])) == 1
    with pytest.raises(ConfigurationError, match="already registered"):
        first | Registry([EventSchema("a", Point, DeliveryKind.STATE)])
    with pytest.raises(ConfigurationError, match="already registered"):
        first | Registry([EventSchema("a", Other)])


def test_merge_with_something_else_fails() -> None:
    with pytest.raises(TypeError):
        Registry() | {"a": Point}  # type: ignore[operator]
    with pytest.raises(ConfigurationError):
        Registry().merge({"a": Point})  # type: ignore[arg-type]


# -- encode ----------------------------------------------------------------------------------


def test_encode_validates_and_writes_the_models_serialisation() -> None:
    registry = make_registry()
    data = registry.encode("shape:point", {"x": 1, "y": 2, "color": "blue"})
    assert data == b'{"x":1,"y":2,"color":"blue"}'


def test_encode_does_not_pad_a_partial_payload() -> None:
    registry = make_registry()
    # color and label have defaults: they were not given, so they are not written.
    assert registry.encode("shape:point", {"x": 1, "y": 2}) == b'{"x":1,"y":2}'
    assert registry.encode("shape:point", Point(x=1, y=2)) == b'{"x":1,"y":2}'
    # Explicitly given values are written, even when they equal the default.
    assert registry.encode("shape:point", {"x": 1, "y": 2, "label": None}) == (
        b'{"x":1,"y":2,"label":null}'
    )


@pytest.mark.parametrize(
    "given",
    [
        "2026-03-12T14:30:00Z",
        "2026-03-12T14:30:00+00:00",
        datetime(2026, 3, 12, 14, 30, tzinfo=timezone.utc),
    ],
)
def test_encode_writes_utc_timestamps_with_z(given: object) -> None:
    registry = make_registry()
    data = registry.encode("market:tick", {"at": given, "price": 1.5})
    assert data == b'{"at":"2026-03-12T14:30:00Z","price":1.5}'


def test_encode_keeps_a_non_utc_offset_of_a_plain_aware_datetime() -> None:
    registry = make_registry()
    at = datetime(2026, 3, 12, 15, 30, tzinfo=timezone(timedelta(hours=1)))
    assert registry.encode("market:tick", {"at": at, "price": 2}) == (
        b'{"at":"2026-03-12T15:30:00+01:00","price":2.0}'
    )


def test_encode_raises_and_names_the_field_when_invalid() -> None:
    registry = make_registry()
    with pytest.raises(EventValidationError) as caught:
        registry.encode("market:tick", {"at": "2026-03-12T14:30:00", "price": -1})
    assert caught.value.channel == "market:tick"
    assert sorted(caught.value.fields) == ["at", "price"]


def test_encode_of_a_pattern_channel_names_the_concrete_channel() -> None:
    registry = make_registry()
    with pytest.raises(EventValidationError) as caught:
        registry.encode("market:open", {"nom": "x"})
    assert caught.value.channel == "market:open"
    assert caught.value.fields == ["name"]


def test_encode_serialises_a_model_instance_without_validating_it_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry = make_registry()
    point = Point(x=3, y=4, color=Color.BLUE)

    def no_validation(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model instance must not be validated again")

    monkeypatch.setattr(Point, "model_validate", no_validation)
    assert registry.encode("shape:point", point) == b'{"x":3,"y":4,"color":"blue"}'


def test_encode_writes_a_subclass_instance_with_the_registered_fields_only() -> None:
    class LabelledPoint(Point):
        note: str = ""

    registry = make_registry()
    data = registry.encode("shape:point", LabelledPoint(x=1, y=2, note="extra"))
    assert json.loads(data) == {"x": 1, "y": 2}


def test_encode_rejects_an_instance_of_another_model() -> None:
    registry = make_registry()
    with pytest.raises(EventValidationError):
        registry.encode("shape:point", Other(name="x"))


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"a": [1, 2.5, None, True]}, b'{"a":[1,2.5,null,true]}'),
        ([1, "two"], b'[1,"two"]'),
        (("tuple", 1), b'["tuple",1]'),
        ("caf\u00e9", '"caf\u00e9"'.encode()),
        (7, b"7"),
        (None, b"null"),
        (Other(name="x"), b'{"name":"x"}'),
    ],
)
def test_encode_without_a_schema_writes_compact_utf8_json(data: object, expected: bytes) -> None:
    assert make_registry().encode("weather:rain", data) == expected


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_encode_without_a_schema_rejects_nan_and_infinity(bad: float) -> None:
    with pytest.raises(EventValidationError) as caught:
        make_registry().encode("weather:rain", {"ok": 1, "deep": [0, {"value": bad}]})
    assert caught.value.fields == ["deep.1.value"]
    assert "NaN" in str(caught.value)


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"when": datetime(2026, 1, 1)}, "when"),
        ({"items": [1, {2, 3}]}, "items.1"),
        (object(), "<payload>"),
    ],
)
def test_encode_without_a_schema_rejects_values_that_are_not_json(data: object, where: str) -> None:
    with pytest.raises(TypeError, match="weather:rain") as caught:
        make_registry().encode("weather:rain", data)
    assert f"at {where} " in str(caught.value)


def test_encode_without_a_schema_rejects_circular_data() -> None:
    data: dict[str, object] = {}
    data["self"] = data
    with pytest.raises(TypeError, match="weather:rain"):
        make_registry().encode("weather:rain", data)


# -- check and validate ----------------------------------------------------------------------


def test_check_returns_none_for_valid_or_schemaless_messages() -> None:
    registry = make_registry()
    assert registry.check("shape:point", {"x": 1, "y": 2}) is None
    assert registry.check("market:open", {"name": "x"}) is None
    assert registry.check("weather:rain", {"anything": ["goes"]}) is None
    assert registry.check("weather:rain", {"raw": "not json"}) is None


def test_check_returns_the_error_instead_of_raising() -> None:
    registry = make_registry()
    error = registry.check("shape:point", {"x": 1, "color": "green"})
    assert isinstance(error, EventValidationError)
    assert error.channel == "shape:point"
    assert sorted(error.fields) == ["color", "y"]
    pattern_error = registry.check("market:open", ["not", "an", "object"])
    assert pattern_error is not None
    assert pattern_error.channel == "market:open"


def test_validate_returns_an_instance_or_the_data_unchanged() -> None:
    registry = make_registry()
    assert registry.validate("shape:point", {"x": 1, "y": 2}) == Point(x=1, y=2)
    data = {"free": "form"}
    assert registry.validate("weather:rain", data) is data
    with pytest.raises(EventValidationError):
        registry.validate("shape:point", {})
