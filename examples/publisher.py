"""Run: python examples/publisher.py [--count N] [--interval SECONDS]   (needs Redis)

A separate process that publishes typed trading events to Redis, as a trading system's
back end would. The broker is ``WSBRIDGE_REDIS_URL`` (default ``redis://localhost:6379/0``;
``memory://`` makes no sense here: it lives inside one process). Run a bridge beside it on
the same Redis, for example:

    wsbridge serve --redis redis://localhost:6379/0 &
    wsbridge listen ws://127.0.0.1:8000/ws &
    python examples/publisher.py --count 10

Each event is a pydantic model of ``wsbridge.trading``; ``Broadcaster.publish`` validates it
and writes its JSON, so what reaches the browsers matches the generated TypeScript types.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import random
import sys
from collections.abc import Iterator
from datetime import datetime, timezone

import anyio
from pydantic import BaseModel

from wsbridge import Broadcaster, BrokerError, ConfigurationError
from wsbridge.trading import (
    AlertSeverity,
    OrderStatus,
    OrderStatusChanged,
    PortfolioUpdate,
    RiskAlert,
    Side,
    SignalDirection,
    SignalGenerated,
    SignalMetadata,
    TradeExecuted,
    registry,
)

BROKER_URL = os.environ.get("WSBRIDGE_REDIS_URL", "redis://localhost:6379/0")
SYMBOLS = {"AAPL": 178.42, "MSFT": 415.67, "TSLA": 172.10, "NVDA": 881.30}


def events(seed: int) -> Iterator[tuple[str, BaseModel]]:
    """An endless, reproducible stream of (channel, event): signals lead to orders and fills."""
    rng = random.Random(seed)
    prices = dict(SYMBOLS)
    cash = 25_000.0
    held: dict[str, float] = {}
    for n in itertools.count(1):
        now = datetime.now(timezone.utc)
        symbol = rng.choice(list(prices))
        prices[symbol] = round(prices[symbol] * rng.uniform(0.99, 1.01), 2)
        price = prices[symbol]
        yield (
            "signal:generated",
            SignalGenerated(
                symbol=symbol,
                direction=SignalDirection.BUY,
                strength=round(rng.uniform(0.5, 1.0), 2),
                strategy_name="momentum_crossover",
                timestamp=now,
                metadata=SignalMetadata(indicators={"rsi": round(rng.uniform(20, 80), 1)}),
            ),
        )
        yield (
            "order:status",
            OrderStatusChanged(id=f"order-{n}", symbol=symbol, status=OrderStatus.PENDING),
        )
        yield (
            "trade:executed",
            TradeExecuted(
                id=f"trade-{n}",
                symbol=symbol,
                side=Side.BUY,
                quantity=1,
                entry_price=price,
                entry_time=now,
                strategy_name="momentum_crossover",
            ),
        )
        cash -= price
        held[symbol] = held.get(symbol, 0) + 1
        positions_value = round(sum(q * prices[s] for s, q in held.items()), 2)
        yield (
            "portfolio:update",
            PortfolioUpdate(
                total_equity=round(cash + positions_value, 2),
                cash=round(cash, 2),
                positions_value=positions_value,
            ),
        )
        if held[symbol] * price > 0.05 * 25_000:
            yield (
                "risk:alert",
                RiskAlert(
                    type="position_limit",
                    severity=AlertSeverity.WARNING,
                    reason=f"{symbol} position exceeds 5% of the starting equity",
                    symbol=symbol,
                    timestamp=now,
                ),
            )


async def main(count: int | None, interval: float, seed: int) -> None:
    """Publish ``count`` events (forever if ``None``), one every ``interval`` seconds."""
    async with Broadcaster(BROKER_URL, registry=registry) as broadcaster:
        for channel, event in itertools.islice(events(seed), count):
            await broadcaster.publish(channel, event)
            print(f"published {channel}: {event.model_dump_json(exclude_unset=True)}", flush=True)
            await anyio.sleep(interval)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--count", type=int, default=None, help="events to publish (default: no end)"
    )
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between events")
    parser.add_argument("--seed", type=int, default=1, help="seed of the random walk")
    arguments = parser.parse_args()
    try:
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl+C ends it quietly
            anyio.run(main, arguments.count, arguments.interval, arguments.seed)
    except (BrokerError, ConfigurationError) as exc:  # Redis down, or a bad URL: one line
        sys.exit(f"publisher: {exc}")
