"""Fan-out benchmark: Redis pub/sub to N WebSocket clients, wsbridge against its peers.

One command (see benchmarks/README.md)::

    python benchmarks/run.py                 # the full matrix (about half an hour)
    python benchmarks/run.py --smoke         # CI: small, under a minute, fails on loss/dup

For every target in ``benchmarks/targets/`` and every N, the harness starts a fresh server
process, opens N real WebSocket clients from separate load-generator processes
(``benchmarks/loadgen.py``), waits until every client is subscribed (each must receive its pong
and a warm-up event on every channel, and Redis' ``PUBSUB NUMSUB`` must be stable), then
publishes ~400-byte trading events to a redis-server of its own and measures the server's CPU
per delivered frame, delivered frames per second, wall time, latency at a fixed rate,
duplicates and losses per client, and memory per idle connection.

Every loop is bounded in count and time, every run stops by itself, and every process the
harness starts is stopped again, also on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import ctypes
import datetime as dt
import hashlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from payloads import CHANNELS, PAYLOADS, EventFactory  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
EXIT_UNAVAILABLE = 3
BROADCASTER = "broadcaster_starlette"
CEILING = "websockets_broadcast"
VENVS = HERE / ".venvs"
#: targets whose pinned dependencies conflict with the main environment's get a virtualenv
PEER_REQUIREMENTS = {BROADCASTER: HERE / "requirements-broadcaster.txt"}


@dataclass(frozen=True)
class Target:
    """A server under test, and what the harness must know about it."""

    name: str
    doc: str
    #: each client receives each event this many times by design (``n`` means N times)
    copies: str = "1"
    #: default largest N; above it the target is skipped (override on the command line)
    max_n: int | None = None
    #: the script in targets/ (default: ``name``)
    script: str = ""
    #: the wsbridge sources to run it against (default: this checkout's src/)
    src: Path | None = None
    #: its clients offer permessage-deflate, as browsers do (``--offer``)
    deflate: bool = False

    def copies_for(self, n: int) -> int:
        """How many copies of each event each of ``n`` clients receives by design."""
        return n if self.copies == "n" else 1


TARGETS = {
    t.name: t
    for t in [
        Target("reference", "reference document's design", copies="n", max_n=100),
        Target("reference_fixed", "reference + one shared subscriber"),
        Target(BROADCASTER, "encode/broadcaster + Starlette"),
        Target(CEILING, "websockets server + broadcast()"),
        Target("wsbridge_asgi", "wsbridge WebSocketApp on uvicorn"),
        Target("wsbridge_fastapi", "wsbridge FastAPI router on uvicorn"),
        Target("wsbridge_starlette", "wsbridge Starlette route on uvicorn"),
        Target("wsbridge_aiohttp", "wsbridge aiohttp handler"),
        Target("wsbridge_serve", "wsbridge serve"),
        Target("wsbridge_serve_workers2", "wsbridge serve --workers 2"),
    ]
}


# --------------------------------------------------------------------------------------
# processes


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGKILL this child if the harness dies (PR_SET_PDEATHSIG)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)


class Reaper:
    """Every process group the harness started, so that all can be stopped on any exit."""

    def __init__(self) -> None:
        self.groups: set[int] = set()

    def add(self, pid: int) -> None:
        """Remember a child started with ``start_new_session=True`` (its group id is its pid)."""
        self.groups.add(pid)

    def stop(self, pid: int, grace: float = 5.0) -> None:
        """SIGTERM a group, then SIGKILL it if it has not gone after ``grace`` seconds."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        self.groups.discard(pid)

    def kill_all(self) -> None:
        """SIGKILL every group still known."""
        for pid in list(self.groups):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            self.groups.discard(pid)


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return waited == 0


REAPER = Reaper()


def _proc_children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    children = _proc_children()
    out, todo = [], [pid]
    while todo and len(out) < 10_000:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def tree_cpu(pid: int) -> float:
    """User + system CPU seconds of ``pid``'s process tree, from /proc."""
    user, system = tree_cpu_split(pid)
    return user + system


def tree_cpu_split(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of ``pid``'s process tree, from /proc."""
    user = system = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        user += int(fields[11])  # utime (field 14)
        system += int(fields[12])  # stime (field 15)
    return user / CLK_TCK, system / CLK_TCK


def tree_write_calls(pid: int) -> int | None:
    """Write system calls made so far by ``pid``'s process tree (``syscw``), or ``None``.

    How many writes a fan-out takes is most of its system time: a server that writes a
    burst's frames to a socket together makes fewer than one write per delivery.
    """
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/io", "rb") as f:
                for line in f:
                    if line.startswith(b"syscw:"):
                        total += int(line.split()[1])
        except (OSError, ValueError):
            return None
    return total


def tree_rss(pid: int) -> int:
    """Resident memory in bytes of ``pid``'s process tree, from /proc."""
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
        except OSError:
            continue
    return total


def free_port() -> int:
    """An unused TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    """Wait until ``port`` accepts connections; return the exit code if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            return code
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1)
        except (OSError, asyncio.TimeoutError):
            await asyncio.sleep(0.1)
            continue
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
        return None
    raise TimeoutError(f"port {port} not open after {timeout:.0f} s")


def spawn(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a process in its own session, logging to ``log``, dying with the harness."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            env=env,
        )
    REAPER.add(proc.pid)
    return proc


async def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start a private redis-server (from PATH) on a free port; return it and its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found on PATH (e.g. apt-get install redis-server)")
    port = free_port()
    cmd = [
        binary,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "no",
        "--dir", str(workdir),
        "--maxclients", "10000",
        # the servers under test are measured, not Redis' policy towards slow subscribers
        "--client-output-buffer-limit", "pubsub 0 0 0",
    ]  # fmt: skip
    proc = spawn(cmd, workdir / "redis.log")
    code = await wait_port(port, proc, 10)
    if code is not None:
        raise SystemExit(f"redis-server exited with {code}; see {workdir / 'redis.log'}")
    return proc, f"redis://127.0.0.1:{port}/0"


