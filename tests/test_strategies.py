from __future__ import annotations

import importlib
import json
import subprocess
import sys
from datetime import date
from enum import Enum
from typing import Annotated, Any, Literal
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from wsbridge import trading
from wsbridge.channel import glob_match, validate_channel
from wsbridge.exceptions import ConfigurationError
from wsbridge.schema import EventSchema, Registry
from wsbridge.testing import strategies

registry = trading.registry


class Level(int, Enum):
    LOW = 1
    HIGH = 2


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
    level: Level


class Everything(BaseModel):
    """A model with one field of each kind the generator must handle."""

    model_config = ConfigDict(extra="forbid")
    count: int = Field(ge=-5, lt=5)
    ratio: float = Field(gt=0, le=1)
    even: int = Field(multiple_of=2, ge=0, le=100)
    name: str = Field(min_length=2, max_length=4)
    flag: bool
    mode: Literal["a", "b"]
    day: date
    ident: UUID
    inner: Inner
    inners: list[Inner] = Field(min_length=1, max_length=3)
    unique: set[int] = Field(default_factory=set, max_length=3)
    pair: tuple[int, str] | None = None
    mapping: dict[str, int | None] = Field(default_factory=dict)
    anything: Any = None


class Node(BaseModel):
    value: int
    children: list[Node] = Field(default_factory=list, max_length=2)


class OddOnly(BaseModel):
    number: int

    @field_validator("number")
    @classmethod
    def odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError("must be odd")
        return value


# -- models ------------------------------------------------------------------------------------


@given(strategies.from_model(Everything))
def test_from_model_respects_every_constraint(value: Everything) -> None:
    assert isinstance(value, Everything)
    assert -5 <= value.count < 5
    assert 0 < value.ratio <= 1
    assert value.even % 2 == 0
    assert 2 <= len(value.name) <= 4
    assert len(value.inner.code) == 3
    assert value.inner.code.isupper()
    assert 1 <= len(value.inners) <= 3
    assert Everything.model_validate_json(value.model_dump_json()) == value


@given(strategies.from_model(Node))
def test_from_model_handles_recursive_models(node: Node) -> None:
    assert isinstance(node, Node)
    assert all(isinstance(child, Node) for child in node.children)


@given(strategies.from_model(OddOnly))
def test_from_model_respects_custom_validators(value: OddOnly) -> None:
    assert value.number % 2 == 1


def test_from_model_rejects_what_is_not_a_model() -> None:
    with pytest.raises(ConfigurationError):
        strategies.from_model(dict)  # type: ignore[type-var]


@given(strategies.json_values())
def test_json_values_are_json(value: object) -> None:
    assert json.loads(json.dumps(value, allow_nan=False)) == value


# -- registries --------------------------------------------------------------------------------


@given(data=st.data(), channel=st.sampled_from(trading.CHANNELS))
def test_payloads_are_instances_of_the_channels_model(data: st.DataObject, channel: str) -> None:
    instance = data.draw(strategies.payloads(registry, channel))
    schema = registry.schema_for(channel)
    assert schema is not None
    assert type(instance) is schema.model
    assert registry.check(channel, json.loads(registry.encode(channel, instance))) is None


FOR_REGISTRY = strategies.for_registry(registry)


def test_for_registry_has_one_strategy_per_schema() -> None:
    assert list(FOR_REGISTRY) == list(trading.CHANNELS)


@given(FOR_REGISTRY["trade:executed"], FOR_REGISTRY["portfolio:update"])
def test_for_registry_strategies_give_the_channels_models(trade: Any, portfolio: Any) -> None:
    assert type(trade) is trading.TradeExecuted
    assert type(portfolio) is trading.PortfolioUpdate


def test_payloads_of_an_unknown_channel_fail() -> None:
    with pytest.raises(ConfigurationError, match="no schema"):
        strategies.payloads(registry, "trade:cancelled")


@given(strategies.envelopes(registry))
def test_envelopes_look_like_what_a_client_receives(envelope: dict[str, Any]) -> None:
    assert set(envelope) == {"channel", "data"}
    channel = envelope["channel"]
    assert channel in trading.CHANNELS
    assert registry.check(channel, envelope["data"]) is None
    # The data is exactly the published JSON: encoding it again gives the same value.
    schema = registry.schema_for(channel)
    assert schema is not None
    again = registry.encode(channel, schema.validate(envelope["data"]))
    assert json.loads(again) == envelope["data"]


@given(strategies.envelopes(registry, channels=["risk:alert", "risk:kill_switch"]))
def test_envelopes_restricted_to_some_channels(envelope: dict[str, Any]) -> None:
    assert envelope["channel"] in ("risk:alert", "risk:kill_switch")


class Plain(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: int


class Special(BaseModel):
    model_config = ConfigDict(extra="forbid")
    special: bool


PATTERNS = Registry(
    [
        EventSchema("news:sports", Special),
        EventSchema("news:*", Plain),
        EventSchema("user?:[a-c]x", Plain),
        EventSchema("esc\\*aped", Plain),
    ]
)


@given(strategies.envelopes(PATTERNS, channels=["news:*", "user?:[a-c]x"]))
def test_pattern_envelopes_get_names_that_resolve_to_the_pattern(envelope: dict[str, Any]) -> None:
    channel = envelope["channel"]
    validate_channel(channel)
    schema = PATTERNS.schema_for(channel)
    assert schema is not None
    assert schema.is_pattern
    assert channel != "news:sports"  # that name belongs to the exact schema
    assert PATTERNS.check(channel, envelope["data"]) is None


@given(strategies.envelopes(PATTERNS, channels=["esc\\*aped"]))
def test_an_escaped_name_is_not_a_pattern(envelope: dict[str, Any]) -> None:
    assert envelope["channel"] == "esc\\*aped"


@given(st.data(), st.sampled_from(["a*", "*:b", "x?y", "[^a]z*", "k\\*[0-9]", "*"]))
def test_channel_names_match_their_pattern(data: st.DataObject, pattern: str) -> None:
    name = data.draw(strategies.channel_names(pattern))
    validate_channel(name)
    assert glob_match(pattern, name)


def test_envelopes_need_a_channel() -> None:
    with pytest.raises(ConfigurationError):
        strategies.envelopes(Registry())
    with pytest.raises(ConfigurationError, match="no schema"):
        strategies.envelopes(registry, channels=["weather:rain"])


# -- hypothesis stays optional ------------------------------------------------------------------


def test_only_the_strategies_module_imports_hypothesis() -> None:
    code = (
        "import sys\n"
        "import wsbridge, wsbridge.schema, wsbridge.trading, wsbridge.export, wsbridge.testing\n"
        "print('hypothesis' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "False"


def test_a_missing_hypothesis_gives_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "hypothesis", None)  # makes "import hypothesis" fail
    monkeypatch.delitem(sys.modules, "wsbridge.testing.strategies")
    with pytest.raises(ImportError, match="pip install hypothesis"):
        importlib.import_module("wsbridge.testing.strategies")
