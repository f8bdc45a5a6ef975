"""Describe a registry's events for the other side of the wire.

Three formats, all generated from the pydantic models of a :class:`~wsbridge.schema.Registry`
(in pydantic's *serialisation* mode: they describe what the bridge sends):

* :func:`json_schema`: JSON Schema 2020-12, for one channel's payload or for the whole event
  frame ``{"channel": ..., "data": ...}`` as a ``oneOf`` keyed by ``channel``;
* :func:`asyncapi`: an AsyncAPI 3.0 document of the WebSocket endpoint, with the event frames
  and the control frames (ping/pong, subscribe/unsubscribe and their acknowledgements, errors);
* :func:`typescript`: declarations for a browser client, with a ``WSMessage`` union that
  narrows on ``channel``.

:func:`render` returns any of them as text, for ``wsbridge schema --format ...``.

Glob patterns are described as well as each format allows: a regular expression in the JSON
schemas (exact for ASCII channel names; Redis matches bytes, so a ``?`` against a non-ASCII
character differs), a template literal type in TypeScript when the pattern only uses ``*``,
and ``string`` otherwise.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal, get_args
from urllib.parse import urlsplit

from pydantic.json_schema import models_json_schema

from wsbridge._version import __version__
from wsbridge.channel import GlobSet, glob_match, parse_glob
from wsbridge.exceptions import ConfigurationError
from wsbridge.schema import EventSchema, Registry

__all__ = [
    "ASYNCAPI_VERSION",
    "FORMATS",
    "JSON_SCHEMA_DIALECT",
    "Format",
    "asyncapi",
    "glob_regex",
    "json_schema",
    "render",
    "typescript",
]

JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
"""The ``$schema`` of the JSON Schemas that :func:`json_schema` returns."""

ASYNCAPI_VERSION: Final = "3.0.0"
"""The AsyncAPI version of the documents that :func:`asyncapi` returns."""

Format = Literal["jsonschema", "asyncapi", "typescript"]
"""The names :func:`render` accepts."""

FORMATS: Final[tuple[Format, ...]] = get_args(Format)
"""Every :data:`Format`, for a command line's choices."""

_JsonObject = dict[str, Any]

# -- shared helpers ----------------------------------------------------------------------


def _describe(value: Any) -> Any:
    """Return ``value`` with the docstrings' reST double backticks made Markdown single ones."""
    if isinstance(value, dict):
        return {
            key: (
                item.replace("``", "`")
                if key == "description" and isinstance(item, str)
                else _describe(item)
            )
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_describe(item) for item in value]
    return value


def _collect(
    registry: Registry, ref_prefix: str
) -> tuple[_JsonObject, list[tuple[EventSchema[Any], _JsonObject]]]:
    """Generate the definitions of every model at once, so shared ones appear once.

    Returns the definitions by name and, for each schema, the reference to its model.
    """
    schemas = list(registry)
    models = list(dict.fromkeys(schema.model for schema in schemas))
    if not models:
        return {}, []
    refs, top = models_json_schema(
        [(model, "serialization") for model in models], ref_template=ref_prefix + "{model}"
    )
    defs: _JsonObject = _describe(top.get("$defs", {}))
    return defs, [(schema, dict(refs[(schema.model, "serialization")])) for schema in schemas]


def _description(schema: EventSchema[Any]) -> str:
    return schema.description or (schema.model.__doc__ or "").strip().split("\n\n")[0]


def glob_regex(pattern: str) -> str:
    r"""Translate a Redis glob pattern into an anchored regular expression.

    The result is valid in ECMA-262 (JSON Schema's ``pattern``, JavaScript) and in Python's
    :mod:`re`. It follows :mod:`wsbridge.channel`'s rules character by character, so it is
    exact for ASCII names; a ``?`` matches one character where Redis matches one byte.

    >>> print(glob_regex("risk:*"))
    ^risk:[\s\S]*$
    """
    out = ["^"]
    for token in parse_glob([ord(char) for char in pattern]):
        if token == "*":
            if out[-1] != "[\\s\\S]*":
                out.append("[\\s\\S]*")
        elif token == "?":
            out.append("[\\s\\S]")
        elif isinstance(token, GlobSet):
            out.append(_glob_set(token))
        else:
            out.append(_regex_escape(chr(token), "^$\\.*+?()[]{}|/"))
    out.append("$")
    return "".join(out)


