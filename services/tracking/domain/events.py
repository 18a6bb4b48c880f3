"""Generic reading of any Tutti event: which order, customer, channel, locations, return it is
about, what step it records, and the few KPI facts it may carry (promised time, cost).

Tracking knows no producer's schema. It relies on the team's event conventions: order-related
payloads carry ``order_id``; OrderPlaced carries ``customer_id`` and ``channel``; events about a
location carry ``location_id`` or ``location_ids``; return events carry ``order_id`` and
``return_id``. Payloads arrive here already turned into plain dicts (protobuf field names).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

# --- step names -----------------------------------------------------------------------------

# The aggregate noun leading most event names: OrderPlaced → placed.
_LEADING_NOUNS = ("order",)

# Synonyms folded onto the step vocabulary documented in the API, so dashboards and searches by
# status do not depend on how each producer phrased its event names.
_ALIASES: Mapping[str, str] = {
    "created": "placed",
    "submitted": "placed",
    "ready_for_collection": "ready",
    "ready_for_pickup": "ready",
    "ready_to_collect": "ready",
    "stock_reserved": "reserved",
    "stock_reservation_made": "reserved",
    "reservation_made": "reserved",
    "lines_reserved": "reserved",
    "sourcing_decided": "sourced",
    "sourcing_decision_made": "sourced",
    "lines_sourced": "sourced",
    "allocated": "sourced",
    "canceled": "cancelled",
    "collected_by_customer": "collected",
    "picked_up": "collected",
    "picking_completed": "picked",
    "ready_for_pick_up": "ready",
    "refund_issued": "refunded",
    "return_refunded": "refunded",
    "refund_completed": "refunded",
    "return_completed": "returned",
    "return_received": "returned",
    "goods_returned": "returned",
}

# Steps that close preparation: the goods are ready for the customer or on their way.
PREPARED_STEPS = frozenset({"ready", "shipped"})
# Steps that keep the promise to the customer: goods waiting in the pickup store, or delivered.
FULFILLED_STEPS = frozenset({"ready", "delivered"})
CANCELLED_STEPS = frozenset({"cancelled"})
PLACED_STEPS = frozenset({"placed"})
# Words that, anywhere in a step, mean the order could not be served: a stock-out, a store or
# supplier refusing, sourcing finding no location.
_REFUSAL_WORDS = (
    "refused",
    "rejected",
    "unsourceable",
    "unfulfillable",
    "sourcing_failed",
    "stock_out",
    "out_of_stock",
    "declined",
    "unfulfilled",
)

_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z]|[0-9]|$)|[A-Z]?[a-z]+|[0-9]+")


def short_type_name(event_type: str) -> str:
    """``type.tutti.dev/tutti.orchestrator.v1.OrderPlaced`` or ``tutti.orchestrator.v1.OrderPlaced``
    → ``OrderPlaced``."""
    return event_type.rsplit("/", 1)[-1].rsplit(".", 1)[-1]


def step_name(event_type: str) -> str:
    """The short step an event type records: OrderPlaced → placed, OrderReadyForCollection → ready,
    StockReserved → reserved, ReturnRequested → return_requested, Whatever → whatever."""
    words = [w.lower() for w in _CAMEL.findall(short_type_name(event_type))]
    if len(words) > 1 and words[0] in _LEADING_NOUNS:
        words = words[1:]
    snake = "_".join(words) or "unknown"
    return _ALIASES.get(snake, snake)


# Generic "something changed" events name the step in an enum field instead of their type:
# OrderStatusChanged{status: ORDER_STATUS_SHIPPED} → shipped,
# OrderFulfilmentUpdated{event: FULFILMENT_EVENT_PICKED} → picked.
_GENERIC_STEP_FIELDS = ("status", "event", "state", "kind")
_ENUM_MARKERS = ("_STATUS_", "_EVENT_", "_STATE_", "_KIND_")


def _is_generic(step: str) -> bool:
    return step.endswith(("_changed", "_updated", "_reported", "_recorded")) or step in {
        "changed",
        "updated",
        "reported",
        "recorded",
    }


# What happened to an order's stock, from inventory's ledger (StockMovementRecorded{kind}):
# entries of the trail, but not the order's status — "fulfilled" must not hide "collected".
STOCK_STEPS = frozenset(
    {"reserved", "reservation_confirmed", "reservation_released", "reservation_expired", "fulfilled"}
)


# The step of a status change whose lifecycle step another event of the same change already
# records (OrderFulfilmentUpdated{ACCEPTED} and OrderStatusChanged{ACCEPTED}): its entry stays,
# with its details, but the step appears once on the timeline. Never the order's status either.
STATUS_CHANGED = "status_changed"
NOT_STATUS_STEPS = STOCK_STEPS | {STATUS_CHANGED}

# One change of an order: its events share the order, the producer and the producer's sequence.
ChangeKey = tuple[str, str, int]


def is_status_change(event_type: str) -> bool:
    return step_name(event_type) == STATUS_CHANGED


def change_key(event: TrackedEvent) -> ChangeKey | None:
    """The change an event belongs to, when its producer numbers changes (sequence > 0)."""
    return (event.order_id, event.source, event.sequence) if event.sequence > 0 else None


def status_changes_to_fold(events: Sequence[TrackedEvent]) -> set[ChangeKey]:
    """The changes whose recorded steps must be known to fold ``events``' status changes."""
    keys = {change_key(e) for e in events if is_status_change(e.type) and e.step != STATUS_CHANGED}
    return {k for k in keys if k is not None}


