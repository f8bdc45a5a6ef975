"""Helpers for wsbridge's own test suite (not part of the installed package).

``redis_server`` runs real ``redis-server`` processes; ``fixtures`` is a pytest plugin
(``pytest_plugins = ["tests.support.fixtures"]``) built on it.
"""

from tests.support.redis_server import (
    RedisServer,
    RedisServerError,
    find_redis_server,
    free_port,
    scaled,
    timeout_scale,
)

__all__ = [
    "RedisServer",
    "RedisServerError",
    "find_redis_server",
    "free_port",
    "scaled",
    "timeout_scale",
]
