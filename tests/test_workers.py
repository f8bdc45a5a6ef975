"""``wsbridge serve --workers N``: worker processes on one port, supervised.

Real processes (``python -m wsbridge serve``), a real redis-server, real WebSocket clients.
Which worker holds a client is read from /proc (the server side of the client's TCP
connection), so these tests run on Linux only.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import httpx
import pytest
from click.testing import CliRunner

from tests.support.client import Client, close_all
from tests.support.processes import Child, child_env, wsbridge_command
from tests.support.redis_server import free_port, scaled
from wsbridge.cli import cli

if TYPE_CHECKING:
    import redis

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(
        not sys.platform.startswith("linux"), reason="reads /proc to find each client's worker"
    ),
]

CHANNEL = "workers:test"
STARTED = r"wsbridge: worker (\d+) started \(pid (\d+)\)"


def start_workers(*args: str, workers: int = 2) -> tuple[Child, int, dict[int, int]]:
    """``wsbridge serve --workers N`` once every worker serves: the child, its port, and
    the pid of each worker by its number."""
    port = free_port()
    child = Child(
        wsbridge_command(
            "serve", "--workers", str(workers), "--port", str(port), "-c", CHANNEL, *args
        ),
        env=child_env(WSBRIDGE_LOG_LEVEL="info"),
    )
    try:
        child.wait_for(r"^wsbridge serve: listening on ws://", timeout=30)
    except BaseException:
        child.stop()
        raise
    pids = {}
    for line in child.lines("stderr"):
        started = _search(STARTED, line)
        if started:
            pids[int(started[0])] = int(started[1])
    assert len(pids) == workers, child.output()
    return child, port, pids


def _search(pattern: str, line: str) -> tuple[str, ...] | None:
    found = re.search(pattern, line)
    return found.groups() if found else None


def _inodes(pid: int) -> set[str]:
    found = set()
    fds = Path(f"/proc/{pid}/fd")
    for fd in fds.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            found.add(target[8:-1])
    return found


def worker_of(client: Client, port: int, pids: Sequence[int]) -> int | None:
    """The pid of the worker holding ``client``'s connection, or ``None``."""
    client_port = client.ws.local_address[1]
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if int(local.rsplit(":", 1)[1], 16) == port and (
                int(remote.rsplit(":", 1)[1], 16) == client_port
            ):
                inodes.add(inode)
    for pid in pids:
        if inodes & _inodes(pid):
            return pid
    return None


async def connect_spread(
    url: str, port: int, pids: Sequence[int], n: int = 16
) -> dict[int, list[Client]]:
    """``n`` clients, subscribed (their ping answered), grouped by the worker holding them."""
    clients = [await Client.connect(url) for _ in range(n)]
    for client in clients:
        await client.pinged()
    spread: dict[int, list[Client]] = {pid: [] for pid in pids}
    for client in clients:
        pid = worker_of(client, port, pids)
        assert pid is not None, "a client is held by no worker"
        spread[pid].append(client)
    return spread


async def expect_events(clients: Sequence[Client], sequence: Sequence[int]) -> None:
    """Each client receives exactly these events, in order, and nothing more."""
    for client in clients:
        got = [(await client.recv_event())["data"]["n"] for _ in sequence]
        assert got == list(sequence)
        # Nothing more: the next frame after a ping is its pong.
        await client.send_json({"type": "ping"})
        assert await client.recv() == {"type": "pong"}


async def numsub(redis_client: redis.Redis, expected: int) -> None:
    """Wait until ``expected`` processes subscribe to CHANNEL upstream."""
    found = None
    with anyio.move_on_after(scaled(10)):
        for _ in range(10_000):  # polls the broker's state: nothing to wait on instead
            found = redis_client.pubsub_numsub(CHANNEL)
            if found == [(CHANNEL.encode(), expected)]:
                return
            await anyio.sleep(0.05)
    raise AssertionError(f"{expected} upstream subscriptions expected, found {found}")


@pytest.mark.redis
async def test_clients_spread_over_two_workers_receive_every_event_once(
    redis_url: str, redis_client: redis.Redis
) -> None:
    child, port, pids = start_workers("--redis", redis_url)
    try:
        url = f"ws://127.0.0.1:{port}/ws"
        spread = await connect_spread(url, port, list(pids.values()))
        assert all(spread.values()), {pid: len(c) for pid, c in spread.items()}
        # One broadcaster, so one upstream subscription, per worker.
        await numsub(redis_client, 2)
        for n in range(20):
            redis_client.publish(CHANNEL, json.dumps({"n": n}))
        everyone = [c for clients in spread.values() for c in clients]
        await expect_events(everyone, range(20))
        async with httpx.AsyncClient(timeout=scaled(10)) as http:
            for _ in range(4):
                response = await http.get(f"http://127.0.0.1:{port}/healthz")
                assert response.status_code == 200
                assert response.json()["status"] == "ok"
            ready = await http.get(f"http://127.0.0.1:{port}/readyz")
            assert ready.status_code == 200, ready.text
        await close_all(everyone)
    finally:
        assert child.stop() == 0
    assert "Traceback" not in child.output()


