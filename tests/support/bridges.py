"""The bridge in a process of its own, behind each kind of server, for hostile-input tests.

``wsbridge serve`` (the command, wsbridge's own server), the plain ASGI adapter on uvicorn
and the aiohttp adapter, each started as production would start it, on a redis-server the
test started. A test reads the process's log, its memory, and whether it still runs.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from tests.support.proc import AppProcess
from tests.support.processes import Child, child_env, wsbridge_command
from tests.support.redis_server import free_port

KINDS = ("serve", "asgi", "aiohttp")

# uvicorn's websockets-sansio protocol logs this error with a traceback itself, before the
# application sees the frame (it closes with 1007 all the same).
UVICORN_UTF8 = "ERROR:    Invalid UTF-8 sequence received from client."

_FACTORIES = {
    "asgi": "tests.support.factories:bridge_app",
    "aiohttp": "tests.support.factories:bridge_aiohttp",
}


class BridgeProcess:
    """One bridge process serving ``channels`` from ``broker`` at ``url``.

    ``rate=None`` turns the rate limit off; ``args`` are more ``wsbridge serve`` options.
    """

    def __init__(
        self,
        kind: str,
        broker: str,
        channels: list[str],
        *,
        rate: float | None = None,
        max_frame_bytes: int = 64 * 1024,
        args: list[str] | None = None,
    ) -> None:
        self.kind = kind
        self._child: Child | None = None
        self._app: AppProcess | None = None
        if kind == "serve":
            self.port = free_port()
            options = ["--redis", broker, "--port", str(self.port), "--log-level", "info"]
            for channel in channels:
                options += ["--channel", channel]
            options += ["--rate", str(rate or 0), "--max-frame-bytes", str(max_frame_bytes)]
            self._args = wsbridge_command("serve", *options, *(args or []))
        else:
            limits: dict[str, Any] = {"rate": rate, "max_frame_bytes": max_frame_bytes}
            config = {"broker": broker, "channels": channels, "limits": limits}
            self._app = AppProcess(_FACTORIES[kind], config)
            self.port = self._app.port
        self.url = f"ws://127.0.0.1:{self.port}/ws"

    def start(self) -> BridgeProcess:
        if self._app is not None:
            self._app.start()
            return self
        self._child = Child(self._args, env=child_env())
        try:
            self._child.wait_for(r"^wsbridge serve: listening on ws://", timeout=30)
        except BaseException:
            self._child.stop()
            raise
        return self

    @property
    def pid(self) -> int:
        if self._child is not None:
            return self._child.pid
        assert self._app is not None
        assert self._app.process is not None
        return self._app.process.pid

    def alive(self) -> bool:
        if self._child is not None:
            return self._child.returncode is None
        assert self._app is not None
        assert self._app.process is not None
        return self._app.process.poll() is None

    def log(self) -> str:
        if self._child is not None:
            return self._child.output()
        assert self._app is not None
        return self._app.output()

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def assert_clean(self, *, allow_uvicorn_utf8: bool = False) -> None:
        """The process runs, and its log holds no traceback (but uvicorn's own, if allowed)."""
        log = self.log()
        assert self.alive(), log
        blocks = log.split("Traceback (most recent call last):")
        for before, after in itertools.pairwise(blocks):
            assert allow_uvicorn_utf8, log
            assert before.rstrip().endswith(UVICORN_UTF8), log
            for line in after.splitlines()[1:]:
                if not line.startswith(" "):
                    break  # the exception's own line ends the traceback
                assert "/wsbridge/" not in line, log

    def stop(self) -> None:
        if self._child is not None:
            self._child.stop()
        elif self._app is not None:
            self._app.stop()

    def __enter__(self) -> BridgeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
