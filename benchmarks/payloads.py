"""Realistic trading events for the benchmark, shaped like the reference document's events.

Each published message is a JSON object of about 400 bytes whose last two fields are
``bench_seq`` (the event's sequence number; negative for warm-up events) and ``bench_ns``
(``time.monotonic_ns()`` just before publishing, for latency on the same machine). Event
``seq`` goes to channel ``CHANNELS[seq % len(CHANNELS)]``, so a client can tell each event's
channel, and check per-channel order, from the sequence number alone.
"""

from __future__ import annotations

import json
from typing import Any

CHANNELS = [
    "portfolio:update",
    "trade:executed",
    "order:status",
    "signal:generated",
    "risk:alert",
]

_SEQ = -123456789
_NS = -987654321

_SHAPES: dict[str, dict[str, Any]] = {
    "portfolio:update": {
        "total_equity": 25000.00,
        "cash": 5000.00,
        "positions_value": 20000.00,
        "daily_pnl": 250.00,
        "daily_pnl_pct": 1.02,
        "total_pnl": 1500.00,
        "total_pnl_pct": 6.38,
        "max_drawdown_pct": -2.5,
        "positions": [
            {"symbol": "AAPL", "quantity": 40, "avg_price": 171.2, "market_value": 7136.8},
            {"symbol": "MSFT", "quantity": 20, "avg_price": 402.5, "market_value": 8313.4},
        ],
        "sector_exposure": {"technology": 0.62, "consumer": 0.18},
    },
    "trade:executed": {
        "id": "trade-123",
        "symbol": "AAPL",
        "side": "BUY",
        "quantity": 10,
        "entry_price": 178.42,
        "entry_time": "2026-03-12T14:30:00Z",
        "strategy_name": "mean_reversion",
        "order_id": "order-456",
        "broker_order_id": "12345678",
        "commission": 0.35,
        "notional": 1784.2,
        "account": "paper-01",
        "tags": ["intraday", "auto"],
        "fill_venue": "SMART",
        "note": "filled in one lot at the limit price after 1.2 s on the book",
    },
    "order:status": {
        "id": "order-456",
        "broker_order_id": "12345678",
        "symbol": "MSFT",
        "status": "FILLED",
        "filled_at": "2026-03-12T14:32:11Z",
        "filled_price": 415.67,
        "filled_quantity": 5,
        "order_type": "LIMIT",
        "limit_price": 415.7,
        "time_in_force": "DAY",
        "submitted_at": "2026-03-12T14:32:09Z",
        "strategy_name": "momentum_crossover",
        "remaining_quantity": 0,
        "reason": "",
        "account": "paper-01",
    },
    "signal:generated": {
        "symbol": "TSLA",
        "direction": "BUY",
        "strength": 0.75,
        "strategy_name": "momentum_crossover",
        "timestamp": "2026-03-12T14:35:00Z",
        "metadata": {
            "indicators": {
                "rsi": 42.5,
                "macd": 2.3,
                "macd_signal": 1.9,
                "sma_20": 241.7,
                "sma_50": 236.2,
                "atr": 6.8,
                "volume_ratio": 1.4,
            },
            "timeframe": "5m",
            "features_used": ["rsi", "macd", "sma_cross", "volume_ratio"],
            "model_version": "2026.03.1",
        },
    },
    "risk:alert": {
        "type": "position_limit",
        "severity": "warning",
        "reason": "AAPL position size 6.2% exceeds 5% limit",
        "symbol": "AAPL",
        "current_value": 6.2,
        "limit_value": 5.0,
        "timestamp": "2026-03-12T14:40:00Z",
        "portfolio_equity": 25000.0,
        "position_value": 1550.0,
        "suggested_action": "reduce position by 300 USD",
        "rule_id": "pos-limit-5pct",
        "account": "paper-01",
    },
}


_SYMBOLS = [
    "AAPL",
    "MSFT",
    "NVDA",
    "AMZN",
    "GOOGL",
    "META",
    "TSLA",
    "JPM",
    "V",
    "UNH",
    "XOM",
    "JNJ",
    "WMT",
    "PG",
    "MA",
    "HD",
    "CVX",
    "LLY",
    "ABBV",
    "KO",
]
_SECTORS = ("Technology", "Financials", "Healthcare", "Energy", "Consumer")


def portfolio(positions: int = 20) -> dict[str, Any]:
    """A ``portfolio:update`` with ``positions`` fully described positions (about 3 KB for 20)."""
    rows = []
    for i in range(positions):
        entry = 100.0 + 7.25 * i
        current = round(entry * (1.0 + ((i % 7) - 3) / 100.0), 2)
        quantity = 10 + 5 * (i % 9)
        rows.append(
            {
                "symbol": _SYMBOLS[i % len(_SYMBOLS)],
                "quantity": quantity,
                "entry_price": entry,
                "current_price": current,
                "market_value": round(quantity * current, 2),
                "unrealized_pnl": round(quantity * (current - entry), 2),
                "sector": _SECTORS[i % len(_SECTORS)],
            }
        )
    value = round(sum(r["market_value"] for r in rows), 2)
    return {
        **_SHAPES["portfolio:update"],
        "positions_value": value,
        "total_equity": round(value + 5000.0, 2),
        "positions": rows,
        "sector_exposure": {s: round(100.0 / len(_SECTORS), 2) for s in _SECTORS},
    }


#: Payload sets: ``reference`` (the five ~400-byte shapes, one per channel) and
#: ``portfolio20`` (a 20-position ``portfolio:update`` on that one channel).
PAYLOADS = ("reference", "portfolio20")


def _template(shape: dict[str, Any]) -> str:
    data = dict(shape, bench_seq=_SEQ, bench_ns=_NS)
    text = json.dumps(data, separators=(",", ":")).replace("%", "%%")
    return text.replace(str(_SEQ), "%d", 1).replace(str(_NS), "%d", 1)


class EventFactory:
    """Build benchmark events for a list of channels, cheaply (one ``%`` per event)."""

    def __init__(self, channels: list[str] | None = None, payload: str = "reference") -> None:
        self.channels = list(channels or CHANNELS)
        shapes = dict(_SHAPES)
        if payload == "portfolio20":
            shapes["portfolio:update"] = portfolio(20)
        elif payload != "reference":
            raise ValueError(f"unknown payload {payload!r}: one of {PAYLOADS}")
        listed = list(shapes.values())
        self._templates = [
            _template(shapes.get(ch, listed[i % len(listed)])) for i, ch in enumerate(self.channels)
        ]

    def event(self, seq: int, ns: int) -> tuple[str, str]:
        """Return ``(channel, json_text)`` of measured event ``seq`` stamped with ``ns``."""
        index = seq % len(self.channels)
        return self.channels[index], self._templates[index] % (seq, ns)

    def warmup(self, index: int) -> tuple[str, str]:
        """Return the warm-up event for channel ``index`` (its ``bench_seq`` is ``-1 - index``)."""
        return self.channels[index], json.dumps({"warmup": True, "bench_seq": -1 - index})

    def mean_size(self) -> float:
        """Mean size in bytes of the published JSON, with realistic sequence numbers."""
        count = 10 * len(self.channels)
        sizes = [len(self.event(i, 10**13)[1].encode()) for i in range(1000, 1000 + count)]
        return sum(sizes) / len(sizes)


if __name__ == "__main__":
    factory = EventFactory()
    for i in range(len(factory.channels)):
        channel, text = factory.event(123456 + i, 1234567890123)
        print(f"{channel:18} {len(text):4d} B  {text[:70]}...")
    print(f"mean {factory.mean_size():.0f} B")
