from __future__ import annotations

import copy
import os
import pickle
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.redis_server import scaled
from wsbridge.channel import (
    DEFAULT_MAX_CHANNEL_LENGTH,
    Channel,
    glob_match,
    is_pattern,
    validate_channel,
)
from wsbridge.exceptions import ConfigurationError, InvalidChannelError, WsbridgeError

# (pattern, name, does Redis 7.0 PSUBSCRIBE deliver?). tests/test_channel_redis.py checks
# every row against a real redis-server too.
GLOB_CASES: list[tuple[str, str, bool]] = [
    # no wildcard: equality, case-sensitive
    ("risk:alert", "risk:alert", True),
    ("risk:alert", "risk:alerts", False),
    ("risk:alert", "Risk:alert", False),
    ("", "", True),
    ("", "a", False),
    ("a", "", False),
    # '*': any run of bytes, empty included; consecutive stars are one
    ("risk:*", "risk:alert", True),
    ("risk:*", "risk:", True),
    ("risk:*", "risk", False),
    ("*:alert", "risk:alert", True),
    ("*", "a", True),
    ("***", "abc", True),
    ("a**b", "ab", True),
    ("*a*b*c", "xaybzc", True),
    ("*a*b*c", "xaybzcd", False),
    ("*a*b*c*", "xaybzcd", True),
    ("a*a*a*b", "aaaab", True),
    ("a*a*a*b", "aab", False),
    ("system:*:disconnected", "system:feed:disconnected", True),
    ("system:*:disconnected", "system:disconnected", False),
    # an empty name matches only the empty pattern: not even '*'
    ("*", "", False),
    ("**", "", False),
    # '?': exactly one byte, so a non-ASCII character takes several
    ("?", "a", True),
    ("?", "", False),
    ("?", "ab", False),
    ("a?c", "abc", True),
    ("?", "é", False),
    ("??", "é", True),
    ("????", "😀", True),
    ("???", "😀", False),
    # sets
    ("[abc]", "b", True),
    ("[abc]", "d", False),
    ("[^abc]", "d", True),
    ("[^abc]", "a", False),
    ("[a-c]x", "bx", True),
    ("[a-c]", "d", False),
    ("[c-a]", "b", True),  # a reversed range is swapped
    ("[a-c-e]", "d", False),  # a-c, then '-' and 'e' as literals
    ("[a-c-e]", "-", True),
    ("[a-c-e]", "e", True),
    ("[-a]", "-", True),
    ("[a-]", "]", True),  # range from 'a' down to ']': the ']' ends the range, not the set
    ("[a-]", "_", True),
    ("[a-]", "-", False),
    ("[*]", "*", True),
    ("[?]", "a", False),
    ("[]]", "]", False),  # '[]' is an empty set, matching nothing
    ("[]", "]", False),
    ("[^]a]", "ba]", True),  # '[^]' matches any byte
    ("[^]a]", "b", False),
    ("[[]", "[", True),
    # escapes in sets
    ("[\\]]", "]", True),
    ("[\\^a]", "^", True),
    ("[\\-z]", "-", True),
    ("[a\\-z]", "b", False),
    ("[\\", "\\", True),  # unterminated: a lone '\' at the end is a literal
    ("[\\", "a", False),
    # unterminated sets take the rest of the pattern
    ("[abc", "b", True),
    ("[abc", "bc", False),
    ("x[a-", "x-", True),
    ("x[a-", "xa", True),
    ("x[a-", "xb", False),
    ("[", "[", False),  # '[' as the last byte matches nothing
    ("[", "a", False),
    ("a[", "a", False),
    ("[^", "a", True),  # '[^' as the last bytes matches any byte
    ("[^", "^", True),
    ("[^", "ab", False),
    ("a[^", "ab", True),
    # escapes outside sets
    ("\\*", "*", True),
    ("\\*", "a", False),
    ("\\?", "?", True),
    ("\\[a]", "[a]", True),
    ("\\a", "a", True),
    ("\\\\", "\\", True),
    ("\\", "\\", True),  # a lone '\' at the end is a literal '\'
    ("a\\", "a\\", True),
    ("a\\", "a", False),
    ("news\\*", "news\\*", False),
    # non-ASCII: bytes, and signed bytes in ranges
    ("prix:€", "prix:€", True),
    ("prix:*", "prix:€", True),
    ("[é]", "é", False),  # one set takes one byte; 'é' is two
    ("[é]?", "é", True),
    ("[\x7f-é]", "a", True),  # 0x7f..0xc3 signed is -61..127: all ASCII ...
    ("[\x7f-é]?", "é", True),  # ... and 0xc3..0xff
    ("[\x7f-é]?", "\x80", False),  # 0xc2 (-62) is outside
    ("[a-é]?", "é", True),  # 'a'..0xc3 signed is -61..97
    ("[a-é]", "b", False),
    ("[^\x00-\x7f]?", "é", True),
    ("[\x00-\x7f]?", "é", False),
    ("*é", "café", True),
    ("*e", "café", False),
]