@pytest.mark.redis
async def test_a_killed_worker_is_restarted_and_the_other_undisturbed(
    redis_url: str, redis_client: redis.Redis
) -> None:
    child, port, pids = start_workers("--redis", redis_url)
    try:
        url = f"ws://127.0.0.1:{port}/ws"
        spread = await connect_spread(url, port, list(pids.values()))
        victim, survivor = pids[1], pids[2]
        assert spread[victim]
        assert spread[survivor]
        os.kill(victim, signal.SIGKILL)
        await anyio.to_thread.run_sync(
            lambda: child.wait_for(
                rf"worker 1 \(pid {victim}\) killed by SIGKILL; restarting it in"
            )
        )
        restarted = await anyio.to_thread.run_sync(
            lambda: child.wait_for(r"worker 1 started \(pid (\d+)\)", occurrence=2)
        )
        replacement = int(restarted[1])
        await anyio.to_thread.run_sync(
            lambda: child.wait_for(rf"worker 1 \(pid {replacement}\) serves")
        )
        # The killed worker's clients lost their connection (no close frame from a
        # SIGKILL); the other worker's clients did not notice.
        for client in spread[victim]:
            assert await client.closed() == (None, "")
        fresh = await connect_spread(url, port, [replacement, survivor])
        assert fresh[replacement], "no new connection reached the restarted worker"
        # The killed worker's subscription is gone; the replacement holds its own.
        await numsub(redis_client, 2)
        redis_client.publish(CHANNEL, json.dumps({"n": 1}))
        await expect_events(spread[survivor] + fresh[replacement] + fresh[survivor], [1])
        await close_all(spread[survivor] + fresh[replacement] + fresh[survivor])
    finally:
        assert child.stop() == 0
    assert "Traceback" not in child.output()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_signal_closes_every_client_with_1001_and_the_parent_exits_0(
    sig: signal.Signals,
) -> None:
    child, port, pids = start_workers()
    try:
        spread = await connect_spread(f"ws://127.0.0.1:{port}/ws", port, list(pids.values()))
        assert all(spread.values())
        started = time.monotonic()
        child.send_signal(sig)
        everyone = [c for clients in spread.values() for c in clients]
        with anyio.fail_after(scaled(10)):
            closes = [await client.closed() for client in everyone]
        assert closes == [(1001, "server shutting down")] * len(everyone)
        assert await anyio.to_thread.run_sync(child.wait) == 0
        assert time.monotonic() - started < scaled(8)
    finally:
        child.stop()
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # reaped by the parent
    assert "Traceback" not in child.output()
    assert "each worker has a memory:// broker of its own" in child.output()


def test_a_worker_that_cannot_start_stops_the_parent_with_its_status() -> None:
    dead = free_port()  # nothing listens there
    child = Child(
        wsbridge_command(
            "serve", "--workers", "2", "--port", "0", "--redis", f"redis://127.0.0.1:{dead}/0"
        )
    )
    try:
        assert child.wait(30) == 1
    finally:
        child.stop()
    assert "wsbridge: error: cannot reach the broker" in child.output()
    assert "listening on" not in child.output()
    assert "Traceback" not in child.output()


def test_workers_refuse_the_uvicorn_server() -> None:
    result = CliRunner().invoke(cli, ["serve", "--workers", "2", "--server", "uvicorn"])
    assert result.exit_code == 2
    assert "--workers needs --server wsbridge" in result.output


def test_workers_refuse_a_port_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        child = Child(wsbridge_command("serve", "--workers", "2", "--port", str(port)))
        try:
            assert child.wait(30) == 1
        finally:
            child.stop()
    assert f"cannot listen on 127.0.0.1:{port}" in child.output()
    assert "Traceback" not in child.output()


SUPERVISED = """
import logging, os, signal, sys
logging.basicConfig(level="INFO", format="%(message)s")
from wsbridge.workers import supervise

def main(sock, ready):
    if os.path.exists(sys.argv[1]):
        return 3  # crashes at start, before it serves
    ready()
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
    signal.sigwait([signal.SIGTERM])
    return 0

announce = lambda port: print("serving on", port, flush=True)
sys.exit(supervise(2, main, host="127.0.0.1", port=0, announce=announce))
"""


def test_a_worker_that_crashes_at_start_is_restarted_with_a_doubling_delay(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "crash"
    child = Child([sys.executable, "-c", SUPERVISED, str(marker)], env=child_env())
    try:
        child.wait_for(r"^serving on \d+$", stream="stdout")
        # Logged on stderr before the announcement, but read by another thread.
        victim = int(child.wait_for(r"worker 1 started \(pid (\d+)\)")[1])
        marker.touch()
        os.kill(victim, signal.SIGKILL)
        child.wait_for(r"worker 1 \(pid \d+\) .*; restarting it in", occurrence=5)
        delays = [
            float(found[0])
            for line in child.lines("stderr")
            if (found := _search(r"worker 1 .*; restarting it in ([\d.]+) s", line))
        ]
        assert delays[:5] == [0.1, 0.2, 0.4, 0.8, 1.6]
        assert sum("exited with status 3" in line for line in child.lines("stderr")) >= 4
        # The other worker was left alone.
        assert not any(
            "worker 2" in line and "restarting" in line for line in child.lines("stderr")
        )
        child.send_signal(signal.SIGTERM)
        assert child.wait() == 0
    finally:
        child.stop()
    assert "Traceback" not in child.output()


async def test_workers_close_their_clients_with_1001_when_the_parent_is_killed() -> None:
    child, port, pids = start_workers()
    try:
        spread = await connect_spread(f"ws://127.0.0.1:{port}/ws", port, list(pids.values()))
        everyone = [c for clients in spread.values() for c in clients]
        os.kill(child.pid, signal.SIGKILL)
        with anyio.fail_after(scaled(10)):
            closes = [await client.closed() for client in everyone]
        assert closes == [(1001, "server shutting down")] * len(everyone)
        # Nothing holds the port any more.
        with anyio.fail_after(scaled(10)):
            for _ in range(1000):
                with socket.socket() as probe:
                    if probe.connect_ex(("127.0.0.1", port)) != 0:
                        break
                await anyio.sleep(0.05)  # the workers' exit is not observable otherwise
    finally:
        child.stop()
