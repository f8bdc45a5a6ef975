"""Channel history: what it costs to publish, how fast a reconnect is replayed, fan-out.

    python benchmarks/history.py --smoke   # under a minute; exits 1 on any loss or duplicate
    python benchmarks/history.py           # the full run, 3 repeats (~15 min)

Three parts, each side by side in one run against its own redis-server (on a free port):

1. **publish**: µs per publish on the publisher's side, and Redis CPU per publish (from
   ``INFO cpu`` of that redis-server, before and after), for a channel with history
   (the library's Lua script: offset, stream append, trim, expiry, ``PUBLISH`` of the
   envelope) against one without (``PUBLISH``). Two ways: ``Broadcaster.publish`` awaited
   one at a time, as an application publishes, and a redis-py pipeline of 100 commands
   (``EVALSHA`` of the shipped script, as a publisher in another language would), the
   variants interleaved in each repeat;
2. **resume**: N clients (``--n``, 1,000) on one ``wsbridge serve`` each miss ``--missed``
   events (1,000: the trading registry's history size and the default replay limit) of
   ``trade:executed`` and resume them with ``since``: once on their open connections
   (``unsubscribe``, the events are published, ``subscribe`` with ``since``), once on new
   connections (every client closes; the events are published; N new clients send a
   ``subscribe`` with ``since`` as their first frame). Each client must receive every
   missed event exactly once, in order. The replay's deliveries per second are compared
   with the live fan-out of ``--missed`` events to the same N clients of the same server,
   measured just before;
3. **fan-out**: ``run.py``'s bursts and steady rate to ``wsbridge serve`` on the four
   channels of the benchmark that have history in the trading registry, the events
   published with the history script (``wsbridge_serve+history``: envelope, offset on
   every frame) or with ``PUBLISH`` (``wsbridge_serve``), each case on a fresh server,
   interleaved.

Raw results go to ``cases.jsonl`` in a log folder under ``benchmarks/results/``, one line
per case, shaped as ``run.py``'s; the Markdown report is printed and saved next to it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import run
from payloads import EventFactory

HERE = Path(__file__).resolve().parent
#: The benchmark's channels that have history in the trading registry (portfolio:update
#: is a state channel: it keeps a latest value, not a history).
HISTORY_CHANNELS = ["trade:executed", "order:status", "signal:generated", "risk:alert"]
RESUME_CHANNEL = "trade:executed"
PIPELINE = 100
PARTS = ("publish", "resume", "fanout")


class HistoryPublisher:
    """Publishes through the library's history script, as ``Broadcaster.publish`` does."""

    def __init__(self, sha: str) -> None:
        from wsbridge.backends.redis import history_keys
        from wsbridge.history import new_epoch
        from wsbridge.trading import EVENT_HISTORY

        self.sha = sha
        self._keys = history_keys
        self._epoch = new_epoch
        self._size = EVENT_HISTORY.size
        self._ttl = int(EVENT_HISTORY.ttl)
        self._meta_ttl = int(EVENT_HISTORY.meta_ttl)

    @classmethod
    async def load(cls, client: Any) -> HistoryPublisher:
        """``SCRIPT LOAD`` the shipped publish script on ``client``'s server."""
        from importlib.resources import files

        text = files("wsbridge.backends").joinpath("history_publish.lua").read_text("utf-8")
        return cls(str(await client.script_load(text)))

    def send(self, client: Any, channel: str, data: str) -> Any:
        """One publication with history on a client (a coroutine) or a pipeline (queued)."""
        keys = self._keys(channel)
        return client.evalsha(
            self.sha, 3, *keys, channel, data, self._size, self._ttl, self._meta_ttl,
            self._epoch(), "0",
        )  # fmt: skip


async def position(client: Any, channel: str) -> tuple[str, int]:
    """The channel's epoch and top offset, read from Redis as the library keeps them."""
    from wsbridge.backends.redis import history_keys

    epoch, offset = await client.hmget(history_keys(channel)[1], "e", "o")
    if epoch is None:
        raise run.CaseError("failed", f"{channel} has no history position in Redis")
    return epoch.decode(), int(offset)


async def redis_cpu(client: Any) -> float:
    """The redis-server's user + system CPU seconds so far (``INFO cpu``)."""
    info = await client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


# --------------------------------------------------------------------------------------
# 1. publish cost


