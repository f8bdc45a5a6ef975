r"""Channel names, and glob patterns that match exactly as Redis ``PSUBSCRIBE`` does.

A **channel** is the name a message is published on, such as ``risk:alert``. A name that
holds an unescaped ``*``, ``?`` or ``[`` is a **pattern**: a subscription to it receives the
messages of every channel it matches, with the rules of Redis's ``PSUBSCRIBE``, so the
in-memory backend and the Redis backend deliver the same messages.

The rules, as Redis 7.0 applies them (``stringmatchlen`` in ``src/util.c``, case-sensitive),
on the UTF-8 **bytes** of the pattern and of the name:

* ``*`` matches any run of bytes, the empty run included; ``?`` matches one byte, so a
  non-ASCII character, two to four bytes long, takes that many ``?``.
* ``[...]`` matches one byte from the set; ``[^...]`` one byte outside it. A set holds
  bytes, not characters: ``[é]`` is the set of the two bytes of ``é``. In a set,
  ``a-z`` is a range (``z-a`` is the same range), ``\x`` is a literal ``x``, and a ``]``
  right after ``[`` or ``[^`` closes an empty set (which matches nothing; its negation
  matches any byte). Range ends compare as *signed* bytes, as Redis's ``char`` does on
  x86-64: bytes ``0x80``-``0xff`` count as -128 to -1, below every ASCII byte.
* A set with no closing ``]`` takes the rest of the pattern; ``[`` as the last byte matches
  nothing, and ``[^`` as the last two bytes matches any byte. A ``]`` right after a ``-``
  ends a range, not the set: ``[a-]`` is the range ``]``-``a``, unterminated.
* Outside a set, ``\x`` is a literal ``x``; a lone ``\`` at the end is a literal ``\``.
* An empty name matches only the empty pattern: even ``*`` does not match it.
* A pattern with more than 1000 runs of ``*`` followed by something else matches nothing:
  Redis stops recursing there (the fix for CVE-2024-31228, in Redis 6.2.16, 7.2.6, 7.4.1
  and later, and in distributions' patched 7.0 builds). A pattern of at most
  :data:`DEFAULT_MAX_CHANNEL_LENGTH` bytes cannot reach that limit.

A name without an unescaped ``*``, ``?`` or ``[`` is a plain channel: Redis subscribes to it
with ``SUBSCRIBE`` and it matches only the identical name, backslashes included.

This module is pure: no I/O, no event loop.
"""

from __future__ import annotations

import functools
import re
import reprlib
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from wsbridge.exceptions import ConfigurationError, InvalidChannelError

__all__ = [
    "DEFAULT_MAX_CHANNEL_LENGTH",
    "Channel",
    "GlobSet",
    "GlobToken",
    "glob_match",
    "is_pattern",
    "parse_glob",
    "validate_channel",
]

DEFAULT_MAX_CHANNEL_LENGTH: Final = 256
"""The longest channel name or pattern accepted by default, in UTF-8 bytes."""

_WILDCARDS: Final = frozenset("*?[")
_SPECIALS: Final = frozenset("*?[\\")
# Characters a channel name may not hold, by Unicode category: control (Cc), format (Cf:
# invisible, and the bidirectional overrides), surrogates (Cs: not encodable in UTF-8) and
# separators (Zs, Zl, Zp: spaces and line breaks).
_FORBIDDEN_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Zs", "Zl", "Zp"})

_KINDS: Final = {
    "Cc": "a control character",
    "Cf": "an invisible format character",
    "Cs": "a lone surrogate",
}
_SHOWN_LENGTH: Final = 80

_STAR: Final = 0x2A  # *
_QUESTION: Final = 0x3F  # ?
_OPEN: Final = 0x5B  # [
_CLOSE: Final = 0x5D  # ]
_CARET: Final = 0x5E  # ^
_DASH: Final = 0x2D  # -
_BACKSLASH: Final = 0x5C  # \

_CACHE_SIZE: Final = 1024
# Redis gives up (no match) past this many nested ``*`` (CVE-2024-31228): see the module
# docstring.
_MAX_INNER_STARS: Final = 1000

_Matcher = Callable[[bytes], bool]
_Token = int | bytes