# Redis stops after 1000 nested stars (CVE-2024-31228 fix, present in the installed 7.0.15).
NESTING_CASES: list[tuple[str, str, bool]] = [
    ("*a" * 1000, "a" * 1000, True),
    ("*a" * 1001, "a" * 1001, False),  # 1001 stars followed by something: no match
    ("*a" * 1000 + "*", "a" * 1000 + "b", True),  # a trailing star does not count
    ("a*" * 1001, "a" * 1001, True),
    ("a*" * 1002, "a" * 1002, False),
    ("**a" * 1000, "a" * 1000, True),  # a run of stars counts once
    ("*[*]" * 1001, "*" * 1001, False),
    ("\\*" * 1001 + "a", "*" * 1001 + "a", True),  # escaped stars do not count
]


def _signed(byte: int) -> int:
    return byte - 256 if byte >= 0x80 else byte


def reference_match(pattern: str, name: str) -> bool:
    """Redis 7.0's stringmatchlen (nocase=0), step by step, as an independent oracle.

    Includes the nesting limit of the CVE-2024-31228 fix, which the installed 7.0.15 has.
    Indexes follow the C pointers; ``+ b"\\0"`` stands in for the sds terminator, the one
    byte past the end the C code may read. Recursive: keep patterns under ~900 stars.
    """
    pat = pattern.encode("utf-8", "surrogatepass") + b"\0"
    text = name.encode("utf-8", "surrogatepass") + b"\0"
    skip_longer = [False]

    def impl(p: int, plen: int, s: int, slen: int, nesting: int) -> bool:
        if nesting > 1000:
            return False
        while plen and slen:
            c = pat[p]
            if c == ord("*"):
                while plen and pat[p + 1] == ord("*"):
                    p += 1
                    plen -= 1
                if plen == 1:
                    return True
                while slen:
                    if impl(p + 1, plen - 1, s, slen, nesting + 1):
                        return True
                    if skip_longer[0]:
                        return False
                    s += 1
                    slen -= 1
                skip_longer[0] = True
                return False
            if c == ord("?"):
                s += 1
                slen -= 1
            elif c == ord("["):
                p += 1
                plen -= 1
                negate = pat[p] == ord("^")
                if negate:
                    p += 1
                    plen -= 1
                matched = False
                while True:
                    if pat[p] == ord("\\") and plen >= 2:
                        p += 1
                        plen -= 1
                        if pat[p] == text[s]:
                            matched = True
                    elif pat[p] == ord("]"):
                        break
                    elif plen == 0:
                        p -= 1
                        plen += 1
                        break
                    elif plen >= 3 and pat[p + 1] == ord("-"):
                        start, end = _signed(pat[p]), _signed(pat[p + 2])
                        if start > end:
                            start, end = end, start
                        p += 2
                        plen -= 2
                        if start <= _signed(text[s]) <= end:
                            matched = True
                    elif pat[p] == text[s]:
                        matched = True
                    p += 1
                    plen -= 1
                if negate:
                    matched = not matched
                if not matched:
                    return False
                s += 1
                slen -= 1
            else:
                if c == ord("\\") and plen >= 2:
                    p += 1
                    plen -= 1
                if pat[p] != text[s]:
                    return False
                s += 1
                slen -= 1
            p += 1
            plen -= 1
            if slen == 0:
                while pat[p] == ord("*"):
                    p += 1
                    plen -= 1
                break
        return plen == 0 and slen == 0

    return impl(0, len(pat) - 1, 0, len(text) - 1, 0)


# -- glob_match ----------------------------------------------------------------------------


@pytest.mark.parametrize(("pattern", "name", "expected"), GLOB_CASES)
def test_glob_match_cases(pattern: str, name: str, expected: bool) -> None:
    assert glob_match(pattern, name) is expected


@pytest.mark.parametrize(("pattern", "name", "expected"), GLOB_CASES)
def test_reference_agrees_with_cases(pattern: str, name: str, expected: bool) -> None:
    # The oracle used by the property tests must itself reproduce the table.
    assert reference_match(pattern, name) is expected


def test_glob_match_is_case_sensitive() -> None:
    assert glob_match("RISK:*", "RISK:alert")
    assert not glob_match("RISK:*", "risk:alert")
    assert not glob_match("[A-Z]", "a")


