"""Event schemas: which pydantic model describes the messages of which channel.

An :class:`EventSchema` ties a channel, or a glob pattern such as ``risk:*``, to a pydantic
model and to a :class:`DeliveryKind`. A :class:`Registry` holds many of them; a broadcaster
is given the registry it serves and asks it three things:

* :meth:`Registry.encode` turns what a program publishes into the JSON bytes sent to the
  broker, after validating it against the channel's model (nothing is sent when it fails);
* :meth:`Registry.check` validates a message another process published, returning the error
  instead of raising, so the broadcaster can apply its policy for invalid messages;
* :meth:`Registry.kind_for` tells whether a channel carries ``state`` (may be conflated for a
  slow client) or ``event`` messages (never conflated).

Channels without a schema are allowed: their messages are forwarded as any JSON value.

.. code-block:: python

    from pydantic import BaseModel
    from wsbridge.schema import DeliveryKind, Registry

    registry = Registry()

    @registry.event("chat:message")
    class ChatMessage(BaseModel):
        author: str
        text: str

    registry.register("presence:*", Presence, kind=DeliveryKind.STATE)
    registry.encode("chat:message", {"author": "ann", "text": "hi"})
    # b'{"author":"ann","text":"hi"}'

This module is pure: no I/O, no event loop.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final, Generic, TypeVar, cast

from pydantic import BaseModel, ValidationError

from wsbridge.channel import glob_match, is_pattern, validate_channel
from wsbridge.exceptions import ConfigurationError, EventValidationError
from wsbridge.history import History

__all__ = [
    "DeliveryKind",
    "EventSchema",
    "Registry",
]

M = TypeVar("M", bound=BaseModel)

# Resolved channel names kept by a registry with patterns. Names come from the broker, so
# the number of distinct ones is not bounded by the registry: the cache is emptied when full.
_RESOLVE_CACHE_SIZE: Final = 4096

# Compact, UTF-8, and never NaN or Infinity: a browser's JSON.parse rejects those.
_ENCODER: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)

_JSON_SCALARS: Final = (str, int, float, bool, type(None))


class DeliveryKind(str, Enum):
    """How the messages of a channel may be treated when a client reads too slowly.

    ``STATE``: each message carries the latest value of something (a portfolio snapshot);
    only the newest one matters, so pending messages may be conflated for a slow client.

    ``EVENT``: each message is something that happened (a fill, an alert); it is never
    conflated. A client that cannot keep up is disconnected instead, unless its endpoint
    uses ``overflow="drop"``, which drops messages without telling the client.
    """

    STATE = "state"
    EVENT = "event"


def _validation_error(channel: str, exc: ValidationError) -> EventValidationError:
    # No input values in the error: payloads can be large and may hold private data, and
    # these errors end up in logs.
    errors = exc.errors(include_url=False, include_input=False)
    return EventValidationError(channel, cast("list[dict[str, object]]", errors))


@dataclass(frozen=True)
class EventSchema(Generic[M]):
    """The pydantic model that a channel's messages must match, and how they are delivered.

    ``channel`` is an exact channel name or a glob pattern (``risk:*``) matched as Redis
    ``PSUBSCRIBE`` matches; ``model`` is a pydantic model class; ``kind`` says whether the
    channel carries state or events (see :class:`DeliveryKind`); ``description`` is a short
    human text used by the exports (the model's docstring is used when it is empty).

    Raises:
        InvalidChannelError: ``channel`` is not a valid channel name or pattern.
        ConfigurationError: ``model`` is not a pydantic model class, or ``kind`` is unknown.
    """

    channel: str
    model: type[M]
    kind: DeliveryKind = DeliveryKind.EVENT
    description: str = ""

    def __post_init__(self) -> None:
        validate_channel(self.channel)
        if not (isinstance(self.model, type) and issubclass(self.model, BaseModel)):
            raise ConfigurationError(
                f"the schema of channel {self.channel!r} must be a pydantic BaseModel "
                f"subclass, not {self.model!r}"
            )
        try:
            kind = DeliveryKind(self.kind)
        except ValueError:
            raise ConfigurationError(
                f"kind must be one of {[k.value for k in DeliveryKind]}, not {self.kind!r}"
            ) from None
        if not isinstance(self.description, str):
            raise ConfigurationError("description must be a str")
        # Frozen: a plain "state" string given by the caller is stored as the enum member.
        object.__setattr__(self, "kind", kind)

    @property
    def is_pattern(self) -> bool:
        """Whether :attr:`channel` is a glob pattern rather than one exact channel name."""
        return is_pattern(self.channel)

    def matches(self, name: str) -> bool:
        """Tell whether messages published on channel ``name`` fall under this schema."""
        if self.is_pattern:
            return glob_match(self.channel, name)
        return name == self.channel

    def validate(self, data: object, *, channel: str | None = None) -> M:
        """Validate Python data (a mapping, or a model instance) into :attr:`model`.

        ``channel`` names the concrete channel in the error when this schema is a pattern.

        Raises:
            EventValidationError: ``data`` does not match; it names the channel and fields.
        """
        try:
            return self.model.model_validate(data)
        except ValidationError as exc:
            raise _validation_error(channel or self.channel, exc) from None

    def validate_json(self, text: str | bytes | bytearray, *, channel: str | None = None) -> M:
        """Validate JSON text into :attr:`model`, as :meth:`validate` does for Python data.

        Raises:
            EventValidationError: ``text`` is not JSON, or does not match the model.
        """
        try:
            return self.model.model_validate_json(text)
        except ValidationError as exc:
            raise _validation_error(channel or self.channel, exc) from None

    def dump_json(self, instance: M) -> bytes:
        """Serialise a validated instance to the compact UTF-8 JSON sent on the wire.

        Only the fields that were set are written (pydantic's ``exclude_unset``): a publisher's
        partial payload is not padded with nulls or defaults.
        """
        return self.model.__pydantic_serializer__.to_json(instance, exclude_unset=True)


class Registry:
    """Channel names and patterns mapped to their :class:`EventSchema`, in registration order.

    Register with :meth:`register`, with the :meth:`event` decorator, or by passing schemas
    to the constructor; :meth:`freeze` forbids further registrations. Lookups try the exact
    channel name first, then the patterns in the order they were registered. Registries
    combine with :meth:`merge` or ``a | b``.

    ``len(registry)``, ``iter(registry)`` (the schemas) and ``key in registry`` (a channel
    or pattern registered exactly under that string) work as for a collection.

    ``history`` maps channels or patterns to the :class:`~wsbridge.history.History` kept
    for them (see :meth:`keep_history`); a channel need not have a schema to have history.
    """

    __slots__ = ("_by_key", "_cache", "_exact", "_frozen", "_history", "_patterns")

    def __init__(
        self,
        schemas: Iterable[EventSchema[Any]] = (),
        *,
        history: Mapping[str, History] | None = None,
    ) -> None:
        self._by_key: dict[str, EventSchema[Any]] = {}
        self._exact: dict[str, EventSchema[Any]] = {}
        self._patterns: list[EventSchema[Any]] = []
        self._cache: dict[str, EventSchema[Any] | None] = {}
        self._history: dict[str, History] = {}
        self._frozen = False
        for schema in schemas:
            self.add(schema)
        for key, kept in (history or {}).items():
            self.keep_history(key, kept)

    def freeze(self) -> Registry:
        """Forbid further registrations, and return this registry.

        Registries shared by many users, such as :data:`wsbridge.trading.registry`, are
        frozen; extend one by merging it into a new registry: ``trading.registry | mine``.
        """
        self._frozen = True
        return self

    @property
    def frozen(self) -> bool:
        """Whether :meth:`freeze` was called: registering then raises."""
        return self._frozen

    # -- building ------------------------------------------------------------------------

    def add(self, schema: EventSchema[M]) -> EventSchema[M]:
        """Register a ready-made :class:`EventSchema` and return it.

        Raises:
            ConfigurationError: its channel or pattern is already registered, or ``schema``
                is not an :class:`EventSchema`.
        """
        if not isinstance(schema, EventSchema):
            raise ConfigurationError(f"expected an EventSchema, not {type(schema).__name__}")
        if self._frozen:
            raise ConfigurationError(
                f"cannot register {schema.channel!r}: this registry is frozen; "
                "merge it into a new one instead (frozen | Registry())"
            )
        existing = self._by_key.get(schema.channel)
        if existing is not None:
            raise ConfigurationError(
                f"channel {schema.channel!r} is already registered "
                f"(to {existing.model.__qualname__})"
            )
        self._by_key[schema.channel] = schema
        if schema.is_pattern:
            self._patterns.append(schema)
        else:
            self._exact[schema.channel] = schema
        self._cache.clear()
        return schema

    def keep_history(self, channel: str, history: History | None = None) -> None:
        """Keep history for ``channel`` (a name or a glob pattern): offsets, resume, replay.

        ``history`` defaults to ``History()``. An exact name wins over patterns; patterns
        are tried in the order they were declared.

        Raises:
            ConfigurationError: the registry is frozen, or ``history`` is not a History.
            InvalidChannelError: ``channel`` is not a valid channel name or pattern.
        """
        if self._frozen:
            raise ConfigurationError(f"cannot declare history for {channel!r}: registry is frozen")
        kept = History() if history is None else history
        if not isinstance(kept, History):
            raise ConfigurationError(f"expected a History, not {type(kept).__name__}")
        self._history[validate_channel(channel)] = kept

    def history_for(self, channel: str) -> History | None:
        """The history kept for the exact channel ``channel``, or ``None``."""
        history = self._history
        if not history:
            return None
        found = history.get(channel)
        if found is not None:
            return found
        for key, kept in history.items():
            if is_pattern(key) and glob_match(key, channel):
                return kept
        return None

    @property
    def history(self) -> dict[str, History]:
        """The history declarations, by channel or pattern, in declaration order."""
        return dict(self._history)

    def register(
        self,
        channel: str,
        model: type[M],
        *,
        kind: DeliveryKind = DeliveryKind.EVENT,
        description: str = "",
    ) -> EventSchema[M]:
        """Register ``model`` as the schema of ``channel`` (a name or a glob pattern).

        Raises:
            ConfigurationError: the channel is already registered, or ``model`` is not a
                pydantic model class.
            InvalidChannelError: ``channel`` is not a valid channel name or pattern.
        """
        return self.add(EventSchema(channel, model, kind, description))

    def event(
        self,
        channel: str,
        *,
        kind: DeliveryKind = DeliveryKind.EVENT,
        description: str = "",
    ) -> Callable[[type[M]], type[M]]:
        """Class decorator form of :meth:`register`; returns the model class unchanged.

        .. code-block:: python

            @registry.event("presence:update", kind=DeliveryKind.STATE)
            class Presence(BaseModel):
                user: str
                online: bool
        """

        def decorate(model: type[M]) -> type[M]:
            self.register(channel, model, kind=kind, description=description)
            return model

        return decorate

    def merge(self, *others: Registry) -> Registry:
        """Return a new registry with this one's schemas followed by the others'.

        A schema present in both, identical, is kept once.

        Raises:
            ConfigurationError: two registries map the same channel to different schemas.
        """
        merged = Registry(self, history=self._history)
        for other in others:
            if not isinstance(other, Registry):
                raise ConfigurationError(f"cannot merge a {type(other).__name__} into a Registry")
            for schema in other:
                if merged._by_key.get(schema.channel) != schema:
                    merged.add(schema)
            for key, kept in other.history.items():
                if merged._history.get(key, kept) != kept:
                    raise ConfigurationError(f"two registries keep different history for {key!r}")
                merged._history[key] = kept
        return merged

    def __or__(self, other: Registry) -> Registry:
        if not isinstance(other, Registry):
            return NotImplemented
        return self.merge(other)

    # -- lookups -------------------------------------------------------------------------

    def schema_for(self, channel: str) -> EventSchema[Any] | None:
        """Return the schema of messages published on ``channel``, or ``None``.

        The exact name wins; otherwise the first registered pattern that matches it.
        """
        if not self._patterns:
            return self._exact.get(channel)
        cache = self._cache
        try:
            return cache[channel]
        except KeyError:
            pass
        found = self._exact.get(channel)
        if found is None:
            for schema in self._patterns:
                if glob_match(schema.channel, channel):
                    found = schema
                    break
        if len(cache) >= _RESOLVE_CACHE_SIZE:
            cache.clear()
        cache[channel] = found
        return found

    def get(self, key: str) -> EventSchema[Any] | None:
        """Return the schema registered under exactly ``key`` (a name or a pattern), or None.

        Unlike :meth:`schema_for`, this does not match names against patterns.
        """
        return self._by_key.get(key)

    def kind_for(self, channel: str) -> DeliveryKind:
        """Return the delivery kind of ``channel``: :attr:`DeliveryKind.EVENT` when unknown."""
        schema = self.schema_for(channel)
        return DeliveryKind.EVENT if schema is None else schema.kind

    def channels(self) -> list[str]:
        """Return the exact (non-pattern) channel names, in registration order.

        These are the channels a new client is subscribed to by default.
        """
        return list(self._exact)

    def patterns(self) -> list[str]:
        """Return the registered glob patterns, in registration order."""
        return [schema.channel for schema in self._patterns]

    def __iter__(self) -> Iterator[EventSchema[Any]]:
        return iter(list(self._by_key.values()))

    def __len__(self) -> int:
        return len(self._by_key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self._by_key

    def __repr__(self) -> str:
        return f"Registry({list(self._by_key)!r})"

    # -- validation and encoding ---------------------------------------------------------

    def validate(self, channel: str, data: object) -> object:
        """Validate ``data`` for ``channel`` and return the model instance.

        Data on a channel without a schema is returned unchanged.

        Raises:
            EventValidationError: ``data`` does not match the channel's schema.
        """
        schema = self.schema_for(channel)
        if schema is None:
            return data
        return schema.validate(data, channel=channel)

    def encode(self, channel: str, data: object) -> bytes:
        """Validate ``data`` for ``channel`` and return the compact UTF-8 JSON to publish.

        With a schema, validation is strict: an invalid payload raises and nothing should
        be sent. An instance of the channel's model (or of a subclass) is serialised
        directly, without a round trip through a dict; anything else is validated into the
        model first. In both cases the **model's serialisation** is what goes on the wire,
        so coerced values are written in their canonical form (a timestamp given as
        ``"2026-03-12T14:30:00+00:00"`` or as a ``datetime`` is written
        ``"2026-03-12T14:30:00Z"``), and only the fields the publisher set are written:
        a partial payload is not padded with nulls or defaults.

        Without a schema, ``data`` may be JSON-compatible Python data (``dict`` with
        ``str`` keys, ``list``, ``tuple``, ``str``, ``int``, ``float``, ``bool``,
        ``None``) or any pydantic model, which is serialised by its own configuration.

        Raises:
            EventValidationError: ``data`` does not match the channel's schema, or holds
                NaN or Infinity (not valid JSON).
            TypeError: there is no schema and ``data`` holds a value that is not JSON.
        """
        schema = self.schema_for(channel)
        if schema is None:
            return _encode_plain(channel, data)
        if isinstance(data, schema.model):
            return schema.dump_json(data)
        return schema.dump_json(schema.validate(data, channel=channel))

    def check(self, channel: str, payload: object) -> EventValidationError | None:
        """Validate a decoded broker message; return the error rather than raising it.

        ``payload`` is the JSON-decoded message another process published on ``channel``.
        Returns ``None`` when it is valid or when the channel has no schema (a dict lookup,
        or a cached one when patterns are registered).
        """
        schema = self.schema_for(channel)
        if schema is None:
            return None
        try:
            schema.model.model_validate(payload)
        except ValidationError as exc:
            return _validation_error(channel, exc)
        return None


def _encode_plain(channel: str, data: object) -> bytes:
    """Encode data published on a channel without a schema."""
    if isinstance(data, BaseModel):
        return data.__pydantic_serializer__.to_json(data)
    try:
        return _ENCODER.encode(data).encode("utf-8")
    except (TypeError, ValueError) as exc:
        problem = _find_non_json(data)
        if problem is None:  # e.g. a circular reference
            raise TypeError(f"cannot encode the payload for channel {channel!r}: {exc}") from None
        location, value = problem
        if isinstance(value, float):
            error: dict[str, object] = {
                "loc": location,
                "msg": "NaN and Infinity are not valid JSON",
                "type": "finite_number",
            }
            raise EventValidationError(channel, [error]) from None
        where = ".".join(map(str, location)) or "<payload>"
        raise TypeError(
            f"cannot encode {type(value).__name__} at {where} for channel {channel!r}: without "
            "a registered schema a payload must be JSON data (dict, list, str, int, float, "
            "bool, None) or a pydantic model"
        ) from None


def _find_non_json(data: object) -> tuple[tuple[str | int, ...], object] | None:
    """Return the location and value of the first non-JSON item in ``data``, if any."""
    stack: list[tuple[tuple[str | int, ...], object]] = [((), data)]
    seen: set[int] = set()
    while stack:
        location, value = stack.pop()
        if isinstance(value, float):
            if not math.isfinite(value):
                return location, value
        elif isinstance(value, _JSON_SCALARS):
            continue
        elif isinstance(value, dict):
            if id(value) in seen:
                continue
            seen.add(id(value))
            for key in value:
                if not isinstance(key, _JSON_SCALARS):
                    return (*location, repr(key)), key
            # Reversed, so that the stack yields items in document order.
            stack.extend(((*location, str(k)), v) for k, v in reversed(value.items()))
        elif isinstance(value, (list, tuple)):
            if id(value) in seen:
                continue
            seen.add(id(value))
            stack.extend(
                ((*location, index), item) for index, item in reversed(list(enumerate(value)))
            )
        else:
            return location, value
    return None
