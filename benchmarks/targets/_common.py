"""Command line shared by the comparison targets (a helper module, not a target).

Every target is started the same way by ``benchmarks/run.py``::

    python benchmarks/targets/<name>.py --redis URL --port P --channels A B C

and serves ``/ws`` with the reference wire format: one text frame
``{"channel": ..., "data": ...}`` per Redis message, and ``{"type":"pong"}`` in answer
to ``{"type":"ping"}``.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Coroutine
from typing import Any

DEFAULT_CHANNELS = [
    "portfolio:update",
    "trade:executed",
    "order:status",
    "signal:generated",
    "risk:alert",
]

#: Exit status of a target whose implementation cannot be imported yet; the harness
#: reports it as "n/a" instead of a failure.
EXIT_UNAVAILABLE = 3


def parse_args(description: str | None) -> argparse.Namespace:
    """Parse the command line every target accepts."""
    parser = argparse.ArgumentParser(description=(description or "").split("\n\n")[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis URL")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    parser.add_argument(
        "--channels", nargs="+", default=DEFAULT_CHANNELS, help="Redis channels to relay"
    )
    parser.add_argument(
        "--loop",
        choices=["auto", "asyncio", "uvloop"],
        default="auto",
        help="event loop (auto: uvloop when installed, as uvicorn does)",
    )
    return parser.parse_args()


def run_loop(main: Coroutine[Any, Any, None], loop: str) -> None:
    """Run ``main`` on uvloop when asked for (or on ``auto`` when installed), else asyncio."""
    if loop in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if loop == "uvloop":
                raise
        else:
            uvloop.run(main)
            return
    asyncio.run(main)
