from fastapi import FastAPI

from wsbridge import Broadcaster
from wsbridge.fastapi import create_router
from wsbridge.trading import registry

broadcaster = Broadcaster("redis://localhost:6379/0", registry=registry)
app = FastAPI(lifespan=broadcaster.lifespan)
app.include_router(create_router(broadcaster, path="/ws"))