def _glob_set(found: GlobSet) -> str:
    """Translate a set of the pattern into a regex character class."""
    items: list[str] = []
    for a, b in found.ranges:
        low, high = sorted((chr(a), chr(b)))
        items.append(
            _regex_escape(low, "\\]-[^")
            if low == high
            else _regex_escape(low, "\\]-[^") + "-" + _regex_escape(high, "\\]-[^")
        )
    if not items:
        return "[\\s\\S]" if found.negate else "[^\\s\\S]"
    return "[" + ("^" if found.negate else "") + "".join(items) + "]"


def _regex_escape(char: str, specials: str) -> str:
    # Escape only syntax characters: ECMA-262's unicode mode rejects any other escape.
    return "\\" + char if char in specials else char


def _channel_schema(schema: EventSchema[Any], registry: Registry) -> _JsonObject:
    """The JSON Schema of the ``channel`` member of this schema's event frames."""
    if not schema.is_pattern:
        return {"const": schema.channel}
    # A name goes to the exact schema first, then to the first matching pattern: exclude
    # those, so that exactly one branch of the envelope's oneOf matches.
    exclude: list[_JsonObject] = []
    exact = [name for name in registry.channels() if glob_match(schema.channel, name)]
    if exact:
        exclude.append({"enum": exact})
    for earlier in registry.patterns():
        if earlier == schema.channel:
            break
        exclude.append({"pattern": glob_regex(earlier)})
    result: _JsonObject = {
        "type": "string",
        "minLength": 1,
        "pattern": glob_regex(schema.channel),
        "description": f"A channel matching the Redis glob pattern {schema.channel!r}.",
    }
    if exclude:
        result["not"] = {"anyOf": exclude}
    return result


def _event_frame(schema: EventSchema[Any], registry: Registry, ref: _JsonObject) -> _JsonObject:
    return {
        "type": "object",
        "title": schema.channel,
        "description": _description(schema).replace("``", "`"),
        "properties": {"channel": _channel_schema(schema, registry), "data": ref},
        "required": ["channel", "data"],
        "additionalProperties": False,
    }


# -- JSON Schema -------------------------------------------------------------------------


def json_schema(registry: Registry, channel: str | None = None) -> _JsonObject:
    """Return a JSON Schema (draft 2020-12) of a channel's payload, or of every event frame.

    With ``channel`` (a registered name or pattern, or a name that a pattern matches), the
    schema of the ``data`` of that channel's events. Without it, the schema of a whole event
    frame, ``{"channel": ..., "data": ...}``: a ``oneOf`` with one branch per registered
    channel, told apart by ``channel``. Channels without a schema are not part of it.

    Raises:
        ConfigurationError: no schema is registered for ``channel``.
    """
    if channel is not None:
        schema = registry.get(channel) or registry.schema_for(channel)
        if schema is None:
            raise ConfigurationError(f"no schema is registered for channel {channel!r}")
        body = _describe(schema.model.model_json_schema(mode="serialization"))
        if "description" not in body and schema.description:
            body["description"] = schema.description
        return {"$schema": JSON_SCHEMA_DIALECT, **body}

    defs, pairs = _collect(registry, "#/$defs/")
    result: _JsonObject = {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": "WSMessage",
        "description": "An event frame: the channel a message was published on, and its data.",
    }
    if pairs:
        result["oneOf"] = [_event_frame(schema, registry, ref) for schema, ref in pairs]
    else:
        result["not"] = {}  # an empty registry describes no event
    if defs:
        result["$defs"] = defs
    return result


# -- AsyncAPI ----------------------------------------------------------------------------

_ID: Final = {"type": ["string", "integer"], "description": "Echoed from the request."}
_CHANNEL_LIST: Final = {
    "type": "array",
    "items": {"type": "string", "minLength": 1},
    "description": "Channel names or Redis glob patterns.",
}


def _frame(kind: str, description: str, **fields: _JsonObject) -> _JsonObject:
    return {
        "type": "object",
        "description": description,
        "properties": {"type": {"const": kind}, **fields},
        "required": ["type", *(name for name in fields if name not in ("id", "channel"))],
    }


def _error_codes() -> list[str]:
    # Read from the protocol module so the documents never list a code it does not send.
    from wsbridge.protocol import ErrorCode

    return sorted(
        value
        for name, value in vars(ErrorCode).items()
        if name.isupper() and isinstance(value, str)
    )


