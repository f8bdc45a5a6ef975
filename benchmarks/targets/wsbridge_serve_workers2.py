"""``wsbridge serve --workers 2``: two worker processes on one port, one broadcaster each.

As ``wsbridge_serve``, with ``--workers 2`` (this machine's core count is the natural
choice): the kernel spreads the clients over the workers (SO_REUSEPORT), each worker holds
its own Redis subscription per channel. The harness measures the whole process tree, so
CPU per delivery and memory include both workers and the supervising parent. Exits with
status 3 when this checkout of wsbridge has no ``--workers`` option.
"""

from __future__ import annotations

import sys

from _common import EXIT_UNAVAILABLE, parse_args

ARGS = parse_args(__doc__)

try:
    from wsbridge.cli import main
    from wsbridge.workers import supervise  # noqa: F401 - only checks that it exists
except ImportError as exc:  # workers have not landed in this checkout
    print(f"wsbridge_serve_workers2: unavailable: {exc}", file=sys.stderr)
    sys.exit(EXIT_UNAVAILABLE)

if __name__ == "__main__":
    argv = ["serve", "--redis", ARGS.redis, "--host", ARGS.host, "--port", str(ARGS.port)]
    argv += ["--workers", "2"]
    for channel in ARGS.channels:
        argv += ["--channel", channel]
    sys.exit(main(argv))