async def publish_cost(args: argparse.Namespace, redis_url: str, rep: int) -> list[dict[str, Any]]:
    """One repeat of every publish variant, in an order that alternates between repeats."""
    import redis.asyncio as aioredis

    from wsbridge import Broadcaster, Registry
    from wsbridge.trading import EVENT_HISTORY

    plain, kept = "bench:plain", "bench:history"
    registry = Registry()
    registry.keep_history(kept, EVENT_HISTORY)
    payload = json.loads(EventFactory([RESUME_CHANNEL]).event(0, 0)[1])
    text = json.dumps(payload, separators=(",", ":"))
    client = aioredis.from_url(redis_url)
    script = await HistoryPublisher.load(client)
    count = args.publishes
    out = []
    try:
        async with Broadcaster(redis_url, registry=registry) as broadcaster:
            # A full history first: every measured publish also trims the stream.
            for _ in range(EVENT_HISTORY.size + 100):
                await broadcaster.publish(kept, payload)

            async def awaited(channel: str) -> None:
                for _ in range(count):
                    await broadcaster.publish(channel, payload)

            async def pipelined(channel: str, history: bool) -> None:
                send: Callable[[Any, str, str], Any] = script.send if history else run.plain_publish
                for start in range(0, count, PIPELINE):
                    pipe = client.pipeline(transaction=False)
                    for _ in range(min(PIPELINE, count - start)):
                        send(pipe, channel, text)
                    await pipe.execute()

            variants: list[tuple[str, int, Callable[[], Any], bool]] = [
                ("broadcaster_publish", 1, lambda: awaited(plain), False),
                ("broadcaster_publish+history", 1, lambda: awaited(kept), True),
                ("pipeline_publish", PIPELINE, lambda: pipelined(plain, False), False),
                ("pipeline_publish+history", PIPELINE, lambda: pipelined(kept, True), True),
            ]
            if rep % 2:
                variants.reverse()
            for name, batch, body, history in variants:
                top0 = (await position(client, kept))[1]
                cpu0, redis0 = time.process_time(), await redis_cpu(client)
                t0 = time.perf_counter()
                await body()
                wall = time.perf_counter() - t0
                cpu1, redis1 = time.process_time(), await redis_cpu(client)
                top1 = (await position(client, kept))[1]
                advanced = top1 - top0
                out.append(
                    {
                        "part": "publish",
                        "target": name,
                        "n": batch,
                        "rep": rep,
                        # every publish with history took exactly one offset; none without
                        "status": "ok" if advanced == (count if history else 0) else "failed",
                        "detail": f"offsets advanced by {advanced} for {count} publishes",
                        "modes": {
                            "publish": {
                                "publishes": count,
                                "us_per_publish": wall / count * 1e6,
                                "client_cpu_us_per_publish": (cpu1 - cpu0) / count * 1e6,
                                "redis_us_per_publish": (redis1 - redis0) / count * 1e6,
                            }
                        },
                    }
                )
    finally:
        await client.aclose()
    return out


# --------------------------------------------------------------------------------------
# 2. resume


def _since(epoch: str, offset: int) -> str:
    return json.dumps(
        {
            "type": "subscribe",
            "channels": [RESUME_CHANNEL],
            "since": {RESUME_CHANNEL: {"epoch": epoch, "offset": offset}},
        },
        separators=(",", ":"),
    )


async def _acks(workers: list[run.WorkerProc]) -> tuple[int, int]:
    replies = await run.call_all(workers, 30, cmd="status")
    return sum(r["acks"] for r in replies), sum(r["unrecovered"] for r in replies)


