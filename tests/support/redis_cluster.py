"""Run a real Redis Cluster for the tests: three masters, three replicas, own ports.

Each node is a :class:`~tests.support.redis_server.RedisServer` started with
``--cluster-enabled yes`` and a short ``cluster-node-timeout``, so a killed master is
replaced by its replica within a few seconds. The cluster is formed with
``redis-cli --cluster create ... --cluster-replicas 1 --cluster-yes``. Every wait polls
``CLUSTER INFO`` / ``CLUSTER NODES`` until a deadline; nothing sleeps to synchronise.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from types import TracebackType

import redis

from tests.support.redis_server import HOST, RedisServer, RedisServerError, free_port, scaled

__all__ = ["RedisCluster", "find_redis_cli", "server_version"]

_NODE_TIMEOUT_MS = 1000
_FORM_TIMEOUT = 30.0
_POLL = 0.05


def find_redis_cli() -> str | None:
    """Return the ``redis-cli`` binary on ``PATH``, or ``None``."""
    return shutil.which("redis-cli")


def server_version(binary: str) -> tuple[int, ...]:
    """The version of a ``redis-server`` binary, from ``--version`` (``v=7.0.15``)."""
    output = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=scaled(10), check=True
    ).stdout
    found = re.search(r"v=(\d+)\.(\d+)", output)
    return (int(found.group(1)), int(found.group(2))) if found else (0, 0)


class RedisCluster:
    """Six ``redis-server`` processes in cluster mode: three masters, one replica each."""

    def __init__(self, *, binary: str | None = None, masters: int = 3) -> None:
        self._binary = binary
        self._masters = masters
        self.nodes: list[RedisServer] = []

    @property
    def url(self) -> str:
        """``redis+cluster://`` naming every node as a startup node."""
        hosts = ",".join(f"{HOST}:{node.port}" for node in self.nodes)
        return f"redis+cluster://{hosts}/"

    def start(self) -> None:
        """Start the nodes, form the cluster and wait until every slot is served."""
        cli = find_redis_cli()
        if cli is None:
            raise RedisServerError("no redis-cli found to form the cluster")
        try:
            for _ in range(self._masters * 2):
                node = RedisServer(
                    binary=self._binary,
                    args=[
                        "--cluster-enabled", "yes",
                        "--cluster-config-file", "nodes.conf",
                        "--cluster-node-timeout", str(_NODE_TIMEOUT_MS),
                        "--cluster-port", str(free_port()),
                        # A promoted replica must not wait for its old master's data age.
                        "--cluster-replica-validity-factor", "0",
                    ],
                )  # fmt: skip
                node.start()
                self.nodes.append(node)
            addresses = [f"{HOST}:{node.port}" for node in self.nodes]
            subprocess.run(
                [cli, "--cluster", "create", *addresses, "--cluster-replicas", "1",
                 "--cluster-yes"],
                check=True,
                capture_output=True,
                timeout=scaled(_FORM_TIMEOUT),
            )  # fmt: skip
            self.wait_healthy()
        except BaseException:
            self.close()
            raise

    def client(self, node: RedisServer) -> redis.Redis:
        """A plain (non-cluster) client to one node."""
        return redis.Redis(host=HOST, port=node.port, socket_timeout=scaled(2.0))

    def _info(self, node: RedisServer) -> dict[str, str]:
        with self.client(node) as client:
            raw = client.execute_command("CLUSTER", "INFO")
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)

    def masters(self) -> list[RedisServer]:
        """The running nodes that serve slots as masters now, as a running node sees it."""
        by_port = {node.port: node for node in self.nodes}
        for node in self.nodes:
            if not node.running:
                continue
            with contextlib.suppress(redis.RedisError):
                with self.client(node) as client:
                    raw = client.execute_command("CLUSTER", "NODES")
                text = raw.decode() if isinstance(raw, bytes) else str(raw)
                found = []
                for line in text.splitlines():
                    fields = line.split()
                    port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
                    flags = fields[2]
                    serves = len(fields) > 8  # slot ranges follow the eighth field
                    if "master" in flags and "fail" not in flags and serves and port in by_port:
                        found.append(by_port[port])
                return found
        return []

    def owner(self, key: str) -> RedisServer:
        """The master serving ``key``'s slot now."""
        for node in self.masters():
            with contextlib.suppress(redis.RedisError), self.client(node) as client:
                slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
                for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
                    if start <= slot <= end:
                        port = int(primary[1])
                        return next(n for n in self.nodes if n.port == port)
        raise RedisServerError(f"no master serves {key!r}")

    def node_id(self, node: RedisServer) -> str:
        """The node's cluster id."""
        with self.client(node) as client:
            raw = client.execute_command("CLUSTER", "MYID")
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    def migrate_slot(self, key: str, target: RedisServer) -> None:
        """Move ``key``'s (empty) slot to the master ``target``, as a resharding does."""
        source = self.owner(key)
        with self.client(source) as client:
            slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
        source_id, target_id = self.node_id(source), self.node_id(target)
        with self.client(target) as client:
            client.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        with self.client(source) as client:
            client.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        # The two owners first; the other nodes learn it from them.
        for node in (target, source):
            with self.client(node) as client:
                client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)

    def wait_healthy(self, timeout: float = _FORM_TIMEOUT) -> None:
        """Wait until every running node reports ``cluster_state:ok`` with all slots served."""
        deadline = time.monotonic() + scaled(timeout)
        last: dict[str, str] = {}
        while time.monotonic() < deadline:
            try:
                infos = [self._info(node) for node in self.nodes if node.running]
            except redis.RedisError:
                infos = []
            if infos and all(
                info.get("cluster_state") == "ok" and info.get("cluster_slots_ok") == "16384"
                for info in infos
            ):
                return
            last = infos[0] if infos else {}
            time.sleep(_POLL)  # polling interval of a bounded wait
        raise RedisServerError(f"the cluster did not become healthy: {last}")

    def close(self) -> None:
        """Stop every node and remove its directory."""
        nodes, self.nodes = self.nodes, []
        for node in nodes:
            with contextlib.suppress(RedisServerError):
                node.close()

    def __enter__(self) -> RedisCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@contextlib.contextmanager
def running_cluster(binary: str | None = None) -> Iterator[RedisCluster]:
    """A started cluster, closed afterwards."""
    with RedisCluster(binary=binary) as cluster:
        yield cluster