def _open_log(path: Path) -> Any:
    return open(path, "ab")


class WorkerProc:
    """One load-generator process and its command channel."""

    def __init__(self, proc: asyncio.subprocess.Process, share: int) -> None:
        self.proc = proc
        self.share = share

    @classmethod
    async def start(cls, args: list[str], share: int, log: Path) -> WorkerProc:
        """Start ``loadgen.py`` with ``args``; it will hold ``share`` clients."""
        err = _open_log(log)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(HERE / "loadgen.py"),
                *args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                limit=256 << 20,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        finally:
            err.close()
        REAPER.add(proc.pid)
        return cls(proc, share)

    async def call(self, timeout: float, **cmd: Any) -> dict[str, Any]:
        """Send one command and wait (bounded) for its answer."""
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"load worker {self.proc.pid} exited")
        return dict(json.loads(line))

    async def stop(self) -> None:
        """Ask the worker to exit, then make sure it has."""
        with contextlib.suppress(Exception):
            await self.call(5, cmd="exit")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.proc.wait(), 5)
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.proc.wait(), 5)
        REAPER.groups.discard(self.proc.pid)


async def call_all(workers: list[WorkerProc], timeout: float, **cmd: Any) -> list[dict[str, Any]]:
    """Send the same command to every worker at once."""
    return list(await asyncio.gather(*(w.call(timeout, **cmd) for w in workers)))


def target_python(cfg: Config, name: str) -> str:
    """The interpreter of a target: ``--target-python``, else its own venv, else this one."""
    if name in cfg.target_python:
        return cfg.target_python[name]
    venv = VENVS / name / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def setup_venvs() -> int:
    """Create (or update) the virtualenvs of the targets whose dependencies conflict."""
    for name, req in PEER_REQUIREMENTS.items():
        venv = VENVS / name
        print(f"setting up {venv} from {req.name}", file=sys.stderr)
        if not (venv / "bin" / "python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-r", str(req)],
            check=True,
            timeout=900,
        )
    return 0


# --------------------------------------------------------------------------------------
# one case: one target, one N, one repeat


@dataclass
class Config:
    """Everything the command line chose."""

    targets: list[str]
    ns: list[int]
    modes: list[str]
    repeats: int
    deliveries: int
    min_messages: int
    max_messages: int
    rate: float
    duration: float
    workers: int
    client: str
    loop: str
    channels: list[str]
    run_timeout: float
    idle_timeout: float
    max_minutes: float
    reference_max_n: int
    rate_max_n: int
    results_dir: Path
    target_python: dict[str, str]
    smoke: bool
    setup: bool
    profile: bool
    payload: str = "reference"
    argv: list[str] = field(default_factory=list)
    #: targets run against another wsbridge source tree (``--baseline-src``), by name
    variants: dict[str, Target] = field(default_factory=dict)


