"""A deterministic market simulator that feeds the trading dashboard demo.

:class:`MarketSimulator` is pure: it holds a small trading book (cash, positions, orders in
flight, circuit breakers, the kill switch) and, each time :meth:`MarketSimulator.tick` is
called with the current time, returns the next batch of ``(channel, payload)`` events on
the ten channels of the reference trading system. It performs no I/O and reads no clock;
with a ``seed`` the same sequence of ``now`` values gives the same events.
:meth:`MarketSimulator.run` is the only part that waits: it ticks on the wall clock and
hands each event to an async ``publish`` callable.

What it models:

* symbols on correlated random-walk prices (a market factor plus each symbol's own noise,
  with rare price shocks), and a VIX-like volatility index;
* strategies that emit signals with indicators (RSI, MACD, a moving average); strong signals
  become orders that go ``PENDING -> SUBMITTED -> FILLED`` (sometimes ``CANCELLED`` or
  ``REJECTED``) under one id, each fill also published as ``trade:executed``; the strategy
  in manual-approval mode asks for a human decision instead (``trade:pending_approval``);
* a portfolio that adds up: ``total_equity == cash + positions_value``,
  ``positions_value`` is the sum of the positions' market values, and ``sector_exposure``
  gives each sector's market value as a percentage of equity;
* risk alerts of each severity, circuit breakers (VIX spike, stale data during a feed
  outage, a failed reconciliation), feed disconnects and reconnects, and a kill switch that
  the system pulls on a deep drawdown and a human can pull or release.

Payload field names are exactly those of the reference document, and every payload
validates against the schemas of :mod:`wsbridge.trading` (where the reference elides a
position's fields, a position's average cost is its ``entry_price``). Fields with no value
are left out rather than sent as ``null``. Timestamps are UTC ISO 8601 with a ``Z`` and
whole seconds (``2026-03-12T14:30:00Z``).
"""

from __future__ import annotations

import itertools
import math
import random
import re
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, Final, Literal

import anyio

__all__ = [
    "CHANNEL_NAMES",
    "DEFAULT_SYMBOLS",
    "Event",
    "MarketSimulator",
    "Publish",
    "SymbolSpec",
    "TradingHaltedError",
    "format_timestamp",
]

#: One event: a channel name and its JSON-ready payload.
Event = tuple[str, dict[str, Any]]
#: Where :meth:`MarketSimulator.run` sends each event.
Publish = Callable[[str, dict[str, Any]], Awaitable[None]]
Side = Literal["BUY", "SELL"]

PORTFOLIO_UPDATE: Final = "portfolio:update"
TRADE_EXECUTED: Final = "trade:executed"
TRADE_PENDING_APPROVAL: Final = "trade:pending_approval"
ORDER_STATUS: Final = "order:status"
SIGNAL_GENERATED: Final = "signal:generated"
RISK_ALERT: Final = "risk:alert"
RISK_CIRCUIT_BREAKER: Final = "risk:circuit_breaker"
RISK_KILL_SWITCH: Final = "risk:kill_switch"
FEED_DISCONNECTED: Final = "system:feed:disconnected"
FEED_RECONNECTED: Final = "system:feed:reconnected"

#: The ten channels of the reference system, in the reference document's order.
CHANNEL_NAMES: Final = (
    PORTFOLIO_UPDATE,
    TRADE_EXECUTED,
    TRADE_PENDING_APPROVAL,
    ORDER_STATUS,
    SIGNAL_GENERATED,
    RISK_ALERT,
    RISK_CIRCUIT_BREAKER,
    RISK_KILL_SWITCH,
    FEED_DISCONNECTED,
    FEED_RECONNECTED,
)


@dataclass(frozen=True, slots=True)
class SymbolSpec:
    """A tradable symbol: its sector, starting price, per-tick volatility and market beta."""

    symbol: str
    sector: str
    price: float
    volatility: float = 0.0015
    beta: float = 1.0


_UNIVERSE: Final[Mapping[str, SymbolSpec]] = {
    spec.symbol: spec
    for spec in (
        SymbolSpec("AAPL", "Technology", 178.42, 0.0012, 1.1),
        SymbolSpec("MSFT", "Technology", 415.67, 0.0011, 1.0),
        SymbolSpec("NVDA", "Technology", 880.08, 0.0022, 1.6),
        SymbolSpec("TSLA", "Consumer Discretionary", 182.63, 0.0026, 1.8),
        SymbolSpec("AMZN", "Consumer Discretionary", 178.25, 0.0014, 1.2),
        SymbolSpec("JPM", "Financials", 195.31, 0.0010, 0.9),
        SymbolSpec("XOM", "Energy", 112.44, 0.0012, 0.7),
        SymbolSpec("JNJ", "Health Care", 158.90, 0.0008, 0.5),
        SymbolSpec("GOOGL", "Communication Services", 141.80, 0.0013, 1.1),
        SymbolSpec("META", "Communication Services", 484.10, 0.0018, 1.3),
        SymbolSpec("V", "Financials", 279.20, 0.0009, 0.9),
        SymbolSpec("UNH", "Health Care", 492.35, 0.0010, 0.6),
    )
}

