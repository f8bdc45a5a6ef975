from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft7Validator, Draft202012Validator, FormatChecker
from pydantic import BaseModel, ConfigDict, Field

from tests._js import JsTools
from tests.support.samples import REFERENCE_EXAMPLES
from wsbridge import trading
from wsbridge.channel import glob_match
from wsbridge.exceptions import ConfigurationError
from wsbridge.export import (
    ASYNCAPI_VERSION,
    FORMATS,
    JSON_SCHEMA_DIALECT,
    asyncapi,
    glob_regex,
    json_schema,
    render,
    typescript,
)
from wsbridge.schema import DeliveryKind, EventSchema, Registry
from wsbridge.testing import strategies

registry = trading.registry

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
FORMATS_CHECKED = FormatChecker()


@FORMATS_CHECKED.checks("date-time", raises=ValueError)
def _is_date_time(value: object) -> bool:
    # jsonschema checks date-time only when an optional package is installed: do it here.
    if not isinstance(value, str):
        return True
    if not _RFC3339.match(value):
        raise ValueError(f"{value!r} is not RFC 3339")
    datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    return True


def validator(schema: dict[str, Any]) -> Draft202012Validator:
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FORMATS_CHECKED)


def frame(channel: str, data: object) -> dict[str, object]:
    return {"channel": channel, "data": data}


# A registry with the awkward cases: patterns overlapping exact names and each other, names
# that collide with generated ones, recursion, open objects and literals.
class Alert(BaseModel):
    model_config = ConfigDict(extra="forbid")
    a: int


class AnyRisk(BaseModel):
    model_config = ConfigDict(extra="forbid")
    b: int


class Fallback(BaseModel):
    model_config = ConfigDict(extra="forbid")
    c: int


