"""What tracking knows of one order, folded from its events in any arrival order, and the KPI
contributions that knowledge implies.

KPIs are kept as sums per (channel, hour, metric). Rather than adding to them event by event —
which goes wrong when events arrive out of order or the channel is only learnt late — each
order contributes a set of values computed from its facts; an event changes the facts, and the
KPI tables receive the difference between the order's contributions after and before. Applying
the same event twice is prevented upstream (the inbox), and applying events in any order gives
the same facts, hence the same sums.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from services.tracking.domain.events import (
    CANCELLED_STEPS,
    FULFILLED_STEPS,
    NOT_STATUS_STEPS,
    PLACED_STEPS,
    PREPARED_STEPS,
    Cost,
    TrackedEvent,
    is_refusal,
    is_return,
)

OrderKey = tuple[datetime, int, int, str]


@dataclass(frozen=True, slots=True)
class OrderFacts:
    order_id: str
    first_seen_at: datetime
    customer_id: str | None = None
    channel: str | None = None
    location_ids: tuple[str, ...] = ()
    status: str | None = None
    last_key: OrderKey | None = None
    entry_count: int = 0
    placed_at: datetime | None = None
    prepared_at: datetime | None = None
    # When the promise to the customer was met: ready for collection or delivered.
    fulfilled_at: datetime | None = None
    cancelled_at: datetime | None = None
    refused_at: datetime | None = None
    returned_at: datetime | None = None
    promised_at: datetime | None = None
    # Key of the event the promise was read from: the placing event's promise wins, otherwise
    # the latest event stating one.
    promised_key: OrderKey | None = None
    cost: Cost | None = None
    cost_key: OrderKey | None = None

    @property
    def last_event_at(self) -> datetime | None:
        return self.last_key[0] if self.last_key else None


# promised_key of a promise read from the placing event: sorts after every real key.
_PLACING_PROMISE: OrderKey = (datetime.max.replace(tzinfo=UTC), 0, 0, "")


def _promise_wins(facts: OrderFacts, placing: bool, key: OrderKey) -> bool:
    if placing:
        return True
    return facts.promised_key is None or key > facts.promised_key


def _earliest(current: datetime | None, candidate: datetime) -> datetime:
    return candidate if current is None or candidate < current else current


def apply(facts: OrderFacts | None, event: TrackedEvent, received_at: datetime) -> OrderFacts:
    """The order's facts once ``event`` is recorded. Commutative over events (order of arrival
    does not matter); the caller guarantees each event is applied once."""
    if facts is None:
        facts = OrderFacts(order_id=event.order_id, first_seen_at=received_at)
    key = event.order_key
    changes: dict[str, object] = {"entry_count": facts.entry_count + 1}
    if event.step not in NOT_STATUS_STEPS and (facts.last_key is None or key > facts.last_key):
        changes["last_key"] = key
        changes["status"] = event.step
    # The placing event is authoritative for customer and channel; others only fill gaps.
    placing = event.step in PLACED_STEPS
    if event.customer_id and (placing or not facts.customer_id):
        changes["customer_id"] = event.customer_id
    if event.channel and (placing or not facts.channel):
        changes["channel"] = event.channel
    if event.location_ids:
        merged = tuple(sorted(set(facts.location_ids) | set(event.location_ids)))
        if merged != facts.location_ids:
            changes["location_ids"] = merged
    step = event.step
    when = event.occurred_at
    if placing:
        changes["placed_at"] = _earliest(facts.placed_at, when)
    if step in PREPARED_STEPS:
        changes["prepared_at"] = _earliest(facts.prepared_at, when)
    if step in FULFILLED_STEPS:
        changes["fulfilled_at"] = _earliest(facts.fulfilled_at, when)
    if step in CANCELLED_STEPS:
        changes["cancelled_at"] = _earliest(facts.cancelled_at, when)
    if is_refusal(step):
        changes["refused_at"] = _earliest(facts.refused_at, when)
    if is_return(step) or step == "refunded":
        changes["returned_at"] = _earliest(facts.returned_at, when)
    if event.promised_at is not None and _promise_wins(facts, placing, key):
        changes["promised_at"] = event.promised_at
        changes["promised_key"] = _PLACING_PROMISE if placing else key
    if event.cost is not None and (facts.cost_key is None or key > facts.cost_key):
        changes["cost"] = event.cost
        changes["cost_key"] = key
    return replace(facts, **changes)  # type: ignore[arg-type]


# --- KPIs -------------------------------------------------------------------------------------

# (channel name or "" when unknown, hour bucket, metric) → value
KpiKey = tuple[str, datetime, str]

PLACED = "orders_placed"
CANCELLED = "orders_cancelled"
REFUSED = "orders_refused"
PREPARED = "orders_prepared"
PREPARATION_MS = "preparation_ms"
ON_TIME = "orders_on_time"
LATE = "orders_late"
RETURNED = "orders_returned"
COST_ORDERS = "cost_orders:"  # + currency
COST_MINOR = "cost_minor:"  # + currency


def hour_of(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC)
    return moment.replace(minute=0, second=0, microsecond=0)


def contributions(facts: OrderFacts | None) -> dict[KpiKey, int]:
    """The values one order adds to the KPI sums, each in the hour its fact happened."""
    if facts is None:
        return {}
    channel = facts.channel or ""
    out: dict[KpiKey, int] = {}

    def add(moment: datetime, metric: str, value: int) -> None:
        key = (channel, hour_of(moment), metric)
        out[key] = out.get(key, 0) + value

    if facts.placed_at is not None:
        add(facts.placed_at, PLACED, 1)
        if facts.cost is not None:
            add(facts.placed_at, COST_ORDERS + facts.cost.currency, 1)
            add(facts.placed_at, COST_MINOR + facts.cost.currency, facts.cost.amount_minor)
    if facts.cancelled_at is not None:
        add(facts.cancelled_at, CANCELLED, 1)
    if facts.refused_at is not None:
        add(facts.refused_at, REFUSED, 1)
    if facts.returned_at is not None:
        add(facts.returned_at, RETURNED, 1)
    placed, prepared, fulfilled = facts.placed_at, facts.prepared_at, facts.fulfilled_at
    if prepared is not None and placed is not None and prepared >= placed:
        add(prepared, PREPARED, 1)
        add(prepared, PREPARATION_MS, (prepared - placed) // timedelta(milliseconds=1))
    if fulfilled is not None and facts.promised_at is not None:
        add(fulfilled, ON_TIME if fulfilled <= facts.promised_at else LATE, 1)
    return out


def kpi_delta(before: OrderFacts | None, after: OrderFacts) -> dict[KpiKey, int]:
    """What to add to the KPI sums when an order's facts go from ``before`` to ``after``;
    sorted by key so concurrent writers lock rows in the same order."""
    old, new = contributions(before), contributions(after)
    delta = {k: new.get(k, 0) - old.get(k, 0) for k in old.keys() | new.keys()}
    return {k: delta[k] for k in sorted(delta) if delta[k] != 0}


@dataclass(frozen=True, slots=True)
class ChannelReport:
    channel_name: str
    orders_placed: int = 0
    orders_cancelled: int = 0
    orders_refused: int = 0
    orders_prepared: int = 0
    preparation_ms: int = 0
    orders_on_time: int = 0
    orders_late: int = 0
    orders_returned: int = 0
    # currency → (orders with a cost, total cost in minor units)
    costs: Mapping[str, tuple[int, int]] = field(default_factory=dict)

    @staticmethod
    def _rate(part: int, whole: int) -> float:
        return part / whole if whole > 0 else 0.0

    @property
    def cancellation_rate(self) -> float:
        return self._rate(self.orders_cancelled, self.orders_placed)

    @property
    def refusal_rate(self) -> float:
        return self._rate(self.orders_refused, self.orders_placed)

    @property
    def on_time_rate(self) -> float:
        return self._rate(self.orders_on_time, self.orders_on_time + self.orders_late)

    @property
    def average_preparation(self) -> timedelta:
        if self.orders_prepared <= 0:
            return timedelta(0)
        return timedelta(milliseconds=self.preparation_ms / self.orders_prepared)

    def average_costs(self) -> dict[str, int]:
        """currency → mean cost per order in minor units (rounded)."""
        return {cur: round(total / n) for cur, (n, total) in sorted(self.costs.items()) if n > 0}


_COUNTERS = {PLACED, CANCELLED, REFUSED, PREPARED, PREPARATION_MS, ON_TIME, LATE, RETURNED}
TOTAL = "*"


def build_report(sums: Mapping[tuple[str, str], int]) -> tuple[list[ChannelReport], ChannelReport]:
    """(channel, metric) → sum over the window ⇒ one report per channel and the total."""
    per_channel: dict[str, dict[str, int]] = {}
    costs: dict[str, dict[str, tuple[int, int]]] = {}
    for (channel, metric), value in sums.items():
        for target in (channel, TOTAL):
            if metric in _COUNTERS:
                bucket = per_channel.setdefault(target, {})
                bucket[metric] = bucket.get(metric, 0) + value
            elif metric.startswith((COST_ORDERS, COST_MINOR)):
                per_channel.setdefault(target, {})
                currency = metric.split(":", 1)[1]
                n, total = costs.setdefault(target, {}).get(currency, (0, 0))
                if metric.startswith(COST_ORDERS):
                    n += value
                else:
                    total += value
                costs[target][currency] = (n, total)
    reports = {
        name: ChannelReport(channel_name=name, costs=costs.get(name, {}), **values)
        for name, values in per_channel.items()
    }
    total = reports.pop(TOTAL, ChannelReport(channel_name=TOTAL, costs={}))
    return [reports[k] for k in sorted(reports)], total


# --- reads ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One recorded entry as read back from the store."""

    event_id: str
    order_id: str
    step: str
    type: str
    occurred_at: datetime
    source: str
    sequence: int
    details: Mapping[str, object]
    received_at: datetime
    explanation: str = ""
    location_ids: tuple[str, ...] = ()
    return_id: str | None = None
    position: int = 0


@dataclass(frozen=True, slots=True)
class SearchQuery:
    customer_id: str | None
    location_id: str | None
    channel: str | None
    status: str | None
    page_size: int
    # Keyset position: (first_seen_at, order_id) of the last order of the previous page.
    after: tuple[datetime, str] | None


@dataclass(frozen=True, slots=True)
class SearchPage:
    orders: list[OrderFacts]
    next_after: tuple[datetime, str] | None
