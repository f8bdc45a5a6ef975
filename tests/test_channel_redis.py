"""glob_match against a real redis-server: PSUBSCRIBE a pattern, PUBLISH a name, compare.

Quick by default; ``HYPOTHESIS_PROFILE=thorough`` runs many more examples.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.redis_server import RedisServer, scaled
from tests.test_channel import GLOB_CASES, NESTING_CASES
from wsbridge.channel import glob_match

if TYPE_CHECKING:
    import redis

pytestmark = pytest.mark.redis

_THOROUGH = os.environ.get("HYPOTHESIS_PROFILE", "").strip().lower() == "thorough"
_EXAMPLES = 5000 if _THOROUGH else 200

# Weighted toward the characters with a meaning in patterns; some non-ASCII, whose UTF-8
# bytes are >= 0x80 (negative as C chars), and DEL, the highest positive one.
_PATTERN_CHARS = [*"*?[]^-\\" * 3, *"ab:", "é", "€", "😀", "\x80", "\x7f"]
_NAME_CHARS = [*"ab:", *"*?[]^-\\", "é", "€", "😀", "\x80", "\x7f"]


class _Prober:
    """One client to publish and one pub/sub connection to subscribe with, reused."""

    def __init__(self, client: redis.Redis, pubsub: Any) -> None:
        self.client = client
        self.pubsub = pubsub
        self.timeout = scaled(5.0)

    def _next(self, wanted: str) -> dict[str, Any]:
        """Return the next message of type ``wanted``; fail on anything else or on timeout."""
        deadline = time.monotonic() + self.timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self.pubsub.get_message(timeout=left)
            if message is None:
                continue
            assert message["type"] == wanted, message
            return cast("dict[str, Any]", message)
        pytest.fail(f"no {wanted} message from redis within {self.timeout:.1f}s")

    def delivers(self, pattern: str, name: str) -> bool:
        """Tell whether PSUBSCRIBE ``pattern`` receives a PUBLISH on ``name``."""
        self.pubsub.psubscribe(pattern)
        self._next("psubscribe")
        try:
            receivers = self.client.publish(name, b"x")
            assert receivers in (0, 1)
            if receivers:
                message = self._next("pmessage")
                assert message["pattern"] == pattern.encode()
                assert message["channel"] == name.encode()
        finally:
            self.pubsub.punsubscribe(pattern)
            self._next("punsubscribe")
        return receivers == 1


@pytest.fixture(scope="module")
def prober(redis_server: RedisServer) -> Iterator[_Prober]:
    import redis

    timeout = scaled(5.0)
    client = redis.Redis.from_url(
        redis_server.url, socket_timeout=timeout, socket_connect_timeout=timeout
    )
    pubsub = client.pubsub()  # type: ignore[no-untyped-call]
    try:
        yield _Prober(client, pubsub)
    finally:
        pubsub.close()
        client.close()


@pytest.mark.parametrize(("pattern", "name", "expected"), GLOB_CASES)
def test_hand_picked_cases_hold_on_redis(
    prober: _Prober, pattern: str, name: str, expected: bool
) -> None:
    assert prober.delivers(pattern, name) is expected


@pytest.mark.parametrize(("pattern", "name", "expected"), NESTING_CASES)
def test_star_nesting_limit_holds_on_redis(
    prober: _Prober, pattern: str, name: str, expected: bool
) -> None:
    assert prober.delivers(pattern, name) is expected


@st.composite
def _pattern_and_name(draw: st.DrawFn) -> tuple[str, str]:
    pattern = draw(st.text(st.sampled_from(_PATTERN_CHARS), max_size=10))
    if draw(st.booleans()):
        return pattern, draw(st.text(st.sampled_from(_NAME_CHARS), max_size=10))
    # A name built from the pattern, so that many examples match.
    parts = []
    for char in pattern:
        if char == "*":
            parts.append(draw(st.text(st.sampled_from(_NAME_CHARS), max_size=3)))
        elif char in "?[" or draw(st.integers(0, 9)) == 0:
            parts.append(draw(st.sampled_from(_NAME_CHARS)))
        elif char != "\\":
            parts.append(char)
    return pattern, "".join(parts)


@settings(
    max_examples=_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(_pattern_and_name())
def test_glob_match_agrees_with_redis(prober: _Prober, case: tuple[str, str]) -> None:
    pattern, name = case
    assert glob_match(pattern, name) == prober.delivers(pattern, name)


def test_both_outcomes_are_exercised(prober: _Prober) -> None:
    # Guards the property test against a prober that always answers the same.
    assert prober.delivers("risk:*", "risk:alert")
    assert not prober.delivers("risk:*", "news:alert")