class PingFrame(BaseModel):  # the name of a generated control frame type
    """A user model that happens to share a generated name."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["user", "admin"]
    tags: list[str | int] = Field(default_factory=list)


class Tree(BaseModel):
    """A recursive model."""

    label: str
    children: list[Tree] = Field(default_factory=list)
    weights: dict[str, float] | None = None


class Loose(BaseModel):
    model_config = ConfigDict(extra="allow")
    known: bool | None = None
    pair: tuple[int, str] | None = None


def odd_registry() -> Registry:
    return Registry(
        [
            EventSchema("risk:alert", Alert),
            EventSchema("risk:*", AnyRisk, DeliveryKind.STATE),
            EventSchema("user?[0-9]", PingFrame),
            EventSchema("tree:`${x}`", Tree),
            EventSchema("loose", Loose),
            EventSchema("*", Fallback),
        ]
    )


# -- JSON Schema -----------------------------------------------------------------------------


@pytest.mark.parametrize("channel", trading.CHANNELS)
def test_payload_schema_is_valid_2020_12(channel: str) -> None:
    schema = json_schema(registry, channel)
    assert schema["$schema"] == JSON_SCHEMA_DIALECT
    schema_for = registry.schema_for(channel)
    assert schema_for is not None
    assert schema["title"] == schema_for.model.__name__
    validator(schema).validate(REFERENCE_EXAMPLES[channel])


def test_payload_schema_of_an_unknown_channel_fails() -> None:
    with pytest.raises(ConfigurationError, match="no schema"):
        json_schema(registry, "trade:cancelled")


def test_payload_schema_of_a_name_that_a_pattern_matches() -> None:
    assert json_schema(odd_registry(), "risk:other")["title"] == "AnyRisk"
    assert json_schema(odd_registry(), "risk:*")["title"] == "AnyRisk"
    assert json_schema(odd_registry(), "risk:alert")["title"] == "Alert"


def test_envelope_schema_accepts_every_reference_example() -> None:
    check = validator(json_schema(registry))
    for channel, payload in REFERENCE_EXAMPLES.items():
        check.validate(frame(channel, payload))
        check.validate(frame(channel, json.loads(registry.encode(channel, payload))))


@pytest.mark.parametrize(
    "bad",
    [
        frame("risk:alert", REFERENCE_EXAMPLES["trade:executed"]),  # another channel's data
        frame("trade:cancelled", REFERENCE_EXAMPLES["trade:executed"]),  # unknown channel
        {"channel": "trade:executed"},
        {**frame("trade:executed", REFERENCE_EXAMPLES["trade:executed"]), "extra": 1},
        frame("trade:executed", {**REFERENCE_EXAMPLES["trade:executed"], "side": "HOLD"}),
        frame("trade:executed", {**REFERENCE_EXAMPLES["trade:executed"], "entry_time": "noon"}),
        frame("signal:generated", {**REFERENCE_EXAMPLES["signal:generated"], "strength": 2}),
    ],
)
def test_envelope_schema_rejects_mismatches(bad: dict[str, Any]) -> None:
    assert not validator(json_schema(registry)).is_valid(bad)


def test_descriptions_use_markdown_code_not_rst() -> None:
    for text in (
        render(registry, "jsonschema"),
        render(registry, "asyncapi"),
        typescript(registry),
    ):
        assert "``" not in text


@given(envelope=strategies.envelopes(registry))
def test_every_generated_event_fits_the_exported_schemas(envelope: dict[str, Any]) -> None:
    ENVELOPE.validate(envelope)
    PAYLOADS[envelope["channel"]].validate(envelope["data"])
    for value in _strings(envelope["data"]):
        if _RFC3339.match(value):
            assert value.endswith("Z")  # every timestamp is written in UTC


ENVELOPE = validator(json_schema(registry))
PAYLOADS = {channel: validator(json_schema(registry, channel)) for channel in trading.CHANNELS}


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


def test_empty_registry_schema_matches_nothing() -> None:
    check = validator(json_schema(Registry()))
    assert not check.is_valid(frame("a", {}))


# -- patterns in the envelope: exactly one branch per channel --------------------------------

MODELS: dict[type[BaseModel], dict[str, int]] = {
    Alert: {"a": 1},
    AnyRisk: {"b": 1},
    Fallback: {"c": 1},
}
ODD_ENVELOPE = validator(json_schema(odd_registry()))


@pytest.mark.parametrize(
    ("channel", "model"),
    [("risk:alert", Alert), ("risk:other", AnyRisk), ("risk:", AnyRisk), ("news", Fallback)],
)
def test_envelope_routes_each_name_like_schema_for(channel: str, model: type[BaseModel]) -> None:
    odd = odd_registry()
    resolved = odd.schema_for(channel)
    assert resolved is not None
    assert resolved.model is model
    for candidate, data in MODELS.items():
        assert ODD_ENVELOPE.is_valid(frame(channel, data)) == (candidate is model), candidate


@given(name=st.text(st.sampled_from("risk:alertnews"), min_size=1, max_size=12))
def test_envelope_oneof_agrees_with_schema_for(name: str) -> None:
    resolved = odd_registry().schema_for(name)
    assert resolved is not None  # "*" matches every name
    for candidate, data in MODELS.items():
        assert ODD_ENVELOPE.is_valid(frame(name, data)) == (candidate is resolved.model)


GLOB_ALPHABET = "ab:*?[]^-\\"


@given(
    pattern=st.text(st.sampled_from(GLOB_ALPHABET), min_size=1, max_size=8),
    name=st.text(st.sampled_from(GLOB_ALPHABET), min_size=1, max_size=8),
)
def test_glob_regex_agrees_with_glob_match_on_ascii(pattern: str, name: str) -> None:
    assert (re.search(glob_regex(pattern), name) is not None) == glob_match(pattern, name)


GLOB_CASES = [
    "risk:*",
    "a?b",
    "[abc]x",
    "[^a]",
    "[a-c]*",
    "[c-a]",
    "x[",
    "x[^",
    "[]a]",
    "a\\*b",
    "[\\]]",
    "*a*b*",
    "a\\",
]


def test_glob_regexes_behave_alike_in_javascript(js_tools: JsTools) -> None:
    names = [
        "risk:alert",
        "a-b",
        "axb",
        "bx",
        "^",
        "b",
        "xa",
        "x^",
        "]a]",
        "a*b",
        "]",
        "aab",
        "a\\",
    ]
    script = (
        "const [patterns, names] = JSON.parse(process.argv[1]);"
        "console.log(JSON.stringify(patterns.map("
        "(p) => names.map((n) => new RegExp(p, 'u').test(n)))));"
    )
    regexes = [glob_regex(pattern) for pattern in GLOB_CASES]
    result = js_tools.run("-e", script, json.dumps([regexes, names]))
    assert result.returncode == 0, result.stderr
    expected = [[glob_match(pattern, name) for name in names] for pattern in GLOB_CASES]
    assert json.loads(result.stdout) == expected


# -- AsyncAPI ----------------------------------------------------------------------------------


def test_asyncapi_document_structure() -> None:
    doc = asyncapi(registry, path="/ws", title="Trading", version="2.1.0")
    assert doc["asyncapi"] == ASYNCAPI_VERSION == "3.0.0"
    assert doc["info"]["title"] == "Trading"
    assert doc["info"]["version"] == "2.1.0"
    endpoint = doc["channels"]["endpoint"]
    assert endpoint["address"] == "/ws"
    messages = doc["components"]["messages"]
    names = {message["name"] for message in messages.values()}
    assert set(trading.CHANNELS) <= names
    assert {
        "ping",
        "pong",
        "subscribe",
        "subscribed",
        "unsubscribe",
        "unsubscribed",
        "error",
    } <= names
    assert set(endpoint["messages"]) == set(messages)
    portfolio = messages["portfolio.update"]
    assert portfolio["x-wsbridge-delivery"] == "state"
    assert messages["trade.executed"]["x-wsbridge-delivery"] == "event"
    data_ref = portfolio["payload"]["properties"]["data"]["$ref"]
    assert data_ref == "#/components/schemas/PortfolioUpdate"
    ops = doc["operations"]
    assert ops["receivePing"]["action"] == "receive"
    assert ops["receivePing"]["reply"]["messages"] == [
        {"$ref": "#/channels/endpoint/messages/pong"}
    ]
    assert ops["receiveSubscribe"]["reply"]["messages"] == [
        {"$ref": "#/channels/endpoint/messages/subscribed"}
    ]
    assert ops["sendEvents"]["action"] == "send"
    assert len(ops["sendEvents"]["messages"]) == 10
    # Every schema is a valid draft-07 schema (AsyncAPI's schema format builds on draft 07).
    for schema in doc["components"]["schemas"].values():
        Draft7Validator.check_schema(schema)


def test_asyncapi_control_frames_match_the_protocol() -> None:
    from wsbridge import protocol

    schemas = asyncapi(registry)["components"]["schemas"]
    checks = {name: Draft7Validator(schema) for name, schema in schemas.items()}
    assert checks["PongFrame"].is_valid(json.loads(protocol.PONG))
    ack = protocol.subscription_ack("subscribed", ["risk:*"], request_id=7)
    assert checks["SubscribedFrame"].is_valid(json.loads(ack))
    error = protocol.error_frame(protocol.ErrorCode.INVALID_JSON, "bad", request_id="r1")
    assert checks["ErrorFrame"].is_valid(json.loads(error))
    assert (
        protocol.ErrorCode.INVALID_JSON
        in schemas["ErrorFrame"]["properties"]["code"]["description"]
    )
    assert checks["SubscribeFrame"].is_valid({"type": "subscribe", "channels": ["a"], "id": 1})
    assert not checks["SubscribeFrame"].is_valid({"type": "subscribe", "channels": []})
    assert checks["BrokerStatusFrame"].is_valid(json.loads(protocol.broker_status_frame("down")))


def test_asyncapi_renames_schemas_that_collide() -> None:
    doc = asyncapi(odd_registry())
    schemas = doc["components"]["schemas"]
    # The user's model keeps its name (models refer to it); the control frame gives way.
    assert schemas["PingFrame"]["properties"]["kind"]["enum"] == ["user", "admin"]
    assert schemas["PingFrame_2"]["properties"]["type"] == {"const": "ping"}
    ping = doc["components"]["messages"]["ping"]
    assert ping["payload"] == {"$ref": "#/components/schemas/PingFrame_2"}


def test_asyncapi_servers_and_arguments() -> None:
    doc = asyncapi(
        registry, servers={"production": "wss://example.com/api", "dev": "ws://localhost:8000"}
    )
    assert doc["servers"]["production"] == {
        "host": "example.com",
        "protocol": "wss",
        "pathname": "/api",
    }
    assert doc["servers"]["dev"] == {"host": "localhost:8000", "protocol": "ws"}
    with pytest.raises(ConfigurationError):
        asyncapi(registry, servers={"bad": "http://example.com"})
    with pytest.raises(ConfigurationError):
        asyncapi(registry, path="ws")


def _asyncapi_documents() -> dict[str, dict[str, Any]]:
    broken = asyncapi(registry)
    broken["operations"]["receivePing"]["action"] = "listen"
    del broken["info"]["version"]
    return {
        "trading": asyncapi(registry, servers={"production": "wss://example.com"}),
        "patterns": asyncapi(odd_registry(), path="/events"),
        "empty": asyncapi(Registry()),
        "broken": broken,
    }


@pytest.fixture(scope="module")
def asyncapi_reports(
    js_tools: JsTools, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, Any]]:
    """The official parser's report on each document, from one node run (parsing is slow)."""
    directory = tmp_path_factory.mktemp("asyncapi")
    paths = {}
    for name, document in _asyncapi_documents().items():
        paths[name] = directory / f"{name}.json"
        paths[name].write_text(json.dumps(document), encoding="utf-8")
    reports = js_tools.validate_asyncapi(*paths.values())
    return dict(zip(paths, reports, strict=True))


