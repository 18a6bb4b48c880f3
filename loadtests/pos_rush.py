"""pos_rush — many terminals streaming sales at once.

Every user is a till with one long-lived StreamPosSales stream, selling a few "rush" SKUs
that test_start stocks at every store. At the end, for every SKU x store, on-hand must equal
the stock received minus the units acknowledged (no sale lost, none counted twice); sales
still unacknowledged when the test stopped are the only allowed slack.
"""

from __future__ import annotations

import os
from collections import defaultdict

import grpc
from locust import between, events
from locust.env import Environment
from tutti.inventory.v1 import inventory_pb2, inventory_pb2_grpc

from loadtests import checks, data
from loadtests.users import SHARED, PosTerminal

RUSH_SKUS = int(os.environ.get("TUTTI_POS_RUSH_SKUS", "5"))
RUSH_UNITS = 1_000_000
STATE: dict[str, object] = {}


def _admin(environment: Environment) -> tuple[grpc.Channel, inventory_pb2_grpc.InventoryServiceStub]:
    channel = grpc.insecure_channel(environment.host)
    return channel, inventory_pb2_grpc.InventoryServiceStub(channel)


@events.test_start.add_listener
def stock_rush_skus(environment: Environment, **_kwargs: object) -> None:
    run = data.new_id("RUSH")
    skus = tuple(f"{run}-{i}" for i in range(RUSH_SKUS))
    metadata = (("authorization", f"Bearer {data.admin_key()}"),)
    channel, stub = _admin(environment)
    with channel:
        stub.RegisterSkus(
            inventory_pb2.RegisterSkusRequest(
                skus=[
                    inventory_pb2.Sku(sku=s, name=f"Rush item {s}", category="tshirts", returnable=True)
                    for s in skus
                ]
            ),
            metadata=metadata,
            timeout=30,
        )
        for store in data.stores():
            stub.ReceiveStock(
                inventory_pb2.ReceiveStockRequest(
                    movement_id=f"{run}-{store}",
                    location_id=store,
                    lines=[inventory_pb2.ReservationLine(sku=s, quantity=RUSH_UNITS) for s in skus],
                    condition=inventory_pb2.STOCK_CONDITION_SELLABLE,
                    reason="pos_rush load test",
                ),
                metadata=metadata,
                timeout=30,
            )
    STATE["skus"] = skus
    PosRushTill.rush_skus = skus


@events.test_stop.add_listener
def check_stock(environment: Environment, **_kwargs: object) -> None:
    skus = STATE.get("skus")
    if not skus or environment.runner is None:
        return
    acked: dict[tuple[str, str], int] = defaultdict(int)
    pending: dict[tuple[str, str], int] = defaultdict(int)
    for user in SHARED.terminals:
        for sku, units in user.acked_units.items():
            acked[(sku, user.store)] += units
        for _started, sku, units in user.pending.values():
            pending[(sku, user.store)] += units
    metadata = (("authorization", f"Bearer {data.admin_key()}"),)
    channel, stub = _admin(environment)
    checked = 0
    with channel:
        for sku in skus:  # type: ignore[union-attr]
            levels = stub.GetStockLevels(
                inventory_pb2.GetStockLevelsRequest(sku=sku), metadata=metadata, timeout=30
            )
            for level in levels.levels:
                key = (sku, level.location_id)
                high = RUSH_UNITS - acked[key]
                low = high - pending[key]
                if not low <= level.counters.on_hand <= high:
                    checks.violation(
                        f"{sku} at {level.location_id}: on_hand {level.counters.on_hand}, expected "
                        f"{RUSH_UNITS} - {acked[key]} acknowledged (- up to {pending[key]} in flight)"
                    )
                checked += 1
    checks.passed(
        f"pos_rush stock checked at {checked} SKU x store pairs; {sum(acked.values())} units acknowledged"
    )


class PosRushTill(PosTerminal):
    wait_time = between(0.05, 0.3)
