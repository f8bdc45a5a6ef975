"""The ten trading event channels of the reference system, as a ready-made registry.

:data:`registry` maps each channel of the reference document's WebSocket events to a
pydantic model, field by field as its example payloads show. ``portfolio:update`` is a
``state`` channel (each message is a whole snapshot, so a slow client may skip to the newest);
the nine others are ``event`` channels, never conflated.

Decisions that the reference leaves open (``docs/schemas.md`` explains them at length):

* **Money** is a JSON number, a Python ``float``: the reference sends numbers, and the
  dashboard displays them. A double keeps 15 significant digits, so cents are exact up to
  about ten trillion; this is a display feed, not a ledger. NaN and Infinity are rejected.
* **Percentages** are in percent units, as the reference writes them: ``1.02`` is 1.02 %.
* **Quantities** are positive numbers, fractions allowed (fractional shares); they are written
  as JSON numbers such as ``10.0``.
* **Timestamps** must carry a timezone (ISO 8601 text such as ``2026-03-12T14:30:00Z``, or an
  aware ``datetime``); they are converted to UTC and always written with a ``Z``, so the
  reference's form round-trips exactly. Naive times and epoch numbers are rejected.
* **Enumerations** are closed: a value the reference does not list (a future order status,
  say) is rejected on publish, and a broker message holding one is reported invalid by
  :meth:`~wsbridge.schema.Registry.check` (the broadcaster's policy then decides; by default
  it is forwarded unchanged). Adding a value is a schema change. ``risk:alert``'s ``type`` is
  the exception: the reference lists it as open ("etc."), so it is any non-empty string.
* **Unknown fields** are rejected (a typo such as ``strenght`` fails on publish), except in
  ``signal:generated``'s free-form ``metadata`` and in ``risk_assessment``, which may carry
  further boolean checks.
* **Optional fields** are those a publisher may not know. The reference's Redis CLI examples
  validate: a ``portfolio:update`` with only ``total_equity``, ``cash`` and
  ``positions_value``, and a ``signal:generated`` without ``timestamp``. Fields left out are
  left out on the wire too (never padded with nulls).
"""

from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum
from typing import Annotated, Final

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    Strict,
    StringConstraints,
)

from wsbridge.history import History
from wsbridge.schema import DeliveryKind, EventSchema, Registry

__all__ = [
    "CHANNELS",
    "EVENT_HISTORY",
    "AlertSeverity",
    "BreakerAction",
    "CircuitBreaker",
    "CircuitBreakerChanged",
    "Count",
    "FeedDisconnected",
    "FeedReconnected",
    "KillSwitchAction",
    "KillSwitchChanged",
    "Money",
    "Operator",
    "OrderStatus",
    "OrderStatusChanged",
    "Percent",
    "PortfolioUpdate",
    "Position",
    "Price",
    "Quantity",
    "RiskAlert",
    "RiskAssessment",
    "Side",
    "SignalDirection",
    "SignalGenerated",
    "SignalMetadata",
    "Strength",
    "Symbol",
    "Text",
    "Timestamp",
    "TradeExecuted",
    "TradePendingApproval",
    "registry",
]


# -- field types -------------------------------------------------------------------------


def _reject_epoch(value: object) -> object:
    # pydantic would read a number as Unix time; the wire format is ISO 8601 text only.
    if isinstance(value, (int, float)):
        raise ValueError(
            "a timestamp must be ISO 8601 text with a timezone, such as "
            "2026-03-12T14:30:00Z, or an aware datetime; not a number"
        )
    return value


def _to_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:  # pydantic only turns ValueError into a validation error
        raise ValueError("timestamp is out of range once converted to UTC") from None


Timestamp = Annotated[
    AwareDatetime,
    BeforeValidator(_reject_epoch),
    AfterValidator(_to_utc),
    Field(description="ISO 8601 date and time with a timezone, written in UTC with a Z."),
]
"""A timezone-aware instant; stored in UTC and written as ``2026-03-12T14:30:00Z``."""

Money = Annotated[
    float, Strict(), Field(allow_inf_nan=False, description="An amount of money (JSON number).")
]
"""An amount in the account currency: a finite JSON number, possibly negative."""