@pytest.mark.parametrize("name", ["trading", "patterns", "empty"])
def test_asyncapi_passes_the_official_parser(
    asyncapi_reports: dict[str, dict[str, Any]], name: str
) -> None:
    report = asyncapi_reports[name]
    assert report["valid"] is True, json.dumps(report, indent=2)
    assert report["version"] == "3.0.0"
    # Only the hint that a newer AsyncAPI version exists is tolerated.
    others = [d for d in report["diagnostics"] if d["code"] != "asyncapi-latest-version"]
    assert others == []


def test_the_asyncapi_parser_does_detect_errors(
    asyncapi_reports: dict[str, dict[str, Any]],
) -> None:
    report = asyncapi_reports["broken"]
    assert report["valid"] is False
    errors = [d for d in report["diagnostics"] if d["severity"] == "error"]
    assert errors
    assert any("receivePing" in d["path"] for d in errors), errors


# -- TypeScript --------------------------------------------------------------------------------


def test_typescript_declarations_content() -> None:
    text = typescript(registry)
    assert "export type WSMessage =\n  | PortfolioUpdateMessage\n" in text
    assert (
        "export interface TradeExecutedMessage {\n"
        '  channel: "trade:executed";\n'
        "  data: TradeExecuted;\n"
        "}"
    ) in text
    assert 'export type Side = "BUY" | "SELL";' in text
    assert "  signal_strength: number;" in text
    assert "  timestamp?: string | null;" in text  # optional in signal:generated
    assert '  "system:feed:reconnected": FeedReconnected;' in text
    assert "export type ServerFrame = WSMessage | ControlFrame;" in text
    assert "export type ClientFrame = PingFrame | SubscribeFrame | UnsubscribeFrame;" in text


