"""Ways to point a broadcaster at Redis."""

from wsbridge import Broadcaster
from wsbridge.trading import registry

# Host, port and database.
plain = Broadcaster("redis://redis.internal:6379/0", registry=registry)

# A password (requirepass), or an ACL user and its password, in the URL...
with_password = Broadcaster("redis://:s3cret@redis.internal:6379/0")
with_acl_user = Broadcaster("redis://dashboard:dash-pw@redis.internal:6379/0")

# ...or as options, which keeps the secret out of the URL (and out of logs).
from_options = Broadcaster(
    "redis://redis.internal:6379/0",
    backend_options={"username": "dashboard", "password": "dash-pw"},
)

# TLS: the rediss:// scheme, with the CA that signed the server's certificate, and a
# client certificate if the server asks for one.
with_tls = Broadcaster(
    "rediss://:s3cret@redis.internal:6380/0",
    backend_options={
        "ssl_ca_certs": "/etc/ssl/redis/ca.crt",
        "ssl_certfile": "/etc/ssl/redis/client.crt",
        "ssl_keyfile": "/etc/ssl/redis/client.key",
    },
)

# A Unix socket.
over_unix_socket = Broadcaster("unix:///run/redis/redis.sock?db=0")

# Timeouts and reconnection.
tuned = Broadcaster(
    "redis://redis.internal:6379/0",
    backend_options={"connect_timeout": 2.0, "command_timeout": 2.0},
    reconnect_delay=0.5,  # first retry after 0.25 to 0.5 s (jittered)...
    max_reconnect_delay=10.0,  # ...doubling up to 10 s
    health_check_interval=10.0,  # PING the subscription connection this often
)
