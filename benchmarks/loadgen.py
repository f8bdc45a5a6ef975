"""Load-generator worker of ``benchmarks/run.py``: many WebSocket clients in one process.

The harness starts one or more of these processes and drives each with JSON commands, one per
line on standard input; each command is answered by one JSON line on standard output. The
worker ends by itself on end of input, on ``{"cmd": "exit"}`` or after ``--max-seconds``.

Commands:

* ``connect`` ``count`` [``hello``]: open ``count`` more clients; each sends
  ``{"type":"ping"}`` at once, or the text ``hello`` instead when given (a ``subscribe``
  with ``since``: a client that resumes on a new connection).
* ``send`` ``text``: send the text frame ``text`` on every open client.
* ``close``: close every client and forget them.
* ``status``: how many clients are ready (have had their pong and a warm-up event on every
  channel), open, closed; the ``subscribed``/``unsubscribed`` acknowledgements they had, and
  how many of those said ``"recovered":false``.
* ``start`` ``base`` ``count`` ``latency``: reset the tallies; events ``base .. base+count-1``
  are now expected, exactly once each, by every client.
* ``keepalive`` ``interval``: from now on ping every client once per ``interval`` seconds
  (0: stop pinging); answer the pings sent and the pongs received so far.
* ``drain`` ``deadline_s`` ``idle_s``: wait until every client has every expected event, or no
  new event arrived for ``idle_s`` seconds, or ``deadline_s`` passed; answer the tallies.
* ``exit``.

Per frame, a client finds ``"bench_seq"`` (and ``"bench_ns"`` when measuring latency) with a
regular expression instead of decoding the whole JSON; the first measured frame of each client
is decoded in full and checked against the wire format ``{"channel": ..., "data": ...}``
(with an integer ``"offset"`` on a channel with history).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import re
import sys
import time
from array import array
from collections.abc import Callable
from typing import Any

SEQ_RE = re.compile(rb'"bench_seq":\s*(-?\d+)')
NS_RE = re.compile(rb'"bench_ns":\s*(\d+)')
PING = b'{"type":"ping"}'
CONNECT_CONCURRENCY = 64
CONNECT_ATTEMPTS = 3
QUIET_S = 0.3


class Tally:
    """What one client has received."""

    __slots__ = (
        "acks",
        "closed",
        "count",
        "dups",
        "last",
        "last_ns",
        "lat",
        "malformed",
        "ooo",
        "pong",
        "seen",
        "stale",
        "unrecovered",
        "validated",
        "warm",
    )

    def __init__(self, channels: int) -> None:
        self.closed = False
        self.pong = False
        self.warm = 0
        self.acks = 0
        self.unrecovered = 0
        self.reset(0, channels)

    def reset(self, count: int, channels: int) -> None:
        """Forget the previous measured phase and expect ``count`` events."""
        self.seen = bytearray(count)
        self.count = 0
        self.dups = 0
        self.ooo = 0
        self.stale = 0
        self.malformed = 0
        self.validated = False
        self.last = [-1] * channels
        self.last_ns = 0
        self.lat = array("q")


class Worker:
    """The clients of this process, and the per-frame bookkeeping they share."""

    def __init__(self, url: str, channels: list[str], client: str, deflate: bool = False) -> None:
        self.url = url
        self.channels = channels
        self.nch = len(channels)
        self.all_warm = (1 << self.nch) - 1
        self.client = client
        self.deflate = deflate
        self.tallies: list[Tally] = []
        self.handles: list[Any] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.session: Any = None
        self.base = 0
        self.expected = 0
        self.latency = False
        self.measuring = False
        self.fresh = 0
        self.frames = 0
        self.event_max = array("q")  # rate mode: the slowest delivery of each event
        self.received = 0  # every frame, measured or not: progress while a backlog drains
        self.cpu0 = 0.0
        self.first_error = ""
        self.ping_ticks: int | None = None  # ping each client every this many seconds
        self.pings = 0
        self.pongs = 0

    # -- the per-frame path -------------------------------------------------------------

    def on_payload(self, t: Tally, payload: bytes) -> None:
        """Account for one text frame received by the client of tally ``t``."""
        self.received += 1
        i = payload.rfind(b'"bench_seq":')
        if i < 0:
            if b'"pong"' in payload:
                t.pong = True
                self.pongs += 1
            elif payload.startswith((b'{"type":"subscribed"', b'{"type":"unsubscribed"')):
                t.acks += 1
                if b'"recovered":false' in payload:
                    t.unrecovered += 1
            elif b'"type"' not in payload:  # control frames (acks, broker status) are allowed
                t.malformed += 1
            return
        j = payload.find(b",", i)
        try:
            seq = int(payload[i + 12 : j if j > 0 else payload.find(b"}", i)])
        except ValueError:  # spacing or key order other than the publisher's: the slow way
            m = SEQ_RE.search(payload)
            if m is None:
                t.malformed += 1
                return
            seq = int(m.group(1))
        if seq < 0:
            t.warm |= 1 << (-seq - 1)
            return
        if not self.measuring:
            t.stale += 1
            return
        index = seq - self.base
        if index < 0 or index >= self.expected:
            t.stale += 1
            return
        self.frames += 1
        if t.seen[index]:
            t.dups += 1
            return
        now = time.monotonic_ns()
        t.seen[index] = 1
        t.count += 1
        self.fresh += 1
        ch = seq % self.nch
        if seq < t.last[ch]:
            t.ooo += 1
        else:
            t.last[ch] = seq
        t.last_ns = now
        if self.latency:
            n = NS_RE.search(payload, i)
            if n is not None:
                lat = now - int(n.group(1))
                t.lat.append(lat)
                if lat > self.event_max[index]:
                    self.event_max[index] = lat
        if not t.validated:
            t.validated = True
            self._validate(t, payload, seq)

    def _validate(self, t: Tally, payload: bytes, seq: int) -> None:
        try:
            frame = json.loads(payload)
            ok = (
                isinstance(frame, dict)
                and set(frame) - {"offset"} == {"channel", "data"}
                and isinstance(frame.get("offset", 0), int)
                and frame["channel"] == self.channels[seq % self.nch]
                and isinstance(frame["data"], dict)
                and frame["data"].get("bench_seq") == seq
            )
        except ValueError:
            ok = False
        if not ok:
            t.malformed += 1
            if not self.first_error:
                self.first_error = "malformed frame: " + payload[:200].decode("utf-8", "replace")

    # -- clients ----------------------------------------------------------------------

    async def connect(self, count: int, hello: bytes = PING) -> dict[str, Any]:
        """Open ``count`` more clients, a bounded number at a time; each sends ``hello``."""
        opener = {
            "picows": self._open_picows,
            "websockets": self._open_websockets,
            "aiohttp": self._open_aiohttp,
        }[self.client]
        sem = asyncio.Semaphore(CONNECT_CONCURRENCY)
        failed = 0

        async def one() -> None:
            nonlocal failed
            async with sem:
                t = Tally(self.nch)
                if self.measuring:  # a client that resumes: it expects the measured events
                    t.reset(self.expected, self.nch)
                for attempt in range(CONNECT_ATTEMPTS):
                    try:
                        handle = await asyncio.wait_for(opener(t, hello), 20)
                    except Exception as exc:  # any failure to connect is retried, then counted
                        if attempt == CONNECT_ATTEMPTS - 1:
                            failed += 1
                            self.first_error = self.first_error or f"connect: {exc!r}"
                        else:
                            await asyncio.sleep(0.2 * (attempt + 1))
                        continue
                    self.tallies.append(t)
                    self.handles.append(handle)
                    return

        await asyncio.gather(*(one() for _ in range(count)))
        return {"clients": len(self.tallies), "failed": failed}

    async def _open_picows(self, t: Tally, hello: bytes) -> Any:
        from picows import WSListener, WSMsgType, ws_connect

        worker = self

        class Client(WSListener):  # type: ignore[misc]
            def on_ws_connected(self, transport: Any) -> None:
                transport.send(WSMsgType.TEXT, hello)

            def on_ws_frame(self, transport: Any, frame: Any) -> None:
                if frame.msg_type == WSMsgType.TEXT and frame.fin:
                    worker.on_payload(t, frame.get_payload_as_bytes())
                elif frame.msg_type == WSMsgType.CLOSE:
                    transport.send_close(frame.get_close_code())
                    transport.disconnect()
                elif frame.msg_type not in (WSMsgType.PING, WSMsgType.PONG):
                    t.malformed += 1

            def on_ws_disconnected(self, transport: Any) -> None:
                t.closed = True

        transport, _ = await ws_connect(Client, self.url)
        return transport

    async def _open_websockets(self, t: Tally, hello: bytes) -> Any:
        from websockets.asyncio.client import connect

        # With deflate, the offer browsers make: permessage-deflate; client_max_window_bits.
        compression = "deflate" if self.deflate else None
        ws = await connect(self.url, compression=compression, ping_interval=None, max_queue=None)
        await ws.send(hello.decode())

        async def reader() -> None:
            try:
                while True:
                    msg = await ws.recv(decode=False)
                    self.on_payload(t, msg)
            except Exception:  # any end of the connection ends the reader
                t.closed = True

        self._spawn(reader)
        return ws

    async def _open_aiohttp(self, t: Tally, hello: bytes) -> Any:
        import aiohttp

        if self.session is None:
            connector = aiohttp.TCPConnector(limit=0)
            self.session = aiohttp.ClientSession(connector=connector)
        ws = await self.session.ws_connect(self.url, autoping=True, compress=0)
        await ws.send_str(hello.decode())

        async def reader() -> None:
            try:
                async for msg in ws:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        self.on_payload(t, msg.data.encode())
            finally:
                t.closed = True

        self._spawn(reader)
        return ws

    def ping(self, handle: Any, text: bytes = PING) -> None:
        """Send ``text`` (``{"type":"ping"}`` by default) on one client without waiting."""
        try:
            if self.client == "picows":
                from picows import WSMsgType

                handle.send(WSMsgType.TEXT, text)
            elif self.client == "websockets":
                self._spawn(lambda: handle.send(text.decode()))
            else:
                self._spawn(lambda: handle.send_str(text.decode()))
        except Exception:  # a client that has gone is counted by its reader, not here
            return

    def send_all(self, text: bytes) -> dict[str, Any]:
        """Send the text frame ``text`` on every open client."""
        sent = 0
        for t, handle in zip(self.tallies, self.handles, strict=True):
            if not t.closed:
                self.ping(handle, text)
                sent += 1
        return {"sent": sent}

    async def close_all(self) -> dict[str, Any]:
        """Close every client (bounded wait for the closes) and forget them."""
        tallies, handles = self.tallies, self.handles
        self.tallies, self.handles = [], []
        for handle in handles:
            with contextlib.suppress(Exception):
                if self.client == "picows":
                    handle.disconnect(graceful=False)
                else:
                    await asyncio.wait_for(handle.close(), 5)
        for _ in range(500):  # at most 10 s for the closes to be seen
            if all(t.closed for t in tallies):
                break
            await asyncio.sleep(0.02)
        return {"closed": sum(1 for t in tallies if t.closed), "clients": len(tallies)}

    def _spawn(self, coro_fn: Callable[[], Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro_fn())
        self.tasks.add(task)  # keep a reference: a pending task may otherwise be collected
        task.add_done_callback(self.tasks.discard)

    # -- phases -----------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Count ready, open and closed clients."""
        ready = sum(1 for t in self.tallies if t.pong and t.warm == self.all_warm and not t.closed)
        closed = sum(1 for t in self.tallies if t.closed)
        return {
            "clients": len(self.tallies),
            "ready": ready,
            "closed": closed,
            "no_pong": sum(1 for t in self.tallies if not t.pong),
            "not_warm": sum(1 for t in self.tallies if t.warm != self.all_warm),
            "acks": sum(t.acks for t in self.tallies),
            "unrecovered": sum(t.unrecovered for t in self.tallies),
        }

    def start(self, base: int, count: int, latency: bool) -> dict[str, Any]:
        """Reset every tally for a measured phase of ``count`` events from ``base``."""
        self.base, self.expected, self.latency = base, count, latency
        for t in self.tallies:
            t.reset(count, self.nch)
        self.fresh = 0
        self.frames = 0
        self.event_max = array("q", bytes(8 * count)) if latency else array("q")
        self.measuring = True
        self.cpu0 = time.process_time()
        return {"ok": True}

    async def drain(self, deadline_s: float, idle_s: float) -> dict[str, Any]:
        """Wait (bounded) for every expected event, then report the tallies."""
        want = self.expected * sum(1 for t in self.tallies if not t.closed)
        start = time.monotonic()
        last_progress, last_received = start, -1
        complete = False
        while True:
            now = time.monotonic()
            if self.fresh >= want:
                complete = True
                break
            if self.received != last_received:
                last_received, last_progress = self.received, now
            if now - start > deadline_s or now - last_progress > idle_s:
                break
            await asyncio.sleep(0.02)
        # then wait for quiet: duplicates still on the wire arrive and are counted
        quiet_since, frames = time.monotonic(), self.frames
        while time.monotonic() - start <= deadline_s:
            await asyncio.sleep(0.05)
            if self.frames != frames:
                quiet_since, frames = time.monotonic(), self.frames
            elif time.monotonic() - quiet_since >= QUIET_S:
                break
        cpu = time.process_time() - self.cpu0
        self.measuring = False
        tallies = self.tallies
        losses = [self.expected - t.count for t in tallies]
        lat = array("q")
        for t in tallies:
            lat.extend(t.lat)
        return {
            "complete": complete,
            "clients": len(tallies),
            "closed": sum(1 for t in tallies if t.closed),
            "expected": self.expected * len(tallies),
            "fresh": self.fresh,
            "frames": self.frames,
            "dups": sum(t.dups for t in tallies),
            "clients_with_dups": sum(1 for t in tallies if t.dups),
            "max_dups_per_client": max((t.dups for t in tallies), default=0),
            "losses": sum(losses),
            "clients_with_losses": sum(1 for x in losses if x),
            "max_losses_per_client": max(losses, default=0),
            "out_of_order": sum(t.ooo for t in tallies),
            "malformed": sum(t.malformed for t in tallies),
            "stale": sum(t.stale for t in tallies),
            "last_ns": max((t.last_ns for t in tallies), default=0),
            "cpu_s": cpu,
            "latency_ns_b64": base64.b64encode(lat.tobytes()).decode() if self.latency else "",
            "event_max_ns_b64": base64.b64encode(self.event_max.tobytes()).decode(),
            "error": self.first_error,
        }