#: The symbols simulated when none are given.
DEFAULT_SYMBOLS: Final = ("AAPL", "MSFT", "NVDA", "TSLA", "AMZN", "JPM", "XOM", "JNJ")

_SYMBOL_RE: Final = re.compile(r"^[A-Z][A-Z0-9.]{0,9}$")

_STRATEGIES: Final = ("momentum_crossover", "mean_reversion", "breakout", "ml_signal")
#: Strategies that run in MANUAL_APPROVAL autonomy mode: their trades wait for a human.
_MANUAL_STRATEGIES: Final = frozenset({"ml_signal"})

_INITIAL_CAPITAL_CENTS: Final = 100_000_00  # the capital the book started with
_HISTORY: Final = 64
_WARMUP_TICKS: Final = 40
_MAX_OPEN_ORDERS: Final = 4
_SIGNAL_PROBABILITY: Final = 0.35
_ACT_ON_STRENGTH: Final = 0.6
_APPROVAL_COOLDOWN: Final = 90
_FIRST_APPROVAL_AT: Final = 20
_APPROVAL_WINDOW: Final = timedelta(minutes=15)

# Risk limits, in percent.
_POSITION_LIMIT: Final = 8.0
_POSITION_HARD_LIMIT: Final = 12.0
_SECTOR_LIMIT: Final = 30.0
_DRAWDOWN_WARNING: Final = -1.5
_DRAWDOWN_LIMIT: Final = -3.0
_DAILY_LOSS_LIMIT: Final = -2.0
_KILL_DRAWDOWN: Final = -6.0
_KILL_REARM: Final = -4.0
_ALERT_COOLDOWN: Final = 120

# The volatility index and its circuit breaker.
_VIX_MEAN: Final = 17.5
_VIX_TRIP: Final = 35.0
_VIX_CLEAR: Final = 30.0
_VIX_SPIKE_PROBABILITY: Final = 0.003

_SHOCK_PROBABILITY: Final = 0.01
_FEED_DROP_PROBABILITY: Final = 0.004
_STALE_AFTER_TICKS: Final = 8
_OBSERVED_OUTAGE_TICKS: Final = 10  # a feed outage someone else announced lasts this long
_RECONCILIATION_FAILURE_PROBABILITY: Final = 0.0015

_FEED_DROP_REASONS: Final = (
    "IB Gateway connection closed (market close)",
    "IB Gateway heartbeat timeout",
    "Market data farm connection is broken: usfarm",
    "Socket reset by peer during market data stream",
)


class TradingHaltedError(RuntimeError):
    """A trade was asked for while the kill switch or a circuit breaker halts trading."""


def format_timestamp(moment: datetime) -> str:
    """Format ``moment`` as UTC ISO 8601 with whole seconds and a ``Z``: ``2026-03-12T14:30:00Z``.

    A naive ``datetime`` is taken to be in UTC already.
    """
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _pct(numerator: float, denominator: float) -> float:
    """``numerator / denominator`` in percent, 2 decimals, never ``-0.0``."""
    if denominator == 0:
        return 0.0
    return round(100.0 * numerator / denominator, 2) + 0.0


def _money(cents: int) -> float:
    return cents / 100


def _ema(values: list[float], span: int) -> list[float]:
    alpha = 2.0 / (span + 1)
    out: list[float] = []
    current = values[0]
    for value in values:
        current = alpha * value + (1 - alpha) * current
        out.append(current)
    return out


def _rsi(prices: list[float], period: int = 14) -> float:
    window = prices[-(period + 1) :]
    gains = losses = 0.0
    for before, after in itertools.pairwise(window):
        change = after - before
        if change > 0:
            gains += change
        else:
            losses -= change
    if losses == 0:
        return 100.0 if gains > 0 else 50.0
    return 100.0 - 100.0 / (1.0 + gains / losses)


@dataclass(slots=True)
class _Position:
    quantity: int
    cost_cents: int  # what the shares held cost, in cents

    @property
    def entry_price(self) -> float:
        """The average price paid per share held."""
        return round(self.cost_cents / self.quantity / 100, 2)


@dataclass(slots=True)
class _Order:
    id: str
    symbol: str
    side: Side
    quantity: int
    strategy_name: str
    status: str = "PENDING"
    broker_order_id: str | None = None
    age: int = 0


@dataclass(slots=True)
class _Breaker:
    reason: str
    remaining: int | None  # ticks left for timed breakers; None when a condition clears it