def _encode(text: str) -> bytes:
    # ``surrogatepass`` keeps the function total; validate_channel rejects surrogates anyway.
    return text.encode("utf-8", "surrogatepass")


def _shown(name: str) -> str:
    """Return ``name``, shortened if long, for an error message."""
    if len(name) <= _SHOWN_LENGTH:
        return name
    return name[: _SHOWN_LENGTH - 3] + "..."


def _signed(byte: int) -> int:
    """Return ``byte`` read as a C ``char`` on x86-64, which is signed."""
    return byte - 256 if byte >= 0x80 else byte


def _byte_class(members: bytearray, *, negate: bool) -> bytes:
    """Return a bytes regex that matches one byte of a 256-entry membership table."""
    chosen = [b for b in range(256) if bool(members[b]) != negate]
    if not chosen:
        return b"(?!)"
    if len(chosen) == 256:
        return b"(?s:.)"
    parts: list[bytes] = []
    start = prev = chosen[0]
    for b in [*chosen[1:], -1]:
        if b == prev + 1:
            prev = b
            continue
        parts.append(b"\\x%02x" % start if start == prev else b"\\x%02x-\\x%02x" % (start, prev))
        start = prev = b
    return b"[" + b"".join(parts) + b"]"


@dataclass(frozen=True, slots=True)
class GlobSet:
    """A ``[...]`` of a glob pattern, as written: it matches one unit in (or outside) it.

    ``ranges`` holds ``(low, high)`` pairs as they appear (a single member is
    ``(c, c)``; ``z-a`` stays ``(z, a)``): what the ends compare as (signed bytes for
    Redis, characters for a regular expression) is the reader's to decide.
    """

    negate: bool
    ranges: tuple[tuple[int, int], ...]


#: One element of a parsed glob: ``"*"``, ``"?"``, a literal unit, or a set.
GlobToken = Literal["*", "?"] | int | GlobSet


def parse_glob(pattern: Sequence[int]) -> list[GlobToken]:
    """Parse a glob pattern, given as units (UTF-8 bytes, or code points), as Redis does.

    This is the one reading of the syntax in wsbridge: :func:`glob_match` matches its
    tokens against bytes, and :func:`wsbridge.export.glob_regex` writes them as a regular
    expression. Escapes are resolved; a set with no closing ``]`` ends at the last unit.

    >>> parse_glob(b"a*[^b-c]")
    [97, '*', GlobSet(negate=True, ranges=((98, 99),))]
    """
    tokens: list[GlobToken] = []
    n = len(pattern)
    i = 0
    while i < n:
        c = pattern[i]
        if c == _STAR:
            tokens.append("*")
            i += 1
        elif c == _QUESTION:
            tokens.append("?")
            i += 1
        elif c == _OPEN:
            found, i = _read_set(pattern, i + 1)
            tokens.append(found)
        else:
            if c == _BACKSLASH and n - i >= 2:
                i += 1
            tokens.append(pattern[i])
            i += 1
    return tokens


def _read_set(pattern: Sequence[int], i: int) -> tuple[GlobSet, int]:
    """Parse the set that starts after the ``[`` at ``pattern[i - 1]``.

    Returns the set and the index just past it, following Redis's parse step by step,
    including its handling of an unterminated set.
    """
    n = len(pattern)
    negate = i < n and pattern[i] == _CARET
    if negate:
        i += 1
    ranges: list[tuple[int, int]] = []
    while True:
        if n - i >= 2 and pattern[i] == _BACKSLASH:
            i += 1
            ranges.append((pattern[i], pattern[i]))
        elif i < n and pattern[i] == _CLOSE:
            break
        elif i >= n:
            # No closing ``]``: Redis steps back onto the last unit and ends the set there.
            i = n - 1
            break
        elif n - i >= 3 and pattern[i + 1] == _DASH:
            ranges.append((pattern[i], pattern[i + 2]))
            i += 2
        else:
            ranges.append((pattern[i], pattern[i]))
        i += 1
    return GlobSet(negate, tuple(ranges)), i + 1


def _set_regex(found: GlobSet) -> bytes:
    """Return a bytes regex for one byte of ``found``, its range ends as signed bytes."""
    members = bytearray(256)
    for a, b in found.ranges:
        low, high = sorted((_signed(a), _signed(b)))
        for byte in range(256):
            if low <= _signed(byte) <= high:
                members[byte] = 1
    return _byte_class(members, negate=found.negate)