def _control_frames() -> dict[str, tuple[str, _JsonObject]]:
    """The control frames: message key -> (schema name, JSON Schema)."""
    codes = ", ".join(_error_codes())
    return {
        "ping": ("PingFrame", _frame("ping", "Keepalive the client sends every 30 seconds.")),
        "pong": ("PongFrame", _frame("pong", "The server's answer to a ping.")),
        "subscribe": (
            "SubscribeFrame",
            _frame(
                "subscribe",
                "Ask to receive more channels or patterns.",
                channels={**_CHANNEL_LIST, "minItems": 1},
                id=_ID,
            ),
        ),
        "unsubscribe": (
            "UnsubscribeFrame",
            _frame(
                "unsubscribe",
                "Stop receiving channels or patterns.",
                channels={**_CHANNEL_LIST, "minItems": 1},
                id=_ID,
            ),
        ),
        "subscribed": (
            "SubscribedFrame",
            _frame("subscribed", "Acknowledges a subscribe.", channels=_CHANNEL_LIST, id=_ID),
        ),
        "unsubscribed": (
            "UnsubscribedFrame",
            _frame("unsubscribed", "Acknowledges an unsubscribe.", channels=_CHANNEL_LIST, id=_ID),
        ),
        "error": (
            "ErrorFrame",
            _frame(
                "error",
                "A client frame was refused; the connection stays open.",
                code={"type": "string", "description": f"Machine-readable: {codes}."},
                message={"type": "string", "description": "Human-readable explanation."},
                id=_ID,
                channel={"type": "string", "description": "The channel concerned, if any."},
            ),
        ),
        "broker": (
            "BrokerStatusFrame",
            _frame(
                "broker",
                "The broker connection was lost (down) or restored (up).",
                status={"enum": ["down", "up"]},
            ),
        ),
    }


def _unique(name: str, taken: set[str]) -> str:
    candidate, number = name, 2
    while candidate in taken:
        candidate = f"{name}_{number}"
        number += 1
    taken.add(candidate)
    return candidate


def _message_key(channel: str) -> str:
    # AsyncAPI keys allow letters, digits, ".", "-" and "_".
    return re.sub(r"[^A-Za-z0-9._-]", "_", channel.replace(":", "."))


def asyncapi(
    registry: Registry,
    *,
    path: str = "/ws",
    title: str = "wsbridge events",
    version: str = "1.0.0",
    description: str | None = None,
    servers: Mapping[str, str] | None = None,
) -> _JsonObject:
    """Return an AsyncAPI 3.0 document describing the WebSocket endpoint at ``path``.

    The document is written from the server's side: it *sends* the events of every
    registered channel, pongs, acknowledgements and error frames, and *receives* pings,
    subscribes and unsubscribes (each with its reply). ``title`` and ``version`` are those of
    your API; ``servers`` maps names to URLs such as ``wss://example.com``.
    """
    if not path.startswith("/"):
        raise ConfigurationError(f"path must start with '/', not {path!r}")
    defs, pairs = _collect(registry, "#/components/schemas/")
    schemas: _JsonObject = dict(defs)
    taken_schemas = set(schemas)
    messages: _JsonObject = {}
    taken_keys: set[str] = set()

    control: dict[str, str] = {}
    for key, (name, frame) in _control_frames().items():
        schema_name = _unique(name, taken_schemas)
        schemas[schema_name] = frame
        control[key] = _unique(key, taken_keys)
        messages[control[key]] = {
            "name": key,
            "title": name,
            "summary": frame["description"],
            "payload": {"$ref": f"#/components/schemas/{schema_name}"},
        }

    event_keys: list[str] = []
    for schema, ref in pairs:
        key = _unique(_message_key(schema.channel), taken_keys)
        event_keys.append(key)
        messages[key] = {
            "name": schema.channel,
            "title": schema.channel,
            "summary": _description(schema).replace("``", "`"),
            "payload": _event_frame(schema, registry, ref),
            "x-wsbridge-delivery": schema.kind.value,
        }

    def refs(keys: Iterable[str]) -> list[_JsonObject]:
        return [{"$ref": f"#/channels/endpoint/messages/{key}"} for key in keys]

    endpoint = {"$ref": "#/channels/endpoint"}

    def request(name: str, reply: str, summary: str) -> _JsonObject:
        return {
            "action": "receive",
            "channel": endpoint,
            "summary": summary,
            "messages": refs([control[name]]),
            "reply": {"channel": endpoint, "messages": refs([control[reply]])},
        }

    operations: _JsonObject = {}
    if event_keys:
        operations["sendEvents"] = {
            "action": "send",
            "channel": endpoint,
            "summary": "Forward the messages of the subscribed channels as event frames.",
            "messages": refs(event_keys),
        }
    operations["receivePing"] = request("ping", "pong", "Answer a keepalive ping.")
    operations["receiveSubscribe"] = request(
        "subscribe", "subscribed", "Add channels or patterns to this connection."
    )
    operations["receiveUnsubscribe"] = request(
        "unsubscribe", "unsubscribed", "Remove channels or patterns from this connection."
    )
    operations["sendError"] = {
        "action": "send",
        "channel": endpoint,
        "summary": "Refuse an invalid client frame.",
        "messages": refs([control["error"]]),
    }
    operations["sendBrokerStatus"] = {
        "action": "send",
        "channel": endpoint,
        "summary": "Tell clients that the broker connection was lost or restored.",
        "messages": refs([control["broker"]]),
    }

    document: _JsonObject = {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": title,
            "version": version,
            "description": description
            or "Events forwarded from a pub/sub broker to WebSocket clients by wsbridge.",
        },
        "defaultContentType": "application/json",
    }
    if servers:
        document["servers"] = {name: _server(url) for name, url in servers.items()}
    document["channels"] = {
        "endpoint": {
            "address": path,
            "title": "WebSocket endpoint",
            "description": (
                "Clients connect here. Every frame is UTF-8 JSON text: event frames "
                '{"channel", "data"} and control frames with a "type".'
            ),
            "messages": {key: {"$ref": f"#/components/messages/{key}"} for key in messages},
        }
    }
    document["operations"] = operations
    document["components"] = {"schemas": schemas, "messages": messages}
    return document


