"""The demo's market simulator: deterministic, consistent, and valid on every channel."""

from __future__ import annotations

import itertools
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import anyio
import pytest

from wsbridge.demo.simulator import (
    CHANNEL_NAMES,
    Event,
    MarketSimulator,
    SymbolSpec,
    TradingHaltedError,
    format_timestamp,
)
from wsbridge.trading import CHANNELS, registry

T0 = datetime(2026, 3, 12, 14, 30, tzinfo=timezone.utc)
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
TIME_FIELDS = ("timestamp", "entry_time", "filled_at", "requires_approval_by")
TERMINAL = {"FILLED", "CANCELLED", "REJECTED"}
NEXT_STATUS = {
    None: {"PENDING"},
    "PENDING": {"SUBMITTED", "REJECTED", "CANCELLED"},
    "SUBMITTED": {"FILLED", "CANCELLED", "REJECTED"},
}


def times(start: datetime = T0, step: float = 1.0) -> Iterator[datetime]:
    for i in range(1_000_000):
        yield start + timedelta(seconds=i * step)


def run_ticks(sim: MarketSimulator, n: int, start: datetime = T0) -> list[Event]:
    events: list[Event] = []
    for _, now in zip(range(n), times(start), strict=False):
        events += sim.tick(now)
    return events


@pytest.fixture(scope="module")
def runs() -> list[list[Event]]:
    """Three seeds, 2,500 ticks each, with a human's decisions mixed in."""
    return [_run(seed) for seed in (1, 2, 3)]


@pytest.fixture(scope="module")
def long_run(runs: list[list[Event]]) -> list[Event]:
    """The three runs, one after the other."""
    return [event for run in runs for event in run]


def _run(seed: int) -> list[Event]:
    events: list[Event] = []
    sim = MarketSimulator(seed=seed)
    for i, now in zip(range(2500), times(), strict=False):
        events += sim.tick(now)
        if i == 700:
            events += sim.set_kill_switch(True, now=now)
        elif i == 760:
            events += sim.set_kill_switch(False, now=now)
        elif i == 800 and not sim.trading_halted:
            events += sim.approve("AAPL", "BUY", 3, "ml_signal", now=now)
            events += sim.reject("MSFT", "SELL", 2, "ml_signal", now=now)
    return events


def test_the_channel_names_are_the_trading_registrys() -> None:
    assert CHANNEL_NAMES == CHANNELS


def test_the_same_seed_and_times_give_the_same_events() -> None:
    assert run_ticks(MarketSimulator(seed=42), 400) == run_ticks(MarketSimulator(seed=42), 400)


def test_different_seeds_give_different_markets() -> None:
    assert run_ticks(MarketSimulator(seed=1), 50) != run_ticks(MarketSimulator(seed=2), 50)


def test_every_payload_validates_against_the_trading_registry(long_run: list[Event]) -> None:
    for channel, data in long_run:
        registry.encode(channel, data)  # raises EventValidationError when invalid


def test_every_channel_and_severity_occurs(long_run: list[Event]) -> None:
    channels = Counter(channel for channel, _ in long_run)
    assert set(channels) == set(CHANNEL_NAMES), set(CHANNEL_NAMES) - set(channels)
    severities = {data["severity"] for channel, data in long_run if channel == "risk:alert"}
    assert severities == {"info", "warning", "critical"}
    statuses = {data["status"] for channel, data in long_run if channel == "order:status"}
    assert statuses == {"PENDING", "SUBMITTED", "FILLED", "CANCELLED", "REJECTED"}
    breakers = {(d["breaker"], d["action"]) for c, d in long_run if c == "risk:circuit_breaker"}
    assert {action for _, action in breakers} == {"activated", "deactivated"}


def test_timestamps_are_utc_with_z(long_run: list[Event]) -> None:
    seen = 0
    for _, data in long_run:
        for field in TIME_FIELDS:
            if field in data:
                assert TIMESTAMP.match(data[field]), data
                seen += 1
    assert seen > 1000


