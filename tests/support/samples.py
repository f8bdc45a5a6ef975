"""Event payloads shared by several test modules."""

from __future__ import annotations

from typing import Any

# The example payloads of the reference document, as written. The portfolio example elides
# its positions and sector exposure ("[...]", "{...}"); they are filled in with the shapes
# wsbridge defines.
REFERENCE_EXAMPLES: dict[str, dict[str, Any]] = {
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
            {
                "symbol": "AAPL",
                "quantity": 60,
                "entry_price": 170.00,
                "current_price": 178.42,
                "market_value": 10705.20,
                "unrealized_pnl": 505.20,
                "unrealized_pnl_pct": 4.95,
                "sector": "Technology",
                "strategy_name": "mean_reversion",
            },
            {
                "symbol": "JNJ",
                "quantity": 60,
                "entry_price": 150.00,
                "current_price": 154.913,
                "market_value": 9294.80,
                "unrealized_pnl": 294.80,
            },
        ],
        "sector_exposure": {"Technology": 42.82, "Healthcare": 37.18},
    },
    "trade:executed": {
        "id": "trade-123",
        "symbol": "AAPL",
        "side": "BUY",
        "quantity": 10,
        "entry_price": 178.42,
        "entry_time": "2026-03-12T14:30:00Z",
        "strategy_name": "mean_reversion",
    },
    "trade:pending_approval": {
        "symbol": "AAPL",
        "side": "BUY",
        "quantity": 10,
        "signal_strength": 0.82,
        "strategy_name": "ml_signal",
        "risk_assessment": {
            "position_limit_ok": True,
            "portfolio_limit_ok": True,
            "pdt_ok": True,
        },
        "requires_approval_by": "2026-03-12T14:45:00Z",
    },
    "order:status": {
        "id": "order-456",
        "broker_order_id": "12345678",
        "symbol": "MSFT",
        "status": "FILLED",
        "filled_at": "2026-03-12T14:32:11Z",
        "filled_price": 415.67,
        "filled_quantity": 5,
    },
    "signal:generated": {
        "symbol": "TSLA",
        "direction": "BUY",
        "strength": 0.75,
        "strategy_name": "momentum_crossover",
        "timestamp": "2026-03-12T14:35:00Z",
        "metadata": {"indicators": {"rsi": 42.5, "macd": 2.3}},
    },
    "risk:alert": {
        "type": "position_limit",
        "severity": "warning",
        "reason": "AAPL position size 6.2% exceeds 5% limit",
        "symbol": "AAPL",
        "current_value": 6.2,
        "limit_value": 5.0,
        "timestamp": "2026-03-12T14:40:00Z",
    },
    "risk:circuit_breaker": {
        "breaker": "vix_spike",
        "action": "activated",
        "reason": "VIX crossed threshold: 37.2 > 35",
        "timestamp": "2026-03-12T14:50:00Z",
    },
    "risk:kill_switch": {
        "action": "activate",
        "reason": "Manual override - unusual market conditions",
        "operator": "human",
        "timestamp": "2026-03-12T15:00:00Z",
    },
    "system:feed:disconnected": {
        "timestamp": "2026-03-12T16:00:00Z",
        "reason": "IB Gateway connection closed (market close)",
    },
    "system:feed:reconnected": {
        "timestamp": "2026-03-13T09:30:00Z",
        "symbol_count": 503,
    },
}
