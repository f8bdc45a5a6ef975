"""Several worker processes on one port, supervised: ``wsbridge serve --workers N``.

:func:`supervise` runs in the parent process. It forks ``N`` workers; each runs its own
server and its own broadcaster (its own broker connections and upstream subscriptions),
so a published event reaches every worker, and each worker fans it out to its clients.

How the workers share the port:

* on Linux, each worker opens its own listening socket on the same address with
  ``SO_REUSEPORT`` and the kernel spreads new connections over them. The parent keeps a
  bound, non-listening socket on the address, so the port (also one chosen by the system
  for port 0) stays reserved while a worker restarts;
* elsewhere (macOS and the BSDs, whose ``SO_REUSEPORT`` does not balance connections),
  the parent opens the listening socket before forking and every worker accepts from it.

Supervision: a worker that exits while the parent runs is started again, after a delay
that doubles with each quick failure (0.1 s up to 10 s), so a worker that crashes at start
does not spin. If a worker of the first start fails before any worker served, the parent
stops them all and exits with that worker's status (a broker that cannot be reached, say).
SIGTERM or SIGINT to the parent sends SIGTERM to every worker, which closes its clients
with 1001; the parent waits for them (``grace`` seconds, then SIGKILL) and returns 0. On
Linux, a worker whose parent dies (killed with SIGKILL, say) gets SIGTERM too, so no
orphaned worker keeps the port.

POSIX only: workers are forked, so they start with the parent's configuration and nothing
is pickled or parsed again.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import select
import signal
import socket
import struct
import sys
import time
import traceback
from collections.abc import Callable
from types import FrameType

__all__ = ["WorkerMain", "reuse_port_balances", "supervise"]

logger = logging.getLogger("wsbridge")

WorkerMain = Callable[[socket.socket, Callable[[], None]], int]
"""A worker's body: ``main(sock, ready)`` serves on ``sock`` (an open socket, bound; it
may not listen yet), calls ``ready()`` once it accepts connections, and returns its exit
status when it has stopped. It runs in the forked child."""

_BACKOFF_FIRST = 0.1
_BACKOFF_MAX = 10.0
# A worker that served this long before it exited is restarted at once.
_STABLE_SECONDS = 10.0
# The parent wakes at least this often, whatever happens (every wait is bounded).
_TICK = 1.0
_PID = struct.Struct("!i")
_PR_SET_PDEATHSIG = 1


def reuse_port_balances() -> bool:
    """Whether this system spreads connections over ``SO_REUSEPORT`` sockets (Linux)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def _bind(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            # As asyncio does: an IPv6 address listens on IPv6 only.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


def _rebind(model: socket.socket) -> socket.socket:
    """A new SO_REUSEPORT socket bound to ``model``'s address."""
    sock = socket.socket(model.family, model.type, model.proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if model.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(model.getsockname())
    except BaseException:
        sock.close()
        raise
    return sock


def _describe(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


class _Supervisor:
    def __init__(
        self,
        workers: int,
        main: WorkerMain,
        listener: socket.socket,
        reuse_port: bool,
        announce: Callable[[int], None],
        grace: float,
    ) -> None:
        self.main = main
        self.listener = listener
        self.reuse_port = reuse_port
        self.announce = announce
        self.grace = grace
        self.slots: list[int | None] = [None] * workers
        self.started_at = [0.0] * workers
        self.ready_at: list[float | None] = [None] * workers
        self.failures = [0] * workers
        self.restart_at: list[float | None] = [0.0] * workers
        self.announced = False
        self.stopping = False
        self.deadline = 0.0
        self.status = 0
        self.wake_r, self.wake_w = os.pipe()
        self.ready_r, self.ready_w = os.pipe()
        for fd in (self.wake_r, self.wake_w, self.ready_r):
            os.set_blocking(fd, False)

    # -- the parent's loop ------------------------------------------------------------

    def run(self) -> int:
        signals = (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)
        previous = {sig: signal.getsignal(sig) for sig in signals}
        old_wakeup = signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        try:
            for sig in signals:
                signal.signal(sig, _wake)
            self._loop()
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for fd in (self.wake_r, self.wake_w, self.ready_r, self.ready_w):
                os.close(fd)
        return self.status

    def _loop(self) -> None:
        while True:
            now = time.monotonic()
            if not self.stopping:
                for slot, due in enumerate(self.restart_at):
                    if due is not None and due <= now:
                        self._spawn(slot)
            elif not any(self.slots):
                return
            timeout = _TICK
            if self.stopping:
                timeout = min(timeout, max(0.0, self.deadline - now))
            else:
                for due in self.restart_at:
                    if due is not None:
                        timeout = min(timeout, max(0.0, due - now))
            readable, _, _ = select.select([self.wake_r, self.ready_r], [], [], timeout)
            if self.wake_r in readable:
                for number in _drain(self.wake_r):
                    if number in (signal.SIGTERM, signal.SIGINT) and not self.stopping:
                        logger.info("wsbridge: stopping %d workers", len(self.slots))
                        self._stop()
            if self.ready_r in readable:
                self._on_ready(_drain(self.ready_r))
            self._reap()
            if self.stopping and time.monotonic() >= self.deadline and any(self.slots):
                logger.warning(
                    "wsbridge: workers still running after %g s; killing them", self.grace
                )
                self._signal_all(signal.SIGKILL)
                self.deadline = time.monotonic() + self.grace

    def _stop(self, status: int = 0) -> None:
        self.stopping = True
        self.status = status
        self.deadline = time.monotonic() + self.grace
        self._signal_all(signal.SIGTERM)

    def _signal_all(self, sig: signal.Signals) -> None:
        for pid in self.slots:
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)

    def _on_ready(self, data: bytes) -> None:
        now = time.monotonic()
        for offset in range(0, len(data) - len(data) % _PID.size, _PID.size):
            (pid,) = _PID.unpack_from(data, offset)
            if pid in self.slots:
                slot = self.slots.index(pid)
                self.ready_at[slot] = now
                logger.info("wsbridge: worker %d (pid %d) serves", slot + 1, pid)
        if not self.announced and all(at is not None for at in self.ready_at):
            self.announced = True
            self.announce(self.listener.getsockname()[1])

    def _reap(self) -> None:
        for _ in range(len(self.slots) + 1):
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid not in self.slots:
                continue
            slot = self.slots.index(pid)
            self.slots[slot] = None
            ready_at = self.ready_at[slot]
            self.ready_at[slot] = None
            if self.stopping:
                continue
            code = os.waitstatus_to_exitcode(status)
            if ready_at is None and not self.announced:
                # The first start failed: report it as a single process would.
                logger.error("wsbridge: worker %d (pid %d) %s", slot + 1, pid, _describe(status))
                self._stop(code if code > 0 else 1)
                continue
            now = time.monotonic()
            if ready_at is not None and now - ready_at >= _STABLE_SECONDS:
                self.failures[slot] = 0
            self.failures[slot] += 1
            delay = min(_BACKOFF_FIRST * 2 ** (self.failures[slot] - 1), _BACKOFF_MAX)
            self.restart_at[slot] = now + delay
            logger.warning(
                "wsbridge: worker %d (pid %d) %s; restarting it in %.1f s",
                slot + 1,
                pid,
                _describe(status),
                delay,
            )

    def _spawn(self, slot: int) -> None:
        self.restart_at[slot] = None
        sys.stdout.flush()
        sys.stderr.flush()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, measured by the tests' results
            os._exit(self._child(parent))
        self.slots[slot] = pid
        self.started_at[slot] = time.monotonic()
        logger.info("wsbridge: worker %d started (pid %d)", slot + 1, pid)

    # -- in the child -----------------------------------------------------------------

    def _child(self, parent: int) -> int:  # pragma: no cover - runs in the child
        status = 1
        try:
            _die_with_parent(parent)
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            for fd in (self.wake_r, self.wake_w, self.ready_r):
                os.close(fd)
            ready_w = self.ready_w
            if self.reuse_port:
                sock = _rebind(self.listener)
                self.listener.close()
            else:
                sock = self.listener

            def ready() -> None:
                os.write(ready_w, _PID.pack(os.getpid()))

            status = self.main(sock, ready)
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1
        except KeyboardInterrupt:
            status = 0
        except BaseException:
            traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
        return status


def _die_with_parent(parent: int) -> None:  # pragma: no cover - runs in the child
    """On Linux, ask for SIGTERM when the parent dies; exit if it already has."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _wake(signum: int, frame: FrameType | None) -> None:
    """Signal handler: the wakeup fd already carries the signal to the loop."""


def _drain(fd: int) -> bytes:
    chunks = []
    for _ in range(64):
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def supervise(
    workers: int,
    main: WorkerMain,
    *,
    host: str,
    port: int,
    backlog: int = 2048,
    announce: Callable[[int], None] = lambda port: None,
    grace: float = 15.0,
) -> int:
    """Run ``workers`` forked processes of ``main`` on ``host:port`` until SIGTERM or SIGINT.

    ``announce(port)`` is called once every worker of the first start serves (``port`` is
    the bound port, useful with port 0). Returns the exit status for the parent: 0 after
    a signal, or the status of a worker whose first start failed. Raises :class:`OSError`
    when the address cannot be bound, and :class:`NotImplementedError` on a system without
    ``fork``.
    """
    if not hasattr(os, "fork"):
        raise NotImplementedError("several workers need a POSIX system (os.fork)")
    reuse_port = reuse_port_balances()
    listener = _bind(host, port, reuse_port=reuse_port)
    try:
        if not reuse_port:
            listener.listen(backlog)
        return _Supervisor(workers, main, listener, reuse_port, announce, grace).run()
    finally:
        listener.close()
