"""Who may call whom inside Tutti: the identities of internal mTLS and the edges between them.

A backend knows its caller by the common name of the client certificate the TLS handshake
verified against the internal CA (runtime.tls). ``EDGES`` says which identity may call which
methods; anything else is PERMISSION_DENIED. The edges are the calls the code really makes:

* gateway → every method of every backend (it enforces the public policy itself, gateway/policy.py);
* orchestrator → inventory: locations, availability, reservations, quarantine;
* returns → inventory: locations, SKUs, till receipts, stock levels, restock, incoming supply,
  exchange reservations; returns → orchestrator: GetOrder;
* tracking calls no one (it only consumes Kafka); nobody calls the console or the gateway here;
* operator → every method: the local supervisor's tooling (demo loader, ``make status``),
  issued by tools/certs.py locally, not in Kubernetes.

The health service answers any caller (also on the plaintext probe port); reflection answers
any authenticated peer. Only the gateway's ``tutti-caller-*`` metadata is believed
(runtime.caller): from any other peer it is dropped.
"""

from __future__ import annotations

from collections.abc import Mapping

GATEWAY = "gateway"
OPERATOR = "operator"
IDENTITIES: tuple[str, ...] = (GATEWAY, "inventory", "orchestrator", "returns", "tracking", OPERATOR)

HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_SERVICES = frozenset(
    {"grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection"}
)

_INVENTORY = "tutti.inventory.v1.InventoryService"
_ORDERS = "tutti.orchestrator.v1.OrderService"

# identity → fully qualified methods ("package.Service/Method") or whole services ("package.Service/*")
# it may call; "*" is every method.
EDGES: Mapping[str, frozenset[str]] = {
    GATEWAY: frozenset({"*"}),
    OPERATOR: frozenset({"*"}),
    "orchestrator": frozenset(
        f"{_INVENTORY}/{m}"
        for m in (
            "ListLocations",
            "BatchGetAvailability",
            "ReserveStock",
            "ReleaseReservation",
            "FulfilReservation",
            "QuarantineStock",
        )
    ),
    "returns": frozenset(
        {
            *(
                f"{_INVENTORY}/{m}"
                for m in (
                    "GetLocation",
                    "GetSkus",
                    "GetPosSale",
                    "GetStockLevels",
                    "ReceiveStock",
                    "SetIncomingSupply",
                    "ReserveStock",
                    "ReleaseReservation",
                    "FulfilReservation",
                )
            ),
            f"{_ORDERS}/GetOrder",
        }
    ),
    "inventory": frozenset(),
    "tracking": frozenset(),
}


def service_of(method: str) -> str:
    """``/pkg.Service/Method`` → ``pkg.Service``."""
    return method.lstrip("/").partition("/")[0]


def open_to_anyone(method: str) -> bool:
    """Health answers every caller, with or without a certificate (probes)."""
    return service_of(method) == HEALTH_SERVICE


def allowed(identity: str, method: str) -> bool:
    """Whether a peer authenticated as ``identity`` may call ``method`` (``/pkg.Service/Method``)."""
    if open_to_anyone(method) or service_of(method) in REFLECTION_SERVICES:
        return True
    edges = EDGES.get(identity, frozenset())
    name = method.lstrip("/")
    return "*" in edges or name in edges or f"{service_of(method)}/*" in edges
