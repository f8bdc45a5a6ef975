"""Run a real ``redis-server`` for the tests: own process, own port, own directory.

Nothing here sleeps to synchronise: readiness is a ``PING`` answered by ``+PONG`` on a raw
socket, polled with a short interval until a deadline; every wait has a deadline, scaled by
``WSBRIDGE_TEST_TIMEOUT_SCALE`` on slow machines.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

__all__ = [
    "BINARY_ENV",
    "HOST",
    "TIMEOUT_SCALE_ENV",
    "RedisServer",
    "RedisServerError",
    "find_redis_server",
    "free_port",
    "scaled",
    "timeout_scale",
]

BINARY_ENV = "WSBRIDGE_REDIS_SERVER"
"""Environment variable naming the ``redis-server`` binary to run (a path or a name)."""

TIMEOUT_SCALE_ENV = "WSBRIDGE_TEST_TIMEOUT_SCALE"
"""Environment variable multiplying every test timeout (a positive float, default 1)."""

HOST = "127.0.0.1"

_STARTUP_TIMEOUT = 10.0
_STOP_TIMEOUT = 10.0
_PING_TIMEOUT = 0.5
_POLL_INTERVAL = 0.02
_PORT_ATTEMPTS = 5
_LOG_NAME = "redis-server.log"
_OUTPUT_NAME = "redis-server.out"


class RedisServerError(RuntimeError):
    """A ``redis-server`` could not be found, started or stopped."""


def timeout_scale() -> float:
    """Return the factor from ``WSBRIDGE_TEST_TIMEOUT_SCALE`` (default 1.0).

    Raises:
        ValueError: the variable is set to something other than a positive number.
    """
    raw = os.environ.get(TIMEOUT_SCALE_ENV, "").strip()
    if not raw:
        return 1.0
    try:
        scale = float(raw)
    except ValueError:
        scale = float("nan")
    if not scale > 0 or scale == float("inf"):
        raise ValueError(f"{TIMEOUT_SCALE_ENV} must be a positive number, not {raw!r}")
    return scale


def scaled(seconds: float) -> float:
    """Return ``seconds`` multiplied by :func:`timeout_scale`."""
    return seconds * timeout_scale()


def find_redis_server() -> str | None:
    """Return the ``redis-server`` to run, or ``None`` if there is none.

    ``WSBRIDGE_REDIS_SERVER`` wins when set; otherwise ``redis-server`` is looked up on
    ``PATH``.

    Raises:
        RedisServerError: ``WSBRIDGE_REDIS_SERVER`` is set but names no executable.
    """
    wanted = os.environ.get(BINARY_ENV, "").strip()
    if wanted:
        found = shutil.which(wanted)
        if found is None:
            raise RedisServerError(f"{BINARY_ENV}={wanted!r} is not an executable")
        return found
    return shutil.which("redis-server")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _ping(port: int, timeout: float) -> bool:
    """Tell whether a Redis on ``port`` answers ``PING`` within ``timeout``.

    ``+PONG``, or ``-NOAUTH`` from a server that requires a password: either way it is up.
    """
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            reply = b""
            for _ in range(16):  # a reply line is short: a few reads at most
                chunk = sock.recv(256)
                reply += chunk
                if not chunk or b"\r\n" in reply:
                    break
    except OSError:
        return False
    return reply.startswith((b"+PONG\r\n", b"-NOAUTH"))


def _reap(process: subprocess.Popen[bytes]) -> None:
    """Kill ``process`` if still running (the safety net when ``stop()`` was never called)."""
    if process.poll() is None:
        process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=_STOP_TIMEOUT)


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1, with its own port and temporary directory.

    Persistence is off (``--save "" --appendonly no``). The port is chosen on the first
    ``start()`` unless given, and kept: ``restart()`` and a ``start()`` after ``stop()``
    come back on the same port, so clients can reconnect to the same :attr:`url`.

    Use it as a context manager, or call ``start()`` and ``close()``::

        with RedisServer() as server:
            client = redis.Redis.from_url(server.url)
    """

    def __init__(
        self,
        *,
        binary: str | None = None,
        port: int | None = None,
        args: Sequence[str] = (),
        startup_timeout: float = _STARTUP_TIMEOUT,
    ) -> None:
        self._binary = binary
        self._port = port
        self._port_pinned = port is not None
        self._args = tuple(args)
        self._startup_timeout = startup_timeout
        self._directory: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._reaper: weakref.finalize[..., RedisServer] | None = None
        self._cleaner: weakref.finalize[..., RedisServer] | None = None

    # -- state ----------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The address the server listens on: always 127.0.0.1."""
        return HOST

    @property
    def port(self) -> int:
        """The server's TCP port (known after the first ``start()``, or given)."""
        if self._port is None:
            raise RedisServerError("the server has no port yet: call start() first")
        return self._port

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://{HOST}:{self.port}/0"

    @property
    def running(self) -> bool:
        """Whether the process was started and has not exited."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The process id while started, else ``None``."""
        return None if self._process is None else self._process.pid

    @property
    def directory(self) -> Path | None:
        """The server's working directory (kept until ``close()``)."""
        return self._directory

    @property
    def log_path(self) -> Path | None:
        """The server's log file."""
        return None if self._directory is None else self._directory / _LOG_NAME

    def log_tail(self, lines: int = 30) -> str:
        """Return the last ``lines`` lines of the server's log and console output."""
        if self._directory is None:
            return ""
        parts = []
        for name in (_OUTPUT_NAME, _LOG_NAME):
            path = self._directory / name
            if path.exists():
                text = path.read_text(encoding="utf-8", errors="replace").splitlines()
                if text:
                    parts.append(f"--- {name} ---\n" + "\n".join(text[-lines:]))
        return "\n".join(parts)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the server and return once it answers ``PING``.

        Raises:
            RedisServerError: no binary, already running, or the server did not come up.
        """
        if self._process is not None:
            raise RedisServerError("the server is already started")
        if self._binary is None:
            self._binary = find_redis_server()
            if self._binary is None:
                raise RedisServerError(
                    f"no redis-server found: install Redis or set {BINARY_ENV} to its path"
                )
        if self._directory is None:
            self._directory = Path(tempfile.mkdtemp(prefix="wsbridge-redis-"))
            self._cleaner = weakref.finalize(self, shutil.rmtree, self._directory, True)
        attempts = 1 if self._port_pinned else _PORT_ATTEMPTS
        for attempt in range(attempts):
            if not self._port_pinned:
                self._port = free_port()
            try:
                self._launch()
            except RedisServerError:
                # Another process may have taken the port we picked: pick another.
                if attempt + 1 == attempts or not self._port_lost():
                    raise
                continue
            self._port_pinned = True
            return

    def stop(self) -> None:
        """Stop the server: SIGTERM, a bounded wait, then SIGKILL. Idempotent.

        The port and the directory are kept, so ``start()`` can bring it back.
        """
        process, self._process = self._process, None
        if self._reaper is not None:
            self._reaper.detach()
            self._reaper = None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=scaled(_STOP_TIMEOUT))
        except subprocess.TimeoutExpired:
            process.kill()
            try:
                process.wait(timeout=scaled(_STOP_TIMEOUT))
            except subprocess.TimeoutExpired as exc:
                raise RedisServerError(f"redis-server {process.pid} did not die") from exc

    def kill(self) -> None:
        """Kill the server at once with SIGKILL, as a crash would. Idempotent."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
        self.stop()

    def restart(self) -> None:
        """Stop the server and start it again on the same port, with an empty dataset."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server and remove its directory."""
        try:
            self.stop()
        finally:
            if self._cleaner is not None:
                self._cleaner()
                self._cleaner = None
            self._directory = None

    def __enter__(self) -> RedisServer:
        if self._process is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<RedisServer {HOST}:{self._port} {state}>"

    # -- internals ------------------------------------------------------------------------

    def _command(self) -> list[str]:
        assert self._binary is not None
        assert self._directory is not None
        return [
            self._binary,
            "--port", str(self._port),
            "--bind", HOST,
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", str(self._directory),
            "--logfile", _LOG_NAME,
            *self._args,
        ]  # fmt: skip

    def _launch(self) -> None:
        assert self._directory is not None
        with (self._directory / _OUTPUT_NAME).open("ab") as output:
            process = subprocess.Popen(
                self._command(),
                cwd=self._directory,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        self._process = process
        self._reaper = weakref.finalize(self, _reap, process)
        port = self.port
        deadline = time.monotonic() + scaled(self._startup_timeout)
        while time.monotonic() < deadline:
            if _ping(port, timeout=scaled(_PING_TIMEOUT)):
                return
            try:
                # Doubles as the polling interval and as the check that it has not exited.
                process.wait(timeout=_POLL_INTERVAL)
            except subprocess.TimeoutExpired:
                continue
            self.stop()
            raise RedisServerError(
                f"redis-server exited with status {process.returncode} while starting on port "
                f"{port}\n{self.log_tail()}"
            )
        self.stop()
        raise RedisServerError(
            f"redis-server did not answer PING on port {port} within "
            f"{scaled(self._startup_timeout):.1f}s\n{self.log_tail()}"
        )

    def _port_lost(self) -> bool:
        return "Address already in use" in self.log_tail(lines=5)
