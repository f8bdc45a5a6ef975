"""wsbridge's own server, as started by ``wsbridge serve`` (its fastest path).

Translates the targets' common command line into
``wsbridge serve --redis URL --host H --port P --channel C [--channel C ...]`` and runs the
CLI in this process, so the harness measures exactly the process a user would start.
Exits with status 3 when this checkout of wsbridge has no ``serve`` command yet.
"""

from __future__ import annotations

import sys

from _common import EXIT_UNAVAILABLE, parse_args

ARGS = parse_args(__doc__)

try:
    from wsbridge.cli import main
except ImportError as exc:  # the CLI has not landed in this checkout
    print(f"wsbridge_serve: unavailable: {exc}", file=sys.stderr)
    sys.exit(EXIT_UNAVAILABLE)

if __name__ == "__main__":
    argv = ["serve", "--redis", ARGS.redis, "--host", ARGS.host, "--port", str(ARGS.port)]
    for channel in ARGS.channels:
        argv += ["--channel", channel]
    sys.exit(main(argv))