def test_range_bounds_compare_as_signed_bytes() -> None:
    # Unsigned, 0x7f..0xc3 would hold 0x80..0xc3 and no letter; signed, it is the other way.
    assert glob_match("[\x7f-é]", "z")
    assert not glob_match("[\x7f-é]?", "\u00bf")  # 0xc2 0xbf
    assert glob_match("[\x7f-é]?", "\u00ff")  # 0xc3 0xbf
    # '[' c2 80 '-' c2 bf ']': the literal 0xc2, the range 0x80..0xc2 and the literal 0xbf.
    assert glob_match("[\u0080-\u00bf]?", "\u00bf")  # c2 bf
    assert not glob_match("[\u0080-\u00bf]?", "\u00c0")  # c3 80
    assert not glob_match("[\u0080-\u00bf]", "a")


def test_pathological_pattern_is_not_exponential() -> None:
    pattern = "a*" * 40 + "b"
    name = "a" * 2000
    started = time.perf_counter()
    assert not glob_match(pattern, name)
    assert glob_match(pattern, name + "b")
    assert time.perf_counter() - started < scaled(2.0)


@pytest.mark.parametrize(("pattern", "name", "expected"), NESTING_CASES)
def test_star_nesting_limit(pattern: str, name: str, expected: bool) -> None:
    assert glob_match(pattern, name) is expected


def test_long_name_against_many_stars() -> None:
    pattern = "*" + "*".join("x?z" for _ in range(50)) + "*"
    assert glob_match(pattern, "xyz" * 50)
    assert not glob_match(pattern, "xyz" * 49 + "xy")


_THOROUGH = os.environ.get("HYPOTHESIS_PROFILE", "").strip().lower() == "thorough"
_EXAMPLES = 10_000 if _THOROUGH else 500
_PATTERN_CHARS = [*"*?[]^-\\" * 3, *"ab:", "é", "€", "😀", "\x7f", "\x00"]
_NAME_CHARS = [*"ab:", *"*?[]^-\\", "é", "€", "😀", "\x7f", "\x00"]


@st.composite
def _pattern_and_name(draw: st.DrawFn) -> tuple[str, str]:
    pattern = draw(st.text(st.sampled_from(_PATTERN_CHARS), max_size=12))
    if draw(st.booleans()):
        return pattern, draw(st.text(st.sampled_from(_NAME_CHARS), max_size=12))
    # A name built from the pattern, to reach matches often.
    parts = []
    for char in pattern:
        if char == "*":
            parts.append(draw(st.text(st.sampled_from(_NAME_CHARS), max_size=3)))
        elif char in "?[" or draw(st.integers(0, 9)) == 0:
            parts.append(draw(st.sampled_from(_NAME_CHARS)))
        elif char != "\\":
            parts.append(char)
    return pattern, "".join(parts)


@settings(max_examples=_EXAMPLES, deadline=None)
@given(_pattern_and_name())
def test_glob_match_agrees_with_reference(case: tuple[str, str]) -> None:
    pattern, name = case
    assert glob_match(pattern, name) == reference_match(pattern, name)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=20), st.text(max_size=20))
def test_glob_match_agrees_with_reference_on_any_text(pattern: str, name: str) -> None:
    assert glob_match(pattern, name) == reference_match(pattern, name)


@given(st.text(st.characters(exclude_characters="*?[\\"), max_size=10), st.text(max_size=10))
def test_pattern_without_wildcards_is_equality(literal: str, name: str) -> None:
    assert glob_match(literal, literal)
    assert glob_match(literal, name) == (literal == name)


@given(st.text(st.characters(exclude_characters="*?[\\"), max_size=10), st.text(max_size=10))
def test_prefix_star_is_startswith(prefix: str, rest: str) -> None:
    assert glob_match(prefix + "*", prefix + rest) == (prefix + rest != "")
    assert glob_match(prefix + "*", rest) == (rest.startswith(prefix) and rest != "")


# -- is_pattern ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("risk:alert", False),
        ("", False),
        ("risk:*", True),
        ("risk:?", True),
        ("risk:[ab]", True),
        ("[", True),
        ("]", False),
        ("^-", False),
        ("risk\\*", False),
        ("risk\\?", False),
        ("risk\\[a]", False),
        ("risk\\\\*", True),  # the backslash is escaped, the star is not
        ("risk\\", False),
        ("\\a*", True),
    ],
)
def test_is_pattern(text: str, expected: bool) -> None:
    assert is_pattern(text) is expected