Price = Annotated[float, Strict(), Field(gt=0, allow_inf_nan=False, description="A unit price.")]
"""A price per unit: a finite number above zero."""

Quantity = Annotated[
    float,
    Strict(),
    Field(gt=0, allow_inf_nan=False, description="A number of units; fractions allowed."),
]
"""A number of shares or contracts: above zero, fractions allowed."""

Percent = Annotated[
    float, Strict(), Field(allow_inf_nan=False, description="Percentage points: 1.02 is 1.02%.")
]
"""A percentage in percent units, as the reference writes them: ``1.02`` means 1.02 %."""

Strength = Annotated[
    float,
    Strict(),
    Field(ge=0, le=1, allow_inf_nan=False, description="Signal strength from 0.0 to 1.0."),
]
"""A signal strength or confidence between 0.0 and 1.0 inclusive."""

Count = Annotated[int, Strict(), Field(ge=0)]
"""A count: a non-negative integer."""

Symbol = Annotated[
    str,
    StringConstraints(min_length=1, max_length=32, pattern=r"^[!-~]+$"),
    Field(description="Instrument symbol: 1-32 printable ASCII characters, no spaces."),
]
"""An instrument symbol (``AAPL``, ``BRK.B``, ``ES=F``): 1-32 printable ASCII, no spaces."""

Text = Annotated[str, StringConstraints(min_length=1)]
"""A non-empty string: names, identifiers and human-readable reasons."""

_Flag = Annotated[bool, Strict()]
_Number = Annotated[float, Strict(), Field(allow_inf_nan=False)]

_MODEL_CONFIG: Final = ConfigDict(extra="forbid", frozen=True)


# -- enumerations ------------------------------------------------------------------------


class Side(str, Enum):
    """The side of a trade."""

    BUY = "BUY"
    SELL = "SELL"


class SignalDirection(str, Enum):
    """What a trading signal recommends."""

    BUY = "BUY"
    SELL = "SELL"
    HOLD = "HOLD"


class OrderStatus(str, Enum):
    """The life-cycle states of an order, as the reference lists them."""

    PENDING = "PENDING"
    SUBMITTED = "SUBMITTED"
    FILLED = "FILLED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"