class CaseError(Exception):
    """A case could not be measured; ``status`` says how it ended."""

    def __init__(self, status: str, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


def plain_publish(client: Any, channel: str, data: str) -> Any:
    """``PUBLISH`` on a redis-py client (a coroutine) or pipeline (queued): the default."""
    return client.publish(channel, data)


async def run_case(
    cfg: Config,
    target: Target,
    n: int,
    rep: int,
    redis_url: str,
    logs: Path,
    deadline: float,
    send: Callable[[Any, str, str], Any] = plain_publish,
) -> dict[str, Any]:
    """Start ``target``, connect ``n`` clients, run every mode; always stop what it started.

    ``send`` publishes each measured event (``benchmarks/history.py`` passes the history
    script); warm-up events are always plain ``PUBLISH``.
    """
    import redis.asyncio as aioredis

    tag = f"{target.name}-n{n}-r{rep}"
    port = free_port()
    env = dict(os.environ)
    src = target.src or REPO / "src"
    if (src / "wsbridge").is_dir():  # measure this checkout of wsbridge, or the baseline's
        env["PYTHONPATH"] = os.pathsep.join(p for p in [str(src), env.get("PYTHONPATH", "")] if p)
    cmd = [
        target_python(cfg, target.script or target.name),
        str(HERE / "targets" / f"{target.script or target.name}.py"),
        "--redis", redis_url, "--host", "127.0.0.1", "--port", str(port),
        "--loop", cfg.loop, "--channels", *cfg.channels,
    ]  # fmt: skip
    server = spawn(cmd, logs / f"{tag}.server.log", env)
    workers: list[WorkerProc] = []
    pub = aioredis.from_url(redis_url)
    factory = EventFactory(cfg.channels, cfg.payload)
    result: dict[str, Any] = {
        "target": target.name,
        "n": n,
        "rep": rep,
        "modes": {},
        "deflate": target.deflate,
        "payload": cfg.payload,
    }
    if target.name.startswith("wsbridge"):
        result["wsbridge_tree"] = tree_digest(src / "wsbridge")
    try:
        code = await wait_port(port, server, 30)
        if code == EXIT_UNAVAILABLE:
            raise CaseError("n/a", _tail(logs / f"{tag}.server.log"))
        if code is not None:
            tail = _tail(logs / f"{tag}.server.log")
            raise CaseError("failed", f"server exited with {code}: {tail}")
        await asyncio.sleep(0.5)
        rss0 = tree_rss(server.pid)

        # load generators: N split over at most cfg.workers processes
        count = max(1, min(cfg.workers, n))
        shares = [n // count + (1 if i < n % count else 0) for i in range(count)]
        url = f"ws://127.0.0.1:{port}/ws"
        max_seconds = max(60.0, deadline - time.monotonic() + 60)
        wargs = ["--url", url, "--client", cfg.client, "--max-seconds", str(int(max_seconds))]
        wargs += ["--channels", *cfg.channels]
        if target.deflate:
            wargs.append("--deflate")
        workers = [
            await WorkerProc.start(wargs, s, logs / f"{tag}.worker{i}.log")
            for i, s in enumerate(shares)
        ]

        # one client first, warmed up alone: broadcaster 0.3.1 loses concurrent first subscribers
        first = await workers[0].call(30, cmd="connect", count=1)
        if first["clients"] != 1:
            raise CaseError("failed", f"first client did not connect: {first}")
        await warm_up(pub, factory, workers[:1], 1, timeout=20)
        replies = await asyncio.gather(
            *(
                w.call(60 + n / 20, cmd="connect", count=w.share - (1 if i == 0 else 0))
                for i, w in enumerate(workers)
            )
        )
        connected = sum(r["clients"] for r in replies)
        if connected != n:
            errors = "; ".join(r.get("error", "") for r in replies if r.get("failed"))
            raise CaseError("failed", f"{n - connected} of {n} clients did not connect: {errors}")
        await warm_up(pub, factory, workers, n, timeout=30 + n / 100)
        result["numsub"] = await numsub_stable(pub, cfg.channels, timeout=10)
        await settle(server.pid, timeout=30 + n / 200)
        rss1 = tree_rss(server.pid)
        result["mem_per_conn_kb"] = (rss1 - rss0) / n / 1024
        result["rss_mb"] = rss1 / 2**20

        copies = target.copies_for(n)
        base = 0
        for mode in cfg.modes:
            if time.monotonic() > deadline:
                raise CaseError("skipped", "--max-minutes reached")
            if mode == "rate" and n > cfg.rate_max_n:
                continue  # offered load beyond what 2 cores can serve and receive: skipped
            if mode == "throughput":
                m = cfg.deliveries // (n * copies)
                m = max(cfg.min_messages, min(cfg.max_messages, m))
                rate: float | None = None
            else:
                m = max(1, round(cfg.rate * cfg.duration))
                rate = cfg.rate
            stem = logs / f"{tag}.{mode}"
            spy = start_profile(server.pid, stem) if cfg.profile and rep == 0 else None
            try:
                r = await measure(cfg, server.pid, pub, factory, workers, base, m, rate, port, send)
            finally:
                if spy is not None:
                    result.setdefault("profiles", {})[mode] = await asyncio.to_thread(
                        stop_profile, spy, stem
                    )
            base += m
            result["modes"][mode] = r
            await settle(server.pid, timeout=10)
        result["status"] = "ok"
    except CaseError as exc:
        result["status"], result["detail"] = exc.status, exc.detail
    except (TimeoutError, asyncio.TimeoutError, RuntimeError, OSError) as exc:
        result["status"], result["detail"] = "failed", f"{type(exc).__name__}: {exc}"
    finally:
        await asyncio.gather(*(w.stop() for w in workers), return_exceptions=True)
        await asyncio.to_thread(REAPER.stop, server.pid)
        with contextlib.suppress(Exception):
            await pub.aclose()
    return result


def start_profile(pid: int, stem: Path) -> subprocess.Popen[bytes] | None:
    """Start py-spy sampling ``pid`` without pausing it (collapsed stacks to ``stem``)."""
    binary = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(binary).exists():
        print("py-spy not found: pip install py-spy", file=sys.stderr)
        return None
    cmd = [binary, "record", "--pid", str(pid), "--rate", "200", "--nonblocking"]
    cmd += ["--format", "raw", "--output", f"{stem}.pyspy.txt"]
    return spawn(cmd, stem.with_name(stem.name + ".pyspy.log"))


def stop_profile(spy: subprocess.Popen[bytes], stem: Path) -> str:
    """Stop py-spy (it writes on SIGINT) and summarize self time per function into a file."""
    with contextlib.suppress(ProcessLookupError):
        spy.send_signal(signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        spy.wait(20)
    REAPER.stop(spy.pid, 1.0)
    raw = Path(f"{stem}.pyspy.txt")
    if not raw.exists():
        return ""
    own: dict[str, int] = {}
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        leaf = stack.rsplit(";", 1)[-1]
        own[leaf] = own.get(leaf, 0) + int(count)
        total += int(count)
    top = sorted(own.items(), key=lambda kv: -kv[1])[:25]
    lines = [f"{100 * c / total:5.1f}%  {name}" for name, c in top] if total else []
    summary = Path(f"{stem}.profile.txt")
    summary.write_text(f"py-spy self time, {total} samples\n" + "\n".join(lines) + "\n")
    return str(summary)


def tree_digest(root: Path) -> str:
    """A short digest of the Python sources under ``root``: which code a result measured."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")) if root.is_dir() else []:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])[:400]


async def warm_up(
    pub: Any, factory: EventFactory, workers: list[WorkerProc], want: int, timeout: float
) -> None:
    """Publish warm-up events until ``want`` clients are ready (pong + every channel)."""
    deadline = time.monotonic() + timeout
    ready, published_at = -1, 0
    replies: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        # publish a new round only while readiness is stalled: a server that is still working
        # through earlier rounds is not flooded (its backlog would spill into the measurement)
        await asyncio.sleep(0.3)
        replies = await call_all(workers, 30, cmd="status")
        now_ready = sum(r["ready"] for r in replies)
        if now_ready >= want:
            return
        if now_ready == ready and time.monotonic() - published_at > 1.0:
            for i in range(len(factory.channels)):
                await pub.publish(*factory.warmup(i))
            published_at = time.monotonic()
        ready = now_ready
    why = ", ".join(
        f"{k} {sum(r.get(k, 0) for r in replies)}" for k in ("closed", "no_pong", "not_warm")
    )
    raise CaseError(
        "failed", f"only {ready} of {want} clients subscribed after {timeout:.0f} s ({why})"
    )


async def numsub_stable(pub: Any, channels: list[str], timeout: float) -> int:
    """Wait until Redis' subscriber count of every channel stops changing; return the lowest."""
    deadline = time.monotonic() + timeout
    previous = None
    current = 0
    while time.monotonic() < deadline:
        counts = await pub.pubsub_numsub(*channels)
        current = min(int(c) for _, c in counts) if counts else 0
        if current == previous and current > 0:
            break
        previous = current
        await asyncio.sleep(0.3)
    return current


async def settle(pid: int, timeout: float) -> None:
    """Wait until the server is idle: no CPU time used over two polls in a row."""
    deadline = time.monotonic() + timeout
    quiet = 0
    before = tree_cpu(pid)
    while time.monotonic() < deadline and quiet < 2:
        await asyncio.sleep(0.25)
        now = tree_cpu(pid)
        quiet = quiet + 1 if now - before < 1.5 / CLK_TCK else 0
        before = now


_BYTES_SENT = re.compile(r"\bbytes_sent:(\d+)")


async def wire_bytes(port: int) -> int | None:
    """TCP payload bytes sent so far on the server's established connections (``ss -ti``)."""
    try:
        proc = await asyncio.create_subprocess_exec(
            "ss", "-tinH", "state", "established", f"( sport = :{port} )",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
    except OSError:
        return None
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return None
    return sum(int(x) for x in _BYTES_SENT.findall(out.decode()))


async def measure(
    cfg: Config,
    pid: int,
    pub: Any,
    factory: EventFactory,
    workers: list[WorkerProc],
    base: int,
    m: int,
    rate: float | None,
    port: int,
    send: Callable[[Any, str, str], Any] = plain_publish,
) -> dict[str, Any]:
    """Publish ``m`` events (as fast as possible, or at ``rate``/s) and account for them.

    ``send(client_or_pipeline, channel, data)`` publishes one event (``PUBLISH``).
    """
    await call_all(workers, 30, cmd="start", base=base, count=m, latency=rate is not None)
    wire0 = await wire_bytes(port)
    user0, sys0 = tree_cpu_split(pid)
    cpu0 = user0 + sys0
    writes0 = tree_write_calls(pid)
    t0 = time.monotonic_ns()
    if rate is None:
        batch = 100
        for start in range(base, base + m, batch):
            pipe = pub.pipeline(transaction=False)
            ns = time.monotonic_ns()
            for seq in range(start, min(start + batch, base + m)):
                send(pipe, *factory.event(seq, ns))
            await pipe.execute()
    else:
        step = 1e9 / rate
        for i in range(m):
            delay = (t0 + i * step - time.monotonic_ns()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
            await send(pub, *factory.event(base + i, time.monotonic_ns()))
    t_pub = time.monotonic_ns()
    timeout = cfg.run_timeout + 30
    replies = await call_all(
        workers, timeout, cmd="drain", deadline_s=cfg.run_timeout, idle_s=cfg.idle_timeout
    )
    user1, sys1 = tree_cpu_split(pid)
    cpu1 = user1 + sys1
    writes1 = tree_write_calls(pid)
    wire1 = await wire_bytes(port)
    fresh = sum(r["fresh"] for r in replies)
    frames = sum(r["frames"] for r in replies)
    last_ns = max(r["last_ns"] for r in replies)
    wall = max(0.0, (last_ns - t0) / 1e9) if fresh else float("nan")
    out: dict[str, Any] = {
        "messages": m,
        "complete": all(r["complete"] for r in replies),
        "expected": sum(r["expected"] for r in replies),
        "delivered": fresh,
        "frames": frames,
        "server_cpu_s": cpu1 - cpu0,
        "server_user_s": user1 - user0,
        "server_sys_s": sys1 - sys0,
        "cpu_us_per_delivery": (cpu1 - cpu0) / fresh * 1e6 if fresh else float("nan"),
        # TCP payload the server sent to its clients (frames, pongs: WebSocket bytes).
        "wire_bytes_per_delivery": (
            (wire1 - wire0) / fresh
            if fresh and wire0 is not None and wire1 is not None
            else float("nan")
        ),
        "write_calls_per_delivery": (
            (writes1 - writes0) / fresh
            if fresh and writes0 is not None and writes1 is not None
            else float("nan")
        ),
        "client_us_per_frame": (
            sum(r["cpu_s"] for r in replies) / frames * 1e6 if frames else float("nan")
        ),
        "wall_s": wall,
        "publish_s": (t_pub - t0) / 1e9,
        "deliveries_per_s": fresh / wall if fresh and wall > 0 else float("nan"),
        "dups": sum(r["dups"] for r in replies),
        "clients_with_dups": sum(r["clients_with_dups"] for r in replies),
        "max_dups_per_client": max(r["max_dups_per_client"] for r in replies),
        "losses": sum(r["losses"] for r in replies),
        "clients_with_losses": sum(r["clients_with_losses"] for r in replies),
        "max_losses_per_client": max(r["max_losses_per_client"] for r in replies),
        "out_of_order": sum(r["out_of_order"] for r in replies),
        "malformed": sum(r["malformed"] for r in replies),
        "closed": sum(r["closed"] for r in replies),
        "errors": [r["error"] for r in replies if r.get("error")][:3],
    }
    if rate is not None:
        lat = array("q")
        for r in replies:
            lat.frombytes(base64.b64decode(r["latency_ns_b64"]))
        out["offered_rate"] = rate
        out["achieved_rate"] = m / ((t_pub - t0) / 1e9) if m > 1 and t_pub > t0 else rate
        worst = [0] * m
        for r in replies:
            ev = array("q")
            ev.frombytes(base64.b64decode(r.get("event_max_ns_b64", "")))
            worst = [max(a, b) for a, b in zip(worst, ev, strict=False)] if ev else worst
        if any(worst):
            # fan-out completion time of each event: its slowest delivery
            ranked = sorted(range(m), key=lambda k: -worst[k])[:5]
            out["event_fanout_p50_ms"] = statistics.median(worst) / 1e6
            out["slowest_events"] = [
                {"index": k, "t_s": k / rate, "ms": worst[k] / 1e6} for k in ranked
            ]
        if lat:
            ordered = sorted(lat)
            out["p50_ms"] = _pct(ordered, 50) / 1e6
            out["p99_ms"] = _pct(ordered, 99) / 1e6
            out["max_ms"] = ordered[-1] / 1e6
            out["latency_samples"] = len(ordered)
    return out


def _pct(ordered: list[int], p: float) -> float:
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return float(ordered[k])


# --------------------------------------------------------------------------------------
# reporting


def _med(values: list[float]) -> tuple[float, float, float] | None:
    values = [v for v in values if v == v]  # drop NaN
    if not values:
        return None
    return statistics.median(values), min(values), max(values)


def _fmt(stat: tuple[float, float, float] | None, digits: int = 1, spread: bool = True) -> str:
    if stat is None:
        return "-"
    med, lo, hi = stat
    if not spread or lo == hi:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"


def _ratio(a: tuple[float, float, float] | None, b: tuple[float, float, float] | None) -> str:
    if a is None or b is None or b[0] == 0:
        return "-"
    return f"{a[0] / b[0]:.2f}x"


def summarize(cfg: Config, results: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    """Group the repeats of each (target, N): medians, spreads, totals of dups and losses."""
    groups: dict[tuple[str, int], dict[str, Any]] = {}
    for r in results:
        g = groups.setdefault(
            (r["target"], r["n"]), {"runs": [], "statuses": [], "details": [], "failed": []}
        )
        g["statuses"].append(r["status"])
        if r["status"] == "failed":
            g["failed"].append(r)
        if r.get("detail"):
            g["details"].append(r["detail"])
        if r["status"] == "ok":
            g["runs"].append(r)
    for g in groups.values():
        runs = g["runs"]
        g["trees"] = sorted({r["wsbridge_tree"] for r in runs if r.get("wsbridge_tree")})
        g["mem"] = _med([r["mem_per_conn_kb"] for r in runs])
        g["numsub"] = max((r.get("numsub", 0) for r in runs), default=0)
        for mode in cfg.modes:
            ms = [r["modes"][mode] for r in runs if mode in r["modes"]]
            s: dict[str, Any] = {"count": len(ms)}
            for key in (
                "cpu_us_per_delivery",
                "wire_bytes_per_delivery",
                "deliveries_per_s",
                "wall_s",
                "client_us_per_frame",
                "p50_ms",
                "p99_ms",
                "max_ms",
            ):
                s[key] = _med([x[key] for x in ms if key in x])
            for key in ("dups", "losses", "out_of_order", "malformed", "closed"):
                s[key] = sum(x[key] for x in ms)
            s["max_dups_per_client"] = max((x["max_dups_per_client"] for x in ms), default=0)
            s["max_losses_per_client"] = max((x["max_losses_per_client"] for x in ms), default=0)
            s["clients_with_losses"] = max((x["clients_with_losses"] for x in ms), default=0)
            s["incomplete"] = sum(1 for x in ms if not x["complete"])
            s["messages"] = ms[0]["messages"] if ms else 0
            g[mode] = s
    return groups


def problems(cfg: Config, groups: dict[tuple[str, int], dict[str, Any]]) -> list[str]:
    """What makes the run fail: losses, unexpected duplicates, bad frames, failed starts."""
    out = []
    for (name, n), g in groups.items():
        target = cfg.variants.get(name) or TARGETS[name]
        for r in g["failed"]:
            out.append(f"{name} N={n} rep {r['rep'] + 1}: {r.get('detail', 'failed')}")
        for mode in cfg.modes:
            s = g.get(mode)
            if not s or not s["count"]:
                continue
            if s["losses"]:
                out.append(f"{name} N={n} {mode}: {s['losses']} events lost")
            if s["dups"] and target.copies != "n":
                out.append(f"{name} N={n} {mode}: {s['dups']} duplicate frames")
            if s["malformed"]:
                out.append(f"{name} N={n} {mode}: {s['malformed']} malformed frames")
    return out


def render(cfg: Config, groups: dict[tuple[str, int], dict[str, Any]], meta: dict[str, Any]) -> str:
    """The Markdown report: one table per mode, ratios against broadcaster and the ceiling."""
    lines = [
        f"# wsbridge fan-out benchmark, {meta['date']}",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"Machine: {meta['machine']}. Python {meta['python']}, loop {cfg.loop}, "
        f"load client {cfg.client} in {cfg.workers} process(es). Versions: {meta['versions']}.",
        f"Events ({cfg.payload}): {meta['event_bytes']:.0f} B of JSON "
        f"on {len(cfg.channels)} channels; "
        f"{cfg.repeats} repeat(s), medians with (min-max). µs/delivery = server user+sys CPU "
        "per event delivered to one client (first copy only).",
        "",
    ]
    known = list(TARGETS)
    # Grouped by target, in TARGETS' order; a target's variants stay where they were run.
    order = sorted(cfg.targets, key=lambda x: known.index(x.partition("@")[0].partition("+")[0]))
    for mode in cfg.modes:
        if mode == "throughput":
            lines += [
                "## Throughput: publish a fixed count as fast as possible",
                "",
                "| target | N | msgs | µs CPU/delivery | xbroadcaster | xceiling | x no offer "
                "| wire B/delivery | deliveries/s | wall s | KB/conn | client µs/frame | dup "
                "| loss | status |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
            ]
        else:
            lines += [
                f"## Rate: {cfg.rate:g} msg/s for {cfg.duration:g} s, publish-to-receive latency",
                "",
                "| target | N | p50 ms | p99 ms | max ms | p99 xbroadcaster | p99 xceiling "
                "| µs CPU/delivery | CPU xceiling | dup | loss | status |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
            ]
        for n in cfg.ns:
            if mode == "rate" and n > cfg.rate_max_n:
                continue
            for name in order:
                g = groups.get((name, n))
                if g is None:
                    continue
                # Clients that offer deflate are compared with peers whose clients offer it.
                plain, _, offer = name.partition("+")
                suffix = "+" + offer if offer else ""
                bc = groups.get((BROADCASTER + suffix, n), {}).get(mode, {})
                ce = groups.get((CEILING + suffix, n), {}).get(mode, {})
                po = groups.get((plain, n), {}).get(mode, {}) if offer else {}
                s = g.get(mode, {})
                status = _status(g, s)
                dup = _dup_text(cfg.variants.get(name) or TARGETS[name], n, s)
                loss = str(s.get("losses", "-")) if s.get("count") else "-"
                if mode == "throughput":
                    cpu = s.get("cpu_us_per_delivery")
                    lines.append(
                        f"| {name} | {n:,} | {s.get('messages', 0):,} | {_fmt(cpu)} "
                        f"| {_ratio(cpu, bc.get('cpu_us_per_delivery'))} "
                        f"| {_ratio(cpu, ce.get('cpu_us_per_delivery'))} "
                        f"| {_ratio(cpu, po.get('cpu_us_per_delivery'))} "
                        f"| {_fmt(s.get('wire_bytes_per_delivery'), 0, False)} "
                        f"| {_fmt(s.get('deliveries_per_s'), 0, False)} "
                        f"| {_fmt(s.get('wall_s'), 2, False)} | {_fmt(g.get('mem'), 1, False)} "
                        f"| {_fmt(s.get('client_us_per_frame'), 1, False)} "
                        f"| {dup} | {loss} | {status} |"
                    )
                else:
                    p99 = s.get("p99_ms")
                    cpu = s.get("cpu_us_per_delivery")
                    lines.append(
                        f"| {name} | {n:,} | {_fmt(s.get('p50_ms'), 1, False)} | {_fmt(p99)} "
                        f"| {_fmt(s.get('max_ms'), 1, False)} "
                        f"| {_ratio(p99, bc.get('p99_ms'))} | {_ratio(p99, ce.get('p99_ms'))} "
                        f"| {_fmt(cpu)} | {_ratio(cpu, ce.get('cpu_us_per_delivery'))} "
                        f"| {dup} | {loss} | {status} |"
                    )
        lines.append("")
    notes = [
        f"- {name} N={n}: {d}"
        for (name, n), g in groups.items()
        for d in sorted(set(g["details"]))
        if d
    ]
    for label, keys in (
        ("this checkout", [k for k in groups if "@" not in k[0]]),
        ("--baseline-src", [k for k in groups if "@" in k[0]]),
    ):
        trees = sorted({t for k in keys for t in groups[k].get("trees", [])})
        if trees:
            notes.append(
                f"- wsbridge sources measured, {label} (sha256 of src/wsbridge/**/*.py): "
                + ", ".join(trees)
                + (" - they changed during the run" if len(trees) > 1 else "")
            )
    if notes:
        lines += ["Notes:", "", *notes, ""]
    return "\n".join(lines)


def _status(g: dict[str, Any], s: dict[str, Any]) -> str:
    statuses = g["statuses"]
    if s.get("incomplete"):
        return f"DNF {s['incomplete']}/{len(statuses)}"
    if all(x == "ok" for x in statuses):
        return "ok"
    counts = {x: statuses.count(x) for x in statuses}
    return ", ".join(f"{k} {v}/{len(statuses)}" for k, v in counts.items())


def _dup_text(target: Target, n: int, s: dict[str, Any]) -> str:
    if not s.get("count"):
        return "-"
    if target.copies == "n" and s["dups"]:
        return f"{s['dups']:,} (by design: <={n}x per event)"
    return f"{s['dups']:,}"


def versions() -> str:
    """Installed versions of the peers and the client libraries."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in [
        "wsbridge-py", "uvicorn", "fastapi", "starlette", "broadcaster", "websockets",
        "redis", "hiredis", "uvloop", "picows",
    ]:  # fmt: skip
        try:
            out.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            continue
    return ", ".join(out)


def other_interpreters(cfg: Config) -> str:
    """Say which targets run in another interpreter, with that one's versions."""
    out = ""
    for name in cfg.targets:
        python = target_python(cfg, name)
        if python != sys.executable:
            shown = os.path.relpath(python, REPO) if python.startswith(str(REPO)) else python
            out += f"; {name} runs in {shown} ({peer_versions(python)})"
    return out


def peer_versions(python: str) -> str:
    """Versions of the peers installed for another interpreter."""
    code = (
        "import importlib.metadata as m\n"
        "for n in ('broadcaster', 'redis', 'starlette', 'uvicorn'):\n"
        "    try: print(n, m.version(n))\n"
        "    except m.PackageNotFoundError: pass\n"
    )
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return ", ".join(out.stdout.split("\n")[:-1])


# --------------------------------------------------------------------------------------
# main


def parse_args(argv: list[str] | None = None) -> Config:
    """Read the command line into a :class:`Config`."""
    p = argparse.ArgumentParser(
        description="Redis pub/sub → WebSocket fan-out benchmark (see benchmarks/README.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--smoke", action="store_true", help="small CI configuration, under a minute")
    p.add_argument("--targets", default=",".join(TARGETS), help="comma-separated target names")
    p.add_argument("--n", default="100,1000,5000", help="comma-separated client counts")
    p.add_argument("--modes", default="throughput,rate", help="throughput and/or rate")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--deliveries", type=int, default=500_000,
        help="throughput mode: messages = deliveries / N, clamped to [--min/--max-messages]",
    )  # fmt: skip
    p.add_argument("--min-messages", type=int, default=20)
    p.add_argument("--max-messages", type=int, default=10_000)
    p.add_argument("--rate", type=float, default=10.0, help="rate mode: messages per second")
    p.add_argument("--duration", type=float, default=20.0, help="rate mode: seconds")
    p.add_argument("--workers", type=int, default=2, help="load-generator processes")
    p.add_argument("--client", choices=["picows", "websockets", "aiohttp"], default="picows")
    p.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto")
    p.add_argument(
        "--offer",
        choices=["none", "deflate", "both"],
        default="none",
        help="clients offer permessage-deflate as browsers do (needs --client websockets); "
        "both: every target twice, its clients without the offer, then with (NAME+deflate)",
    )
    p.add_argument(
        "--payload",
        choices=PAYLOADS,
        default="reference",
        help="reference: the five ~400-byte events; portfolio20: a 20-position "
        "portfolio:update (about 3 KB), on that channel only",
    )
    p.add_argument("--run-timeout", type=float, default=120.0, help="seconds per measured phase")
    p.add_argument("--idle-timeout", type=float, default=5.0, help="give up after no progress")
    p.add_argument("--max-minutes", type=float, default=90.0, help="whole run; rest is skipped")
    p.add_argument(
        "--reference-max-n", type=int, default=100,
        help="largest N for the reference design (its work per event grows as N²)",
    )  # fmt: skip
    p.add_argument(
        "--rate-max-n", type=int, default=1000,
        help="largest N for rate mode (10 msg/s to 5,000 clients overloads 2 cores)",
    )  # fmt: skip
    p.add_argument("--results-dir", type=Path, default=HERE / "results")
    p.add_argument(
        "--target-python", action="append", default=[], metavar="NAME=PYTHON",
        help="interpreter for one target (default: benchmarks/.venvs/NAME if it exists)",
    )  # fmt: skip
    p.add_argument(
        "--baseline-src", type=Path, metavar="DIR",
        help="also run every wsbridge target against the wsbridge sources in DIR (a src/ "
        "folder, e.g. of a git worktree at another commit), interleaved, as NAME@LABEL",
    )  # fmt: skip
    p.add_argument("--baseline-label", default="before", help="LABEL of --baseline-src's targets")
    p.add_argument(
        "--setup", action="store_true",
        help="create the virtualenvs of targets with conflicting pins (broadcaster), then exit",
    )  # fmt: skip
    p.add_argument(
        "--profile", action="store_true",
        help="record a py-spy profile of each server during its first repeat's measured phases",
    )  # fmt: skip
    a = p.parse_args(argv)
    if a.smoke:
        explicit = set(argv if argv is not None else sys.argv[1:])

        def pick(flag: str, default: Any, smoke: Any) -> Any:
            return default if any(x.startswith(flag) for x in explicit) else smoke

        a.n = pick("--n", a.n, "20")
        a.repeats = pick("--repeats", a.repeats, 1)
        a.deliveries = pick("--deliveries", a.deliveries, 4000)
        a.min_messages = pick("--min-messages", a.min_messages, 10)
        a.rate = pick("--rate", a.rate, 20.0)
        a.duration = pick("--duration", a.duration, 1.0)
        a.workers = pick("--workers", a.workers, 1)
        a.run_timeout = pick("--run-timeout", a.run_timeout, 20.0)
        a.idle_timeout = pick("--idle-timeout", a.idle_timeout, 3.0)
        a.max_minutes = pick("--max-minutes", a.max_minutes, 3.0)
    targets = [t.strip() for t in a.targets.split(",") if t.strip()]
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        p.error(f"unknown targets {unknown}; choose from {list(TARGETS)}")
    variants: dict[str, Target] = {}
    if a.baseline_src is not None:
        base = a.baseline_src.resolve()
        if not (base / "wsbridge" / "__init__.py").is_file():
            p.error(f"--baseline-src {base}: no wsbridge package there")
        with_baseline: list[str] = []
        for t in targets:
            if t.startswith("wsbridge"):
                name = f"{t}@{a.baseline_label}"
                variants[name] = replace(TARGETS[t], name=name, script=t, src=base)
                with_baseline.append(name)  # right before the target: interleaved
            with_baseline.append(t)
        targets = with_baseline
    if a.offer != "none":
        if a.client != "websockets":
            p.error("--offer needs --client websockets (picows offers no permessage-deflate)")
        with_offer: list[str] = []
        for t in targets:
            plain = variants.get(t) or TARGETS[t]
            name = f"{t}+deflate"
            variants[name] = replace(plain, name=name, script=plain.script or t, deflate=True)
            with_offer += [t, name] if a.offer == "both" else [name]
        targets = with_offer
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    if not modes or any(m not in ("throughput", "rate") for m in modes):
        p.error("--modes takes throughput and/or rate")
    ns = [int(x.replace("_", "")) for x in str(a.n).split(",") if x.strip()]
    if not ns or any(x < 1 for x in ns) or a.repeats < 1:
        p.error("--n and --repeats must be positive")
    return Config(
        targets=targets,
        ns=ns,
        modes=modes,
        repeats=a.repeats,
        deliveries=a.deliveries,
        min_messages=a.min_messages,
        max_messages=a.max_messages,
        rate=a.rate,
        duration=a.duration,
        workers=max(1, a.workers),
        client=a.client,
        loop=a.loop,
        channels=["portfolio:update"] if a.payload == "portfolio20" else list(CHANNELS),
        run_timeout=a.run_timeout,
        idle_timeout=a.idle_timeout,
        max_minutes=a.max_minutes,
        reference_max_n=a.reference_max_n,
        rate_max_n=a.rate_max_n,
        results_dir=a.results_dir,
        target_python=dict(x.split("=", 1) for x in a.target_python),
        smoke=a.smoke,
        setup=a.setup,
        profile=a.profile,
        payload=a.payload,
        argv=list(argv if argv is not None else sys.argv[1:]),
        variants=variants,
    )


def raise_fd_limit(need: int) -> int:
    """Raise this process's open-file limit (inherited by its children) towards ``need``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def amain(cfg: Config) -> int:
    """Run the matrix and write the report; return the exit status."""
    started = time.monotonic()
    deadline = started + cfg.max_minutes * 60
    limit = raise_fd_limit(max(cfg.ns) * 2 + 2048)
    if limit < max(cfg.ns) + 1024:
        print(f"warning: open-file limit {limit} is low for N={max(cfg.ns)}", file=sys.stderr)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    cfg.results_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="wsbridge-bench-"))
    logs = cfg.results_dir / f"logs-{stamp}"
    logs.mkdir()
    redis_proc, redis_url = await start_redis(workdir)
    results: list[dict[str, Any]] = []
    try:
        cases = [
            (rep, n, name) for rep in range(cfg.repeats) for n in cfg.ns for name in cfg.targets
        ]
        for i, (rep, n, name) in enumerate(cases, 1):
            target = cfg.variants.get(name) or TARGETS[name]
            limit_n = cfg.reference_max_n if target.copies == "n" else target.max_n
            if limit_n is not None and n > limit_n:
                if rep == 0:
                    results.append(
                        {"target": name, "n": n, "rep": rep, "modes": {}, "status": "skipped",
                         "detail": f"N > {limit_n} (--reference-max-n): work per event grows as N²"}
                    )  # fmt: skip
                continue
            if time.monotonic() > deadline:
                results.append(
                    {"target": name, "n": n, "rep": rep, "modes": {}, "status": "skipped",
                     "detail": "--max-minutes reached"}
                )  # fmt: skip
                continue
            t0 = time.monotonic()
            r = await run_case(cfg, target, n, rep, redis_url, logs, deadline)
            results.append(r)
            with open(logs / "cases.jsonl", "a") as f:  # noqa: ASYNC230 - a few bytes per case
                f.write(json.dumps(r, default=str) + "\n")
            print(_progress(i, len(cases), r, time.monotonic() - t0), file=sys.stderr, flush=True)
    finally:
        await asyncio.to_thread(REAPER.stop, redis_proc.pid, 2.0)
        shutil.rmtree(workdir, ignore_errors=True)

    groups = summarize(cfg, results)
    meta = {
        "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "command": "python benchmarks/run.py " + " ".join(cfg.argv),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU(s), {platform.system()} "
        f"{platform.release()}",
        "python": platform.python_version(),
        "versions": versions() + other_interpreters(cfg),
        "event_bytes": EventFactory(cfg.channels, cfg.payload).mean_size(),
        "elapsed_s": time.monotonic() - started,
    }
    report = render(cfg, groups, meta)
    bad = problems(cfg, groups)
    if bad:
        report += "\n## Problems (the run fails)\n\n" + "\n".join(f"- {b}" for b in bad) + "\n"
    print(report)
    md = cfg.results_dir / f"{stamp}{'-smoke' if cfg.smoke else ''}.md"
    md.write_text(report)
    raw = md.with_suffix(".json")
    raw.write_text(json.dumps({"meta": meta, "results": results}, indent=1, default=str))
    print(f"saved {md} and {raw.name}; logs in {logs}", file=sys.stderr)
    measured = [key for key, g in groups.items() if g["runs"] or g["failed"]]
    failed = {key for key in measured if any(b.startswith(f"{key[0]} N={key[1]} ") for b in bad)}
    print(f"benchmark: {len(measured) - len(failed)} passed, {len(failed)} failed")
    return 1 if bad else 0


def _progress(i: int, total: int, r: dict[str, Any], took: float) -> str:
    parts = [f"[{i}/{total}] {r['target']} N={r['n']} rep={r['rep'] + 1}: {r['status']}"]
    for mode, m in r.get("modes", {}).items():
        text = f"{mode} {m['cpu_us_per_delivery']:.1f} µs/delivery"
        if "p99_ms" in m:
            text += f" p99 {m['p99_ms']:.1f} ms"
        text += f" dup {m['dups']} loss {m['losses']}"
        parts.append(text)
    if r.get("detail"):
        parts.append(r["detail"][:200])
    return " | ".join(parts) + f" ({took:.1f} s)"


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the benchmark, clean up on any exit, return the exit status."""
    cfg = parse_args(argv)
    if cfg.setup:
        return setup_venvs()

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        try:
            import uvloop
        except ImportError:
            return asyncio.run(amain(cfg))
        return uvloop.run(amain(cfg))
    except KeyboardInterrupt:
        print("interrupted; stopping every process started", file=sys.stderr)
        return 130
    finally:
        REAPER.kill_all()


if __name__ == "__main__":
    sys.exit(main())