def test_typescript_for_odd_names() -> None:
    text = typescript(odd_registry())
    assert "export interface PingFrame_2 {" in text  # the user's model, renamed
    assert 'export interface PingFrame {\n  type: "ping";\n}' in text
    assert "  channel: `risk:${string}`;" in text
    assert "  channel: string;" in text  # "user?[0-9]" cannot be a template literal
    assert "  children?: Tree[];" in text
    assert "  pair?: [number, string] | null;" in text
    assert "  [key: string]: unknown;" in text


WRONG_NARROWING = """\
import type { WSMessage } from "./events";
export function f(msg: WSMessage): number {
  if (msg.channel === "risk:kill_switch") {
    return msg.data.quantity;
  }
  return 0;
}
"""

FRAMES_USAGE = """\
import type { ServerFrame, WSMessage } from "./events";
export function kind(frame: ServerFrame): string {
  return "type" in frame ? frame.type : "event";
}
export type Check = WSMessage extends never ? true : false;
"""

# A pattern's channel type is a template literal when it can be: any matching name is
# accepted. An exact name that a pattern also matches narrows to a union of both payloads.
PATTERN_USAGE = """\
import type { WSMessage, Tree } from "./events";
export const risk: WSMessage = { channel: "risk:anything", data: { b: 1 } };
export const tree: Tree = { label: "root", children: [{ label: "leaf" }] };
export function narrow(msg: WSMessage): number | undefined {
  if (msg.channel === "risk:alert") {
    return "a" in msg.data ? msg.data.a : undefined;
  }
  return undefined;
}
"""


