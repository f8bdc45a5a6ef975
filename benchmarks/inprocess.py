"""The fan-out's Python cost per delivery, without sockets, kernel or load clients.

``run.py`` measures whole servers over real sockets, where most of the CPU is the kernel's
and the machine's noise is large. This script isolates what the server's Python code costs
per delivery: N connections are served in one process by each ASGI app, driven directly
with a stand-in ``send()`` that only counts bytes, and one event at a time is fanned out
to all of them.

- ``reference``: FastAPI, a plain loop of awaited ``WebSocket.send_text`` (as
  ``targets/reference_fixed.py``), the event encoded once;
- ``asgi``, ``starlette``, ``fastapi``: wsbridge's adapters on the in-memory broker (so
  each event is also published, decoded and framed once; that is per event, not per
  delivery).

Each app runs in a fresh process; it reports the fastest and the median of several rounds,
in nanoseconds of process CPU per delivery. Run it as::

    python benchmarks/inprocess.py            # every app, 3 processes each, interleaved
    python benchmarks/inprocess.py --apps asgi,reference --n 1000 --processes 5
    python benchmarks/inprocess.py --baseline-src ../base/src --save out.jsonl
    python benchmarks/inprocess.py --burst 50 # bursts: 50 events in one loop iteration

``--burst K`` measures the path of a burst instead: K events arrive in one event-loop
iteration, so that each connection's first frame is written at once and the others are
queued and written together as the iteration ends. The in-memory broker hands over one
message per iteration, so the wsbridge apps then run on a private redis-server that this
script starts (``redis-server`` must be on ``PATH``), and each round publishes its K events
in one pipeline; the reference sends them in a row.

``--baseline-src DIR`` also runs each wsbridge app against the wsbridge sources in DIR (as
``APP@before``, interleaved with the others); ``--save FILE`` appends every sample, one
JSON object per line.
"""

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

APPS = ("reference", "asgi", "starlette", "fastapi")
PAYLOAD = {"symbol": "AAPL", "price": 187.25, "quantity": 100, "side": "buy", "note": "x" * 300}

Message = MutableMapping[str, Any]


class Socket:
    """What a connection's stand-in ``send()`` writes to: a frame count."""

    __slots__ = ("received",)

    #: Frames received by every socket, for waiting on a whole burst at once.
    total = 0

    def __init__(self) -> None:
        self.received = 0


def stand_in_send(socket: Socket) -> Callable[[Message], Awaitable[None]]:
    """An ASGI ``send()`` that takes a frame as a server would, without a socket."""

    async def send(message: Message) -> None:
        if message["type"] == "websocket.send":
            socket.received += 1
            Socket.total += 1

    return send


def build(name: str, broker: str = "memory://") -> tuple[Any, Any, list[Any]]:
    """The ASGI app, its broadcaster (None for the reference) and its connection list."""
    from wsbridge import Broadcaster, Endpoint

    connections: list[Any] = []
    if name == "reference":
        from fastapi import FastAPI, WebSocket

        app = FastAPI()

        @app.websocket("/ws")
        async def endpoint(websocket: WebSocket) -> None:
            await websocket.accept()
            connections.append(websocket)
            await websocket.receive_text()

        return app, None, connections
    broadcaster = Broadcaster(broker)
    target = Endpoint(broadcaster, channels=["trade:executed"], idle_timeout=None)
    if name == "asgi":
        from wsbridge.asgi import WebSocketApp

        return WebSocketApp(target, lifespan=False), broadcaster, connections
    if name == "starlette":
        from starlette.applications import Starlette

        from wsbridge.starlette import create_route

        return Starlette(routes=[create_route(target, "/ws")]), broadcaster, connections
    from fastapi import FastAPI

    from wsbridge.fastapi import create_router

    app = FastAPI()
    app.include_router(create_router(target, path="/ws"))
    return app, broadcaster, connections