class AlertSeverity(str, Enum):
    """How serious a risk alert is; the dashboard colours its toast by it."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class CircuitBreaker(str, Enum):
    """The circuit breakers that can halt trading."""

    VIX_SPIKE = "vix_spike"
    STALE_DATA = "stale_data"
    RECONCILIATION_FAILED = "reconciliation_failed"


class BreakerAction(str, Enum):
    """What happened to a circuit breaker."""

    ACTIVATED = "activated"
    DEACTIVATED = "deactivated"


class KillSwitchAction(str, Enum):
    """What was done to the kill switch."""

    ACTIVATE = "activate"
    DEACTIVATE = "deactivate"


class Operator(str, Enum):
    """Who operated the kill switch."""

    HUMAN = "human"
    SYSTEM = "system"


# -- portfolio:update --------------------------------------------------------------------


class Position(BaseModel):
    """One open position in a portfolio snapshot.

    The reference elides positions (``[...]``); these are the figures every broker reports
    for a position, so they are required, and the rest is optional.
    """

    model_config = _MODEL_CONFIG

    symbol: Symbol
    quantity: Quantity
    entry_price: Price = Field(description="Average entry price per unit.")
    current_price: Price = Field(description="Latest market price per unit.")
    market_value: Money = Field(description="quantity x current_price.")
    unrealized_pnl: Money = Field(description="Unrealised profit or loss.")
    unrealized_pnl_pct: Percent | None = Field(
        default=None, description="Unrealised profit or loss, in percent of the cost."
    )
    sector: Text | None = Field(default=None, description="Sector, as in sector_exposure.")
    strategy_name: Text | None = Field(default=None, description="Strategy that opened it.")


class PortfolioUpdate(BaseModel):
    """``portfolio:update``: a snapshot of the portfolio's value and positions (a state).

    ``total_equity``, ``cash`` and ``positions_value`` are required: they are what the
    reference's Redis CLI example sends, and a snapshot without them says nothing. Every
    other figure is optional, for publishers that compute it less often. Each message is a
    whole snapshot: a field left out means "not reported", not "unchanged", which is what
    makes conflating this channel for a slow client safe.
    """

    model_config = _MODEL_CONFIG

    total_equity: Money = Field(description="Cash plus the value of the positions.")
    cash: Money = Field(description="Cash balance; negative when on margin.")
    positions_value: Money = Field(description="Market value of all positions.")
    daily_pnl: Money | None = Field(default=None, description="Profit or loss today.")
    daily_pnl_pct: Percent | None = Field(default=None, description="daily_pnl in percent.")
    total_pnl: Money | None = Field(default=None, description="Profit or loss since inception.")
    total_pnl_pct: Percent | None = Field(default=None, description="total_pnl in percent.")
    max_drawdown_pct: Annotated[float, Strict(), Field(le=0, allow_inf_nan=False)] | None = Field(
        default=None,
        description="Largest fall from a peak, in percent: zero or negative (-2.5 is 2.5%).",
    )
    positions: list[Position] | None = Field(default=None, description="The open positions.")
    sector_exposure: dict[Text, Percent] | None = Field(
        default=None,
        description="Net exposure per sector, in percent of total equity.",
    )


# -- trades and orders -------------------------------------------------------------------


class TradeExecuted(BaseModel):
    """``trade:executed``: an order was filled. Every field is required."""

    model_config = _MODEL_CONFIG

    id: Text = Field(description="The trade's identifier.")
    symbol: Symbol
    side: Side
    quantity: Quantity
    entry_price: Price = Field(description="Fill price per unit.")
    entry_time: Timestamp
    strategy_name: Text


class RiskAssessment(BaseModel):
    """The pre-trade risk checks of a trade awaiting approval; each is true when passed.

    The three checks of the reference are required. Further checks may be added as extra
    boolean fields (``sector_limit_ok``); anything else is rejected.
    """

    model_config = ConfigDict(extra="allow", frozen=True)
    __pydantic_extra__: dict[str, _Flag] = Field(init=False)

    position_limit_ok: _Flag
    portfolio_limit_ok: _Flag
    pdt_ok: _Flag = Field(description="Pattern-day-trader rule respected.")


class TradePendingApproval(BaseModel):
    """``trade:pending_approval``: a signal in manual mode waits for a human's decision."""

    model_config = _MODEL_CONFIG

    symbol: Symbol
    side: Side
    quantity: Quantity
    signal_strength: Strength
    strategy_name: Text
    risk_assessment: RiskAssessment
    requires_approval_by: Timestamp


class OrderStatusChanged(BaseModel):
    """``order:status``: an order was submitted, filled, cancelled or rejected.

    The ``filled_*`` fields are optional: an order that is not (yet) filled has none. They
    are not tied to ``status`` by the schema, because a cancelled order may be partly filled.
    ``broker_order_id`` is absent until the broker has accepted the order.
    """

    model_config = _MODEL_CONFIG

    id: Text = Field(description="The order's identifier in this system.")
    broker_order_id: Text | None = Field(default=None, description="The broker's identifier.")
    symbol: Symbol
    status: OrderStatus
    filled_at: Timestamp | None = None
    filled_price: Price | None = None
    filled_quantity: Quantity | None = None


# -- signals -----------------------------------------------------------------------------


class SignalMetadata(BaseModel):
    """Free-form details of a signal. ``indicators`` maps indicator names to values.

    Other keys may hold any JSON value: strategies differ in what they explain.
    """

    model_config = ConfigDict(extra="allow", frozen=True)
    __pydantic_extra__: dict[str, JsonValue] = Field(init=False)

    indicators: dict[Text, _Number] | None = Field(
        default=None, description="Indicator values, such as rsi and macd."
    )


class SignalGenerated(BaseModel):
    """``signal:generated``: a strategy produced a trading signal.

    ``timestamp`` is optional because the reference's Redis CLI example leaves it out; the
    bridge does not invent one (a consumer may use the time of receipt). ``metadata`` is
    optional and free-form.
    """

    model_config = _MODEL_CONFIG

    symbol: Symbol
    direction: SignalDirection
    strength: Strength
    strategy_name: Text
    timestamp: Timestamp | None = None
    metadata: SignalMetadata | None = None


