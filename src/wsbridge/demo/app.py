"""The trading dashboard demo: a FastAPI app serving the page, the bridge and a simulator.

``create_app()`` returns an app that serves:

* ``GET /``: the dashboard (static HTML, CSS and JavaScript shipped in this package);
* ``/ws``: the wsbridge WebSocket endpoint, every client subscribed to the ten trading
  channels of :mod:`wsbridge.trading`;
* ``GET /api/state``: the kill switch, active circuit breakers and feed state, so a page
  that has just (re)connected knows whether trading is halted;
* ``POST /api/approvals``: a human's decision on a ``trade:pending_approval``
  (``{"symbol", "side", "quantity", "strategy_name", "decision": "approve" | "reject"}``);
* ``POST /api/kill-switch``: ``{"action": "activate" | "deactivate", "reason"?}``.

A :class:`~wsbridge.demo.simulator.MarketSimulator` runs in the app's lifespan and
publishes through the library's :class:`~wsbridge.Broadcaster`, so every event reaches the
page the way a real publisher's would (through Redis with ``broker_url="redis://..."``).
The app also listens to the kill switch, circuit breaker and feed channels, so such an
event published by another process (``wsbridge publish``, say) halts or resumes the
simulated trading too.

With ``debug_publish=True`` (or the environment variable ``WSBRIDGE_DEMO_DEBUG_PUBLISH=1``)
the app also exposes, **for tests and demonstrations only**, ``POST /api/debug/publish``
(``{"channel", "data"}``: publish one validated event) and ``POST /api/debug/tick``
(``{"count"}``: run the simulator that many steps now). These endpoints have no
authentication: never enable them on a server others can reach.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any, Literal

import anyio
from anyio.abc import TaskStatus
from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from wsbridge import Broadcaster, BrokerError, Endpoint, EventValidationError
from wsbridge.demo.simulator import Event, MarketSimulator, TradingHaltedError
from wsbridge.fastapi import create_router
from wsbridge.trading import CHANNELS, registry

__all__ = ["DEBUG_PUBLISH_ENV", "create_app", "serve"]

logger = logging.getLogger("wsbridge.demo")

#: Set to ``1`` to enable the demo's debug endpoints when ``debug_publish`` is not given.
DEBUG_PUBLISH_ENV = "WSBRIDGE_DEMO_DEBUG_PUBLISH"

_STATIC = Path(__file__).resolve().parent / "static"
_LOG_EVERY = 30.0  # seconds between two warnings about the same publishing failure
_OBSERVED_CHANNELS = (
    "risk:kill_switch",
    "risk:circuit_breaker",
    "system:feed:disconnected",
    "system:feed:reconnected",
)


class ApprovalDecision(BaseModel):
    """A human's decision on a trade that awaits approval."""

    model_config = ConfigDict(extra="forbid")

    symbol: str = Field(min_length=1, max_length=10, pattern=r"^[A-Z][A-Z0-9.]*$")
    side: Literal["BUY", "SELL"]
    quantity: int = Field(gt=0, le=1_000_000)
    strategy_name: str = Field(min_length=1, max_length=64)
    decision: Literal["approve", "reject"]