def _server(url: str) -> _JsonObject:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise ConfigurationError(f"a server URL must look like wss://host[:port], not {url!r}")
    server: _JsonObject = {"host": parts.netloc, "protocol": parts.scheme}
    if parts.path not in ("", "/"):
        server["pathname"] = parts.path
    return server


# -- TypeScript --------------------------------------------------------------------------

# Words that cannot name a type. A string, so that the list stays readable.
_TS_RESERVED: Final = frozenset(
    """any bigint boolean break case catch class const continue debugger default delete do
    else enum export extends false finally for function if import in instanceof never new
    null number object return string super switch symbol this throw true try typeof
    undefined unknown var void while with""".split()  # noqa: SIM905
)
_TS_IDENTIFIER: Final = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$")


def _ts_name(name: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_$]", "_", name)
    if not name or name[0].isdigit() or name in _TS_RESERVED:
        name = "_" + name
    return name


def _ts_comment(text: str, indent: str) -> list[str]:
    text = text.strip().replace("*/", "*\\/")
    if not text:
        return []
    lines = text.splitlines()
    if len(lines) == 1:
        return [f"{indent}/** {lines[0]} */"]
    return [f"{indent}/**", *(f"{indent} * {line}".rstrip() for line in lines), f"{indent} */"]


def _ts_union(parts: Iterable[str]) -> str:
    unique = list(dict.fromkeys(parts))
    if "unknown" in unique:
        return "unknown"
    return " | ".join(unique) if unique else "never"


