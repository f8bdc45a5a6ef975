"""Many idle connections on one ``wsbridge serve``: memory, keepalive CPU, one burst to all.

    python benchmarks/idle.py                      # 10,000 connections, 3 repeats (~5 min)
    python benchmarks/idle.py --n 2000 --repeats 1
    python benchmarks/idle.py --baseline-src ../before/src --offer both

Each repeat starts a fresh ``wsbridge serve`` (``targets/wsbridge_serve.py``, one process)
on a redis-server of the harness's own, and opens N clients from load-generator processes
(``loadgen.py``), each subscribed to the five channels and warmed up. Then:

1. **memory**: the server's RSS after the N idle clients, minus before them, over N (the
   clients ping every 30 s while they connect and warm up, then stop);
2. **keepalive**: the server's CPU over ``--window`` seconds while every client sends
   ``{"type":"ping"}`` every ``--ping-interval`` seconds, minus its CPU over a window
   without pings (the idle cost: timers, the idle-timeout sweep), over the pings answered:
   CPU per ping. The reference client pings every 30 s; measuring at that rate would put a
   few milliseconds of CPU per second under the machine's noise, so the measurement pings
   faster and the report scales the cost per ping to 30 s;
3. **burst**: ``--burst`` events published at once (pipelined) to all N clients; every
   client must get every event exactly once.

With ``--baseline-src DIR`` (the ``src/`` folder of another checkout), every repeat also
measures the server with the wsbridge of ``DIR``, as ``wsbridge_serve@before``, right
before this checkout's: a before/after comparison from one run. With ``--offer deflate``
the clients (the ``websockets`` client then) offer permessage-deflate as browsers do, as
``wsbridge_serve+deflate``; ``--offer both`` measures with and without the offer.

The harness raises its own open-file limit, which the processes it starts inherit: never
the library's. Medians (min-max) over the repeats; raw figures are written as JSON next to
the report in ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import run
from payloads import EventFactory

HERE = Path(__file__).resolve().parent
REFERENCE_PING_S = 30.0


@dataclass(frozen=True)
class Variant:
    """One server measured in each repeat: whose wsbridge, and whether clients offer deflate."""

    name: str
    src: Path
    deflate: bool = False


def variants(args: argparse.Namespace) -> list[Variant]:
    """The servers of a repeat, in order: each baseline right before its own checkout's."""
    offers = {"none": [False], "deflate": [True], "both": [False, True]}[args.offer]
    out = []
    for deflate in offers:
        suffix = "+deflate" if deflate else ""
        if args.baseline_src is not None:
            name = f"wsbridge_serve{suffix}@{args.baseline_label}"
            out.append(Variant(name, args.baseline_src, deflate))
        out.append(Variant(f"wsbridge_serve{suffix}", run.REPO / "src", deflate))
    return out


async def pings_answered(workers: list[run.WorkerProc], interval: float) -> tuple[int, int]:
    """Set every load generator's ping interval (0: off); return pings sent, pongs received."""
    replies = await run.call_all(workers, 30, cmd="keepalive", interval=interval)
    return sum(r["pings"] for r in replies), sum(r["pongs"] for r in replies)


async def cpu_window(pid: int, seconds: float) -> float:
    """The server tree's CPU seconds over ``seconds`` of wall time."""
    before = run.tree_cpu(pid)
    await asyncio.sleep(seconds)  # the measurement window itself
    return run.tree_cpu(pid) - before