class KillSwitchRequest(BaseModel):
    """Pull or release the kill switch."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["activate", "deactivate"]
    reason: str | None = Field(default=None, min_length=1, max_length=200)


class DebugEvent(BaseModel):
    """One event to publish as is (debug endpoint)."""

    model_config = ConfigDict(extra="forbid")

    channel: str = Field(min_length=1, max_length=256)
    data: Any


class DebugTicks(BaseModel):
    """How many simulator steps to run now (debug endpoint)."""

    model_config = ConfigDict(extra="forbid")

    count: int = Field(default=1, ge=1, le=1000)


class _Demo:
    """What the routes share: the broadcaster and the simulator, and how to publish."""

    def __init__(self, broadcaster: Broadcaster, simulator: MarketSimulator) -> None:
        self.broadcaster = broadcaster
        self.simulator = simulator
        self._last_warning = float("-inf")

    async def publish_all(self, events: list[Event]) -> None:
        """Publish events in order; a broker failure becomes HTTP 503."""
        try:
            for channel, data in events:
                await self.broadcaster.publish(channel, data)
        except BrokerError as exc:
            raise HTTPException(503, f"broker unavailable: {exc}") from exc

    async def publish_simulated(self, channel: str, data: dict[str, Any]) -> None:
        """Publish one simulated event; failures are logged, never stop the simulator."""
        try:
            await self.broadcaster.publish(channel, data)
        except BrokerError as exc:
            now = time.monotonic()
            if now - self._last_warning >= _LOG_EVERY:
                self._last_warning = now
                logger.warning("demo: could not publish on %s: %s", channel, exc)
        except EventValidationError:
            logger.exception("demo: the simulator produced an invalid %s event", channel)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _debug_enabled(flag: bool | None) -> bool:
    if flag is not None:
        return flag
    return os.environ.get(DEBUG_PUBLISH_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def create_app(
    *,
    broker_url: str = "memory://",
    seed: int | None = None,
    interval: float = 1.0,
    simulate: bool = True,
    debug_publish: bool | None = None,
) -> FastAPI:
    """Build the demo app.

    ``broker_url``: ``memory://`` (the embedded broker) or a Redis URL. ``seed`` makes the
    simulated market repeatable; ``interval`` is the seconds between two simulator steps.
    ``simulate=False`` keeps the simulator from ticking on its own (the page then shows
    only what is published: by the approval and kill-switch endpoints, by another process
    through Redis, or by the debug endpoints). ``debug_publish`` enables the debug
    endpoints; when ``None``, the ``WSBRIDGE_DEMO_DEBUG_PUBLISH`` environment variable
    decides.
    """
    if not interval > 0:
        raise ValueError("interval must be positive")
    simulator = MarketSimulator(seed=seed)
    broadcaster = Broadcaster(broker_url, registry=registry)
    endpoint = Endpoint(broadcaster, channels=CHANNELS)
    demo = _Demo(broadcaster, simulator)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with broadcaster, anyio.create_task_group() as tg:
            await tg.start(_observe, demo)
            if simulate:
                tg.start_soon(partial(simulator.run, demo.publish_simulated, interval=interval))
            yield
            tg.cancel_scope.cancel()

    app = FastAPI(
        title="wsbridge trading demo",
        summary="A live trading dashboard fed through wsbridge by a market simulator.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.include_router(create_router(endpoint, path="/ws"))
    app.state.broadcaster = broadcaster
    app.mount("/static", StaticFiles(directory=_STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(_STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/api/state")
    async def state() -> dict[str, Any]:
        """The trading state: kill switch, active circuit breakers, feed."""
        return {**simulator.state(), "simulating": simulate}

    @app.post("/api/approvals")
    async def approvals(decision: ApprovalDecision) -> dict[str, Any]:
        """Carry out or reject a trade that awaited approval, and publish the outcome."""
        args = (decision.symbol, decision.side, decision.quantity, decision.strategy_name)
        try:
            if decision.decision == "approve":
                events = simulator.approve(*args, now=_now())
            else:
                events = simulator.reject(*args, now=_now())
        except TradingHaltedError as exc:
            raise HTTPException(409, str(exc)) from exc
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        await demo.publish_all(events)
        orders = [data for channel, data in events if channel == "order:status"]
        return {
            "decision": decision.decision,
            "order_id": orders[-1]["id"] if orders else None,
            "order_status": orders[-1]["status"] if orders else None,
        }

    @app.post("/api/kill-switch")
    async def kill_switch(request: KillSwitchRequest) -> dict[str, Any]:
        """Pull or release the kill switch (operator ``human``) and publish it."""
        active = request.action == "activate"
        if active == simulator.kill_switch_active:
            state = "active" if active else "not active"
            raise HTTPException(409, f"the kill switch is already {state}")
        events = simulator.set_kill_switch(
            active, now=_now(), reason=request.reason, operator="human"
        )
        await demo.publish_all(events)
        return simulator.state()

    if _debug_enabled(debug_publish):

        @app.post("/api/debug/publish", include_in_schema=False)
        async def debug_publish_event(event: DebugEvent) -> dict[str, str]:
            """Publish one event as given (demo and tests only)."""
            try:
                await demo.broadcaster.publish(event.channel, event.data)
            except EventValidationError as exc:
                raise HTTPException(422, str(exc)) from exc
            except (TypeError, ValueError) as exc:
                raise HTTPException(422, str(exc)) from exc
            except BrokerError as exc:
                raise HTTPException(503, f"broker unavailable: {exc}") from exc
            if isinstance(event.data, dict):
                # The observer task sees it too; applying it now makes /api/state current
                # as soon as this request returns.
                simulator.observe(event.channel, event.data)
            return {"published": event.channel}

        @app.post("/api/debug/tick", include_in_schema=False)
        async def debug_tick(request: DebugTicks) -> dict[str, int]:
            """Run the simulator ``count`` steps now and publish their events."""
            published = 0
            for _ in range(request.count):
                events = simulator.tick(_now())
                await demo.publish_all(events)
                published += len(events)
            return {"ticks": request.count, "events": published}

    return app


async def _observe(
    demo: _Demo, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Keep the simulator's trading state in step with what any publisher announces.

    A kill switch, a circuit breaker or a feed outage published by another process (through
    Redis, or with ``wsbridge publish``) halts or resumes the simulated trading, and
    ``/api/state`` reports it to pages that load later. The app's own events come back
    here too; observing them again changes nothing.
    """
    async with demo.broadcaster.subscriber(overflow="drop") as subscriber:
        await subscriber.subscribe(_OBSERVED_CHANNELS)
        task_status.started()
        async for frame in subscriber:
            try:
                event = json.loads(frame.text)
            except ValueError:
                continue
            if frame.channel and isinstance(event, dict) and isinstance(event.get("data"), dict):
                demo.simulator.observe(frame.channel, event["data"])


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    broker_url: str = "memory://",
    seed: int | None = None,
    interval: float = 1.0,
    simulate: bool = True,
    debug_publish: bool | None = None,
    log_level: str = "info",
) -> None:
    """Run the demo with uvicorn until interrupted, after printing the page's URL."""
    import uvicorn

    app = create_app(
        broker_url=broker_url,
        seed=seed,
        interval=interval,
        simulate=simulate,
        debug_publish=debug_publish,
    )
    shown = "127.0.0.1" if host in ("", "0.0.0.0") else ("[::1]" if host == "::" else host)
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    print(f"wsbridge demo: open http://{shown}:{port}/ in a browser (Ctrl+C to stop)", flush=True)
    from wsbridge.uvicorn import Server

    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5
    )
    # Clients get 1001 on SIGTERM and the process exits 0, as with `wsbridge serve`.
    Server(config, app.state.broadcaster).run()
