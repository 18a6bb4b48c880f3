"""What the scenarios pick from: the demo retailer of tools/demo.py (the same data `make run`
loads), and the API keys of the private stack's generated credentials (bench/stack.py)."""

from __future__ import annotations

import os
import random
import uuid
from collections import defaultdict
from collections.abc import Iterable
from functools import cache

from tutti.common.v1 import common_pb2
from tutti.inventory.v1 import inventory_pb2

from bench.stack import key_for
from tools.demo import DemoRetailer, DemoSku, retailer

# Distinguishes this run's ids from earlier runs' on the same servers.
RUN = uuid.uuid4().hex[:6]
SKU_COUNT = int(os.environ.get("TUTTI_LOADTEST_SKUS", "3000"))

CHANNELS = {
    "web": common_pb2.CHANNEL_WEB,
    "app": common_pb2.CHANNEL_APP,
    "marketplace": common_pb2.CHANNEL_MARKETPLACE,
}


@cache
def demo() -> DemoRetailer:
    return retailer(SKU_COUNT)


@cache
def skus() -> tuple[DemoSku, ...]:
    return demo().skus


@cache
def stocked_by_location() -> dict[str, tuple[tuple[str, int], ...]]:
    """location → (sku, on hand) with stock there at load time."""
    found: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for sku, location, units in demo().stock:
        if units > 0:
            found[location].append((sku, units))
    return {location: tuple(items) for location, items in found.items()}


@cache
def stores() -> tuple[str, ...]:
    return tuple(demo().store_ids)


@cache
def store_points() -> dict[str, common_pb2.GeoPoint]:
    return {loc.location_id: loc.point for loc in demo().locations}


@cache
def price_of() -> dict[str, int]:
    return {s.sku: s.price_cents for s in skus()}


def channel_key(channel: str) -> str:
    return key_for(channel)


def store_app_key(store: str) -> str:
    return key_for(f"app-{store}")


def admin_key() -> str:
    return key_for("admin")


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def customer_address(rng: random.Random) -> common_pb2.PostalAddress:
    """Somewhere near one of the stores' cities (a home delivery address)."""
    loc = rng.choice([loc for loc in demo().locations if loc.location_id in set(stores())])
    return common_pb2.PostalAddress(
        line1=f"{rng.randint(1, 200)} avenue de la République",
        postal_code=loc.address.postal_code,
        city=loc.address.city,
        country="FR",
        point=common_pb2.GeoPoint(
            latitude=loc.point.latitude + rng.uniform(-0.05, 0.05),
            longitude=loc.point.longitude + rng.uniform(-0.05, 0.05),
        ),
    )


def money(cents: int) -> common_pb2.Money:
    return common_pb2.Money(currency="EUR", amount_minor=cents)


def own_location(location_id: str) -> inventory_pb2.Location:
    """A location of this run, a copy of the demo DC without a daily capacity, so a scenario's
    orders never use up the capacity of the demo locations on a shared database."""
    dc = inventory_pb2.Location()
    dc.CopyFrom(demo().locations[0])
    dc.location_id, dc.name, dc.daily_capacity = location_id, f"Load test {location_id}", 0
    return dc


def cancel_orders(host: str, orders: Iterable[tuple[str, str]], reason: str = "load test clean-up") -> int:
    """Cancel the (channel, order id) a run placed, as the channel that placed them, outside the
    statistics: what is left open would keep the orchestrator's background loops busy."""
    import grpc
    from tutti.orchestrator.v1 import orchestrator_pb2, orchestrator_pb2_grpc

    cancelled = 0
    with grpc.insecure_channel(host) as channel:
        stub = orchestrator_pb2_grpc.OrderServiceStub(channel)
        for channel_name, order_id in orders:
            try:
                stub.CancelOrder(
                    orchestrator_pb2.CancelOrderRequest(order_id=order_id, reason=reason),
                    metadata=(("authorization", f"Bearer {channel_key(channel_name)}"),),
                    timeout=10,
                )
                cancelled += 1
            except grpc.RpcError:
                pass  # already shipped, collected or cancelled
    return cancelled