async def one_repeat(
    cfg: run.Config,
    args: argparse.Namespace,
    variant: Variant,
    rep: int,
    redis_url: str,
    logs: Path,
) -> dict[str, Any]:
    """Start the server, connect N clients, measure; always stop what it started."""
    import redis.asyncio as aioredis

    n = args.n
    tag = f"idle-{variant.name}-n{n}-r{rep}"
    port = run.free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in [str(variant.src), env.get("PYTHONPATH", "")] if p
    )
    cmd = [
        sys.executable, str(HERE / "targets" / "wsbridge_serve.py"),
        "--redis", redis_url, "--host", "127.0.0.1", "--port", str(port),
        "--loop", cfg.loop, "--channels", *cfg.channels,
    ]  # fmt: skip
    server = run.spawn(cmd, logs / f"{tag}.server.log", env)
    workers: list[run.WorkerProc] = []
    pub = aioredis.from_url(redis_url)
    factory = EventFactory(cfg.channels)
    out: dict[str, Any] = {"target": variant.name, "n": n, "rep": rep, "modes": {}}
    try:
        code = await run.wait_port(port, server, 30)
        if code is not None:
            raise run.CaseError("failed", f"server exited with {code}")
        await asyncio.sleep(0.5)  # as run.py: let the fresh process finish its start-up
        rss0 = run.tree_rss(server.pid)
        count = max(1, min(cfg.workers, n))
        shares = [n // count + (1 if i < n % count else 0) for i in range(count)]
        # Only the websockets client offers permessage-deflate (as browsers do).
        client = "websockets" if variant.deflate else cfg.client
        wargs = ["--url", f"ws://127.0.0.1:{port}/ws", "--client", client]
        # Clients ping at the reference's 30 s while they connect and warm up: on a busy
        # machine that can take longer than the server's idle timeout (75 s).
        wargs += ["--max-seconds", "1800", "--ping-interval", str(REFERENCE_PING_S)]
        wargs += ["--channels", *cfg.channels]
        if variant.deflate:
            wargs.append("--deflate")
        workers = [
            await run.WorkerProc.start(wargs, s, logs / f"{tag}.worker{i}.log")
            for i, s in enumerate(shares)
        ]
        first = await workers[0].call(30, cmd="connect", count=1)
        if first["clients"] != 1:
            raise run.CaseError("failed", f"first client did not connect: {first}")
        await run.warm_up(pub, factory, workers[:1], 1, timeout=20)
        replies = await asyncio.gather(
            *(
                w.call(60 + n / 20, cmd="connect", count=w.share - (1 if i == 0 else 0))
                for i, w in enumerate(workers)
            )
        )
        connected = sum(r["clients"] for r in replies)
        if connected != n:
            raise run.CaseError("failed", f"{n - connected} of {n} clients did not connect")
        await run.warm_up(pub, factory, workers, n, timeout=30 + n / 100)
        await pings_answered(workers, 0)  # idle from now on: no pings until the window
        await run.settle(server.pid, timeout=30 + n / 200)
        rss1 = run.tree_rss(server.pid)
        out["rss_mb"] = rss1 / 2**20
        out["mem_per_conn_kb"] = (rss1 - rss0) / n / 1024

        # Pings first (every client pinged within the last 30 s: none is near the idle
        # timeout), then the same window without them.
        sent0, pongs0 = await pings_answered(workers, args.ping_interval)
        busy = await cpu_window(server.pid, args.window)
        sent1, _ = await pings_answered(workers, 0)
        await asyncio.sleep(1.5)  # the last round's pongs: a bounded grace, then counted
        _, pongs2 = await pings_answered(workers, 0)
        quiet = await cpu_window(server.pid, args.window)
        pings = sent1 - sent0
        per_ping = (busy - quiet) / pings if pings else float("nan")
        out["modes"]["keepalive"] = {
            "ping_interval_s": args.ping_interval,
            "window_s": args.window,
            "pings": pings,
            "pongs": pongs2 - pongs0,
            "cpu_busy_s": busy,
            "cpu_idle_s": quiet,
            "idle_cpu_pct": quiet / args.window * 100,
            "us_per_ping": per_ping * 1e6,
            # The reference's 30 s pings: n / 30 pings per second.
            "keepalive_cpu_pct_at_30s": per_ping * n / REFERENCE_PING_S * 100,
        }
        burst = await run.measure(cfg, server.pid, pub, factory, workers, 0, args.burst, None, port)
        burst.pop("errors", None)
        out["modes"]["throughput"] = burst  # the burst, as run.py's throughput mode
        out["status"] = "ok"
    except run.CaseError as exc:
        out["status"], out["detail"] = exc.status, exc.detail
    except (TimeoutError, asyncio.TimeoutError, RuntimeError, OSError) as exc:
        out["status"], out["detail"] = "failed", f"{type(exc).__name__}: {exc}"
    finally:
        await asyncio.gather(*(w.stop() for w in workers), return_exceptions=True)
        await asyncio.to_thread(run.REAPER.stop, server.pid)
        await pub.aclose()
    return out


def _stat(results: list[dict[str, Any]], *path: str) -> str:
    values = []
    for r in results:
        value: Any = r if len(path) == 1 else r["modes"]
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, (int, float)) and value == value:
            values.append(float(value))
    if not values:
        return "-"
    med = sorted(values)[len(values) // 2] if len(values) % 2 else None
    if med is None:
        ordered = sorted(values)
        med = (ordered[len(ordered) // 2 - 1] + ordered[len(ordered) // 2]) / 2
    digits = 2 if max(values) < 10 else 1 if max(values) < 1000 else 0
    return f"{med:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def report(args: argparse.Namespace, results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The Markdown report: medians (min-max) over the repeats that completed, per server."""
    ok = [r for r in results if r.get("status") == "ok"]
    names = list(dict.fromkeys(r["target"] for r in results))
    lost = sum(r["modes"]["throughput"]["losses"] + r["modes"]["throughput"]["dups"] for r in ok)
    rows = [
        ("server RSS with N idle clients, MB", ("rss_mb",)),
        ("memory per connection, KB", ("mem_per_conn_kb",)),
        ("idle CPU (no pings), % of a core", ("keepalive", "idle_cpu_pct")),
        ("CPU per ping answered, µs", ("keepalive", "us_per_ping")),
        (
            "keepalive at 30 s pings, % of a core (scaled)",
            ("keepalive", "keepalive_cpu_pct_at_30s"),
        ),
        ("burst: deliveries", ("throughput", "delivered")),
        ("burst: wall s", ("throughput", "wall_s")),
        ("burst: deliveries/s", ("throughput", "deliveries_per_s")),
        ("burst: µs CPU/delivery", ("throughput", "cpu_us_per_delivery")),
    ]
    lines = [
        f"# Idle connections: N = {args.n:,} on one wsbridge serve",
        "",
        f"{meta['date']}; `{meta['command']}`; {meta['machine']}; Python {meta['python']}.",
        f"Pings every {args.ping_interval:g} s during a {args.window:g} s window (scaled to "
        f"30 s); burst of {args.burst} events to every client. {len(ok)} of "
        f"{len(results)} repeats completed; medians (min-max).",
        "",
        "| figure | " + " | ".join(f"`{name}`" for name in names) + " |",
        "|---|" + "---:|" * len(names),
        *(
            f"| {label} | "
            + " | ".join(_stat([r for r in ok if r["target"] == name], *path) for name in names)
            + " |"
            for label, path in rows
        ),
        "",
        f"Burst: {lost} events lost or duplicated over all repeats; pings sent / pongs "
        f"received: {sum(r['modes']['keepalive']['pings'] for r in ok)} / "
        f"{sum(r['modes']['keepalive']['pongs'] for r in ok)}.",
    ]
    for r in results:
        if r.get("status") != "ok":
            lines.append(
                f"- {r['target']}, repeat {r['rep']}: {r.get('status')}: {r.get('detail')}"
            )
    return "\n".join(lines) + "\n"


async def amain(args: argparse.Namespace) -> int:
    """Run the repeats, print and save the report; status 1 on any loss or failed repeat."""
    cfg = run.parse_args(["--n", str(args.n), "--targets", "wsbridge_serve"])
    cfg.workers = args.load_workers
    limit = run.raise_fd_limit(args.n * 2 + 2048)
    if limit < args.n + 1024:
        print(f"warning: open-file limit {limit} is low for N={args.n}", file=sys.stderr)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    cfg.results_dir.mkdir(parents=True, exist_ok=True)
    logs = cfg.results_dir / f"logs-idle-{stamp}"
    logs.mkdir()
    workdir = Path(tempfile.mkdtemp(prefix="wsbridge-idle-"))
    redis_proc, redis_url = await run.start_redis(workdir)
    results = []
    servers = variants(args)
    try:
        for rep in range(args.repeats):
            for variant in servers:  # interleaved: drift of the machine spreads over all
                t0 = time.monotonic()
                r = await one_repeat(cfg, args, variant, rep, redis_url, logs)
                results.append(r)
                print(f"[{rep + 1}/{args.repeats}] {json.dumps(r)} ({time.monotonic() - t0:.0f} s)",
                      file=sys.stderr, flush=True)  # fmt: skip
    finally:
        await asyncio.to_thread(run.REAPER.stop, redis_proc.pid, 2.0)
        shutil.rmtree(workdir, ignore_errors=True)
    meta = {
        "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "command": "python benchmarks/idle.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU(s), {platform.system()} "
        f"{platform.release()}",
        "python": platform.python_version(),
    }
    text = report(args, results, meta)
    print(text)
    md = cfg.results_dir / f"{stamp}-idle.md"
    md.write_text(text)
    md.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    # One line per repeat, shaped as run.py's cases.jsonl: what benchmarks/data/ keeps.
    lines = "".join(json.dumps(r, default=str) + "\n" for r in results)
    (logs / "cases.jsonl").write_text(lines)
    bad = [
        r
        for r in results
        if r.get("status") != "ok"
        or r["modes"]["throughput"]["losses"]
        or r["modes"]["throughput"]["dups"]
    ]
    return 1 if bad else 0


def main() -> int:
    """Parse the command line; run on uvloop when installed; stop everything on any exit."""
    p = argparse.ArgumentParser(
        description="Idle connections on one wsbridge serve (see benchmarks/README.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--n", type=int, default=10_000, help="idle clients")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ping-interval", type=float, default=2.0, help="seconds, while measuring")
    p.add_argument("--window", type=float, default=15.0, help="seconds per CPU window")
    p.add_argument("--burst", type=int, default=20, help="events published to every client")
    p.add_argument("--load-workers", type=int, default=2, help="load-generator processes")
    p.add_argument(
        "--baseline-src", type=Path, metavar="DIR",
        help="also measure the wsbridge sources in DIR (another checkout's src/) as "
        "wsbridge_serve@LABEL, right before this checkout's in every repeat",
    )  # fmt: skip
    p.add_argument("--baseline-label", default="before", help="LABEL of --baseline-src")
    p.add_argument(
        "--offer", choices=["none", "deflate", "both"], default="none",
        help="clients offer permessage-deflate as browsers do (the websockets client), as "
        "wsbridge_serve+deflate; both: with and without the offer",
    )  # fmt: skip
    args = p.parse_args()
    if args.baseline_src is not None:
        args.baseline_src = args.baseline_src.resolve()
        if not (args.baseline_src / "wsbridge" / "__init__.py").is_file():
            p.error(f"--baseline-src {args.baseline_src}: no wsbridge package there")
    try:
        try:
            import uvloop
        except ImportError:
            return asyncio.run(amain(args))
        return uvloop.run(amain(args))
    except KeyboardInterrupt:
        return 130
    finally:
        run.REAPER.kill_all()


if __name__ == "__main__":
    sys.exit(main())
