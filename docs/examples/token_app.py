"""Signed tokens (JWT) at the handshake; the token's channels claim decides the rest."""

import os

from fastapi import FastAPI

from wsbridge import Broadcaster, Endpoint
from wsbridge.fastapi import create_router
from wsbridge.tokens import TokenAuth
from wsbridge.trading import registry

# The secret your token issuer signs with (HS256, at least 32 bytes). For RS256 or ES256,
# give public_key=<PEM text> or jwks=<JWKS document> instead.
auth = TokenAuth(secret=os.environ["WSBRIDGE_JWT_SECRET"], leeway=30)

broadcaster = Broadcaster("redis://localhost:6379/0", registry=registry)
endpoint = Endpoint(
    broadcaster,
    authenticate=auth.authenticate,  # 401 with a reason when the token is missing or bad
    authorize=auth.authorize,  # the token's "channels" claim: names and patterns
)

app = FastAPI(lifespan=broadcaster.lifespan)
app.include_router(create_router(endpoint, path="/ws"))