async def keepalive(worker: Worker, max_seconds: float) -> None:
    """Ping every client once per ``worker.ping_ticks`` seconds, spread over the interval.

    The reference client pings every 30 s, and servers may close clients that stay silent
    (wsbridge's idle timeout is 75 s by default).
    """
    for tick in range(int(max_seconds) + 1):
        await asyncio.sleep(1.0)
        ticks = worker.ping_ticks
        if ticks is None:
            continue
        handles = worker.handles
        for k in range(tick % ticks, len(handles), ticks):
            worker.ping(handles[k])
            worker.pings += 1


async def serve_commands(worker: Worker, max_seconds: float) -> None:
    """Answer the harness's commands until end of input, ``exit`` or the time limit."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    deadline = time.monotonic() + max_seconds
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        try:
            line = await asyncio.wait_for(reader.readline(), remaining)
        except asyncio.TimeoutError:
            return
        if not line:
            return
        cmd = json.loads(line)
        name = cmd["cmd"]
        if name == "exit":
            reply: dict[str, Any] = {"ok": True}
        elif name == "connect":
            hello = cmd.get("hello")
            reply = await worker.connect(int(cmd["count"]), hello.encode() if hello else PING)
        elif name == "send":
            reply = worker.send_all(str(cmd["text"]).encode())
        elif name == "close":
            reply = await worker.close_all()
        elif name == "status":
            reply = worker.status()
        elif name == "start":
            reply = worker.start(int(cmd["base"]), int(cmd["count"]), bool(cmd["latency"]))
        elif name == "keepalive":
            interval = float(cmd["interval"])
            worker.ping_ticks = max(1, int(interval)) if interval > 0 else None
            reply = {"pings": worker.pings, "pongs": worker.pongs}
        elif name == "drain":
            reply = await worker.drain(float(cmd["deadline_s"]), float(cmd["idle_s"]))
        else:
            reply = {"error": f"unknown command {name!r}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
        if name == "exit":
            return


def main() -> None:
    """Parse the command line and run the worker on uvloop when it is installed."""
    parser = argparse.ArgumentParser(description="benchmark load-generator worker")
    parser.add_argument("--url", required=True)
    parser.add_argument("--channels", nargs="+", required=True)
    parser.add_argument("--client", choices=["picows", "websockets", "aiohttp"], default="picows")
    parser.add_argument("--max-seconds", type=float, default=1800.0)
    parser.add_argument(
        "--deflate", action="store_true", help="offer permessage-deflate (websockets client)"
    )
    parser.add_argument("--ping-interval", type=float, default=30.0, help="as the reference client")
    args = parser.parse_args()
    worker = Worker(args.url, args.channels, args.client, args.deflate)
    worker.ping_ticks = max(1, int(args.ping_interval)) if args.ping_interval > 0 else None

    async def run() -> None:
        pinger = asyncio.get_running_loop().create_task(keepalive(worker, args.max_seconds))
        try:
            await serve_commands(worker, args.max_seconds)
        finally:
            pinger.cancel()
            for handle in worker.handles:
                with contextlib.suppress(Exception):
                    if args.client == "picows":
                        handle.disconnect(graceful=False)
        # the process exits next; the kernel closes whatever is still open

    try:
        import uvloop
    except ImportError:
        asyncio.run(run())
    else:
        uvloop.run(run())
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
