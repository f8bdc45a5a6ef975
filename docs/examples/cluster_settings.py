"""Pointing a broadcaster at a Redis Cluster (sharded pub/sub, Redis 7.0 or later)."""

from wsbridge import Broadcaster
from wsbridge.trading import registry

# Any node of the cluster will do to start with; naming several survives one being down.
cluster = Broadcaster(
    "redis+cluster://10.0.0.11:6379,10.0.0.12:6379,10.0.0.13:6379/",
    registry=registry,
)

# TLS and an ACL user: the same options as the single-server backend.
secured = Broadcaster(
    "rediss+cluster://10.0.0.11:6380,10.0.0.12:6380/",
    registry=registry,
    backend_options={
        "username": "bridge",
        "password": "bridge-pw",
        "ssl_ca_certs": "/etc/ssl/redis/ca.crt",
        "connect_timeout": 2.0,
        "command_timeout": 2.0,
    },
)
