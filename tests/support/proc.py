"""Run a test application in a server process of its own, as production would.

``python -m tests.support.proc MODULE:FACTORY PORT CONFIG_JSON`` imports ``FACTORY``,
calls it with the decoded config to get an ASGI app (served with uvicorn), an aiohttp
application (served by aiohttp) or wsbridge's own server. Tests
use :class:`AppProcess` to start, signal and stop it, and to read its memory use.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.support.redis_server import free_port, scaled

ROOT = Path(__file__).resolve().parents[2]


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class AppProcess:
    """A server process serving ``factory(config)`` on a free port."""

    def __init__(self, factory: str, config: dict[str, Any] | None = None) -> None:
        self.factory = factory
        self.config = config or {}
        self.port = free_port()
        # wsbridge's own server speaks only WebSocket: its stats are on a second port.
        self.stats_port = free_port() if factory.endswith("bridge_server") else self.port
        self.url = f"ws://127.0.0.1:{self.port}/ws"
        self.process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()

    def start(self) -> AppProcess:
        env = dict(
            os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
        )
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.proc",
                self.factory,
                str(self.port),
                json.dumps({**self.config, "stats_port": self.stats_port}),
            ],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + scaled(20)
        while not _port_open(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                output = self.output()
                self.stop()
                raise RuntimeError(f"app process did not start: {output}")
            time.sleep(0.02)  # polling the port, bounded by the deadline
        return self

    def rss_kib(self) -> int:
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(scaled(timeout))

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(scaled(10))
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(scaled(10))
        self._log.close()

    def __enter__(self) -> AppProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _serve_bridge(server: Any, stats_port: int) -> None:
    import asyncio

    from tests.support.factories import stats_json

    async def stats(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = stats_json(server.broadcaster)
        head = (
            f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        )
        writer.write(head.encode() + b"connection: close\r\n\r\n" + body)
        await writer.drain()
        writer.close()

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, server.shutdown)
    task = asyncio.create_task(server.serve())
    await server.started()
    stats_server = await asyncio.start_server(stats, "127.0.0.1", stats_port)
    async with stats_server:
        await task


def main() -> None:
    import asyncio

    import uvicorn

    spec, port, config = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
    # Options for uvicorn itself, not for the app: a test can turn off uvicorn's own
    # keepalive pings so that they do not race the mechanism under test.
    uvicorn_options = config.pop("uvicorn", {})
    module, _, name = spec.partition(":")
    app = getattr(importlib.import_module(module), name)(config)
    if hasattr(app, "serve"):
        app.port = port
        asyncio.run(_serve_bridge(app, config["stats_port"]))
        return
    if hasattr(app, "router"):  # an aiohttp application
        from aiohttp import web

        web.run_app(app, host="127.0.0.1", port=port, print=None, shutdown_timeout=5)
        return
    uvicorn.run(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", **uvicorn_options
    )


if __name__ == "__main__":
    main()
