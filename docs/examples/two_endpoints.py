from fastapi import FastAPI

from wsbridge import Broadcaster, Endpoint
from wsbridge.fastapi import create_router
from wsbridge.trading import registry

broadcaster = Broadcaster("redis://localhost:6379/0", registry=registry)
public = Endpoint(broadcaster, channels=["portfolio:update"])
full = Endpoint(broadcaster)  # every channel of the registry

app = FastAPI(lifespan=broadcaster.lifespan)
app.include_router(create_router(public, path="/ws/public", name="public"))
app.include_router(create_router(full, path="/ws/full", name="full"))