def test_portfolio_updates_add_up(long_run: list[Event]) -> None:
    updates = [data for channel, data in long_run if channel == "portfolio:update"]
    assert len(updates) > 5000
    for p in updates:
        assert p["total_equity"] == pytest.approx(p["cash"] + p["positions_value"], abs=0.005)
        values = [pos["market_value"] for pos in p["positions"]]
        assert p["positions_value"] == pytest.approx(sum(values), abs=0.005)
        sectors: dict[str, float] = defaultdict(float)
        for pos in p["positions"]:
            assert pos["quantity"] > 0
            assert pos["market_value"] == pytest.approx(
                pos["quantity"] * pos["current_price"], abs=0.005
            )
            cost = pos["quantity"] * pos["entry_price"]
            # The entry price is rounded to the cent: allow half a cent per share.
            tolerance = 0.005 * pos["quantity"] + 0.01
            assert pos["unrealized_pnl"] == pytest.approx(pos["market_value"] - cost, abs=tolerance)
            sectors[pos["sector"]] += pos["market_value"]
        exposure = p["sector_exposure"]
        assert set(exposure) == set(sectors)
        for sector, value in sectors.items():
            assert exposure[sector] == pytest.approx(100 * value / p["total_equity"], abs=0.005)
        invested = 100 * p["positions_value"] / p["total_equity"]
        assert sum(exposure.values()) == pytest.approx(invested, abs=0.01 * len(exposure) + 0.01)
        assert p["max_drawdown_pct"] <= 0
        start = p["total_equity"] - p["daily_pnl"]
        assert p["daily_pnl_pct"] == pytest.approx(100 * p["daily_pnl"] / start, abs=0.005)


def test_max_drawdown_never_recovers_within_a_run() -> None:
    drawdowns = [
        d["max_drawdown_pct"]
        for c, d in run_ticks(MarketSimulator(seed=5), 1500)
        if c == "portfolio:update"
    ]
    assert all(b <= a for a, b in itertools.pairwise(drawdowns))
    assert drawdowns[-1] < 0


@pytest.mark.parametrize("index", range(3))
def test_orders_follow_their_life_cycle_under_one_id(runs: list[list[Event]], index: int) -> None:
    run = runs[index]
    status: dict[str, str | None] = defaultdict(lambda: None)
    broker_ids: dict[str, str] = {}
    trades = [data for channel, data in run if channel == "trade:executed"]
    fills: list[dict[str, Any]] = []
    for channel, data in run:
        if channel != "order:status":
            continue
        order_id, new = data["id"], data["status"]
        assert new in NEXT_STATUS[status[order_id]], (order_id, status[order_id], new)
        status[order_id] = new
        if "broker_order_id" in data:
            assert (
                broker_ids.setdefault(order_id, data["broker_order_id"]) == data["broker_order_id"]
            )
        if new == "PENDING":
            assert "broker_order_id" not in data
        if new in ("SUBMITTED", "FILLED"):
            assert "broker_order_id" in data
        filled = {"filled_at", "filled_price", "filled_quantity"} & set(data)
        assert len(filled) == (3 if new == "FILLED" else 0), data
        if new == "FILLED":
            fills.append(data)
    assert len(fills) == len(trades) > 50
    for fill, trade in zip(fills, trades, strict=True):
        assert (trade["symbol"], trade["quantity"], trade["entry_price"], trade["entry_time"]) == (
            fill["symbol"],
            fill["filled_quantity"],
            fill["filled_price"],
            fill["filled_at"],
        )
    assert len({t["id"] for t in trades}) == len(trades)


def test_each_fill_is_followed_by_its_trade() -> None:
    events = run_ticks(MarketSimulator(seed=9), 600)
    for i, (channel, data) in enumerate(events):
        if channel == "order:status" and data["status"] == "FILLED":
            assert events[i + 1][0] == "trade:executed"


