"""Who may call what: one declarative table, one row per public method.

A row says which principal kinds may call the method and how the call is scoped to the
caller. Admin principals may call every method. A method with no row (and no ``Service/*``
row) is admin-only, so a newly added RPC is closed until someone decides who may call it.

Scopes:

* ``channel``: a channel principal only acts for its own channel. Every ``channel`` field
  (tutti.common.v1.Channel) in the request must be the caller's; an unset one is filled in.
* ``location``: a store or terminal principal only acts for its own location. Every
  ``location_id``/``location_ids`` in the request must be the caller's; an unset one is
  filled in; a request that names no location at all is refused. A terminal's
  ``terminal_id`` fields must be its own principal id (filled in when unset).
* ``owner``: the order the call is about must belong to the caller (a channel principal: the
  order's channel; a store or terminal: one of the order's locations). ``response`` checks the
  order in the response; ``order`` looks the order up first by the request's ``order_id``;
  ``filter`` drops from a listed response the items that are not the caller's.
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
    FILTER = "filter"  # a list: drop the items (orders) that are not the caller's


@dataclass(frozen=True, slots=True)
class Rule:
    kinds: frozenset[Kind]
    scope_channel: bool = False
    scope_location: bool = False
    owner: Owner = Owner.NONE
    required: tuple[str, ...] = ()
    # For Owner.ORDER: the methods that look the order up, tried in order until one knows it
    # (default: the gateway's order lookup).
    lookup: str | tuple[str, ...] | None = None

    def allows(self, kind: Kind) -> bool:
        return kind is Kind.ADMIN or kind in self.kinds


def _rule(*kinds: Kind, **options: object) -> Rule:
    return Rule(frozenset(kinds), **options)  # type: ignore[arg-type]


ADMIN_ONLY = _rule(Kind.ADMIN)

C, S, T, A, SVC = Kind.CHANNEL, Kind.STORE, Kind.TERMINAL, Kind.ADMIN, Kind.SERVICE

# Where the gateway looks an order up for ``Owner.ORDER`` checks (called with the caller's
# deadline and trace context); its request has ``order_id`` and its response carries the order's
# channel and locations.
ORDER_LOOKUP_METHOD = "tutti.orchestrator.v1.OrderService/GetOrder"

# "package.Service/Method" → rule. "package.Service/*" applies to every method of the service
# without a row of its own.
INVENTORY = "tutti.inventory.v1.InventoryService/"
ORDERS = "tutti.orchestrator.v1.OrderService/"
RETURNS = "tutti.returns.v1.ReturnsService/"
TRACKING = "tutti.tracking.v1.TrackingService/"

# Who an order concerns, its returns included: its channel, its fulfilment and pickup locations,
# and the locations its returns are received or expected at (a till purchase: channel STORE).
# The lookup for reads a store taking back a return needs (the order, its returns). It has no
# row of its own: called directly, it is admin-only.
ORDER_PARTIES = RETURNS + "GetOrderParties"

# "package.Service/Method" → rule. "package.Service/*" applies to every method of the service
# without a row of its own. Methods absent here are admin-only: inventory's reservation RPCs
# (ReserveStock, ConfirmReservation, ...) are the orchestrator's, called directly, not through here.
POLICIES: dict[str, Rule] = {
    # --- inventory: availability is readable by every selling principal, with its channel's buffers
    INVENTORY + "GetAvailability": _rule(C, S, T, SVC, scope_channel=True, required=("sku",)),
    INVENTORY + "BatchGetAvailability": _rule(C, S, T, SVC, scope_channel=True, required=("skus",)),
    INVENTORY + "WatchAvailability": _rule(C, S, T, SVC, scope_channel=True, required=("skus",)),
    INVENTORY + "ListLocations": _rule(C, S, T, SVC),
    INVENTORY + "GetLocation": _rule(C, S, T, SVC, required=("location_id",)),
    # Catalogue entries (category, returnable) are the same for every channel: no scoping.
    INVENTORY + "GetSkus": _rule(C, S, T, SVC, required=("skus",)),
    # Raw counters: a store reads its own location's only (it must name it, or it is filled in).
    INVENTORY + "GetStockLevels": _rule(S, SVC, scope_location=True, required=("sku",)),
    # POS sales: a terminal or store app reports sales of its own location (and terminal) only.
    INVENTORY + "StreamPosSales": _rule(S, T, SVC, scope_location=True),
    # Stock movements a store makes itself, at its own location.
    INVENTORY + "ReceiveStock": _rule(S, SVC, scope_location=True, required=("movement_id",)),
    INVENTORY + "AdjustStock": _rule(S, SVC, scope_location=True, required=("movement_id", "sku")),
    INVENTORY + "QuarantineStock": _rule(S, SVC, scope_location=True, required=("movement_id", "sku")),
    INVENTORY + "ReleaseQuarantine": _rule(S, SVC, scope_location=True, required=("movement_id", "sku")),
    # Stock sync from ERP/WMS: trusted integrations and back-office.
    INVENTORY + "ApplyStockSnapshot": _rule(SVC, required=("snapshot_id",)),
    INVENTORY + "ImportStockCsv": _rule(SVC, required=("import_id", "csv")),
    INVENTORY + "TransferStock": _rule(SVC, required=("movement_id", "sku")),
    INVENTORY + "SetIncomingSupply": _rule(SVC, required=("sku", "location_id")),
    INVENTORY + "RegisterSkus": _rule(SVC, required=("skus",)),
    # Locations, safety stock and channel buffers are business configuration: admin only
    # (UpsertLocations, SetSafetyStock, SetChannelPolicy, ListChannelPolicies have no row).
    # --- orchestrator: orders belong to the channel that placed them ----------------------
    ORDERS + "QuoteDelivery": _rule(C, scope_channel=True),
    ORDERS + "PlaceOrder": _rule(
        C, scope_channel=True, required=("channel_order_id", "customer_id", "lines")
    ),
    # A channel reads its orders; a store those involving its location — fulfilment, pickup, or
    # a return of the order received or expected there: returns knows all of them.
    ORDERS + "GetOrder": _rule(
        C, S, SVC, owner=Owner.ORDER, lookup=ORDER_PARTIES, required=("order_id",)
    ),
    # A customer's orders (or the one placed under a channel order id), as far as the calling
    # channel placed them; the orchestrator requires customer_id or channel_order_id.
    ORDERS + "ListOrders": _rule(C, SVC, scope_channel=True, owner=Owner.FILTER),
    ORDERS + "CancelOrder": _rule(C, owner=Owner.ORDER, required=("order_id",)),
    ORDERS + "WatchOrder": _rule(C, S, SVC, owner=Owner.ORDER, required=("order_id",)),
    # Fulfilment updates come from the store or warehouse doing the work, for its own location.
    ORDERS + "UpdateFulfilment": _rule(S, SVC, scope_location=True, required=("order_id", "update_id")),
    ORDERS + "ReportLocationOffline": _rule(S, SVC, scope_location=True),
    # Why an order went where it did: its channel, the stores it involves, trusted integrations.
    ORDERS + "GetSourcingDecision": _rule(C, S, SVC, owner=Owner.ORDER, required=("order_id",)),
    # Sourcing rules are business configuration: back-office only.
    "tutti.orchestrator.v1.RulesService/*": ADMIN_ONLY,
    # --- returns: any channel or store takes a return, whatever the purchase channel ------
    RETURNS + "CreateReturn": _rule(C, S, SVC, scope_channel=True, required=("request_id",)),
    RETURNS + "CreateExchange": _rule(C, S, SVC, scope_channel=True),
    RETURNS + "GetReturn": _rule(C, S, SVC, owner=Owner.RESPONSE, required=("return_id",)),
    RETURNS + "ListReturns": _rule(
        C, S, SVC, owner=Owner.ORDER, lookup=ORDER_PARTIES, required=("order_id",)
    ),
    # The store (or warehouse) receiving the parcel grades it, at its own location.
    RETURNS + "ReceiveReturn": _rule(S, SVC, scope_location=True, required=("return_id",)),
    RETURNS + "CancelReturn": _rule(SVC, required=("return_id",)),
    # The collecting store (or the location shipping it) hands an exchange's replacement over.
    RETURNS + "HandOverExchange": _rule(S, SVC, scope_location=True, required=("exchange_id",)),
    # Operations: tasks inventory refused for good, listed and retried by operators only.
    RETURNS + "ListParkedTasks": ADMIN_ONLY,
    RETURNS + "RetryParkedTask": _rule(A, required=("task_id",)),
    ORDERS + "ListParkedTasks": ADMIN_ONLY,
    ORDERS + "RetryParkedTask": _rule(A, required=("task_id",)),
    # --- tracking: the timeline of an order is its owner's --------------------------------
    TRACKING + "GetOrderTimeline": _rule(C, S, SVC, owner=Owner.RESPONSE, required=("order_id",)),
    # A watch may open before tracking recorded anything (right after PlaceOrder): the
    # orchestrator knows the order at once; tracking knows till purchases the orchestrator never saw.
    TRACKING + "WatchOrderTimeline": _rule(
        C,
        S,
        SVC,
        owner=Owner.ORDER,
        lookup=(ORDERS + "GetOrder", TRACKING + "GetOrderTimeline"),
        required=("order_id",),
    ),
    TRACKING + "SearchOrders": _rule(C, S, SVC, scope_channel=True, scope_location=True),
    # KPIs span every channel: back-office only (GetKpis has no row).
    # --- the gateway itself: any valid key may ask whose it is -----------------------------
    "tutti.gateway.v1.IdentityService/GetCaller": _rule(C, S, T, SVC),
}


def rule_for(method: str, policies: dict[str, Rule] | None = None) -> Rule:
    """``method`` is "package.Service/Method" (no leading slash)."""
    table = POLICIES if policies is None else policies
    if method in table:
        return table[method]
    service = method.rsplit("/", 1)[0]
    return table.get(f"{service}/*", ADMIN_ONLY)
