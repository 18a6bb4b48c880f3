"""The order state machine.

Each line moves on its own (a split order has lines at several locations); the order's status
is derived from its lines:

    placed → sourced → accepted → picking → shipped / ready_for_pickup → delivered / collected
    any open line may be cancelled; an order with some lines shipped and others not is partly_shipped.
"""

from __future__ import annotations

from collections.abc import Iterable

from runtime.errors import FailedPrecondition
from services.orchestrator.domain.model import PICKUP_METHODS

LINE_STATUSES: tuple[str, ...] = (
    "sourced",
    "accepted",
    "picked",
    "packed",
    "shipped",
    "ready_for_pickup",
    "delivered",
    "collected",
    "cancelled",
)
ORDER_STATUSES: tuple[str, ...] = (
    "placed",
    "sourced",
    "accepted",
    "picking",
    "partly_shipped",
    "shipped",
    "ready_for_pickup",
    "delivered",
    "collected",
    "cancelled",
)
FULFILMENT_EVENTS: tuple[str, ...] = (
    "accepted",
    "rejected",
    "picked",
    "packed",
    "shipped",
    "ready_for_pickup",
    "delivered",
    "collected",
)
TERMINAL: frozenset[str] = frozenset({"delivered", "collected", "cancelled"})

# Which line statuses each fulfilment event may come from. Steps may be skipped (a store that
# ships straight away reports "shipped" without "picked"), never reversed.
_FROM: dict[str, frozenset[str]] = {
    "accepted": frozenset({"sourced"}),
    "picked": frozenset({"sourced", "accepted"}),
    "packed": frozenset({"sourced", "accepted", "picked"}),
    "shipped": frozenset({"sourced", "accepted", "picked", "packed"}),
    "ready_for_pickup": frozenset({"sourced", "accepted", "picked", "packed", "shipped"}),
    "delivered": frozenset({"shipped"}),
    "collected": frozenset({"ready_for_pickup"}),
    "rejected": frozenset({"sourced", "accepted", "picked"}),
}
_HOME_ONLY = frozenset({"delivered"})
_PICKUP_ONLY = frozenset({"ready_for_pickup", "collected"})
CANCELLABLE: frozenset[str] = frozenset({"sourced", "accepted", "picked", "packed", "ready_for_pickup"})


def next_line_status(line_id: str, status: str, event: str, method: str) -> str | None:
    """The line's status after ``event``; None when it is already there (a retried update).
    Raises FailedPrecondition naming the line when the step is not allowed."""
    if event not in _FROM:
        raise FailedPrecondition(f"unknown fulfilment event {event!r}")
    if event == status:
        return None
    if event in _PICKUP_ONLY and method not in PICKUP_METHODS:
        raise FailedPrecondition(f"line {line_id}: {event} does not apply to {method} orders")
    if event in _HOME_ONLY and method in PICKUP_METHODS:
        raise FailedPrecondition(f"line {line_id}: {event} does not apply to {method} orders (use collected)")
    if event == "shipped" and method == "click_and_collect":
        raise FailedPrecondition(
            f"line {line_id}: click_and_collect lines are not shipped (use ready_for_pickup)"
        )
    if status not in _FROM[event]:
        raise FailedPrecondition(f"line {line_id} is {status}; cannot become {event}")
    return event


def fulfils_reservation(event: str, method: str) -> bool:
    """Goods leaving the location consume the reservation: shipping, or collection in the store
    that held them (click & collect)."""
    if event == "shipped":
        return True
    return event == "collected" and method == "click_and_collect"


def check_cancellable(line_id: str, status: str, method: str = "") -> bool:
    """True when the line is open and can be cancelled; False when it is already cancelled.
    Raises FailedPrecondition when the goods have left (shipped, collected, or shipped to the
    pickup store)."""
    if status == "cancelled":
        return False
    if status not in CANCELLABLE or (status == "ready_for_pickup" and method == "ship_to_store"):
        raise FailedPrecondition(
            f"line {line_id} is {status}; it can no longer be cancelled (start a return)"
        )
    return True


def order_status(line_statuses: Iterable[str]) -> str:
    statuses = list(line_statuses)
    active = {s for s in statuses if s != "cancelled"}
    if not active:
        return "cancelled"
    if active == {"delivered"}:
        return "delivered"
    if active == {"collected"}:
        return "collected"
    if active <= {"delivered", "collected"}:
        return "delivered"
    if active <= {"shipped", "delivered"}:
        return "shipped"
    if active <= {"ready_for_pickup", "collected"}:
        return "ready_for_pickup"
    if active & {"shipped", "delivered"}:
        return "partly_shipped"
    if active & {"picked", "packed", "ready_for_pickup"}:
        return "picking"
    if active == {"accepted"}:
        return "accepted"
    return "sourced"
