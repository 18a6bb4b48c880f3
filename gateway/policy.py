"""Who may call what: one declarative table, one row per public method.

A row says which principal kinds may call the method and how the call is scoped to the
caller. Admin principals may call every method. A method with no row (and no ``Service/*``
row) is admin-only, so a newly added RPC is closed until someone decides who may call it.

Scopes:

* ``channel``: a channel principal only acts for its own channel. Every ``channel`` field
  (tutti.common.v1.Channel) in the request must be the caller's; an unset one is filled in.
* ``location``: a store or terminal principal only acts for its own location. Every
  ``location_id``/``location_ids`` in the request must be the caller's; an unset one is
  filled in; a request that names no location at all is refused.
* ``owner``: the order the call is about must belong to the caller (a channel principal: the
  order's channel; a store or terminal: one of the order's locations). ``response`` checks the
  order in the response; ``order`` looks the order up first by the request's ``order_id``.
  Not owning an order answers NOT_FOUND, so existence does not leak.

``required`` lists request fields that must be non-empty; the gateway refuses the call with
INVALID_ARGUMENT before it reaches a backend. Business validation stays in the backends.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from gateway.credentials import Kind


class Owner(StrEnum):
    NONE = "none"
    RESPONSE = "response"  # the response is (or contains) the order: check it before answering
    ORDER = "order"  # look the order up by the request's order_id before forwarding


@dataclass(frozen=True, slots=True)
class Rule:
    kinds: frozenset[Kind]
    scope_channel: bool = False
    scope_location: bool = False
    owner: Owner = Owner.NONE
    required: tuple[str, ...] = ()

    def allows(self, kind: Kind) -> bool:
        return kind is Kind.ADMIN or kind in self.kinds


def _rule(*kinds: Kind, **options: object) -> Rule:
    return Rule(frozenset(kinds), **options)  # type: ignore[arg-type]


ADMIN_ONLY = _rule(Kind.ADMIN)

C, S, T, A, SVC = Kind.CHANNEL, Kind.STORE, Kind.TERMINAL, Kind.ADMIN, Kind.SERVICE

# Where the gateway looks an order up for ``Owner.ORDER`` checks (called with the gateway's own
# authority, the caller's deadline and trace context).
ORDER_LOOKUP_METHOD = "tutti.orchestrator.v1.OrderService/GetOrder"

# "package.Service/Method" → rule. "package.Service/*" applies to every method of the service
# without a row of its own.
POLICIES: dict[str, Rule] = {
    # --- inventory: availability is readable by every selling principal -------------------
    "tutti.inventory.v1.InventoryService/GetAvailability": _rule(C, S, T, SVC, required=("sku",)),
    "tutti.inventory.v1.InventoryService/BatchGetAvailability": _rule(C, S, T, SVC),
    "tutti.inventory.v1.InventoryService/WatchAvailability": _rule(C, S, T, SVC),
    # POS sales: a terminal or store app reports sales of its own location only.
    "tutti.inventory.v1.InventoryService/StreamSales": _rule(S, T, SVC, scope_location=True),
    "tutti.inventory.v1.InventoryService/RecordSale": _rule(S, T, SVC, scope_location=True),
    # Stock sync from ERP/WMS and location master data: back-office and trusted integrations.
    "tutti.inventory.v1.InventoryService/SyncStock": _rule(SVC),
    "tutti.inventory.v1.InventoryService/ImportStock": _rule(SVC),
    "tutti.inventory.v1.InventoryService/UpsertLocation": ADMIN_ONLY,
    "tutti.inventory.v1.InventoryService/ListLocations": _rule(C, S, T, SVC),
    # --- orchestrator: orders belong to the channel that placed them ----------------------
    "tutti.orchestrator.v1.OrderService/QuoteDelivery": _rule(C, scope_channel=True),
    "tutti.orchestrator.v1.OrderService/PlaceOrder": _rule(C, scope_channel=True, required=("order_id",)),
    "tutti.orchestrator.v1.OrderService/GetOrder": _rule(
        C, S, SVC, owner=Owner.RESPONSE, required=("order_id",)
    ),
    "tutti.orchestrator.v1.OrderService/CancelOrder": _rule(C, owner=Owner.ORDER, required=("order_id",)),
    "tutti.orchestrator.v1.OrderService/ListOrders": _rule(C, scope_channel=True),
    "tutti.orchestrator.v1.OrderService/ListCustomerOrders": _rule(
        C, scope_channel=True, required=("customer_id",)
    ),
    "tutti.orchestrator.v1.OrderService/WatchOrder": _rule(
        C, S, SVC, owner=Owner.ORDER, required=("order_id",)
    ),
    # Fulfilment updates come from the store or warehouse doing the work.
    "tutti.orchestrator.v1.OrderService/UpdateFulfilment": _rule(S, SVC, scope_location=True),
    "tutti.orchestrator.v1.OrderService/ListFulfilments": _rule(S, SVC, scope_location=True),
    # Sourcing rules are business configuration: back-office only.
    "tutti.orchestrator.v1.RulesService/*": ADMIN_ONLY,
    # --- returns: any channel or store takes a return of any order of its own, stores of any order
    "tutti.returns.v1.ReturnsService/CreateReturn": _rule(C, S, owner=Owner.ORDER, required=("order_id",)),
    "tutti.returns.v1.ReturnsService/GetReturn": _rule(C, S, SVC, required=("return_id",)),
    "tutti.returns.v1.ReturnsService/ReceiveReturn": _rule(
        S, SVC, scope_location=True, required=("return_id",)
    ),
    "tutti.returns.v1.ReturnsService/GradeReturn": _rule(
        S, SVC, scope_location=True, required=("return_id",)
    ),
    # --- tracking: the timeline of an order is its owner's --------------------------------
    "tutti.tracking.v1.TrackingService/GetTimeline": _rule(
        C, S, SVC, owner=Owner.ORDER, required=("order_id",)
    ),
    "tutti.tracking.v1.TrackingService/GetOrderTimeline": _rule(
        C, S, SVC, owner=Owner.ORDER, required=("order_id",)
    ),
}


def rule_for(method: str, policies: dict[str, Rule] | None = None) -> Rule:
    """``method`` is "package.Service/Method" (no leading slash)."""
    table = POLICIES if policies is None else policies
    if method in table:
        return table[method]
    service = method.rsplit("/", 1)[0]
    return table.get(f"{service}/*", ADMIN_ONLY)