class _TypeScript:
    """Turns the JSON Schemas that pydantic generates into TypeScript type expressions."""

    def __init__(self, names: dict[str, str], defs: _JsonObject) -> None:
        self.names = names  # definition name -> TypeScript name
        self.defs = defs

    def type(self, schema: Any, indent: str = "") -> str:
        if schema is True or schema == {}:
            return "unknown"
        if schema is False:
            return "never"
        if not isinstance(schema, dict):
            return "unknown"
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[-1]
            # Keep "unknown" visible, so that unions containing it collapse.
            return "unknown" if self.defs.get(name) in ({}, True) else self.names[name]
        if "const" in schema:
            return _ts_literal(schema["const"])
        if "enum" in schema:
            return _ts_union(_ts_literal(value) for value in schema["enum"])
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return _ts_union(self.type(item, indent) for item in schema[key])
        if "allOf" in schema:
            parts = [self.type(item, indent) for item in schema["allOf"]]
            return " & ".join(f"({part})" if " " in part else part for part in parts)
        kind = schema.get("type")
        if isinstance(kind, list):
            return _ts_union(self.type({**schema, "type": item}, indent) for item in kind)
        if kind == "string":
            return "string"
        if kind in ("number", "integer"):
            return "number"
        if kind == "boolean":
            return "boolean"
        if kind == "null":
            return "null"
        if kind == "array":
            return self.array(schema, indent)
        if kind == "object" or "properties" in schema:
            return self.object(schema, indent)
        return "unknown"

    def array(self, schema: _JsonObject, indent: str) -> str:
        prefix = [self.type(item, indent) for item in schema.get("prefixItems", [])]
        items = schema.get("items")
        if prefix:
            rest = (
                [] if items is False or items is None else [f"...{self._array_of(items, indent)}"]
            )
            return "[" + ", ".join(prefix + rest) + "]"
        return self._array_of(True if items is None else items, indent)

    def _array_of(self, items: Any, indent: str) -> str:
        inner = self.type(items, indent)
        return f"{inner}[]" if _TS_IDENTIFIER.match(inner) else f"Array<{inner}>"

    def object(self, schema: _JsonObject, indent: str) -> str:
        lines = self.members(schema, indent + "  ")
        if not lines:
            return "Record<string, never>" if schema.get("additionalProperties") is False else "{}"
        return "{\n" + "\n".join(lines) + f"\n{indent}}}"

    def members(self, schema: _JsonObject, indent: str) -> list[str]:
        lines: list[str] = []
        required = set(schema.get("required", []))
        types: list[str] = []
        for name, prop in schema.get("properties", {}).items():
            if isinstance(prop, dict):
                lines.extend(_ts_comment(prop.get("description", ""), indent))
            key = name if _TS_IDENTIFIER.match(name) else json.dumps(name)
            optional = "" if name in required else "?"
            prop_type = self.type(prop, indent)
            types.append(prop_type if not optional else _ts_union([prop_type, "undefined"]))
            lines.append(f"{indent}{key}{optional}: {prop_type};")
        extra = schema.get("additionalProperties")
        if extra is not None and extra is not False:
            extra_type = self.type(extra, indent)
            # An index signature must admit every named property's type as well.
            lines.append(f"{indent}[key: string]: {_ts_union([extra_type, *types])};")
        return lines


def _ts_literal(value: object) -> str:
    if value is None or isinstance(value, (str, bool, int, float)):
        return json.dumps(value)
    return "unknown"


def _ts_channel(schema: EventSchema[Any]) -> str:
    if not schema.is_pattern:
        return json.dumps(schema.channel)
    if set(schema.channel) & set("?[\\"):
        return "string"
    escaped = schema.channel.replace("`", "\\`").replace("$", "\\$")
    return "`" + re.sub(r"\*+", "${string}", escaped) + "`"


_TS_CONTROL: Final = {
    "PingFrame": ('  type: "ping";',),
    "PongFrame": ('  type: "pong";',),
    "SubscribeFrame": ('  type: "subscribe";', "  channels: string[];", "  id?: string | number;"),
    "UnsubscribeFrame": (
        '  type: "unsubscribe";',
        "  channels: string[];",
        "  id?: string | number;",
    ),
    "SubscribedFrame": (
        '  type: "subscribed";',
        "  channels: string[];",
        "  id?: string | number;",
    ),
    "UnsubscribedFrame": (
        '  type: "unsubscribed";',
        "  channels: string[];",
        "  id?: string | number;",
    ),
    "ErrorFrame": (
        '  type: "error";',
        "  code: string;",
        "  message: string;",
        "  id?: string | number;",
        "  channel?: string;",
    ),
    "BrokerStatusFrame": ('  type: "broker";', '  status: "down" | "up";'),
}
_TS_RESERVED_NAMES: Final = frozenset(
    [
        *_TS_CONTROL,
        "WSMessage",
        "EventPayloads",
        "EventChannel",
        "ClientFrame",
        "ControlFrame",
        "ServerFrame",
    ]
)


