"""The tutorial's app: a live trading dashboard endpoint on FastAPI."""

import os
from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

import wsbridge
from wsbridge import Broadcaster, Endpoint, EventValidationError
from wsbridge.fastapi import create_router
from wsbridge.trading import registry

# memory:// keeps everything in this process; set BROKER_URL=redis://localhost:6379/0
# to bridge a Redis server instead.
broadcaster = Broadcaster(os.environ.get("BROKER_URL", "memory://"), registry=registry)

app = FastAPI(lifespan=broadcaster.lifespan)
# Clients get the registry's channels, and may also subscribe to any news:... channel.
endpoint = Endpoint(broadcaster, allow=["news:*"])
app.include_router(create_router(endpoint, path="/ws"))

PAGE = Path(__file__).with_name("index.html")
# The JavaScript client's build, shipped inside the Python package (its demo uses it), so
# the page needs no build step. With a bundler, `npm install wsbridge` instead.
CLIENT = Path(wsbridge.__file__).parent / "demo" / "static" / "wsbridge"
app.mount("/wsbridge", StaticFiles(directory=CLIENT), name="wsbridge-client")


@app.get("/", response_class=HTMLResponse)
async def dashboard() -> str:
    return PAGE.read_text(encoding="utf-8")


# For the tutorial only: anyone who can reach this route can publish.
@app.post("/publish/{channel}", status_code=204)
async def publish(channel: str, data: dict) -> None:
    try:
        await broadcaster.publish(channel, data)
    except EventValidationError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None