async def _wait(check: Callable[[], Any], timeout: float, what: str) -> None:
    """Poll ``check`` (an async predicate) until true, for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise run.CaseError("failed", f"timed out after {timeout:.0f} s waiting for {what}")


async def _numsub(pub: Any) -> int:
    return int((await pub.pubsub_numsub(RESUME_CHANNEL))[0][1])


async def _replay(
    cfg: run.Config,
    pid: int,
    pub: Any,
    script: HistoryPublisher,
    factory: EventFactory,
    workers: list[run.WorkerProc],
    base: int,
    m: int,
    n: int,
    reconnect: bool,
    replay_idle: float,
) -> dict[str, Any]:
    """Publish ``m`` events nobody receives live, then let N clients resume them."""
    epoch, top = await position(pub, RESUME_CHANNEL)
    pipe = pub.pipeline(transaction=False)
    for seq in range(base, base + m):
        script.send(pipe, *factory.event(seq, 0))
    await pipe.execute()
    await run.call_all(workers, 30, cmd="start", base=base, count=m, latency=False)
    acks0, unrecovered0 = await _acks(workers)
    redis0 = await redis_cpu(pub)
    user0, sys0 = run.tree_cpu_split(pid)
    t0 = time.monotonic_ns()
    hello = _since(epoch, top)
    if reconnect:
        replies = await asyncio.gather(
            *(w.call(60 + n / 20, cmd="connect", count=w.share, hello=hello) for w in workers)
        )
        if sum(r["clients"] for r in replies) != n:
            raise run.CaseError("failed", f"reconnect: {replies}")
    else:
        await run.call_all(workers, 30, cmd="send", text=hello)
    connected_s = (time.monotonic_ns() - t0) / 1e9
    # A client may wait long for its first replayed event while the server serves others:
    # the drain gives up only after --replay-idle seconds without any event.
    replies = await run.call_all(
        workers, cfg.run_timeout + 30, cmd="drain", deadline_s=cfg.run_timeout,
        idle_s=replay_idle,
    )  # fmt: skip
    user1, sys1 = run.tree_cpu_split(pid)
    redis1 = await redis_cpu(pub)
    acks1, unrecovered1 = await _acks(workers)
    fresh = sum(r["fresh"] for r in replies)
    wall = (max(r["last_ns"] for r in replies) - t0) / 1e9 if fresh else float("nan")
    cpu = user1 - user0 + sys1 - sys0
    return {
        "messages": m,
        "complete": all(r["complete"] for r in replies),
        "expected": sum(r["expected"] for r in replies),
        "delivered": fresh,
        "frames": sum(r["frames"] for r in replies),
        "recovered": (acks1 - acks0) - (unrecovered1 - unrecovered0),
        "not_recovered": unrecovered1 - unrecovered0,
        "connect_s": connected_s,
        "server_cpu_s": cpu,
        "server_user_s": user1 - user0,
        "server_sys_s": sys1 - sys0,
        "cpu_us_per_delivery": cpu / fresh * 1e6 if fresh else float("nan"),
        "redis_cpu_s": redis1 - redis0,
        "wall_s": wall,
        "deliveries_per_s": fresh / wall if fresh and wall > 0 else float("nan"),
        "dups": sum(r["dups"] for r in replies),
        "losses": sum(r["losses"] for r in replies),
        "clients_with_losses": sum(r["clients_with_losses"] for r in replies),
        "out_of_order": sum(r["out_of_order"] for r in replies),
        "malformed": sum(r["malformed"] for r in replies),
        "closed": sum(r["closed"] for r in replies),
        "errors": [r["error"] for r in replies if r.get("error")][:3],
    }


async def resume_case(
    cfg: run.Config,
    args: argparse.Namespace,
    rep: int,
    redis_url: str,
    logs: Path,
    src: Path,
    target: str = "wsbridge_serve",
) -> dict[str, Any]:
    """Live fan-out, then a replay on open connections, then one on new connections.

    The server runs the wsbridge sources in ``src``, reported as ``target``.
    """
    import redis.asyncio as aioredis

    n, m = args.n, args.missed
    tag = f"resume-{target.replace('@', '-')}-n{n}-r{rep}"
    port = run.free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(src), env.get("PYTHONPATH", "")] if p)
    channels = [RESUME_CHANNEL]
    cmd = [
        sys.executable, str(HERE / "targets" / "wsbridge_serve.py"),
        "--redis", redis_url, "--host", "127.0.0.1", "--port", str(port),
        "--loop", cfg.loop, "--channels", *channels,
    ]  # fmt: skip
    server = run.spawn(cmd, logs / f"{tag}.server.log", env)
    workers: list[run.WorkerProc] = []
    pub = aioredis.from_url(redis_url)
    factory = EventFactory(channels)
    out: dict[str, Any] = {"part": "resume", "target": target, "n": n, "rep": rep}
    out["modes"] = {}
    try:
        script = await HistoryPublisher.load(pub)
        code = await run.wait_port(port, server, 30)
        if code is not None:
            raise run.CaseError("failed", f"server exited with {code}")
        await asyncio.sleep(0.5)  # as run.py: let the fresh process finish its start-up
        count = max(1, min(cfg.workers, n))
        shares = [n // count + (1 if i < n % count else 0) for i in range(count)]
        wargs = ["--url", f"ws://127.0.0.1:{port}/ws", "--client", cfg.client]
        wargs += ["--max-seconds", "1800", "--channels", *channels]
        workers = [
            await run.WorkerProc.start(wargs, s, logs / f"{tag}.worker{i}.log")
            for i, s in enumerate(shares)
        ]
        replies = await asyncio.gather(
            *(w.call(60 + n / 20, cmd="connect", count=w.share) for w in workers)
        )
        if sum(r["clients"] for r in replies) != n:
            raise run.CaseError("failed", f"clients did not connect: {replies}")
        await run.warm_up(pub, factory, workers, n, timeout=30 + n / 100)
        await run.settle(server.pid, timeout=30 + n / 200)

        # Live: the same events, published the same way, to the same clients.
        redis0 = await redis_cpu(pub)
        live = await run.measure(cfg, server.pid, pub, factory, workers, 0, m, None, port,
                                 script.send)  # fmt: skip
        live["redis_cpu_s"] = await redis_cpu(pub) - redis0
        live.pop("errors", None)
        out["modes"]["live"] = live
        await run.settle(server.pid, timeout=10)

        # Replay on open connections: every client drops the channel, misses m events.
        unsubscribe = json.dumps({"type": "unsubscribe", "channels": [RESUME_CHANNEL]})
        acks0, _ = await _acks(workers)
        await run.call_all(workers, 30, cmd="send", text=unsubscribe)

        async def unsubscribed() -> bool:
            return (await _acks(workers))[0] - acks0 >= n and await _numsub(pub) == 0

        await _wait(unsubscribed, 30, "every client's unsubscribe")
        async with _profiled(args.profile and rep == 0, server.pid, logs / f"{tag}.replay", out):
            replay = await _replay(
                cfg, server.pid, pub, script, factory, workers, m, m, n, False, args.replay_idle
            )
        replay["of_live_rate"] = replay["deliveries_per_s"] / live["deliveries_per_s"]
        out["modes"]["replay"] = replay
        await run.settle(server.pid, timeout=10)

        # Replay on new connections: every client goes, m events are missed, N come back.
        closed = await run.call_all(workers, 60, cmd="close")
        if sum(r["clients"] for r in closed) != n:
            raise run.CaseError("failed", f"close: {closed}")

        async def gone() -> bool:
            return await _numsub(pub) == 0

        await _wait(gone, 30, "the server to drop the channel")
        stem = logs / f"{tag}.reconnect"
        async with _profiled(args.profile and rep == 0, server.pid, stem, out, "_reconnect"):
            again = await _replay(
                cfg, server.pid, pub, script, factory, workers, 2 * m, m, n, True, args.replay_idle
            )
        again["of_live_rate"] = again["deliveries_per_s"] / live["deliveries_per_s"]
        out["modes"]["reconnect"] = again
        bad = [
            f"{mode}: {r['losses']} lost, {r['dups']} duplicates, {r['out_of_order']} out of "
            f"order, {r['malformed']} malformed, {r['recovered']} of {n} recovered"
            for mode, r in out["modes"].items()
            if r["losses"] or r["dups"] or r["out_of_order"] or r["malformed"]
            or r.get("recovered", n) != n
        ]  # fmt: skip
        out["status"], out["detail"] = ("failed", "; ".join(bad)) if bad else ("ok", "")
    except run.CaseError as exc:
        out["status"], out["detail"] = exc.status, exc.detail
    except (TimeoutError, asyncio.TimeoutError, RuntimeError, OSError) as exc:
        out["status"], out["detail"] = "failed", f"{type(exc).__name__}: {exc}"
    finally:
        await asyncio.gather(*(w.stop() for w in workers), return_exceptions=True)
        await asyncio.to_thread(run.REAPER.stop, server.pid)
        await pub.aclose()
    return out


# --------------------------------------------------------------------------------------
# 3. fan-out


async def fanout_cases(
    cfg: run.Config, rep: int, redis_url: str, logs: Path, deadline: float
) -> list[dict[str, Any]]:
    """One repeat of both variants at every N, each on a fresh server, order alternating."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url)
    try:
        script = await HistoryPublisher.load(client)
    finally:
        await client.aclose()
    serve = run.TARGETS["wsbridge_serve"]
    variants = [
        (serve, run.plain_publish),
        (run.Target("wsbridge_serve+history", "history publish", script="wsbridge_serve"),
         script.send),
    ]  # fmt: skip
    out = []
    for n in cfg.ns:
        for target, send in variants if rep % 2 == 0 else variants[::-1]:
            r = await run.run_case(cfg, target, n, rep, redis_url, logs, deadline, send)
            r["part"] = "fanout"
            r.pop("wsbridge_tree", None)
            for measured in r["modes"].values():
                measured.pop("errors", None)
                measured.pop("slowest_events", None)
            out.append(r)
    return out