def _segments(pattern: bytes) -> list[list[_Token]]:
    """Split ``pattern`` at its ``*`` into runs of one-byte tokens.

    A token is a literal byte (an ``int``) or a regex matching one byte (``bytes``).
    Consecutive stars count as one. The first and the last run may be empty (the pattern
    starts or ends with ``*``); the runs between are not.
    """
    runs: list[list[_Token]] = [[]]
    for token in parse_glob(pattern):
        if token == "*":
            if runs[-1] or len(runs) == 1:
                runs.append([])
        elif token == "?":
            runs[-1].append(b"(?s:.)")
        elif isinstance(token, GlobSet):
            runs[-1].append(_set_regex(token))
        else:
            runs[-1].append(token)
    return runs


class _Run:
    """A run of one-byte tokens between two stars: found with bytes methods when literal."""

    __slots__ = ("literal", "regex", "width")

    def __init__(self, tokens: list[_Token]) -> None:
        self.width = len(tokens)
        self.literal: bytes | None = None
        self.regex: re.Pattern[bytes] | None = None
        if all(isinstance(token, int) for token in tokens):
            self.literal = bytes(token for token in tokens if isinstance(token, int))
        else:
            self.regex = re.compile(
                b"".join(b"\\x%02x" % t if isinstance(t, int) else t for t in tokens)
            )

    def at(self, name: bytes, position: int) -> bool:
        """Tell whether the run matches ``name`` at ``position``."""
        if self.regex is None:
            assert self.literal is not None
            return name.startswith(self.literal, position)
        return self.regex.match(name, position) is not None

    def after(self, name: bytes, start: int, end: int) -> int:
        """Return where the leftmost match in ``name[start:end]`` ends, or -1."""
        if self.regex is None:
            assert self.literal is not None
            found = name.find(self.literal, start, end)
            return found if found < 0 else found + self.width
        match = self.regex.search(name, start, end)
        return -1 if match is None else match.end()


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _compile(pattern: str) -> _Matcher:
    """Return a function telling whether UTF-8 bytes match ``pattern``.

    Every element but ``*`` matches exactly one byte, so the pattern splits at its stars
    into fixed-width runs: the first must match at the start, the last at the end, and the
    middle ones each at their leftmost place after the previous one. That takes at most
    ``O(len(pattern) * len(name))`` steps, never exponential.
    """
    runs = [_Run(tokens) for tokens in _segments(_encode(pattern))]
    inner_stars = len(runs) - 1 if runs[-1].width else len(runs) - 2
    if inner_stars > _MAX_INNER_STARS:
        return lambda name: False
    if len(runs) == 1:
        only = runs[0]
        return lambda name: len(name) == only.width and only.at(name, 0)

    first, middle, last = runs[0], runs[1:-1], runs[-1]
    min_width = sum(run.width for run in runs)

    def match(name: bytes) -> bool:
        if not name or len(name) < min_width:
            # Redis matches an empty name only against the empty pattern.
            return False
        end = len(name) - last.width
        if not (first.at(name, 0) and last.at(name, end)):
            return False
        position = first.width
        for run in middle:
            position = run.after(name, position, end)
            if position < 0:
                return False
        return True

    return match


def glob_match(pattern: str, name: str) -> bool:
    """Tell whether ``name`` matches the glob ``pattern`` exactly as Redis ``PSUBSCRIBE`` does.

    Matching is case-sensitive and works on the UTF-8 bytes of both strings; the module
    docstring lists the rules. Patterns without wildcards cost one comparison, a prefix
    followed by ``*`` one ``startswith``; other patterns are compiled once and cached.

    >>> glob_match("risk:*", "risk:alert")
    True
    >>> glob_match("system:feed:[dc]*", "system:feed:reconnected")
    False
    """
    if _SPECIALS.isdisjoint(pattern):
        return pattern == name
    prefix = pattern.rstrip("*")
    if _SPECIALS.isdisjoint(prefix):
        # UTF-8 keeps prefixes, so a str prefix is a bytes prefix and the other way round.
        return name.startswith(prefix) and name != ""
    return _compile(pattern)(_encode(name))