def fold_repeated_steps(
    events: Sequence[TrackedEvent], recorded: Mapping[ChangeKey, set[str]]
) -> list[TrackedEvent]:
    """Each lifecycle step once per change: a status change whose step another event of the same
    change records (in ``events`` or already ``recorded``) is kept as a ``status_changed``
    entry. Events of a change arrive in the order they were published (one partition, keyed by
    order), so the specific event is seen first or in the same batch."""
    steps: dict[ChangeKey, set[str]] = {k: set(v) for k, v in recorded.items()}
    for event in events:
        key = change_key(event)
        if key is not None and not is_status_change(event.type):
            steps.setdefault(key, set()).add(event.step)
    out = []
    for event in events:
        key = change_key(event)
        if key is not None and is_status_change(event.type) and event.step in steps.get(key, ()):
            event = replace(event, step=STATUS_CHANGED)
        out.append(event)
    return out


def enum_step(value: str) -> str:
    """``ORDER_STATUS_READY_FOR_PICKUP`` → ready, ``FULFILMENT_EVENT_PICKED`` → picked."""
    text = value.strip().upper()
    for marker in _ENUM_MARKERS:
        if marker in text:
            text = text.split(marker, 1)[1]
            break
    snake = text.lower()
    return _ALIASES.get(snake, snake)


def event_step(event_type: str, payload: Mapping[str, Any]) -> str:
    """The step of an event: from its type, or from its status/event enum for generic types."""
    step = step_name(event_type)
    if _is_generic(step):
        for key in _GENERIC_STEP_FIELDS:
            value = payload.get(key)
            if isinstance(value, str) and value and not value.endswith("UNSPECIFIED"):
                return enum_step(value)
    return step


def is_refusal(step: str) -> bool:
    return any(word in step for word in _REFUSAL_WORDS)


def is_return(step: str) -> bool:
    if step.endswith("cancelled"):
        return False
    return step == "returned" or step.startswith(("return_", "exchange_"))


# --- extraction -------------------------------------------------------------------------------

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")


def is_valid_id(value: str) -> bool:
    """Ids tracking accepts from callers: 1 to 128 characters of letters, digits and ._:@-"""
    return bool(_ID.match(value))


@dataclass(frozen=True, slots=True)
class RawEvent:
    """An envelope as the consumer received it, payload already decoded to a dict (or None when
    its type is unknown to this process)."""

    event_id: str
    type: str
    occurred_at: datetime
    source: str
    key: str
    sequence: int
    topic: str
    payload: Mapping[str, Any] | None
    # True when the topic is keyed by order id, so the key may stand in for a missing order_id.
    keyed_by_order: bool
    # Place among the events of one change of the aggregate (the envelope's position).
    position: int = 0