async def measure(
    name: str, n: int, events: int, rounds: int, burst: int = 1, redis_url: str | None = None
) -> dict[str, Any]:
    """Serve ``n`` stand-in connections with app ``name``; time ``rounds`` x ``events``.

    With ``burst`` > 1 and a ``redis_url``, events are published ``burst`` at a time.
    """
    app, broadcaster, connections = build(name, redis_url or "memory://")
    if broadcaster is not None:
        await broadcaster.__aenter__()
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    sockets = [Socket() for _ in range(n)]
    tasks = []
    for i, socket in enumerate(sockets):
        pending = [{"type": "websocket.connect"}]

        async def receive(pending: list[Message] = pending) -> Message:
            if pending:
                return pending.pop()
            await never
            raise AssertionError("unreachable")

        scope = {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "scheme": "ws",
            "path": "/ws",
            "raw_path": b"/ws",
            "root_path": "",
            "query_string": b"",
            "headers": [],
            "client": ("127.0.0.1", 10000 + i),
            "server": ("127.0.0.1", 8000),
            "subprotocols": [],
        }
        tasks.append(asyncio.create_task(app(scope, receive, stand_in_send(socket))))

    def ready() -> bool:
        if broadcaster is None:
            return len(connections) == n
        return bool(broadcaster.stats().subscriptions == n)

    deadline = time.monotonic() + 60
    while not ready():
        if time.monotonic() > deadline:
            raise SystemExit(f"{name}: the connections did not subscribe within 60 s")
        await asyncio.sleep(0.01)
    text = json.dumps({"channel": "trade:executed", "data": PAYLOAD})
    publisher = None
    if burst > 1 and broadcaster is not None:
        import redis.asyncio as aioredis

        publisher = aioredis.from_url(redis_url or "")
    data = json.dumps(PAYLOAD)
    events -= events % burst  # whole bursts only
    gc.collect()
    per_delivery = []
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(events // burst):
            if broadcaster is None:
                for _ in range(burst):
                    for websocket in list(connections):
                        await websocket.send_text(text)
            elif publisher is not None:
                expected = Socket.total + burst * n
                pipe = publisher.pipeline(transaction=False)
                for _ in range(burst):
                    pipe.publish("trade:executed", data)
                await pipe.execute()
                for _ in range(100_000):  # bounded; idle time costs no process CPU
                    if Socket.total >= expected:
                        break
                    await asyncio.sleep(0.0005)
            else:
                await broadcaster.publish("trade:executed", PAYLOAD)
            # The memory broker delivers from its reader task: let it run the fan-out.
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        per_delivery.append((time.process_time() - start) / (events * n) * 1e9)
    if publisher is not None:
        await publisher.aclose()
    expected = rounds * events
    for _ in range(1000):  # the last event's fan-out may still be running in the reader
        if all(s.received >= expected for s in sockets):
            break
        await asyncio.sleep(0)
    short = [i for i, s in enumerate(sockets) if s.received < expected]
    never.cancel()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if broadcaster is not None:
        await broadcaster.aclose()
    if short:
        raise SystemExit(f"{name}: {len(short)} connections missed frames")
    return {"app": name, "ns": per_delivery}


def child(args: argparse.Namespace) -> None:
    """Measure one app in this process and print its figures as one JSON line."""
    try:
        import uvloop
    except ImportError:
        runner: Callable[..., Any] = asyncio.run
    else:
        runner = uvloop.run
    result = runner(measure(args.child, args.n, args.events, args.rounds, args.burst, args.redis))
    print(json.dumps(result))


def main() -> None:
    """Run every app in fresh processes, interleaved, and print a Markdown table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--apps", default=",".join(APPS), help="comma-separated: " + ", ".join(APPS))
    p.add_argument("--n", type=int, default=1000, help="connections")
    p.add_argument("--events", type=int, default=100, help="events per round")
    p.add_argument("--rounds", type=int, default=7, help="timed rounds per process")
    p.add_argument("--processes", type=int, default=3, help="fresh processes per app")
    p.add_argument("--baseline-src", help="also run the wsbridge apps against DIR's wsbridge")
    p.add_argument("--baseline-label", default="before", help="suffix of those apps' names")
    p.add_argument("--save", help="append every sample to this JSON Lines file")
    p.add_argument(
        "--burst", type=int, default=1, help="events per loop iteration (>1: on a redis-server)"
    )
    p.add_argument("--redis", help=argparse.SUPPRESS)
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    apps = [a for a in args.apps.split(",") if a]
    unknown = set(apps) - set(APPS)
    if unknown:
        p.error(f"unknown apps: {', '.join(sorted(unknown))}")
    runs: list[tuple[str, str | None]] = [(a, None) for a in apps]
    if args.baseline_src:
        label = f"@{args.baseline_label}"
        runs = []
        for a in apps:
            if a != "reference":
                runs.append((a + label, a))  # right before the app: interleaved
            runs.append((a, None))
    samples: dict[str, list[float]] = {name: [] for name, _ in runs}
    redis_proc = None
    if args.burst > 1:
        import tempfile
        from pathlib import Path

        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import run

        workdir = Path(tempfile.mkdtemp(prefix="inprocess-redis-"))
        redis_proc, args.redis = asyncio.run(run.start_redis(workdir))
    try:
        measure_all(args, runs, samples)
    finally:
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(10)
    report(args, samples)


def measure_all(
    args: argparse.Namespace, runs: list[tuple[str, str | None]], samples: dict[str, list[float]]
) -> None:
    """Run each app's processes, interleaved, adding their samples to ``samples``."""
    for process in range(args.processes):
        for name, baseline_of in runs:
            app = baseline_of or name
            env = dict(os.environ)
            if baseline_of is not None:
                env["PYTHONPATH"] = os.pathsep.join(
                    p for p in [args.baseline_src, env.get("PYTHONPATH", "")] if p
                )
            command = [sys.executable, __file__, "--child", app, "--n", str(args.n)]
            command += ["--events", str(args.events), "--rounds", str(args.rounds)]
            command += ["--burst", str(args.burst)]
            if args.redis:
                command += ["--redis", args.redis]
            out = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
                env=env,
            )
            if out.returncode != 0:
                raise SystemExit(f"{name} failed:\n{out.stderr}{out.stdout}")
            ns = json.loads(out.stdout.splitlines()[-1])["ns"]
            samples[name].extend(ns)
            if args.save:
                record = {"app": name, "process": process, "n": args.n, "ns": ns}
                if args.burst > 1:
                    record["burst"] = args.burst
                with open(args.save, "a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")


def report(args: argparse.Namespace, samples: dict[str, list[float]]) -> None:
    """Print the Markdown table of ``samples``."""
    base = min(samples["reference"]) if "reference" in samples else None
    bursts = f", in bursts of {args.burst}" if args.burst > 1 else ""
    print(
        f"N = {args.n}, {args.processes} processes x {args.rounds} rounds x {args.events} events"
        + bursts
    )
    print()
    print("| app | ns/delivery, fastest | median | fastest x reference |")
    print("|---|---:|---:|---:|")
    for app, ns in samples.items():
        ratio = f"{min(ns) / base:.2f}x" if base else "-"
        print(f"| {app} | {min(ns):,.0f} | {statistics.median(ns):,.0f} | {ratio} |")


if __name__ == "__main__":
    main()