# --------------------------------------------------------------------------------------
# report


def _stat(values: list[float], digits: int) -> str:
    if not values:
        return "-"
    med = statistics.median(values)
    return f"{med:,.{digits}f} ({min(values):,.{digits}f}-{max(values):,.{digits}f})"


def _values(cases: list[dict[str, Any]], target: str, n: int, mode: str, key: str) -> list[float]:
    return [
        float(c["modes"][mode][key])
        for c in cases
        if c.get("status") == "ok" and c["target"] == target and c["n"] == n
        and mode in c["modes"] and key in c["modes"][mode]
    ]  # fmt: skip


@contextlib.asynccontextmanager
async def _profiled(
    on: bool, pid: int, stem: Path, out: dict[str, Any], suffix: str = ""
) -> AsyncIterator[None]:
    """With ``on``, py-spy records ``pid`` meanwhile, its summary in ``out["profile" + suffix]``."""
    spy = run.start_profile(pid, stem) if on else None
    try:
        yield
    finally:
        if spy is not None:
            out["profile" + suffix] = await asyncio.to_thread(run.stop_profile, spy, stem)


def _median_ratio(a: list[float], b: list[float]) -> str:
    # A short run (--smoke) can measure no CPU at all: /proc counts in 10 ms ticks.
    if not a or not b or statistics.median(b) == 0:
        return "-"
    return f"{statistics.median(a) / statistics.median(b):.2f}x"


