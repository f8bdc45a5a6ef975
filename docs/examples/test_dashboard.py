"""Testing your own code with the in-memory broker and the shipped hypothesis strategies."""

import json

import anyio
import pytest
from fastapi import FastAPI
from hypothesis import given
from starlette.testclient import TestClient

from wsbridge import Broadcaster
from wsbridge.fastapi import create_router
from wsbridge.testing import strategies
from wsbridge.trading import registry

# -- the code under test -----------------------------------------------------------------


async def report_fill(broadcaster: Broadcaster, order_id: str, price: float, qty: float) -> None:
    await broadcaster.publish(
        "order:status",
        {
            "id": order_id,
            "symbol": "MSFT",
            "status": "FILLED",
            "filled_price": price,
            "filled_quantity": qty,
            "filled_at": "2026-03-12T14:32:11Z",
        },
    )


def create_app(broker_url: str = "redis://localhost:6379/0") -> tuple[FastAPI, Broadcaster]:
    broadcaster = Broadcaster(broker_url, registry=registry)
    app = FastAPI(lifespan=broadcaster.lifespan)
    app.include_router(create_router(broadcaster, path="/ws"))
    return app, broadcaster


def headline(frame: dict) -> str:
    """The dashboard's one-line summary of an event (a consumer to property-test)."""
    data = frame["data"]
    if frame["channel"] == "portfolio:update":
        return f"equity {data['total_equity']:,.2f}"
    if frame["channel"].startswith("risk:"):
        return f"{frame['channel']}: {data.get('reason', '')}"
    return frame["channel"]


# -- 1. publishing code, without sockets -------------------------------------------------


@pytest.mark.anyio
async def test_report_fill_publishes_the_order_status() -> None:
    broadcaster = Broadcaster("memory://", registry=registry)
    async with broadcaster, broadcaster.subscriber() as client:
        await client.subscribe(["order:status"])
        await report_fill(broadcaster, "order-456", 415.67, 5)
        with anyio.fail_after(1):
            [frame] = await client.get()
    event = json.loads(frame.text)
    assert event["channel"] == "order:status"
    assert event["data"]["status"] == "FILLED"


# -- 2. the whole endpoint, through the ASGI test client ---------------------------------


def test_dashboard_receives_published_events() -> None:
    app, broadcaster = create_app("memory://")
    with TestClient(app) as http, http.websocket_connect("/ws") as ws:
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}  # the default subscriptions are in place

        alert = {
            "type": "drawdown",
            "severity": "critical",
            "reason": "-5% today",
            "timestamp": "2026-03-12T14:40:00Z",
        }
        http.portal.call(broadcaster.publish, "risk:alert", alert)
        # risk:alert keeps history: the event carries its offset.
        assert ws.receive_json() == {"channel": "risk:alert", "data": alert, "offset": 1}


# -- 3. consumers, against every valid event ---------------------------------------------


@given(strategies.envelopes(registry))
def test_headline_accepts_every_event(frame: dict) -> None:
    assert headline(frame)


@given(strategies.payloads(registry, "portfolio:update"))
def test_headline_formats_equity(update) -> None:
    frame = {"channel": "portfolio:update", "data": update.model_dump(mode="json")}
    assert headline(frame).startswith("equity ")
