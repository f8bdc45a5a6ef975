"""Channel allow-lists: which channels and patterns a client may subscribe to.

An :class:`AllowList` holds channel names and glob patterns (``trade:*``). It permits:

* a channel that is in the list, or that one of the list's patterns matches
  (``trade:*`` permits ``trade:executed``);
* a pattern only if the pattern itself is in the list, or if it can only match channels
  that an entry of the form ``prefix*`` (one trailing ``*``, no other wildcard) matches:
  ``trade:*`` also permits ``trade:exec*`` and ``trade:?x``, since every channel they
  match starts with ``trade:``. ``*`` permits every channel and every pattern.

A pattern subscription delivers only the channels the list permits, because the endpoint
checks each channel that reaches a client through a pattern as well.

This module is pure: no I/O, no event loop.
"""

from __future__ import annotations

from collections.abc import Iterable

from wsbridge.channel import glob_match, is_pattern, validate_channel

__all__ = ["AllowList"]

_SPECIALS = frozenset("*?[\\")


def _literal_prefix(pattern: str) -> str:
    # The characters before the first wildcard or escape: every match starts with them.
    for position, char in enumerate(pattern):
        if char in _SPECIALS:
            return pattern[:position]
    return pattern


class AllowList:
    """The channels and patterns a client may subscribe to; call it with a name.

    >>> allow = AllowList(["trade:*", "risk:alert"])
    >>> allow("trade:executed"), allow("trade:exec*"), allow("risk:*"), allow("risk:alert")
    (True, True, False, True)

    Raises :class:`~wsbridge.exceptions.InvalidChannelError` for an entry that is not a
    valid channel name or pattern.
    """

    __slots__ = ("_exact", "_patterns", "_prefixes", "entries")

    def __init__(self, entries: Iterable[str]) -> None:
        #: The names and patterns, validated, duplicates removed, in their given order.
        self.entries: tuple[str, ...] = tuple(
            dict.fromkeys(validate_channel(entry) for entry in entries)
        )
        self._exact = frozenset(self.entries)
        self._patterns = tuple(entry for entry in self.entries if is_pattern(entry))
        # Entries "prefix*" with a literal prefix: they contain every narrower pattern.
        self._prefixes = tuple(
            entry[:-1]
            for entry in self._patterns
            if entry.endswith("*") and _literal_prefix(entry[:-1]) == entry[:-1]
        )

    def __call__(self, name: str) -> bool:
        """Whether a client may subscribe to ``name``, a channel or a pattern."""
        if name in self._exact:
            return True
        if is_pattern(name):
            prefix = _literal_prefix(name)
            return any(prefix.startswith(p) for p in self._prefixes)
        return any(glob_match(pattern, name) for pattern in self._patterns)

    def __repr__(self) -> str:
        return f"AllowList({list(self.entries)!r})"