class MarketSimulator:
    """A small, deterministic trading book that produces the reference system's events.

    ``seed`` makes every draw repeatable; ``symbols`` are tickers (well-known ones get a
    realistic sector and price, others the sector ``"Other"``) or :class:`SymbolSpec`
    objects. Call :meth:`tick` once per step with the current time, or :meth:`run` to tick
    on the wall clock. The methods :meth:`approve`, :meth:`reject` and
    :meth:`set_kill_switch` apply a human's decisions and return the events they cause;
    :meth:`observe` lets events published by someone else (a kill switch, a breaker, a
    feed outage) change the simulator's state.
    """

    def __init__(
        self,
        *,
        seed: int | None = None,
        symbols: Iterable[str | SymbolSpec] = DEFAULT_SYMBOLS,
    ) -> None:
        self._rng = random.Random(seed)
        specs: dict[str, SymbolSpec] = {}
        for item in symbols:
            spec = item if isinstance(item, SymbolSpec) else self._spec_for(item)
            if not _SYMBOL_RE.match(spec.symbol):
                raise ValueError(f"invalid symbol {spec.symbol!r}")
            if spec.symbol in specs:
                raise ValueError(f"duplicate symbol {spec.symbol!r}")
            if not (spec.price > 0 and spec.volatility >= 0):
                raise ValueError(f"symbol {spec.symbol!r} needs a positive price")
            specs[spec.symbol] = spec
        if not specs:
            raise ValueError("at least one symbol is needed")
        self._specs = specs
        self._prices = {s: round(spec.price * 100) for s, spec in specs.items()}
        self._history = {s: deque([spec.price], maxlen=_HISTORY) for s, spec in specs.items()}
        for _ in range(_WARMUP_TICKS):
            self._move_prices()

        self._ticks = 0
        # The book has traded before today: it starts somewhat above or below its capital.
        self._cash = round(_INITIAL_CAPITAL_CENTS * (1 + self._rng.uniform(-0.01, 0.07)))
        self._positions: dict[str, _Position] = {}
        self._orders: dict[str, _Order] = {}
        self._order_seq = self._rng.randrange(100, 900)
        self._trade_seq = self._rng.randrange(100, 900)
        self._broker_seq = self._rng.randrange(10_000_000, 90_000_000)
        self._open_initial_positions()

        self._day: date | None = None
        self._day_start_equity = self._cash + self._positions_value()
        self._peak_equity = self._day_start_equity
        self._max_drawdown = 0.0
        self._kill_armed = True

        self._vix = _VIX_MEAN + self._rng.uniform(-2.0, 2.0)
        self._breakers: dict[str, _Breaker] = {}
        self._kill_switch: dict[str, Any] | None = None
        self._feed_connected = True
        self._feed_down_ticks = 0
        self._feed_down_for = 0
        self._cooldowns: dict[tuple[str, str], int] = {}
        self._approval_ready_at = _FIRST_APPROVAL_AT

    # -- public state ------------------------------------------------------------------

    @property
    def symbols(self) -> tuple[str, ...]:
        """The simulated symbols."""
        return tuple(self._specs)

    @property
    def ticks(self) -> int:
        """How many times :meth:`tick` has run."""
        return self._ticks

    @property
    def kill_switch_active(self) -> bool:
        """Whether the kill switch is on (no new orders until a human resumes trading)."""
        return self._kill_switch is not None

    @property
    def active_breakers(self) -> dict[str, str]:
        """The circuit breakers now active, by name, with the reason each tripped."""
        return {name: b.reason for name, b in self._breakers.items()}

    @property
    def feed_connected(self) -> bool:
        """Whether the market data feed is up (prices move only while it is)."""
        return self._feed_connected

    @property
    def trading_halted(self) -> bool:
        """Whether new trades are refused: the kill switch or a circuit breaker is active."""
        return self._kill_switch is not None or bool(self._breakers)

    def state(self) -> dict[str, Any]:
        """Summarise the trading state as JSON-ready data, for a page that has just loaded."""
        return {
            "kill_switch": dict(self._kill_switch) if self._kill_switch else None,
            "circuit_breakers": self.active_breakers,
            "feed_connected": self._feed_connected,
            "trading_halted": self.trading_halted,
            "symbols": list(self._specs),
        }

    def portfolio(self) -> dict[str, Any]:
        """Build the ``portfolio:update`` payload for the book as it stands."""
        positions: list[dict[str, Any]] = []
        positions_value = 0
        sectors: dict[str, int] = {}
        for symbol, pos in self._positions.items():
            price = self._prices[symbol]
            value = pos.quantity * price
            positions_value += value
            sector = self._specs[symbol].sector
            sectors[sector] = sectors.get(sector, 0) + value
            positions.append(
                {
                    "symbol": symbol,
                    "quantity": pos.quantity,
                    "entry_price": pos.entry_price,
                    "current_price": _money(price),
                    "market_value": _money(value),
                    "unrealized_pnl": _money(value - pos.cost_cents),
                    "unrealized_pnl_pct": _pct(value - pos.cost_cents, pos.cost_cents),
                    "sector": sector,
                }
            )
        positions.sort(key=lambda p: (-p["market_value"], p["symbol"]))
        equity = self._cash + positions_value
        daily = equity - self._day_start_equity
        total = equity - _INITIAL_CAPITAL_CENTS
        return {
            "total_equity": _money(equity),
            "cash": _money(self._cash),
            "positions_value": _money(positions_value),
            "daily_pnl": _money(daily),
            "daily_pnl_pct": _pct(daily, self._day_start_equity),
            "total_pnl": _money(total),
            "total_pnl_pct": _pct(total, _INITIAL_CAPITAL_CENTS),
            "max_drawdown_pct": round(self._max_drawdown, 2) + 0.0,
            "positions": positions,
            "sector_exposure": {
                sector: _pct(value, equity)
                for sector, value in sorted(sectors.items(), key=lambda kv: -kv[1])
            },
        }

    # -- one step ----------------------------------------------------------------------

    def tick(self, now: datetime) -> list[Event]:
        """Advance the market one step and return the events it produced, in order."""
        self._ticks += 1
        ts = format_timestamp(now)
        events: list[Event] = []
        self._roll_day(now)

        events += self._feed_step(ts)
        if self._feed_connected:
            events += self._market_step(ts)
        events += self._breaker_step(ts)
        fills = self._advance_orders(now, events)
        if self._feed_connected:
            events += self._strategy_step(now)
        if self._feed_connected or fills:
            drawdown = self._track_drawdown()
            portfolio = self.portfolio()
            events.append((PORTFOLIO_UPDATE, portfolio))
            events += self._risk_checks(portfolio, drawdown, now)
        return events

    # -- decisions from a human -----------------------------------------------------------

    def approve(
        self, symbol: str, side: Side, quantity: int, strategy_name: str, *, now: datetime
    ) -> list[Event]:
        """Carry out a trade a human approved: the order's life, the fill, the new portfolio.

        The order is filled at the current price unless the book cannot afford it (or does
        not hold the shares to sell), in which case it ends ``REJECTED``. Raises
        :class:`TradingHaltedError` while trading is halted, and ``ValueError`` for an
        unknown symbol or side or a quantity that is not positive.
        """
        self._check_trade(symbol, side, quantity)
        if self.trading_halted:
            raise TradingHaltedError(self._halt_reason())
        order = self._new_order(symbol, side, quantity, strategy_name)
        events: list[Event] = [(ORDER_STATUS, self._order_payload(order))]
        order.status = "SUBMITTED"
        order.broker_order_id = self._next_broker_id()
        events.append((ORDER_STATUS, self._order_payload(order)))
        events += self._fill(order, now)
        del self._orders[order.id]
        if order.status == "FILLED":
            self._track_drawdown()
            events.append((PORTFOLIO_UPDATE, self.portfolio()))
        return events

    def reject(
        self, symbol: str, side: Side, quantity: int, strategy_name: str, *, now: datetime
    ) -> list[Event]:
        """Record that a human rejected a proposed trade: an ``info`` risk alert says so."""
        self._check_trade(symbol, side, quantity)
        return [
            self._alert(
                "manual_rejection",
                "info",
                f"{side} {quantity} {symbol} ({strategy_name}) rejected by operator",
                symbol,
                None,
                None,
                format_timestamp(now),
            )
        ]

    def set_kill_switch(
        self,
        active: bool,
        *,
        now: datetime,
        reason: str | None = None,
        operator: Literal["human", "system"] = "human",
    ) -> list[Event]:
        """Pull (``active=True``) or release the kill switch; return the events it causes.

        Pulling it cancels every open order. Returns no events when the switch is already
        in the requested position.
        """
        if active == self.kill_switch_active:
            return []
        ts = format_timestamp(now)
        if reason is None:
            reason = (
                "Manual override from the dashboard" if active else "Trading resumed by operator"
            )
        payload = {
            "action": "activate" if active else "deactivate",
            "reason": reason,
            "operator": operator,
            "timestamp": ts,
        }
        events: list[Event] = [(RISK_KILL_SWITCH, payload)]
        self.observe(RISK_KILL_SWITCH, payload)
        if active:
            for order in list(self._orders.values()):
                order.status = "CANCELLED"
                events.append((ORDER_STATUS, self._order_payload(order)))
                del self._orders[order.id]
        return events

    def observe(self, channel: str, data: Mapping[str, Any]) -> None:
        """Update the trading state from an event, whoever published it.

        Kill switch and circuit breaker events change whether trading is halted; a feed
        disconnect freezes prices until a reconnect (the simulator reconnects by itself
        after a few ticks when nobody else does). Other channels are ignored. Observing an
        event that the state already reflects changes nothing, so the simulator's own
        events may be observed again, and observing draws no random numbers.
        """
        action = data.get("action")
        if channel == RISK_KILL_SWITCH:
            if action == "activate" and self._kill_switch is None:
                self._kill_switch = dict(data)
            elif action == "deactivate":
                self._kill_switch = None
        elif channel == RISK_CIRCUIT_BREAKER:
            name = str(data.get("breaker", ""))
            if action == "activated" and name and name not in self._breakers:
                self._breakers[name] = _Breaker(str(data.get("reason", "")), None)
            elif action == "deactivated":
                self._breakers.pop(name, None)
        elif channel == FEED_DISCONNECTED and self._feed_connected:
            self._drop_feed(_OBSERVED_OUTAGE_TICKS)
        elif channel == FEED_RECONNECTED:
            self._feed_connected = True

    # -- the wall-clock loop -----------------------------------------------------------------

    async def run(
        self,
        publish: Publish,
        *,
        interval: float,
        stop_after: int | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> int:
        """Tick every ``interval`` seconds and ``await publish(channel, data)`` each event.

        Runs until cancelled, or for ``stop_after`` ticks; returns the number of ticks.
        Ticks keep to a fixed schedule: a slow ``publish`` does not make the schedule drift.
        ``clock`` gives each tick's time (UTC now by default).
        """
        if not (interval > 0 and math.isfinite(interval)):
            raise ValueError("interval must be a positive number of seconds")
        if stop_after is not None and stop_after < 0:
            raise ValueError("stop_after must not be negative")
        done = 0
        deadline = anyio.current_time()
        while stop_after is None or done < stop_after:
            for channel, data in self.tick(clock()):
                await publish(channel, data)
            done += 1
            if stop_after is not None and done >= stop_after:
                break
            deadline = max(deadline + interval, anyio.current_time() - interval)
            await anyio.sleep(max(0.0, deadline - anyio.current_time()))
        return done

    # -- internals: market --------------------------------------------------------------------

    def _spec_for(self, symbol: str) -> SymbolSpec:
        known = _UNIVERSE.get(symbol)
        if known is not None:
            return known
        return SymbolSpec(symbol, "Other", round(self._rng.uniform(20.0, 400.0), 2))

    def _move_prices(self, market: float | None = None) -> None:
        if market is None:
            market = self._rng.gauss(0.0, 0.0007)
        for symbol, spec in self._specs.items():
            ret = spec.beta * market + self._rng.gauss(0.0, spec.volatility)
            self._set_price(symbol, self._prices[symbol] * math.exp(ret))

    def _set_price(self, symbol: str, cents: float) -> None:
        self._prices[symbol] = max(100, round(cents))
        self._history[symbol].append(self._prices[symbol] / 100)

    def _market_step(self, ts: str) -> list[Event]:
        events: list[Event] = []
        market = self._rng.gauss(0.0, 0.0007)
        if self._vix > _VIX_TRIP - 5:
            market -= 0.001  # markets sag while fear is high
        self._move_prices(market)
        if self._rng.random() < _SHOCK_PROBABILITY:
            symbol = self._rng.choice(self.symbols)
            move = self._rng.uniform(1.5, 6.0) * self._rng.choice((-1.0, 1.0))
            self._set_price(symbol, self._prices[symbol] * (1 + move / 100))
            size = abs(move)
            severity = "info" if size < 3 else ("warning" if size < 5 else "critical")
            direction = "jumped" if move > 0 else "dropped"
            events.append(
                self._alert(
                    "volatility",
                    severity,
                    f"{symbol} {direction} {size:.1f}% in one tick (limit 1.5%)",
                    symbol,
                    round(size, 2),
                    1.5,
                    ts,
                )
            )
        return events

    def _feed_step(self, ts: str) -> list[Event]:
        if self._feed_connected:
            if self._rng.random() < _FEED_DROP_PROBABILITY:
                reason = self._rng.choice(_FEED_DROP_REASONS)
                self._drop_feed(self._rng.randint(4, 15))
                return [(FEED_DISCONNECTED, {"timestamp": ts, "reason": reason})]
            return []
        self._feed_down_ticks += 1
        if self._feed_down_ticks < self._feed_down_for:
            return []
        self._feed_connected = True
        return [(FEED_RECONNECTED, {"timestamp": ts, "symbol_count": len(self._specs)})]

    def _drop_feed(self, ticks: int) -> None:
        self._feed_connected = False
        self._feed_down_ticks = 0
        self._feed_down_for = ticks

    def _breaker_step(self, ts: str) -> list[Event]:
        events: list[Event] = []
        # The volatility index: mean-reverting noise with rare spikes.
        self._vix += 0.06 * (_VIX_MEAN - self._vix) + self._rng.gauss(0.0, 0.25)
        if self._rng.random() < _VIX_SPIKE_PROBABILITY:
            self._vix += self._rng.uniform(15.0, 24.0)
        self._vix = max(9.0, self._vix)
        if "vix_spike" not in self._breakers and self._vix > _VIX_TRIP:
            reason = f"VIX crossed threshold: {self._vix:.1f} > {_VIX_TRIP:.0f}"
            events.append(self._breaker("vix_spike", "activated", reason, ts))
        elif "vix_spike" in self._breakers and self._vix < _VIX_CLEAR:
            reason = f"VIX back below {_VIX_CLEAR:.0f}: {self._vix:.1f}"
            events.append(self._breaker("vix_spike", "deactivated", reason, ts))

        if self._feed_connected:
            if "stale_data" in self._breakers:
                reason = "Market data fresh again"
                events.append(self._breaker("stale_data", "deactivated", reason, ts))
        elif self._feed_down_ticks >= _STALE_AFTER_TICKS and "stale_data" not in self._breakers:
            reason = f"No market data for {self._feed_down_ticks} ticks"
            events.append(self._breaker("stale_data", "activated", reason, ts))

        recon = self._breakers.get("reconciliation_failed")
        if recon is not None and recon.remaining is not None:
            recon.remaining -= 1
            if recon.remaining <= 0:
                reason = "Positions reconciled with broker"
                events.append(self._breaker("reconciliation_failed", "deactivated", reason, ts))
        elif recon is None and self._rng.random() < _RECONCILIATION_FAILURE_PROBABILITY:
            symbol = self._rng.choice(self.symbols)
            local = self._positions[symbol].quantity if symbol in self._positions else 0
            broker = local + self._rng.randint(1, 20)
            reason = f"Position mismatch for {symbol}: broker {broker}, local {local}"
            events.append(self._breaker("reconciliation_failed", "activated", reason, ts))
            self._breakers["reconciliation_failed"].remaining = self._rng.randint(6, 14)
        return events

    def _breaker(self, name: str, action: str, reason: str, ts: str) -> Event:
        payload = {"breaker": name, "action": action, "reason": reason, "timestamp": ts}
        self.observe(RISK_CIRCUIT_BREAKER, payload)
        return (RISK_CIRCUIT_BREAKER, payload)

    # -- internals: strategies and orders ---------------------------------------------------

    def _indicators(self, symbol: str) -> dict[str, float]:
        prices = list(self._history[symbol])
        macd_line = [a - b for a, b in zip(_ema(prices, 12), _ema(prices, 26), strict=True)]
        signal_line = _ema(macd_line, 9)
        window = prices[-20:]
        return {
            "rsi": round(_rsi(prices), 2),
            "macd": round(macd_line[-1], 3),
            "macd_signal": round(signal_line[-1], 3),
            "sma_20": round(sum(window) / len(window), 2),
        }

    def _strategy_step(self, now: datetime) -> list[Event]:
        if self._rng.random() >= _SIGNAL_PROBABILITY:
            return []
        symbol = self._rng.choice(self.symbols)
        strategy = self._rng.choice(_STRATEGIES)
        ind = self._indicators(symbol)
        direction, strength = self._decide(strategy, symbol, ind)
        events: list[Event] = [
            (
                SIGNAL_GENERATED,
                {
                    "symbol": symbol,
                    "direction": direction,
                    "strength": strength,
                    "strategy_name": strategy,
                    "timestamp": format_timestamp(now),
                    "metadata": {"indicators": ind},
                },
            )
        ]
        if direction == "HOLD" or strength < _ACT_ON_STRENGTH or self.trading_halted:
            return events
        side: Side = "BUY" if direction == "BUY" else "SELL"
        quantity = self._size(symbol, side)
        if quantity <= 0:
            return events
        if strategy in _MANUAL_STRATEGIES:
            if self._ticks >= self._approval_ready_at:
                self._approval_ready_at = self._ticks + _APPROVAL_COOLDOWN
                request = self._approval_request(symbol, side, quantity, strength, strategy, now)
                events.append(request)
        elif len(self._orders) < _MAX_OPEN_ORDERS:
            order = self._new_order(symbol, side, quantity, strategy)
            events.append((ORDER_STATUS, self._order_payload(order)))
        return events

    def _decide(self, strategy: str, symbol: str, ind: Mapping[str, float]) -> tuple[str, float]:
        noise = self._rng.uniform(-0.08, 0.08)
        rsi, hist = ind["rsi"], ind["macd"] - ind["macd_signal"]
        price = self._prices[symbol] / 100
        if strategy == "mean_reversion":
            direction = "BUY" if rsi < 40 else "SELL" if rsi > 60 else "HOLD"
            raw = abs(rsi - 50) / 30
        elif strategy == "momentum_crossover":
            direction = "BUY" if hist > 0 else "SELL"
            raw = min(abs(hist) / (price * 0.0004), 1.0)
        elif strategy == "breakout":
            window = list(self._history[symbol])[-21:-1]
            if price > max(window):
                direction, raw = "BUY", 0.85
            elif price < min(window):
                direction, raw = "SELL", 0.85
            else:
                direction, raw = "HOLD", 0.2
        else:  # ml_signal: a logistic blend of both indicators
            score = (50 - rsi) / 12 + hist / (price * 0.0004)
            p = 1 / (1 + math.exp(-score))
            direction = "BUY" if p >= 0.5 else "SELL"
            raw = abs(p - 0.5) * 2
        strength = min(max(0.35 + 0.6 * raw + noise, 0.01), 0.99)
        if direction == "HOLD":
            strength = min(strength, 0.5)
        return direction, round(strength, 2)

    def _size(self, symbol: str, side: Side) -> int:
        price = self._prices[symbol]
        if side == "SELL":
            held = self._positions[symbol].quantity if symbol in self._positions else 0
            return math.ceil(held * self._rng.uniform(0.3, 1.0)) if held else 0
        equity = self._cash + self._positions_value()
        target = equity * self._rng.uniform(0.02, 0.04)
        quantity = max(1, int(target // price))
        return quantity if quantity * price <= self._cash * 0.95 else 0

    def _approval_request(
        self, symbol: str, side: Side, quantity: int, strength: float, strategy: str, now: datetime
    ) -> Event:
        equity = self._cash + self._positions_value()
        held = self._positions[symbol].quantity if symbol in self._positions else 0
        after = held + quantity if side == "BUY" else max(held - quantity, 0)
        cost = quantity * self._prices[symbol] if side == "BUY" else 0
        return (
            TRADE_PENDING_APPROVAL,
            {
                "symbol": symbol,
                "side": side,
                "quantity": quantity,
                "signal_strength": strength,
                "strategy_name": strategy,
                "risk_assessment": {
                    "position_limit_ok": _pct(after * self._prices[symbol], equity)
                    <= _POSITION_LIMIT,
                    "portfolio_limit_ok": cost <= self._cash * 0.95,
                    "pdt_ok": self._rng.random() > 0.1,
                },
                "requires_approval_by": format_timestamp(now + _APPROVAL_WINDOW),
            },
        )

    def _new_order(self, symbol: str, side: Side, quantity: int, strategy: str) -> _Order:
        self._order_seq += 1
        order = _Order(f"order-{self._order_seq}", symbol, side, quantity, strategy)
        self._orders[order.id] = order
        return order

    def _next_broker_id(self) -> str:
        self._broker_seq += self._rng.randint(1, 9)
        return str(self._broker_seq)

    def _order_payload(
        self, order: _Order, *, filled_at: str | None = None, filled_price: float | None = None
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {"id": order.id}
        if order.broker_order_id is not None:
            payload["broker_order_id"] = order.broker_order_id
        payload["symbol"] = order.symbol
        payload["status"] = order.status
        if filled_at is not None and filled_price is not None:
            payload["filled_at"] = filled_at
            payload["filled_price"] = filled_price
            payload["filled_quantity"] = order.quantity
        return payload

    def _advance_orders(self, now: datetime, events: list[Event]) -> int:
        """Move each order that was open before this tick one step on; return the fills."""
        fills = 0
        for order in list(self._orders.values()):
            order.age += 1
            draw = self._rng.random()
            if order.status == "PENDING":
                if draw < 0.04:
                    events += self._rejection(order, "pre-trade risk check failed", now)
                else:
                    order.status = "SUBMITTED"
                    order.broker_order_id = self._next_broker_id()
                    events.append((ORDER_STATUS, self._order_payload(order)))
            elif order.status == "SUBMITTED":
                if draw < 0.07:
                    order.status = "CANCELLED"
                    events.append((ORDER_STATUS, self._order_payload(order)))
                elif draw < 0.87 or order.age >= 4:
                    fill = self._fill(order, now)
                    fills += order.status == "FILLED"
                    events += fill
            if order.status in ("FILLED", "CANCELLED", "REJECTED"):
                del self._orders[order.id]
        return fills

    def _fill(self, order: _Order, now: datetime) -> list[Event]:
        """Fill ``order`` at the market with a little slippage, or reject it if unaffordable."""
        slip = self._rng.uniform(0.0, 0.0005)
        base = self._prices[order.symbol]
        price = round(base * (1 + slip if order.side == "BUY" else 1 - slip))
        cost = price * order.quantity
        pos = self._positions.get(order.symbol)
        if order.side == "BUY" and cost > self._cash:
            return self._rejection(order, "insufficient buying power", now)
        if order.side == "SELL" and (pos is None or pos.quantity < order.quantity):
            return self._rejection(order, "not enough shares to sell", now)
        if order.side == "BUY":
            self._cash -= cost
            if pos is None:
                self._positions[order.symbol] = _Position(order.quantity, cost)
            else:
                pos.quantity += order.quantity
                pos.cost_cents += cost
        else:
            assert pos is not None
            self._cash += cost
            if pos.quantity == order.quantity:
                del self._positions[order.symbol]
            else:
                pos.cost_cents -= round(pos.cost_cents * order.quantity / pos.quantity)
                pos.quantity -= order.quantity
        order.status = "FILLED"
        ts = format_timestamp(now)
        self._trade_seq += 1
        return [
            (ORDER_STATUS, self._order_payload(order, filled_at=ts, filled_price=_money(price))),
            (
                TRADE_EXECUTED,
                {
                    "id": f"trade-{self._trade_seq}",
                    "symbol": order.symbol,
                    "side": order.side,
                    "quantity": order.quantity,
                    "entry_price": _money(price),
                    "entry_time": ts,
                    "strategy_name": order.strategy_name,
                },
            ),
        ]

    def _rejection(self, order: _Order, why: str, now: datetime) -> list[Event]:
        """Reject ``order``: its final status, and an ``info`` alert that says why."""
        order.status = "REJECTED"
        reason = f"{order.id} ({order.side} {order.quantity} {order.symbol}) rejected: {why}"
        alert = self._alert(
            "order_rejected",
            "info",
            reason,
            order.symbol,
            None,
            None,
            format_timestamp(now),
        )
        return [(ORDER_STATUS, self._order_payload(order)), alert]

    def _open_initial_positions(self) -> None:
        for symbol in self._rng.sample(self.symbols, k=min(6, len(self._specs))):
            price = self._prices[symbol]
            quantity = max(
                1, int(_INITIAL_CAPITAL_CENTS * self._rng.uniform(0.035, 0.065) // price)
            )
            cost = quantity * price
            self._cash -= cost
            self._positions[symbol] = _Position(quantity, cost)

    def _check_trade(self, symbol: str, side: str, quantity: int) -> None:
        if symbol not in self._specs:
            raise ValueError(f"unknown symbol {symbol!r}")
        if side not in ("BUY", "SELL"):
            raise ValueError(f"side must be BUY or SELL, not {side!r}")
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity <= 0:
            raise ValueError("quantity must be a positive integer")

    def _halt_reason(self) -> str:
        if self._kill_switch is not None:
            return "trading is halted: the kill switch is active"
        names = ", ".join(sorted(self._breakers))
        return f"trading is halted: circuit breaker active ({names})"

    # -- internals: portfolio and risk --------------------------------------------------------

    def _positions_value(self) -> int:
        return sum(p.quantity * self._prices[s] for s, p in self._positions.items())

    def _roll_day(self, now: datetime) -> None:
        day = (now.astimezone(timezone.utc) if now.tzinfo else now).date()
        if day != self._day:
            self._day = day
            self._day_start_equity = self._cash + self._positions_value()

    def _track_drawdown(self) -> float:
        """Update the equity peak and the worst drawdown; return the drawdown now, in %."""
        equity = self._cash + self._positions_value()
        self._peak_equity = max(self._peak_equity, equity)
        drawdown = 100.0 * (equity / self._peak_equity - 1.0)
        self._max_drawdown = min(self._max_drawdown, drawdown)
        return drawdown

    def _risk_checks(
        self, portfolio: Mapping[str, Any], drawdown: float, now: datetime
    ) -> list[Event]:
        ts = format_timestamp(now)
        events: list[Event] = []
        equity = portfolio["total_equity"]
        for pos in portfolio["positions"]:
            weight = _pct(pos["market_value"], equity)
            if weight > _POSITION_HARD_LIMIT:
                severity, limit = "critical", _POSITION_HARD_LIMIT
            elif weight > _POSITION_LIMIT:
                severity, limit = "warning", _POSITION_LIMIT
            else:
                continue
            if self._cooling("position_limit", pos["symbol"]):
                continue
            reason = f"{pos['symbol']} position size {weight:.1f}% exceeds {limit:.0f}% limit"
            events.append(
                self._alert("position_limit", severity, reason, pos["symbol"], weight, limit, ts)
            )
        for sector, weight in portfolio["sector_exposure"].items():
            if weight > _SECTOR_LIMIT and not self._cooling("sector_limit", sector):
                largest = next(p["symbol"] for p in portfolio["positions"] if p["sector"] == sector)
                reason = f"{sector} exposure {weight:.1f}% exceeds {_SECTOR_LIMIT:.0f}% limit"
                limit = _SECTOR_LIMIT
                events.append(
                    self._alert("sector_limit", "warning", reason, largest, weight, limit, ts)
                )

        drawdown = round(drawdown, 2)
        if drawdown <= _DRAWDOWN_WARNING and not self._cooling("drawdown", ""):
            critical = drawdown <= _DRAWDOWN_LIMIT
            limit = _DRAWDOWN_LIMIT if critical else _DRAWDOWN_WARNING
            reason = f"Portfolio drawdown {drawdown:.2f}% breaches {limit:.1f}% limit"
            severity = "critical" if critical else "warning"
            events.append(self._alert("drawdown", severity, reason, None, drawdown, limit, ts))
        daily = portfolio["daily_pnl_pct"]
        if daily <= _DAILY_LOSS_LIMIT and not self._cooling("daily_loss", ""):
            reason = f"Daily loss {daily:.2f}% breaches {_DAILY_LOSS_LIMIT:.1f}% limit"
            events.append(
                self._alert("daily_loss", "critical", reason, None, daily, _DAILY_LOSS_LIMIT, ts)
            )

        if drawdown > _KILL_REARM:
            self._kill_armed = True
        elif drawdown <= _KILL_DRAWDOWN and self._kill_armed and not self.kill_switch_active:
            self._kill_armed = False
            reason = (
                f"Automatic halt: drawdown {drawdown:.2f}% breached"
                f" {_KILL_DRAWDOWN:.0f}% hard limit"
            )
            events += self.set_kill_switch(True, now=now, reason=reason, operator="system")
        return events

    def _cooling(self, kind: str, key: str) -> bool:
        """Whether an alert of this kind and key fired recently; if not, start its cooldown."""
        ready_at = self._cooldowns.get((kind, key), 0)
        if self._ticks < ready_at:
            return True
        self._cooldowns[(kind, key)] = self._ticks + _ALERT_COOLDOWN
        return False

    def _alert(
        self,
        kind: str,
        severity: str,
        reason: str,
        symbol: str | None,
        current: float | None,
        limit: float | None,
        ts: str,
    ) -> Event:
        payload: dict[str, Any] = {"type": kind, "severity": severity, "reason": reason}
        if symbol is not None:
            payload["symbol"] = symbol
        if current is not None and limit is not None:
            payload["current_value"] = current
            payload["limit_value"] = limit
        payload["timestamp"] = ts
        return (RISK_ALERT, payload)
