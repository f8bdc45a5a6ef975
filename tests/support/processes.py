"""Child processes for the CLI and example tests: output read by threads, bounded waits.

A :class:`Child` collects its stdout and stderr lines as they come, so a test waits for a
line (``Uvicorn running on``) with a deadline instead of sleeping, and stops the process on
teardown whatever happened: SIGTERM first, SIGKILL if it does not exit in time.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import wsbridge
from tests.support.redis_server import scaled

__all__ = ["Child", "child_env", "wsbridge_command"]

# The directory holding the ``wsbridge`` package this test imports, installed or not.
_PACKAGE_ROOT = str(Path(wsbridge.__file__).resolve().parents[1])


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child: this interpreter's wsbridge, unbuffered output."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = _PACKAGE_ROOT + (os.pathsep + path if path else "")
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("WSBRIDGE_REDIS_URL", None)  # a developer's setting must not leak into tests
    env.update(extra)
    return env


def wsbridge_command(*args: str) -> list[str]:
    """``python -m wsbridge ARGS`` with this interpreter."""
    return [sys.executable, "-m", "wsbridge", *args]


class Child:
    """A running child process whose output lines are collected as they arrive."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
    ) -> None:
        self.args = list(args)
        self._lines: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._changed = threading.Condition()
        self._process = subprocess.Popen(
            self.args,
            env=env if env is not None else child_env(),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
        self._readers = [
            threading.Thread(target=self._read, args=(name, pipe), daemon=True)
            for name, pipe in (("stdout", self._process.stdout), ("stderr", self._process.stderr))
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, name: str, pipe: IO[str] | None) -> None:
        assert pipe is not None
        with pipe:  # this thread owns the pipe: closed once the child closed its end
            for line in pipe:
                with self._changed:
                    self._lines[name].append(line.rstrip("\n"))
                    self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def pid(self) -> int:
        """The process id."""
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        """The exit status, or ``None`` while it runs."""
        return self._process.poll()

    def lines(self, stream: str = "stdout") -> list[str]:
        """The lines read so far from ``stream`` (``stdout`` or ``stderr``)."""
        with self._changed:
            return list(self._lines[stream])

    def output(self) -> str:
        """Everything read so far, for failure messages."""
        return "\n".join(
            ["--- stdout ---", *self.lines("stdout"), "--- stderr ---", *self.lines("stderr")]
        )

    def wait_for(
        self, pattern: str, stream: str = "stderr", timeout: float = 15, occurrence: int = 1
    ) -> re.Match[str]:
        """Wait until ``occurrence`` lines of ``stream`` match ``pattern`` (a regex); return
        the last match. Fails if the process exits first or the deadline passes.
        """
        regex = re.compile(pattern)
        deadline = time.monotonic() + scaled(timeout)
        checked = 0
        seen = 0
        with self._changed:
            while True:  # woken by each new line; bounded by the deadline
                lines = self._lines[stream]
                for line in lines[checked:]:
                    found = regex.search(line)
                    if found:
                        seen += 1
                        if seen >= occurrence:
                            return found
                checked = len(lines)
                if self._process.poll() is not None and not any(
                    r.is_alive() for r in self._readers
                ):
                    raise AssertionError(
                        f"{self.args} exited with {self._process.returncode} before printing "
                        f"{pattern!r}\n{self.output()}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no line matched {pattern!r} in time\n{self.output()}")
                self._changed.wait(min(remaining, 0.5))

    def wait(self, timeout: float = 15) -> int:
        """Wait for the process to exit and its output to be read; return its status."""
        try:
            code = self._process.wait(scaled(timeout))
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.args} still runs after {timeout} s\n{self.output()}"
            ) from None
        for reader in self._readers:
            reader.join(scaled(5))
        return code

    def send_signal(self, sig: int) -> None:
        """Send a signal (SIGTERM, SIGINT) if the process still runs."""
        if self._process.poll() is None:
            self._process.send_signal(sig)

    def stop(self, timeout: float = 10) -> int:
        """SIGTERM, then SIGKILL after ``timeout`` s; return the exit status."""
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(scaled(timeout))
            except subprocess.TimeoutExpired:
                self._process.kill()
        return self.wait(timeout)

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