def is_pattern(text: str) -> bool:
    r"""Tell whether ``text`` holds an unescaped ``*``, ``?`` or ``[``, making it a pattern.

    A backslash escapes the character after it, so ``news\*`` is not a pattern.

    >>> is_pattern("risk:*"), is_pattern("risk:alert"), is_pattern("risk\\*")
    (True, False, False)
    """
    if _WILDCARDS.isdisjoint(text):
        return False
    escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char in _WILDCARDS:
            return True
    return False


def validate_channel(name: object, *, max_length: int = DEFAULT_MAX_CHANNEL_LENGTH) -> str:
    """Return ``name`` if it is a valid channel name or pattern, else raise.

    A valid name is a non-empty ``str`` of at most ``max_length`` UTF-8 bytes, without
    whitespace, control characters or other invisible characters (Unicode categories
    ``Cc``, ``Cf``, ``Cs``, ``Zs``, ``Zl`` and ``Zp``). Any other printable Unicode is allowed.

    Raises:
        InvalidChannelError: ``name`` breaks one of these rules.
        ConfigurationError: ``max_length`` is not a positive integer.
    """
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise ConfigurationError(f"max_length must be a positive integer, not {max_length!r}")
    if not isinstance(name, str):
        raise InvalidChannelError(reprlib.repr(name), f"must be a str, not {type(name).__name__}")
    if not name:
        raise InvalidChannelError(name, "must not be empty")
    # Every character takes at least one byte: no need to scan a name far too long.
    if len(name) > max_length:
        raise InvalidChannelError(_shown(name), f"longer than {max_length} UTF-8 bytes")
    for position, char in enumerate(name):
        category = unicodedata.category(char)
        if category in _FORBIDDEN_CATEGORIES or char.isspace():
            kind = "whitespace" if char.isspace() else _KINDS.get(category, "whitespace")
            raise InvalidChannelError(
                _shown(name), f"{kind} ({char!r}, U+{ord(char):04X}) at position {position}"
            )
    size = len(name.encode("utf-8"))
    if size > max_length:
        raise InvalidChannelError(_shown(name), f"{size} UTF-8 bytes, more than {max_length}")
    return name


class Channel:
    """A validated channel name or pattern: an immutable, hashable value.

    ``Channel("risk:alert")`` is a plain channel; ``Channel("risk:*")`` a pattern
    (:attr:`is_pattern`). Two channels are equal when their names are. ``str()`` gives the
    name.

    >>> Channel("risk:*").matches("risk:alert")
    True
    """

    __slots__ = ("_is_pattern", "_matcher", "_name")

    _name: str
    _is_pattern: bool
    _matcher: _Matcher | None

    def __init__(self, name: str, *, max_length: int = DEFAULT_MAX_CHANNEL_LENGTH) -> None:
        """Validate ``name`` with :func:`validate_channel` and wrap it.

        Raises:
            InvalidChannelError: ``name`` is not a valid channel name or pattern.
        """
        validate_channel(name, max_length=max_length)
        pattern = is_pattern(name)
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_is_pattern", pattern)
        object.__setattr__(self, "_matcher", _compile(name) if pattern else None)

    @property
    def name(self) -> str:
        """The channel name or pattern, as given."""
        return self._name

    @property
    def is_pattern(self) -> bool:
        """Whether the name holds an unescaped ``*``, ``?`` or ``[`` (see :func:`is_pattern`)."""
        return self._is_pattern

    def matches(self, channel_name: str) -> bool:
        """Tell whether a message published on ``channel_name`` reaches this subscription.

        A pattern matches as Redis ``PSUBSCRIBE`` does (:func:`glob_match`); a plain channel
        matches only its identical name, as ``SUBSCRIBE`` does.
        """
        if self._matcher is None:
            return channel_name == self._name
        return self._matcher(_encode(channel_name))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Channel):
            return self._name == other._name
        return NotImplemented

    def __hash__(self) -> int:
        return hash((Channel, self._name))

    def __str__(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"Channel({self._name!r})"

    def __reduce__(self) -> tuple[type[Channel], tuple[str]]:
        return (Channel, (self._name,))
