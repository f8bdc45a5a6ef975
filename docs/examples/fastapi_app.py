"""FastAPI: the wsbridge endpoint next to your own routes and your own lifespan."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict

from fastapi import FastAPI

from wsbridge import Broadcaster, Endpoint
from wsbridge.fastapi import create_router
from wsbridge.trading import registry

broadcaster = Broadcaster("redis://localhost:6379/0", registry=registry)
endpoint = Endpoint(broadcaster, idle_timeout=75)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Open your own resources here too. Leaving the block closes every
    # WebSocket client with code 1001, then the broker connection.
    async with broadcaster:
        yield


app = FastAPI(lifespan=lifespan)
app.include_router(create_router(endpoint, path="/ws"), prefix="/live")


@app.post("/orders/{order_id}/fill")
async def fill(order_id: str) -> dict[str, str]:
    # ... record the fill, then tell every dashboard:
    await broadcaster.publish(
        "order:status",
        {
            "id": order_id,
            "symbol": "MSFT",
            "status": "FILLED",
            "filled_price": 415.67,
            "filled_quantity": 5,
            "filled_at": "2026-03-12T14:32:11Z",
        },
    )
    return {"status": "ok"}


@app.get("/live/stats")
async def stats() -> dict[str, object]:
    return asdict(broadcaster.stats())
