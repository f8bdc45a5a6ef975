"""Run: python examples/fastapi_app.py [PORT]   (after pip install -e ".[all]")

A FastAPI app with a live ``/ws`` endpoint: every client receives the ten trading channels.
The broker is ``WSBRIDGE_REDIS_URL`` (for example ``redis://localhost:6379/0``), or the
in-process ``memory://`` broker when it is not set, so the app runs without Redis. The port
is the first argument, else ``WSBRIDGE_PORT``, else 8000.

Watch the events, then make one happen through the app's own endpoint:

    wsbridge listen ws://127.0.0.1:8000/ws
    curl -X POST http://127.0.0.1:8000/trades -H 'content-type: application/json' -d \
      '{"id": "trade-1", "symbol": "AAPL", "side": "BUY", "quantity": 10,
        "entry_price": 178.42, "entry_time": "2026-03-12T14:30:00Z", "strategy_name": "demo"}'

With Redis, any other process can publish too: ``python examples/publisher.py``.
"""

from __future__ import annotations

import os
import sys

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from wsbridge import Broadcaster, BrokerError
from wsbridge.fastapi import create_router
from wsbridge.trading import TradeExecuted, registry
from wsbridge.uvicorn import Server

BROKER_URL = os.environ.get("WSBRIDGE_REDIS_URL", "memory://")

# One broadcaster per process: one broker connection, whatever the number of clients.
broadcaster = Broadcaster(BROKER_URL, registry=registry)
app = FastAPI(title="wsbridge FastAPI example", lifespan=broadcaster.lifespan)
app.include_router(create_router(broadcaster, path="/ws"))


@app.exception_handler(RequestValidationError)
async def not_json(request: Request, exc: RequestValidationError) -> Response:
    """A body that is not JSON is a 400, as in the other examples; a wrong trade stays 422."""
    if any(error["type"] == "json_invalid" for error in exc.errors()):
        return JSONResponse({"error": "the body is not JSON"}, status_code=400)
    return await request_validation_exception_handler(request, exc)


@app.post("/trades", status_code=202)
async def record_trade(trade: TradeExecuted) -> dict[str, str]:
    """The app's own business endpoint; it tells every dashboard about the trade."""
    try:
        await broadcaster.publish("trade:executed", trade)
    except BrokerError as exc:
        raise HTTPException(503, f"event not published: {exc}") from exc
    return {"published": "trade:executed"}


if __name__ == "__main__":
    port = int(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("WSBRIDGE_PORT", "8000"))
    host = os.environ.get("WSBRIDGE_HOST", "127.0.0.1")
    # wsbridge's Server closes clients with 1001 on SIGTERM or Ctrl+C and exits 0;
    # plain uvicorn.run closes them with 1012 and ends killed by the signal.
    Server(uvicorn.Config(app, host=host, port=port), broadcaster).run()