# -- validate_channel ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "risk:alert",
        "system:feed:disconnected",
        "risk:*",
        "a",
        "prix:€",
        "ticker:日本",
        "emoji:😀",
        "private:\ue000",
        "back\\slash",
        "x" * DEFAULT_MAX_CHANNEL_LENGTH,
        "é" * (DEFAULT_MAX_CHANNEL_LENGTH // 2),
    ],
)
def test_validate_channel_accepts(name: str) -> None:
    assert validate_channel(name) == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty"),
        ("x" * (DEFAULT_MAX_CHANNEL_LENGTH + 1), "longer than 256"),
        ("é" * (DEFAULT_MAX_CHANNEL_LENGTH // 2 + 1), "258 UTF-8 bytes"),
        ("risk alert", "whitespace"),
        ("risk\talert", "whitespace"),
        ("risk:alert\n", "whitespace"),
        ("risk\u00a0alert", "whitespace"),
        ("risk\u2028alert", "whitespace"),
        ("risk\u3000alert", "whitespace"),
        ("risk\x00alert", "control"),
        ("risk\x1balert", "control"),
        ("risk\x7f", "control"),
        ("risk\x85", "whitespace"),
        ("risk\u200balert", "format"),
        ("risk\u202ealert", "format"),
        ("risk\ud800", "surrogate"),
    ],
)
def test_validate_channel_rejects(name: str, reason: str) -> None:
    with pytest.raises(InvalidChannelError, match=reason) as info:
        validate_channel(name)
    assert info.value.reason
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, WsbridgeError)


@pytest.mark.parametrize("name", [None, b"risk:alert", 42, ["risk:alert"]])
def test_validate_channel_rejects_non_str(name: object) -> None:
    with pytest.raises(InvalidChannelError, match="must be a str"):
        validate_channel(name)


def test_validate_channel_error_carries_channel_and_reason() -> None:
    with pytest.raises(InvalidChannelError) as info:
        validate_channel("risk alert")
    assert info.value.channel == "risk alert"
    assert "position 4" in info.value.reason


def test_validate_channel_shortens_long_names_in_errors() -> None:
    with pytest.raises(InvalidChannelError) as info:
        validate_channel("x" * 100_000)
    assert len(str(info.value)) < 200


def test_validate_channel_max_length_counts_utf8_bytes() -> None:
    assert validate_channel("éé", max_length=4) == "éé"
    with pytest.raises(InvalidChannelError, match="5 UTF-8 bytes"):
        validate_channel("ééa", max_length=4)
    assert validate_channel("x" * 1000, max_length=1000)


@pytest.mark.parametrize("max_length", [0, -1, True, 2.5])
def test_validate_channel_rejects_bad_max_length(max_length: object) -> None:
    with pytest.raises(ConfigurationError):
        validate_channel("a", max_length=max_length)  # type: ignore[arg-type]


# -- Channel -------------------------------------------------------------------------------


def test_channel_plain() -> None:
    channel = Channel("risk:alert")
    assert channel.name == "risk:alert"
    assert str(channel) == "risk:alert"
    assert repr(channel) == "Channel('risk:alert')"
    assert not channel.is_pattern
    assert channel.matches("risk:alert")
    assert not channel.matches("risk:alerts")


def test_channel_pattern() -> None:
    channel = Channel("system:feed:*")
    assert channel.is_pattern
    assert channel.matches("system:feed:disconnected")
    assert not channel.matches("system:other")


def test_plain_channel_matches_its_name_literally() -> None:
    # No unescaped wildcard: a plain channel (SUBSCRIBE), so the backslash is literal.
    channel = Channel("news\\*")
    assert not channel.is_pattern
    assert channel.matches("news\\*")
    assert not channel.matches("news*")


@pytest.mark.parametrize(("pattern", "name", "expected"), GLOB_CASES)
def test_channel_matches_like_glob_match(pattern: str, name: str, expected: bool) -> None:
    try:
        channel = Channel(pattern)
    except InvalidChannelError:
        return
    if channel.is_pattern:
        assert channel.matches(name) is expected
    else:
        assert channel.matches(name) is (name == pattern)


def test_channel_equality_and_hash() -> None:
    assert Channel("a:b") == Channel("a:b")
    assert Channel("a:b") != Channel("a:c")
    assert Channel("a:b") != "a:b"
    assert hash(Channel("a:b")) == hash(Channel("a:b"))
    assert len({Channel("a:b"), Channel("a:b"), Channel("a:*")}) == 2


def test_channel_is_immutable() -> None:
    channel = Channel("a:b")
    with pytest.raises(AttributeError):
        channel.name = "x"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        channel._name = "x"
    with pytest.raises(AttributeError):
        del channel._name
    assert channel.name == "a:b"


def test_channel_copies_and_pickles() -> None:
    channel = Channel("risk:*")
    for clone in (copy.copy(channel), copy.deepcopy(channel), pickle.loads(pickle.dumps(channel))):
        assert clone == channel
        assert clone.is_pattern
        assert clone.matches("risk:alert")


def test_channel_validates() -> None:
    with pytest.raises(InvalidChannelError):
        Channel("")
    with pytest.raises(InvalidChannelError):
        Channel("risk alert")
    with pytest.raises(InvalidChannelError):
        Channel("x" * 300)
    assert Channel("x" * 300, max_length=300).name == "x" * 300