def typescript(registry: Registry) -> str:
    """Return TypeScript declarations for a client of the registry's channels.

    One type per model (interfaces for objects, unions of string literals for enums), one
    ``<Channel>Message`` interface per channel, ``WSMessage`` (their union: comparing
    ``msg.channel`` with a channel name narrows ``msg.data``), ``EventPayloads`` (exact channel
    name to payload type), and the control frames: ``ClientFrame`` (what the client sends),
    ``ControlFrame`` and ``ServerFrame`` (everything the server sends). The text holds only
    types, so it can be saved as ``.ts`` or ``.d.ts``.
    """
    defs, pairs = _collect(registry, "#/$defs/")
    taken = set(_TS_RESERVED_NAMES)
    names = {name: _unique(_ts_name(name), taken) for name in defs}
    writer = _TypeScript(names, defs)

    out = [
        f"// Generated by wsbridge {__version__} from an event registry. Do not edit.",
        "// Regenerate with: wsbridge schema --format typescript",
        "",
        "// ---- event payloads ----",
    ]
    for name in sorted(defs):
        schema = defs[name]
        out.append("")
        out.extend(_ts_comment(schema.get("description", ""), ""))
        body = writer.members(schema, "  ") if schema.get("type") == "object" else None
        if body is not None and "anyOf" not in schema and "oneOf" not in schema:
            out.append(f"export interface {names[name]} {{")
            out.extend(body)
            out.append("}")
        else:
            out.append(f"export type {names[name]} = {writer.type(schema)};")

    out += ["", "// ---- event frames ----"]
    message_names: list[str] = []
    for schema, ref in pairs:
        words = re.findall(r"[A-Za-z0-9]+", schema.channel)
        base = "".join(word[:1].upper() + word[1:] for word in words) or "Channel"
        message = _unique(_ts_name(base + "Message"), taken)
        message_names.append(message)
        kind = "state: only the latest matters" if schema.kind.value == "state" else "event"
        doc = f"`{schema.channel}` ({kind}). {_description(schema)}".replace("``", "`")
        out.append("")
        out.extend(_ts_comment(doc, ""))
        out.append(f"export interface {message} {{")
        out.append(f"  channel: {_ts_channel(schema)};")
        out.append(f"  data: {writer.type(ref)};")
        out.append("}")
    out.append("")
    out.extend(_ts_comment("Every event frame: compare `channel` to narrow `data`.", ""))
    if message_names:
        out.append("export type WSMessage =")
        out.extend(
            f"  | {name}" + (";" if i == len(message_names) - 1 else "")
            for i, name in enumerate(message_names)
        )
    else:
        out.append("export type WSMessage = never;")
    out.append("")
    out.extend(_ts_comment("The payload type of each exact channel name.", ""))
    exact = [(schema, ref) for schema, ref in pairs if not schema.is_pattern]
    if exact:
        out.append("export interface EventPayloads {")
        out.extend(f"  {json.dumps(s.channel)}: {writer.type(ref)};" for s, ref in exact)
        out.append("}")
    else:
        out.append("export type EventPayloads = Record<never, never>;")
    out.append("export type EventChannel = keyof EventPayloads;")

    out += ["", "// ---- control frames ----"]
    for name, members in _TS_CONTROL.items():
        out.append("")
        out.append(f"export interface {name} {{")
        out.extend(members)
        out.append("}")
    out += [
        "",
        "/** What a client may send. */",
        "export type ClientFrame = PingFrame | SubscribeFrame | UnsubscribeFrame;",
        "/** The frames the server sends that are not events; all have a `type`. */",
        "export type ControlFrame =",
        "  | PongFrame",
        "  | SubscribedFrame",
        "  | UnsubscribedFrame",
        "  | ErrorFrame",
        "  | BrokerStatusFrame;",
        "/** Everything the server sends: control frames have a `type`, event frames do not. */",
        "export type ServerFrame = WSMessage | ControlFrame;",
        "",
    ]
    return "\n".join(out)


# -- text --------------------------------------------------------------------------------


def render(
    registry: Registry,
    fmt: Format,
    *,
    path: str = "/ws",
    title: str = "wsbridge events",
    version: str = "1.0.0",
) -> str:
    """Return the registry described in ``fmt``, as text ending with a newline.

    ``jsonschema`` gives the whole event frame's schema and ``asyncapi`` the document (both
    as indented JSON, which is also YAML); ``typescript`` the declarations. ``path``,
    ``title`` and ``version`` apply to AsyncAPI only.

    Raises:
        ConfigurationError: ``fmt`` is not one of :data:`FORMATS`.
    """
    if fmt == "jsonschema":
        return json.dumps(json_schema(registry), indent=2, ensure_ascii=False) + "\n"
    if fmt == "asyncapi":
        document = asyncapi(registry, path=path, title=title, version=version)
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if fmt == "typescript":
        return typescript(registry)
    raise ConfigurationError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
