"""Value objects shared by sourcing, promises and orders.

Enumerations are lower-case names (``home_express``, ``distribution_centre``) so the rules
document reads naturally; the gRPC layer maps them to and from the proto enums.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import time

CHANNELS: tuple[str, ...] = ("web", "app", "marketplace", "store", "call_centre")
METHODS: tuple[str, ...] = (
    "home_standard",
    "home_express",
    "click_and_collect",
    "ship_from_store",
    "ship_to_store",
)
LOCATION_TYPES: tuple[str, ...] = ("distribution_centre", "store", "dropship_supplier")
# Methods where the customer collects in a store they chose.
PICKUP_METHODS: frozenset[str] = frozenset({"click_and_collect", "ship_to_store"})


@dataclass(frozen=True, slots=True)
class Point:
    latitude: float
    longitude: float


def distance_km(a: Point | None, b: Point | None) -> float | None:
    """Great-circle distance (haversine); None when either end has no coordinates."""
    if a is None or b is None:
        return None
    lat1, lon1, lat2, lon2 = map(math.radians, (a.latitude, a.longitude, b.latitude, b.longitude))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371.0088 * math.asin(min(1.0, math.sqrt(h)))


@dataclass(frozen=True, slots=True)
class OpeningWindow:
    """Open from ``opens`` to ``closes`` (local time) on ``weekday`` (0 = Monday)."""

    weekday: int
    opens: time
    closes: time


@dataclass(frozen=True, slots=True)
class Candidate:
    """Everything sourcing knows about one location at decision time. Stored with each decision
    so a simulation replays exactly what the engine saw, without touching stock."""

    location_id: str
    location_type: str
    point: Point | None = None
    active: bool = True
    # Orders a location can prepare per day; 0 means unlimited.
    daily_capacity: int = 0
    # Orders already open at this location today (from the orchestrator's own tables).
    open_orders: int = 0
    # What the location declares it can do (ship, click_and_collect, ship_from_store, express);
    # empty means not declared, and then not checked.
    capabilities: frozenset[str] = frozenset()
    # Empty means always open (typical of a distribution centre).
    opening_hours: tuple[OpeningWindow, ...] = ()
    timezone: str = "UTC"
    # Available units per SKU in the order's channel view.
    stock: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LineRequest:
    line_id: str
    sku: str
    quantity: int


# Capability a location needs to serve a delivery method (stores and warehouses differ).
def required_capability(method: str, location_type: str) -> str:
    if method == "home_express":
        return "express"
    if method == "click_and_collect":
        return "click_and_collect"
    if method == "ship_from_store" or (method == "home_standard" and location_type == "store"):
        return "ship_from_store"
    return "ship"
