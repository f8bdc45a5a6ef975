"""The deployment page's nginx configuration, run by a real nginx in front of two bridges.

Skipped, with the reason, when no ``nginx`` binary is installed: nginx is not a
dependency of the project, and the other tests cover the bridges themselves.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import anyio
import httpx
import pytest

from tests.support.client import Client
from tests.support.processes import Child, child_env, wsbridge_command
from tests.support.redis_server import free_port, scaled
from tests.support.samples import REFERENCE_EXAMPLES

pytestmark = pytest.mark.anyio

CONFIG = Path(__file__).resolve().parents[1] / "docs" / "examples" / "nginx_deploy.conf"


def test_the_configuration_is_complete_and_names_two_upstreams() -> None:
    text = CONFIG.read_text(encoding="utf-8")
    for needed in (
        "127.0.0.1:8001",
        "127.0.0.1:8002",
        "listen 8080;",
        "proxy_http_version 1.1;",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection $connection_upgrade;",
        "proxy_read_timeout 120s;",
    ):
        assert needed in text, needed


def start_bridge(redis_url: str, port: int) -> Child:
    args = ["serve", "--redis", redis_url, "--port", str(port), "--log-level", "warning"]
    child = Child(wsbridge_command(*args), env=child_env())
    try:
        child.wait_for(r"^wsbridge serve: listening on ws://", timeout=30)
    except BaseException:
        child.stop()
        raise
    return child


@pytest.mark.redis
@pytest.mark.slow
async def test_nginx_forwards_websockets_to_both_bridges(tmp_path: Path, redis_url: str) -> None:
    nginx = shutil.which("nginx")
    if nginx is None:
        pytest.skip("nginx is not installed: the deployment page's configuration is not run")
    ports = [free_port(), free_port()]
    public = free_port()
    text = CONFIG.read_text(encoding="utf-8")
    text = text.replace("127.0.0.1:8001", f"127.0.0.1:{ports[0]}")
    text = text.replace("127.0.0.1:8002", f"127.0.0.1:{ports[1]}")
    text = text.replace("listen 8080;", f"listen 127.0.0.1:{public};")
    text = text.replace("worker_rlimit_nofile 65536;", "")  # may exceed this machine's limit
    (tmp_path / "logs").mkdir()
    config = tmp_path / "nginx.conf"
    config.write_text(text, encoding="utf-8")
    globals_ = f"daemon off; pid {tmp_path / 'nginx.pid'}; error_log {tmp_path / 'error.log'};"
    command = [nginx, "-p", str(tmp_path), "-c", str(config), "-g", globals_]
    checked = Child([*command, "-t"])
    assert await anyio.to_thread.run_sync(checked.wait) == 0, checked.output()
    bridges = [start_bridge(redis_url, port) for port in ports]
    proxy = Child(command)
    try:
        # Wait (bounded) for nginx to listen: its first answer through to a bridge.
        with anyio.fail_after(scaled(15)):
            while True:
                try:
                    async with httpx.AsyncClient(timeout=scaled(5)) as http:
                        response = await http.get(f"http://127.0.0.1:{public}/ws")
                    break
                except httpx.TransportError:
                    await anyio.sleep(0.05)
        assert response.status_code == 426  # a bridge answered a plain GET on /ws
        # least_conn spreads four clients over both bridges.
        clients = [await Client.connect(f"ws://127.0.0.1:{public}/ws") for _ in range(4)]
        for client in clients:
            await client.pinged()
        served = []
        for port in ports:
            async with httpx.AsyncClient(timeout=scaled(5)) as http:
                ready = await http.get(f"http://127.0.0.1:{port}/readyz")
            assert ready.status_code == 200
            served.append(ready.json()["connections"])
        assert sorted(served) == [2, 2], served
        publisher = Child(
            wsbridge_command(
                "publish",
                "trade:executed",
                json.dumps(REFERENCE_EXAMPLES["trade:executed"]),
                "--redis",
                redis_url,
            )
        )
        assert await anyio.to_thread.run_sync(publisher.wait) == 0, publisher.output()
        for client in clients:
            event = await client.recv_event()
            assert event["channel"] == "trade:executed"
            await client.close()
    finally:
        proxy.stop()
        for bridge in bridges:
            bridge.stop()