@dataclass(frozen=True, slots=True)
class Cost:
    currency: str
    amount_minor: int


@dataclass(frozen=True, slots=True)
class TrackedEvent:
    """One event, reduced to what a timeline and the KPIs need."""

    event_id: str
    order_id: str
    type: str
    step: str
    occurred_at: datetime
    source: str
    sequence: int
    details: Mapping[str, Any]
    customer_id: str | None = None
    channel: str | None = None
    location_ids: tuple[str, ...] = ()
    return_id: str | None = None
    explanation: str = ""
    promised_at: datetime | None = None
    cost: Cost | None = None
    decoded: bool = True
    topic: str = ""
    position: int = 0

    @property
    def order_key(self) -> tuple[datetime, int, int, str]:
        """Timeline order: occurred_at, then the producer's sequence, then the event's position
        within its change (placed before sourced), then the id as a last tie-break."""
        return (self.occurred_at, self.sequence, self.position, self.event_id)


@dataclass(frozen=True, slots=True)
class Skipped:
    """Why an event gets no timeline entry."""

    reason: str
    extra: Mapping[str, str] = field(default_factory=dict)


def extract(raw: RawEvent) -> TrackedEvent | Skipped:
    """Reduce any event to a TrackedEvent, or say why it is not about an order."""
    if not raw.event_id:
        return Skipped("no event_id", {"type": raw.type})
    payload = raw.payload or {}
    order_id = _first_str(payload, "order_id")
    if not order_id and raw.keyed_by_order:
        order_id = raw.key
    if not order_id:
        return Skipped("no order id", {"type": raw.type, "topic": raw.topic})
    event_type = raw.type or "unknown"
    channel = _first_value(payload, "channel")
    return TrackedEvent(
        event_id=tracked_event_id(raw.event_id),
        order_id=order_id,
        type=event_type,
        step=event_step(event_type, payload),
        occurred_at=raw.occurred_at,
        source=raw.source,
        sequence=raw.sequence,
        details=dict(payload),
        customer_id=_first_str(payload, "customer_id") or None,
        channel=normalise_channel(channel),
        location_ids=tuple(sorted(set(_location_ids(payload)))),
        return_id=_first_str(payload, "return_id") or None,
        explanation=_explanation(payload),
        promised_at=_promised_at(payload),
        cost=_cost(payload),
        decoded=raw.payload is not None,
        topic=raw.topic,
        position=raw.position,
    )


# Namespace of the UUIDs standing in for producer ids that are not UUIDs.
_FOREIGN_IDS = uuid.UUID("5b1f2f0e-9c1e-4c47-9a57-6f1f1b0c7a11")


def tracked_event_id(event_id: str) -> str:
    """The id tracking records an event under: the envelope's, or for producers whose ids are not
    UUIDs (inventory's ledger ids ``inv-<stream id>-<i>``, which carry the ledger's order) the
    same deterministic UUIDv5 every time, so a redelivery is still recognised."""
    return event_id if _is_uuid(event_id) else str(uuid.uuid5(_FOREIGN_IDS, event_id))


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def normalise_channel(value: object) -> str | None:
    """``"CHANNEL_WEB"``, ``"web"``, ``"channel_web"`` → ``"CHANNEL_WEB"``; a nested message
    with a ``channel`` or ``name`` field is read through."""
    if isinstance(value, Mapping):
        value = value.get("channel") or value.get("name") or value.get("id")
    if isinstance(value, bool) or value is None:
        return None
    text = str(value).strip().upper().replace("-", "_").replace(" ", "_")
    if not text or text in {"0", "CHANNEL_UNSPECIFIED"}:
        return None
    return text if text.startswith("CHANNEL_") else f"CHANNEL_{text}"


def _walk(value: object, depth: int = 0) -> Iterator[tuple[str, object]]:
    """Every (key, value) pair of nested dicts/lists, breadth-first-ish: the top level first."""
    if depth > 8:
        return
    if isinstance(value, Mapping):
        yield from value.items()
        for child in value.values():
            if isinstance(child, Mapping | list):
                yield from _walk(child, depth + 1)
    elif isinstance(value, list):
        for child in value:
            if isinstance(child, Mapping | list):
                yield from _walk(child, depth + 1)


