"""The trading dashboard demo: a market simulator, a FastAPI app and a static page.

``wsbridge.demo.serve()`` runs it (``wsbridge demo`` on the command line);
``wsbridge.demo.create_app()`` builds the app without running it. Both need the
``fastapi`` and ``server`` extras and are imported on first use, so the simulator alone
(:class:`MarketSimulator`) needs neither.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wsbridge.demo.simulator import MarketSimulator

if TYPE_CHECKING:
    from wsbridge.demo.app import create_app, serve

__all__ = ["MarketSimulator", "create_app", "serve"]


def __getattr__(name: str) -> Any:
    if name in ("create_app", "serve"):
        from wsbridge.demo import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
