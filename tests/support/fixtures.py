"""Pytest fixtures for tests that need a real Redis. Load with ``pytest_plugins``.

* ``redis_server``: one server for the whole session. Do not stop it; for stop/restart
  tests use ``redis_server_factory``.
* ``redis_url``: the shared server's URL.
* ``redis_server_factory``: a callable that starts fresh servers, all closed after the test.
* ``redis_client``: a sync ``redis.Redis`` on the shared server, flushed before the test.
* ``redis_cluster``: a fresh Redis Cluster (three masters, three replicas) for one test;
  ``shared_redis_cluster``: one for a whole module, for tests that change no topology.

Without a ``redis-server`` binary the tests that use these fixtures are skipped, or fail
when the ``CI`` environment variable is set, so CI never passes by skipping them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Protocol

import pytest

from tests.support.ci import unavailable
from tests.support.redis_cluster import RedisCluster, find_redis_cli, server_version
from tests.support.redis_server import (
    BINARY_ENV,
    RedisServer,
    RedisServerError,
    find_redis_server,
    scaled,
)

if TYPE_CHECKING:
    import redis

__all__ = [
    "RedisServerFactory",
    "redis_client",
    "redis_cluster",
    "shared_redis_cluster",
    "redis_server",
    "redis_server_factory",
    "redis_url",
]


class RedisServerFactory(Protocol):
    """Start a fresh :class:`RedisServer` (closed when the test ends) and return it."""

    def __call__(self, *, port: int | None = None, args: Sequence[str] = ()) -> RedisServer:
        """Start a server on ``port`` (a free one if ``None``) with extra ``args``."""
        ...


def _require_binary() -> str:
    """Return the redis-server binary, or skip (fail under CI) the test."""
    try:
        binary = find_redis_server()
    except RedisServerError as exc:
        pytest.fail(str(exc), pytrace=False)
    if binary is None:
        unavailable(f"redis-server not found: install Redis or set {BINARY_ENV} to its path")
    return binary


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A ``redis-server`` shared by the whole session."""
    server = RedisServer(binary=_require_binary())
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    """The URL of the shared server, ``redis://127.0.0.1:PORT/0``."""
    return redis_server.url


@pytest.fixture
def redis_server_factory() -> Iterator[RedisServerFactory]:
    """A callable starting fresh servers; every one is closed when the test ends."""
    binary = _require_binary()
    servers: list[RedisServer] = []

    def start(*, port: int | None = None, args: Sequence[str] = ()) -> RedisServer:
        server = RedisServer(binary=binary, port=port, args=args)
        servers.append(server)
        server.start()
        return server

    yield start
    errors: list[BaseException] = []
    for server in reversed(servers):
        try:
            server.close()
        except Exception as exc:  # close every server, then report the first failure
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A sync ``redis.Redis`` on the shared server, after ``FLUSHALL``."""
    redis_module = pytest.importorskip("redis")
    timeout = scaled(5.0)
    client: redis.Redis = redis_module.Redis.from_url(
        redis_url, socket_timeout=timeout, socket_connect_timeout=timeout
    )
    try:
        client.flushall()
        yield client
    finally:
        client.close()


def _cluster_binary() -> str:
    binary = _require_binary()
    if find_redis_cli() is None:
        unavailable("redis-cli not found: it forms the cluster (redis-cli --cluster create)")
    version = server_version(binary)
    if version < (7, 0):
        unavailable(f"redis-server {version} is too old: sharded pub/sub needs Redis 7.0")
    return binary


@pytest.fixture
def redis_cluster() -> Iterator[RedisCluster]:
    """A Redis Cluster of six fresh nodes (three masters, one replica each), for one test.

    The test may kill and restart nodes: the cluster is torn down afterwards.
    """
    with RedisCluster(binary=_cluster_binary()) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def shared_redis_cluster() -> Iterator[RedisCluster]:
    """A Redis Cluster shared by a module's tests, which must leave its topology alone."""
    with RedisCluster(binary=_cluster_binary()) as cluster:
        yield cluster