def report(args: argparse.Namespace, cases: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The Markdown report: medians (min-max) over the repeats."""
    lines = [
        "# Channel history",
        "",
        f"{meta['date']}; `{meta['command']}`; {meta['machine']}; Python {meta['python']}.",
        "",
    ]
    pubs = [c for c in cases if c.get("part") == "publish"]
    if pubs:
        lines += [
            f"## Publish ({args.publishes:,} publishes per variant and repeat)",
            "",
            "| variant | µs per publish | x without history | Redis µs per publish | "
            "Redis x without history |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, batch in [
            ("broadcaster_publish", 1),
            ("broadcaster_publish+history", 1),
            ("pipeline_publish", PIPELINE),
            ("pipeline_publish+history", PIPELINE),
        ]:
            base = name.removesuffix("+history")
            us = _values(pubs, name, batch, "publish", "us_per_publish")
            redis_us = _values(pubs, name, batch, "publish", "redis_us_per_publish")
            lines.append(
                f"| `{name}` | {_stat(us, 2)} "
                f"| {_median_ratio(us, _values(pubs, base, batch, 'publish', 'us_per_publish'))} "
                f"| {_stat(redis_us, 2)} | "
                f"{_median_ratio(redis_us, _values(pubs, base, batch, 'publish', 'redis_us_per_publish'))} |"  # noqa: E501
            )
        lines.append("")
    res = [c for c in cases if c.get("part") == "resume"]
    for target in dict.fromkeys(c["target"] for c in res):
        n = args.n
        lines += [
            f"## Resume, `{target}`: N = {n:,} clients, {args.missed:,} missed events each",
            "",
            "| phase | deliveries/s | of live rate | wall s | µs CPU/delivery | Redis CPU s "
            "| dup | loss |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for mode in ("live", "replay", "reconnect"):
            mine = [c for c in res if c["target"] == target and mode in c.get("modes", {})]
            dups = sum(c["modes"][mode]["dups"] for c in mine)
            loss = sum(c["modes"][mode]["losses"] for c in mine)
            ratio = _values(res, target, n, mode, "of_live_rate")
            lines.append(
                f"| {mode} | {_stat(_values(res, target, n, mode, 'deliveries_per_s'), 0)} "
                f"| {_stat(ratio, 2) if ratio else '-'} "
                f"| {_stat(_values(res, target, n, mode, 'wall_s'), 2)} "
                f"| {_stat(_values(res, target, n, mode, 'cpu_us_per_delivery'), 2)} "
                f"| {_stat(_values(res, target, n, mode, 'redis_cpu_s'), 2)} "
                f"| {dups} | {loss} |"
            )
        lines.append("")
    fan = [c for c in cases if c.get("part") == "fanout"]
    if fan:
        lines += [
            "## Fan-out with history against without",
            "",
            "| target | N | µs, bursts | x without history | deliveries/s, bursts "
            "| µs, events/s | x without history | p99 ms | dup | loss |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for n in sorted({c["n"] for c in fan}):
            for name in ("wsbridge_serve", "wsbridge_serve+history"):
                base = name.removesuffix("+history")
                cells = [f"`{name}`", f"{n:,}"]
                for mode in ("throughput", "rate"):
                    cpu = _values(fan, name, n, mode, "cpu_us_per_delivery")
                    cells.append(_stat(cpu, 2))
                    cells.append(
                        _median_ratio(cpu, _values(fan, base, n, mode, "cpu_us_per_delivery"))
                    )
                    if mode == "throughput":
                        cells.append(_stat(_values(fan, name, n, mode, "deliveries_per_s"), 0))
                cells.append(_stat(_values(fan, name, n, "rate", "p99_ms"), 1))
                ok = [c for c in fan if c["target"] == name and c["n"] == n]
                cells.append(str(sum(m["dups"] for c in ok for m in c["modes"].values())))
                cells.append(str(sum(m["losses"] for c in ok for m in c["modes"].values())))
                lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    for c in cases:
        if c.get("status") != "ok":
            lines.append(f"- {c.get('part')} {c['target']} n={c['n']} repeat {c['rep']}: "
                         f"{c.get('status')}: {c.get('detail')}")  # fmt: skip
    return "\n".join(lines) + "\n"


def problems(cases: list[dict[str, Any]]) -> list[str]:
    """Every failed case, lost event, duplicate or malformed frame."""
    bad = []
    for c in cases:
        if c.get("status") != "ok":
            bad.append(f"{c.get('part')} {c['target']} n={c['n']}: {c.get('status')}")
            continue
        for mode, m in c["modes"].items():
            for key in ("losses", "dups", "out_of_order", "malformed"):
                if m.get(key):
                    bad.append(f"{c['part']} {c['target']} n={c['n']} {mode}: {key} {m[key]}")
    return bad


# --------------------------------------------------------------------------------------
# main


async def amain(args: argparse.Namespace) -> int:
    """Run the parts, repeat by repeat; print and save the report; 1 on any problem."""
    started = time.monotonic()
    deadline = started + args.max_minutes * 60
    argv = ["--targets", "wsbridge_serve", "--n", args.fanout_n, "--modes", "throughput,rate"]
    argv += ["--rate", str(args.rate), "--duration", str(args.duration)]
    argv += ["--deliveries", str(args.deliveries), "--workers", str(args.load_workers)]
    argv += ["--run-timeout", str(args.run_timeout)]
    cfg = run.parse_args(argv)
    cfg.channels = list(HISTORY_CHANNELS)
    limit = run.raise_fd_limit(max(args.n, *cfg.ns) * 2 + 2048)
    if limit < max(args.n, *cfg.ns) + 1024:
        print(f"warning: open-file limit {limit} is low", file=sys.stderr)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    cfg.results_dir.mkdir(parents=True, exist_ok=True)
    logs = cfg.results_dir / f"logs-history-{stamp}"
    logs.mkdir()
    workdir = Path(tempfile.mkdtemp(prefix="wsbridge-history-"))
    redis_proc, redis_url = await run.start_redis(workdir)
    parts = [p for p in args.parts.split(",") if p]
    sources = [(run.REPO / "src", "wsbridge_serve")]
    if args.baseline_src is not None:
        if not (args.baseline_src / "wsbridge").is_dir():
            raise SystemExit(f"--baseline-src {args.baseline_src}: no wsbridge package there")
        sources.insert(0, (args.baseline_src.resolve(), f"wsbridge_serve@{args.baseline_label}"))
    cases: list[dict[str, Any]] = []

    def keep(found: list[dict[str, Any]], took: float) -> None:
        cases.extend(found)
        with open(logs / "cases.jsonl", "a") as f:
            f.writelines(json.dumps(c, default=str) + "\n" for c in found)
        for c in found:
            head = f"[{c['part']} {c['target']} n={c['n']} r{c['rep']}]"
            tail = f"{c.get('status')} {c.get('detail') or ''} ({took:.0f} s)"
            print(head, tail, file=sys.stderr, flush=True)

    try:
        for rep in range(args.repeats):
            for part in parts:
                if time.monotonic() > deadline:
                    print("--max-minutes reached: the rest is skipped", file=sys.stderr)
                    break
                t0 = time.monotonic()
                if part == "publish":
                    found = await publish_cost(args, redis_url, rep)
                elif part == "resume":
                    found = []
                    for src, target in sources if rep % 2 == 0 else sources[::-1]:
                        found.append(
                            await resume_case(cfg, args, rep, redis_url, logs, src, target)
                        )
                else:
                    found = await fanout_cases(cfg, rep, redis_url, logs, deadline)
                keep(found, time.monotonic() - t0)
    finally:
        await asyncio.to_thread(run.REAPER.stop, redis_proc.pid, 2.0)
        shutil.rmtree(workdir, ignore_errors=True)
    meta = {
        "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "command": "python benchmarks/history.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU(s), {platform.system()} "
        f"{platform.release()}",
        "python": platform.python_version(),
        "elapsed_s": time.monotonic() - started,
    }
    text = report(args, cases, meta)
    print(text)
    md = cfg.results_dir / f"{stamp}-history.md"
    md.write_text(text)
    md.with_suffix(".json").write_text(json.dumps({"meta": meta, "cases": cases}, indent=1))
    print(f"raw results: {logs / 'cases.jsonl'}", file=sys.stderr)
    bad = problems(cases)
    for line in bad:
        print(f"problem: {line}", file=sys.stderr)
    return 1 if bad or not cases else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; ``--smoke`` changes the defaults of what was not given."""
    p = argparse.ArgumentParser(
        description="Channel history: publish cost, resume, fan-out (see benchmarks/README.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--smoke", action="store_true", help="small CI configuration, under a minute")
    p.add_argument("--parts", default=",".join(PARTS), help="publish, resume and/or fanout")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--publishes", type=int, default=10_000, help="per publish variant and repeat")
    p.add_argument("--n", type=int, default=1000, help="resume: clients")
    p.add_argument("--missed", type=int, default=1000, help="resume: missed events per client")
    p.add_argument("--fanout-n", default="100,1000", help="fan-out: comma-separated client counts")
    p.add_argument("--deliveries", type=int, default=500_000, help="fan-out: per burst")
    p.add_argument("--rate", type=float, default=10.0, help="fan-out: events per second")
    p.add_argument("--duration", type=float, default=10.0, help="fan-out: seconds of rate")
    p.add_argument("--load-workers", type=int, default=2, help="load-generator processes")
    p.add_argument("--run-timeout", type=float, default=120.0, help="seconds per measured phase")
    p.add_argument(
        "--replay-idle", type=float, default=30.0,
        help="resume: give up after this many seconds without any replayed event",
    )  # fmt: skip
    p.add_argument("--max-minutes", type=float, default=60.0, help="whole run; rest is skipped")
    p.add_argument(
        "--baseline-src", type=Path, metavar="DIR",
        help="resume: also run it against the wsbridge sources in DIR (the src/ folder of "
        "another checkout), as wsbridge_serve@LABEL, interleaved",
    )  # fmt: skip
    p.add_argument("--baseline-label", default="before", help="LABEL of --baseline-src")
    p.add_argument(
        "--profile", action="store_true",
        help="record a py-spy profile of the server during the first repeat's replay "
        "and reconnect (perturbs that repeat's figures)",
    )  # fmt: skip
    args = p.parse_args(argv)
    if args.smoke:
        given = set(argv if argv is not None else sys.argv[1:])
        smoke = {
            "repeats": 1, "publishes": 300, "n": 20, "missed": 200, "fanout_n": "20",
            "deliveries": 4000, "duration": 1.0, "load_workers": 1, "run_timeout": 30.0,
            "max_minutes": 5.0,
        }  # fmt: skip
        for key, value in smoke.items():
            if not any(x.startswith("--" + key.replace("_", "-")) for x in given):
                setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> int:
    """Run on uvloop when installed; stop every process started, whatever happens."""
    args = parse_args(argv)
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