# -- risk --------------------------------------------------------------------------------


class RiskAlert(BaseModel):
    """``risk:alert``: a risk check raised a warning.

    ``type`` is an open set (``position_limit``, ``sector_limit``, ``drawdown``, ...), so
    it is any non-empty string. ``symbol``, ``current_value`` and ``limit_value`` are
    optional: a drawdown alert concerns no single symbol, and not every alert compares a
    value with a limit.
    """

    model_config = _MODEL_CONFIG

    type: Text = Field(description="Kind of alert: position_limit, sector_limit, drawdown, ...")
    severity: AlertSeverity
    reason: Text
    symbol: Symbol | None = None
    current_value: _Number | None = Field(default=None, description="The measured value.")
    limit_value: _Number | None = Field(default=None, description="The limit it crossed.")
    timestamp: Timestamp


class CircuitBreakerChanged(BaseModel):
    """``risk:circuit_breaker``: a circuit breaker was activated or deactivated."""

    model_config = _MODEL_CONFIG

    breaker: CircuitBreaker
    action: BreakerAction
    reason: Text
    timestamp: Timestamp


class KillSwitchChanged(BaseModel):
    """``risk:kill_switch``: the kill switch was activated or deactivated."""

    model_config = _MODEL_CONFIG

    action: KillSwitchAction
    reason: Text
    operator: Operator
    timestamp: Timestamp


# -- system ------------------------------------------------------------------------------


class FeedDisconnected(BaseModel):
    """``system:feed:disconnected``: the market data feed was lost."""

    model_config = _MODEL_CONFIG

    timestamp: Timestamp
    reason: Text


class FeedReconnected(BaseModel):
    """``system:feed:reconnected``: the market data feed is back."""

    model_config = _MODEL_CONFIG

    timestamp: Timestamp
    symbol_count: Count = Field(description="Number of symbols subscribed again.")


# -- the registry ------------------------------------------------------------------------

EVENT_HISTORY: Final = History(size=1000, ttl=600.0)
"""The history of the event channels: the last 1,000 events of each, kept 10 minutes."""

registry: Final = Registry(
    [
        EventSchema(
            "portfolio:update",
            PortfolioUpdate,
            DeliveryKind.STATE,
            "Portfolio value or position changes.",
        ),
        EventSchema(
            "trade:executed", TradeExecuted, DeliveryKind.EVENT, "Trade fill confirmation."
        ),
        EventSchema(
            "trade:pending_approval",
            TradePendingApproval,
            DeliveryKind.EVENT,
            "Trade awaiting manual approval.",
        ),
        EventSchema("order:status", OrderStatusChanged, DeliveryKind.EVENT, "Order status change."),
        EventSchema(
            "signal:generated",
            SignalGenerated,
            DeliveryKind.EVENT,
            "New trading signal from a strategy.",
        ),
        EventSchema(
            "risk:alert",
            RiskAlert,
            DeliveryKind.EVENT,
            "Risk warning: limit breach, high volatility, ...",
        ),
        EventSchema(
            "risk:circuit_breaker",
            CircuitBreakerChanged,
            DeliveryKind.EVENT,
            "Circuit breaker state change.",
        ),
        EventSchema(
            "risk:kill_switch",
            KillSwitchChanged,
            DeliveryKind.EVENT,
            "Kill switch activation or deactivation.",
        ),
        EventSchema(
            "system:feed:disconnected",
            FeedDisconnected,
            DeliveryKind.EVENT,
            "Market data feed disconnection.",
        ),
        EventSchema(
            "system:feed:reconnected",
            FeedReconnected,
            DeliveryKind.EVENT,
            "Market data feed reconnection.",
        ),
    ],
    history=dict.fromkeys(
        ("trade:*", "order:status", "signal:generated", "risk:*", "system:feed:*"), EVENT_HISTORY
    ),
).freeze()
"""The ten trading channels of the reference; ``portfolio:update`` is a state channel.

It is frozen: to add channels, merge it into your own registry (``registry | mine``).
"""

CHANNELS: Final[tuple[str, ...]] = tuple(registry.channels())
"""The ten channel names, in the reference's order."""