@pytest.fixture(scope="module")
def tsc_errors(js_tools: JsTools, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """Type-check every case in one ``tsc --strict`` run; return each case's error lines.

    Each case is a directory with the generated ``events.d.ts`` and a ``usage.ts`` that
    imports it; one program holds them all, and errors are told apart by path.
    """
    cases = {
        "trading": (typescript(registry), (js_tools.directory / "usage.ts").read_text("utf-8")),
        "wrong": (typescript(registry), WRONG_NARROWING),
        "odd": (typescript(odd_registry()), FRAMES_USAGE),
        "empty": (typescript(Registry()), FRAMES_USAGE),
        "patterns": (typescript(odd_registry()), PATTERN_USAGE),
    }
    root = tmp_path_factory.mktemp("typescript")
    files = []
    for name, (declarations, usage) in cases.items():
        (root / name).mkdir()
        (root / name / "events.d.ts").write_text(declarations, encoding="utf-8")
        (root / name / "usage.ts").write_text(usage, encoding="utf-8")
        files += [root / name / "events.d.ts", root / name / "usage.ts"]
    result = js_tools.tsc(*files)
    # One diagnostic per line, "<path>(<line>,<column>): error TS<n>: <message>", with
    # indented continuation lines.
    diagnostics: list[str] = []
    for line in (result.stdout + result.stderr).splitlines():
        if line[:1].isspace() and diagnostics:
            diagnostics[-1] += "\n" + line
        elif line.strip():
            diagnostics.append(line)
    errors: dict[str, list[str]] = {name: [] for name in cases}
    for diagnostic in diagnostics:
        owner = Path(diagnostic.split("(", 1)[0]).parent.name
        assert owner in errors, f"unexpected output from tsc: {diagnostic}"
        errors[owner].append(diagnostic)
    assert (result.returncode != 0) == bool(diagnostics), result.stdout + result.stderr
    return errors


def test_typescript_compiles_strict_and_narrows(tsc_errors: dict[str, list[str]]) -> None:
    # tests/js/usage.ts also holds @ts-expect-error lines: a mistake that compiles fails.
    assert tsc_errors["trading"] == []


def test_typescript_wrong_narrowing_fails_to_compile(tsc_errors: dict[str, list[str]]) -> None:
    assert len(tsc_errors["wrong"]) == 1
    assert "usage.ts(4," in tsc_errors["wrong"][0]
    assert "quantity" in tsc_errors["wrong"][0]


@pytest.mark.parametrize("name", ["odd", "empty", "patterns"])
def test_typescript_of_other_registries_compiles(
    tsc_errors: dict[str, list[str]], name: str
) -> None:
    assert tsc_errors[name] == []


# -- render ------------------------------------------------------------------------------------


def test_render_every_format() -> None:
    assert FORMATS == ("jsonschema", "asyncapi", "typescript")
    for fmt in FORMATS:
        assert render(registry, fmt).endswith("\n")
    assert json.loads(render(registry, "jsonschema")) == json_schema(registry)
    doc = json.loads(render(registry, "asyncapi", title="T", version="9.9.9", path="/events"))
    assert doc == asyncapi(registry, title="T", version="9.9.9", path="/events")
    assert render(registry, "typescript") == typescript(registry)


def test_render_rejects_an_unknown_format() -> None:
    with pytest.raises(ConfigurationError, match="unknown format"):
        render(registry, "yaml")  # type: ignore[arg-type]