def test_the_kill_switch_cancels_open_orders_and_stops_new_ones() -> None:
    sim = MarketSimulator(seed=3)
    events = run_ticks(sim, 200)
    open_orders = {
        d["id"] for c, d in events if c == "order:status" and d["status"] not in TERMINAL
    } - {d["id"] for c, d in events if c == "order:status" and d["status"] in TERMINAL}
    halt = sim.set_kill_switch(True, now=T0, reason="test")
    assert halt[0] == (
        "risk:kill_switch",
        {
            "action": "activate",
            "reason": "test",
            "operator": "human",
            "timestamp": "2026-03-12T14:30:00Z",
        },
    )
    assert {d["id"] for c, d in halt[1:]} == open_orders
    assert all(c == "order:status" and d["status"] == "CANCELLED" for c, d in halt[1:])
    assert sim.kill_switch_active
    assert sim.trading_halted
    assert sim.set_kill_switch(True, now=T0) == []
    later = run_ticks(sim, 500, start=T0 + timedelta(hours=1))
    assert not [d for c, d in later if c == "order:status" and d["status"] == "PENDING"]
    assert not [d for c, d in later if c == "trade:pending_approval"]
    assert any(c == "portfolio:update" for c, _ in later)  # the market still moves
    with pytest.raises(TradingHaltedError):
        sim.approve("AAPL", "BUY", 1, "ml_signal", now=T0)
    resume = sim.set_kill_switch(False, now=T0)
    assert [(c, d["action"], d["operator"]) for c, d in resume] == [
        ("risk:kill_switch", "deactivate", "human")
    ]
    assert not sim.kill_switch_active


def test_approve_fills_at_the_market_and_updates_the_portfolio() -> None:
    sim = MarketSimulator(seed=4)
    before = sim.portfolio()
    events = sim.approve("NVDA", "BUY", 2, "ml_signal", now=T0)
    assert [(c, d.get("status")) for c, d in events] == [
        ("order:status", "PENDING"),
        ("order:status", "SUBMITTED"),
        ("order:status", "FILLED"),
        ("trade:executed", None),
        ("portfolio:update", None),
    ]
    assert len({d["id"] for c, d in events if c == "order:status"}) == 1
    trade, after = events[3][1], events[4][1]
    assert (trade["symbol"], trade["side"], trade["quantity"]) == ("NVDA", "BUY", 2)
    assert trade["strategy_name"] == "ml_signal"
    assert after["cash"] == pytest.approx(before["cash"] - 2 * trade["entry_price"], abs=0.005)
    held = {p["symbol"]: p["quantity"] for p in after["positions"]}
    held_before = {p["symbol"]: p["quantity"] for p in before["positions"]}
    assert held["NVDA"] == held_before.get("NVDA", 0) + 2


def test_approve_rejects_what_the_book_cannot_do() -> None:
    sim = MarketSimulator(seed=4, symbols=["AAPL", "MSFT"])
    held = {p["symbol"]: p["quantity"] for p in sim.portfolio()["positions"]}
    events = sim.approve("AAPL", "SELL", held["AAPL"] + 1, "ml_signal", now=T0)
    assert [d.get("status") for c, d in events if c == "order:status"][-1] == "REJECTED"
    alert = next(d for c, d in events if c == "risk:alert")
    assert alert["severity"] == "info"
    assert "not enough shares" in alert["reason"]
    events = sim.approve("MSFT", "BUY", 1_000_000, "ml_signal", now=T0)
    assert [d.get("status") for c, d in events if c == "order:status"][-1] == "REJECTED"
    assert not [c for c, _ in events if c == "trade:executed"]
    for bad in (("ZZZZ", "BUY", 1), ("AAPL", "HOLD", 1), ("AAPL", "BUY", 0)):
        with pytest.raises(ValueError, match=r"symbol|side|quantity"):
            sim.approve(*bad, "ml_signal", now=T0)


def test_reject_publishes_an_info_alert() -> None:
    [(channel, data)] = MarketSimulator(seed=1).reject("TSLA", "SELL", 5, "ml_signal", now=T0)
    assert channel == "risk:alert"
    assert data["severity"] == "info"
    assert data["symbol"] == "TSLA"
    assert "rejected by operator" in data["reason"]


def test_observed_breakers_halt_trading_until_deactivated() -> None:
    sim = MarketSimulator(seed=1)
    sim.observe(
        "risk:circuit_breaker",
        {
            "breaker": "reconciliation_failed",
            "action": "activated",
            "reason": "x",
            "timestamp": "t",
        },
    )
    assert sim.active_breakers == {"reconciliation_failed": "x"}
    with pytest.raises(TradingHaltedError, match="circuit breaker"):
        sim.approve("AAPL", "BUY", 1, "ml_signal", now=T0)
    sim.observe(
        "risk:circuit_breaker", {"breaker": "reconciliation_failed", "action": "deactivated"}
    )
    assert not sim.trading_halted
    sim.observe("risk:kill_switch", {"action": "activate", "reason": "r", "operator": "system"})
    assert sim.state()["kill_switch"]["operator"] == "system"
    sim.observe("risk:kill_switch", {"action": "deactivate"})
    assert sim.state()["kill_switch"] is None