def _first_value(payload: Mapping[str, Any], key: str) -> object:
    for k, v in _walk(payload):
        if k == key and v not in (None, "", [], {}):
            return v
    return None


def _first_str(payload: Mapping[str, Any], key: str) -> str:
    value = _first_value(payload, key)
    return value.strip() if isinstance(value, str) else ""


def _shallow(payload: Mapping[str, Any]) -> Iterator[tuple[str, object]]:
    """Top-level pairs, and those of objects directly in top-level lists (an order's lines), but
    not deeper: a sourcing decision's candidates are locations considered, not involved."""
    for key, value in payload.items():
        yield key, value
        if isinstance(value, list):
            for item in value:
                if isinstance(item, Mapping):
                    yield from item.items()


def _location_ids(payload: Mapping[str, Any]) -> Iterator[str]:
    for k, v in _shallow(payload):
        if k.endswith("location_id") and isinstance(v, str) and v:
            yield v
        elif k.endswith("location_ids") and isinstance(v, list):
            yield from (x for x in v if isinstance(x, str) and x)


_EXPLANATION_KEYS = ("explanation", "reason", "reason_text", "refusal_reason", "cancellation_reason", "note")


def _explanation(payload: Mapping[str, Any]) -> str:
    for key in _EXPLANATION_KEYS:
        value = _first_value(payload, key)
        if isinstance(value, str):
            return value
        if isinstance(value, list) and all(isinstance(x, str) for x in value):
            return "; ".join(value)
        if isinstance(value, Mapping):
            text = value.get("summary") or value.get("text") or value.get("message")
            if isinstance(text, str):
                return text
    return ""


def parse_timestamp(value: object) -> datetime | None:
    """RFC 3339 text as protobuf's JSON mapping writes Timestamps → aware datetime."""
    if not isinstance(value, str) or len(value) < 19:
        return None
    text = value.strip().replace("Z", "+00:00")
    # Python 3.11 accepts up to 6 fractional digits; protobuf may write 9.
    match = re.match(r"^(.*\.\d{6})\d+(.*)$", text)
    if match:
        text = match.group(1) + match.group(2)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _promised_at(payload: Mapping[str, Any]) -> datetime | None:
    """The time promised to the customer: a timestamp under a key naming a promise
    (promised_at, promised_ready_at, promise.ready_by…); the earliest when several."""
    found: list[datetime] = []
    for k, v in _walk(payload):
        if "promise" not in k:
            continue
        if isinstance(v, Mapping):
            found.extend(t for t in (parse_timestamp(x) for x in v.values()) if t)
        elif (t := parse_timestamp(v)) is not None:
            found.append(t)
    return min(found) if found else None


def _money(value: object) -> Cost | None:
    if not isinstance(value, Mapping) or not value.get("currency"):
        return None
    try:
        amount = int(value.get("amount_minor", 0))
    except (TypeError, ValueError):
        return None
    return Cost(str(value["currency"]).upper(), amount)


def _costs(value: object, depth: int = 0) -> Iterator[Cost]:
    """Money values under keys naming a cost, skipping the costs of candidates considered
    but not chosen."""
    if depth > 8:
        return
    if isinstance(value, list):
        for item in value:
            yield from _costs(item, depth + 1)
    elif isinstance(value, Mapping):
        for key, child in value.items():
            if "candidate" in key:
                continue
            money = _money(child) if "cost" in key else None
            if money is not None:
                yield money
            elif isinstance(child, Mapping | list):
                yield from _costs(child, depth + 1)


def _cost(payload: Mapping[str, Any]) -> Cost | None:
    """The logistics cost an event states: a top-level cost (shipping_cost…), else the sum of
    the costs it lists (a decision's shipments), in the first currency met."""
    for key, value in payload.items():
        if "cost" in key and (money := _money(value)) is not None:
            return money
    found = list(_costs(payload))
    if not found:
        return None
    currency = found[0].currency
    return Cost(currency, sum(c.amount_minor for c in found if c.currency == currency))
