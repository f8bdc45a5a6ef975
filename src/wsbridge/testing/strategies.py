"""Hypothesis strategies that generate valid events, for property-testing event consumers.

.. code-block:: python

    from hypothesis import given
    from wsbridge import trading
    from wsbridge.testing import strategies

    @given(strategies.envelopes(trading.registry))
    def test_dashboard_reducer_accepts_every_event(frame):
        reduce(state, frame)  # frame == {"channel": "...", "data": {...}}, as a client sees it

    @given(strategies.payloads(trading.registry, "trade:executed"))
    def test_fill_handler(trade):  # a trading.TradeExecuted instance
        ...

Generation works for any pydantic model: values are drawn from the model's JSON Schema
(types, enums, ranges, lengths, patterns, formats such as ``date-time``), then validated by
the model itself, so custom validators are respected (values they refuse are discarded; a
model whose validators refuse most values will make hypothesis complain that it filters too
much: write a dedicated strategy for it).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

try:
    from hypothesis import reject
    from hypothesis import strategies as st
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "wsbridge.testing.strategies needs hypothesis: pip install hypothesis"
    ) from exc

from pydantic import BaseModel, ValidationError

from wsbridge.channel import glob_match, is_pattern, validate_channel
from wsbridge.exceptions import ConfigurationError, InvalidChannelError
from wsbridge.export import glob_regex
from wsbridge.schema import EventSchema, Registry

__all__ = [
    "channel_names",
    "envelopes",
    "for_registry",
    "from_model",
    "json_values",
    "payloads",
]

M = TypeVar("M", bound=BaseModel)

# Small collections keep examples quick to generate, shrink and validate.
_MAX_ITEMS = 4
_MAX_EXTRA_KEYS = 2
_MAX_TEXT = 24

_OFFSETS = st.one_of(
    st.just(timezone.utc),
    st.integers(-14 * 60, 14 * 60).map(lambda minutes: timezone(timedelta(minutes=minutes))),
)


def json_values(*, max_leaves: int = 8) -> st.SearchStrategy[Any]:
    """Any JSON value (no NaN or Infinity), nested at most ``max_leaves`` leaves deep."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**53), 2**53),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=_MAX_TEXT),
    )
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=_MAX_ITEMS),
            st.dictionaries(st.text(max_size=8), children, max_size=_MAX_ITEMS),
        ),
        max_leaves=max_leaves,
    )


def _timestamps() -> st.SearchStrategy[str]:
    # RFC 3339 text with an offset, sometimes written with "Z" as the reference does.
    moments = st.datetimes(
        min_value=datetime(1970, 1, 2), max_value=datetime(2099, 12, 30), timezones=_OFFSETS
    )
    return st.builds(
        lambda moment, zulu: (
            moment.isoformat().replace("+00:00", "Z") if zulu else moment.isoformat()
        ),
        moments,
        st.booleans(),
    )