def test_a_feed_outage_freezes_prices_until_the_feed_reconnects() -> None:
    sim = MarketSimulator(seed=1)
    run_ticks(sim, 5)
    sim.observe("system:feed:disconnected", {"timestamp": "t", "reason": "r"})
    assert not sim.feed_connected
    prices = {p["symbol"]: p["current_price"] for p in sim.portfolio()["positions"]}
    events: list[Event] = []
    for _, now in zip(range(100), times(T0 + timedelta(minutes=1)), strict=False):
        events += sim.tick(now)
        if sim.feed_connected:
            break
        for p in sim.portfolio()["positions"]:
            assert p["current_price"] == prices.get(p["symbol"], p["current_price"])
    channels = [c for c, _ in events]
    assert channels.count("system:feed:reconnected") == 1
    reconnected = next(d for c, d in events if c == "system:feed:reconnected")
    assert reconnected["symbol_count"] == len(sim.symbols)
    assert not [c for c in channels if c == "signal:generated"]


def test_symbols_can_be_chosen() -> None:
    sim = MarketSimulator(seed=1, symbols=["AAPL", "ZZZ", SymbolSpec("ACME", "Industrials", 12.5)])
    assert sim.symbols == ("AAPL", "ZZZ", "ACME")
    sectors = {
        p["symbol"]: p["sector"]
        for c, d in run_ticks(sim, 300)
        if c == "portfolio:update"
        for p in d["positions"]
    }
    assert sectors.get("AAPL", "Technology") == "Technology"
    assert sectors.get("ZZZ", "Other") == "Other"
    assert sectors.get("ACME", "Industrials") == "Industrials"
    for bad in ([], ["AAPL", "AAPL"], ["not a symbol"]):
        with pytest.raises(ValueError, match="symbol"):
            MarketSimulator(symbols=bad)


def test_format_timestamp() -> None:
    assert format_timestamp(datetime(2026, 3, 12, 14, 30, 0, 999_999)) == "2026-03-12T14:30:00Z"
    plus_two = timezone(timedelta(hours=2))
    assert (
        format_timestamp(datetime(2026, 3, 12, 16, 30, tzinfo=plus_two)) == "2026-03-12T14:30:00Z"
    )


def test_the_daily_pnl_restarts_each_utc_day() -> None:
    sim = MarketSimulator(seed=2)
    run_ticks(sim, 300, start=datetime(2026, 3, 12, 23, 50, tzinfo=timezone.utc))
    events = sim.tick(datetime(2026, 3, 13, 0, 0, 1, tzinfo=timezone.utc))
    portfolio = next(d for c, d in events if c == "portfolio:update")
    # A new day starts from the equity at the first tick of the day, before this tick's move.
    assert abs(portfolio["daily_pnl_pct"]) < 1.0


def test_run_publishes_every_event_of_each_tick_in_order() -> None:
    published: list[Event] = []

    async def publish(channel: str, data: dict[str, Any]) -> None:
        published.append((channel, data))

    async def main() -> int:
        with anyio.fail_after(10):
            return await MarketSimulator(seed=11).run(
                publish, interval=0.001, stop_after=25, clock=lambda: T0
            )

    assert anyio.run(main) == 25
    twin = MarketSimulator(seed=11)
    expected = [event for _ in range(25) for event in twin.tick(T0)]
    assert published == expected


@pytest.mark.parametrize(
    "kwargs", [{"interval": 0.0}, {"interval": float("nan")}, {"interval": 1.0, "stop_after": -1}]
)
def test_run_refuses_bad_arguments(kwargs: dict[str, Any]) -> None:
    async def publish(channel: str, data: dict[str, Any]) -> None:
        raise AssertionError("nothing should be published")

    async def main() -> None:
        await MarketSimulator(seed=1).run(publish, **kwargs)

    with pytest.raises(ValueError, match=r"interval|stop_after"):
        anyio.run(main)