class _FromJsonSchema:
    """Builds a strategy of JSON values from the JSON Schema that pydantic generates."""

    def __init__(self, defs: dict[str, Any]) -> None:
        self.defs = defs
        self.refs: dict[str, st.SearchStrategy[Any]] = {}

    def build(self, schema: Any) -> st.SearchStrategy[Any]:
        if schema is True or schema == {}:
            return json_values(max_leaves=4)
        if schema is False or not isinstance(schema, dict):
            return st.nothing()
        if "$ref" in schema:
            return self.ref(schema["$ref"].rsplit("/", 1)[-1])
        if "const" in schema:
            return st.just(schema["const"])
        if "enum" in schema:
            return st.sampled_from(schema["enum"])
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return st.one_of([self.build(item) for item in schema[key]])
        if "allOf" in schema:
            merged: dict[str, Any] = {}
            for item in schema["allOf"]:
                merged.update(item)
            return self.build({**merged, **{k: v for k, v in schema.items() if k != "allOf"}})
        kind = schema.get("type")
        if isinstance(kind, list):
            return st.one_of([self.build({**schema, "type": item}) for item in kind])
        builder = {
            "string": self.string,
            "integer": self.integer,
            "number": self.number,
            "boolean": lambda _: st.booleans(),
            "null": lambda _: st.none(),
            "array": self.array,
            "object": self.object,
        }.get(kind or ("object" if "properties" in schema else ""))
        return json_values(max_leaves=4) if builder is None else builder(schema)

    def ref(self, name: str) -> st.SearchStrategy[Any]:
        if name not in self.refs:
            # Deferred, so that recursive models terminate.
            self.refs[name] = st.deferred(lambda: self.build(self.defs[name]))
        return self.refs[name]

    def string(self, schema: dict[str, Any]) -> st.SearchStrategy[str]:
        fmt = schema.get("format")
        if fmt == "date-time":
            return _timestamps()
        if fmt == "date":
            return st.dates().map(lambda day: day.isoformat())
        if fmt == "uuid":
            return st.uuids().map(str)
        if fmt == "email":
            return st.emails()
        low = schema.get("minLength", 0)
        high = schema.get("maxLength")
        if "pattern" in schema:
            strategy = st.from_regex(schema["pattern"], fullmatch=True)
            return strategy.filter(lambda text: low <= len(text) <= (high or math.inf))
        high = low + _MAX_TEXT if high is None else min(high, low + _MAX_TEXT)
        return st.text(st.characters(codec="utf-8"), min_size=low, max_size=high)

    def integer(self, schema: dict[str, Any]) -> st.SearchStrategy[int]:
        low = schema.get("minimum")
        high = schema.get("maximum")
        if "exclusiveMinimum" in schema:
            low = math.floor(schema["exclusiveMinimum"]) + 1
        if "exclusiveMaximum" in schema:
            high = math.ceil(schema["exclusiveMaximum"]) - 1
        strategy = st.integers(
            None if low is None else math.ceil(low), None if high is None else math.floor(high)
        )
        step = schema.get("multipleOf")
        return strategy if step is None else strategy.filter(lambda n: n % step == 0)

    def number(self, schema: dict[str, Any]) -> st.SearchStrategy[float]:
        low, exclude_low = schema.get("minimum"), False
        high, exclude_high = schema.get("maximum"), False
        if "exclusiveMinimum" in schema:
            low, exclude_low = schema["exclusiveMinimum"], True
        if "exclusiveMaximum" in schema:
            high, exclude_high = schema["exclusiveMaximum"], True
        strategy = st.floats(
            min_value=low,
            max_value=high,
            exclude_min=exclude_low,
            exclude_max=exclude_high,
            allow_nan=False,
            allow_infinity=False,
        )
        step = schema.get("multipleOf")
        return strategy if step is None else strategy.filter(lambda x: x % step == 0)

    def array(self, schema: dict[str, Any]) -> st.SearchStrategy[list[Any]]:
        low = schema.get("minItems", 0)
        high = min(schema.get("maxItems", low + _MAX_ITEMS), low + _MAX_ITEMS)
        prefix = [self.build(item) for item in schema.get("prefixItems", [])]
        items = schema.get("items", True)
        if prefix:
            head = st.tuples(*prefix).map(list)
            if items is False:
                return head
            rest = st.lists(self.build(items), max_size=max(0, high - len(prefix)))
            return st.builds(lambda first, more: first + more, head, rest)
        unique_by: Callable[[Any], str] | None = None
        if schema.get("uniqueItems"):
            unique_by = functools.partial(json.dumps, sort_keys=True)
        return st.lists(self.build(items), min_size=low, max_size=high, unique_by=unique_by)

    def object(self, schema: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
        properties: dict[str, Any] = schema.get("properties", {})
        required = set(schema.get("required", ()))
        fixed = st.fixed_dictionaries(
            {name: self.build(sub) for name, sub in properties.items() if name in required},
            optional={
                name: self.build(sub) for name, sub in properties.items() if name not in required
            },
        )
        extra = schema.get("additionalProperties")
        if extra is None or extra is False:
            return fixed
        names = self.string({"type": "string", **schema.get("propertyNames", {})})
        extras = st.dictionaries(
            names.filter(lambda key: key not in properties),
            self.build(extra),
            max_size=_MAX_EXTRA_KEYS,
        )
        return st.builds(lambda more, base: {**more, **base}, extras, fixed)


@functools.lru_cache(maxsize=256)
def _model_strategy(model: type[BaseModel]) -> st.SearchStrategy[BaseModel]:
    schema = model.model_json_schema(mode="validation")
    raw = _FromJsonSchema(schema.get("$defs", {})).build(schema)

    @st.composite
    def instances(draw: st.DrawFn) -> BaseModel:
        data = draw(raw)
        try:
            return model.model_validate(data)
        except ValidationError:
            reject()

    return instances()


def from_model(model: type[M]) -> st.SearchStrategy[M]:
    """Valid instances of a pydantic ``model``, drawn from its JSON Schema."""
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise ConfigurationError(f"expected a pydantic model class, not {model!r}")
    return _model_strategy(model)  # type: ignore[return-value]


def _schema(registry: Registry, channel: str) -> EventSchema[Any]:
    schema = registry.get(channel) or registry.schema_for(channel)
    if schema is None:
        raise ConfigurationError(f"no schema is registered for channel {channel!r}")
    return schema


def payloads(registry: Registry, channel: str) -> st.SearchStrategy[BaseModel]:
    """Valid model instances for ``channel`` (a registered name or pattern, or a name).

    Raises:
        ConfigurationError: no schema is registered for ``channel``.
    """
    return from_model(_schema(registry, channel).model)


def for_registry(registry: Registry) -> dict[str, st.SearchStrategy[BaseModel]]:
    """One strategy of valid instances per registered channel or pattern, by channel."""
    return {schema.channel: from_model(schema.model) for schema in registry}


def channel_names(pattern: str) -> st.SearchStrategy[str]:
    """Valid channel names that ``pattern`` matches as Redis ``PSUBSCRIBE`` does.

    An exact channel name gives just itself. Generated names use printable ASCII.
    """
    validate_channel(pattern)
    if not is_pattern(pattern):
        return st.just(pattern)
    alphabet = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
    return st.from_regex(glob_regex(pattern), fullmatch=True, alphabet=alphabet).filter(
        lambda name: _is_valid(name) and glob_match(pattern, name)
    )


def _is_valid(name: str) -> bool:
    try:
        validate_channel(name)
    except InvalidChannelError:
        return False
    return True


def envelopes(
    registry: Registry, *, channels: Iterable[str] | None = None
) -> st.SearchStrategy[dict[str, Any]]:
    """Event frames ``{"channel": name, "data": payload}`` exactly as a client receives them.

    ``data`` is the JSON-decoded bytes that :meth:`Registry.encode` produces for a valid
    instance. A pattern's frames get generated channel names that the registry resolves to
    that pattern. ``channels`` restricts the frames to some registered names or patterns.

    Raises:
        ConfigurationError: the registry (or ``channels``) is empty, or names no schema.
    """
    keys = [schema.channel for schema in registry] if channels is None else list(channels)
    if not keys:
        raise ConfigurationError("no channel to generate event frames for")
    return st.one_of([_frames(registry, _schema(registry, key)) for key in keys])


def _frames(registry: Registry, schema: EventSchema[Any]) -> st.SearchStrategy[dict[str, Any]]:
    names = channel_names(schema.channel).filter(lambda name: registry.schema_for(name) is schema)

    def frame(name: str, instance: BaseModel) -> dict[str, Any]:
        return {"channel": name, "data": json.loads(registry.encode(name, instance))}

    return st.builds(frame, names, from_model(schema.model))
