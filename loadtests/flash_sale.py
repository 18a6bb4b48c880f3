"""flash_sale — everybody chases the last N units of one SKU.

test_start registers a fresh SKU and receives exactly N units at the distribution centre.
Every user is a crowd of customers: each tries to order one unit (home delivery) until they
get one, then the next customer steps in. After the sell-out the answer is FAILED_PRECONDITION,
which is a correct answer, not a failure; the run stops at the sell-out (or at its duration,
which is then reported: a sale that did not sell out proves nothing about "exactly N").
At the end, checked against the orders and against inventory's own counters:

* exactly N orders succeeded (distinct order ids acknowledged to the users);
* inventory holds exactly N units reserved for them and 0 available to promise;
* nothing oversold: reserved never exceeds on hand, on hand is still N.

The stock sits at a location of the run's own (no daily capacity), and the orders are
cancelled after the checks, so repeated runs leave the shared database as they found it.

Run with thousands of users: `make loadtest SCENARIO=flash_sale USERS=2000`.
"""

from __future__ import annotations

import os
import random

import gevent
import grpc
from locust import between, events, task
from locust.env import Environment
from tutti.common.v1 import common_pb2
from tutti.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from tutti.orchestrator.v1 import orchestrator_pb2, orchestrator_pb2_grpc

from loadtests import checks, data
from loadtests.grpc_user import GrpcUser

UNITS = int(os.environ.get("TUTTI_FLASH_UNITS", "100"))
# orders: (channel, order id) acknowledged to the users.
STATE: dict[str, object] = {"sku": None, "orders": set()}
RETRIABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED)


def _admin_stub(environment: Environment) -> tuple[grpc.Channel, inventory_pb2_grpc.InventoryServiceStub]:
    channel = grpc.insecure_channel(environment.host)
    return channel, inventory_pb2_grpc.InventoryServiceStub(channel)


ADMIN = (("authorization", f"Bearer {data.admin_key()}"),)


@events.test_start.add_listener
def stock_the_flash_sku(environment: Environment, **_kwargs: object) -> None:
    sku = data.new_id("FLASH")
    location = data.own_location(f"{sku}-DC")
    dc = location.location_id
    channel, stub = _admin_stub(environment)
    with channel:
        stub.UpsertLocations(
            inventory_pb2.UpsertLocationsRequest(locations=[location]), metadata=ADMIN, timeout=30
        )
        stub.RegisterSkus(
            inventory_pb2.RegisterSkusRequest(
                skus=[
                    inventory_pb2.Sku(
                        sku=sku, name="Doudoune édition limitée", category="jackets", returnable=True
                    )
                ]
            ),
            metadata=ADMIN,
            timeout=30,
        )
        stub.ReceiveStock(
            inventory_pb2.ReceiveStockRequest(
                movement_id=f"{sku}-in",
                location_id=dc,
                lines=[inventory_pb2.ReservationLine(sku=sku, quantity=UNITS)],
                condition=inventory_pb2.STOCK_CONDITION_SELLABLE,
                reason="flash sale load test",
            ),
            metadata=ADMIN,
            timeout=30,
        )
    STATE["sku"] = sku
    checks.log.info("flash sale: %d units of %s at %s", UNITS, sku, dc)


@events.test_stop.add_listener
def check_no_oversell(environment: Environment, **_kwargs: object) -> None:
    sku = STATE["sku"]
    if not sku:
        return
    orders: set[tuple[str, str]] = STATE["orders"]  # type: ignore[assignment]
    channel, stub = _admin_stub(environment)
    with channel:
        levels = stub.GetStockLevels(
            inventory_pb2.GetStockLevelsRequest(sku=str(sku)), metadata=ADMIN, timeout=30
        )
    on_hand = sum(level.counters.on_hand for level in levels.levels)
    reserved = sum(level.counters.reserved for level in levels.levels)
    atp = sum(level.counters.available_to_promise for level in levels.levels)
    summary = f"{len(orders)} orders, on_hand {on_hand}, reserved {reserved}, available {atp} (N={UNITS})"
    if len(orders) < UNITS and atp > 0:
        checks.violation(
            f"flash sale: the run ended before the sell-out, so 'exactly N' cannot be checked; give "
            f"it more users or a longer duration (the run stops by itself once sold out); {summary}"
        )
    elif len(orders) != UNITS:
        checks.violation(f"flash sale: expected exactly {UNITS} successful orders; {summary}")
    if reserved > on_hand:
        checks.violation(f"flash sale OVERSOLD: reserved {reserved} > on hand {on_hand}; {summary}")
    if reserved != UNITS or on_hand != UNITS:
        checks.violation(f"flash sale: inventory should hold {UNITS} reserved of {UNITS}; {summary}")
    if atp != 0:
        checks.violation(f"flash sale: available to promise should be 0 after the sell-out; {summary}")
    if not checks.VIOLATIONS:
        checks.passed(f"flash sale: exactly N sold, none oversold — {summary}")
    checks.log.info("clean-up: %d orders cancelled", data.cancel_orders(environment.host, sorted(orders)))


class FlashSaleShopper(GrpcUser):
    wait_time = between(0.05, 0.5)
    expected = {"PlaceOrder": frozenset({grpc.StatusCode.FAILED_PRECONDITION})}

    def on_start(self) -> None:
        self.rng = random.Random()
        self.channel_name = self.rng.choices(["web", "app", "marketplace"], [6, 3, 1])[0]
        self.api_key = data.channel_key(self.channel_name)
        self.orders = self.stub(orchestrator_pb2_grpc.OrderServiceStub)
        self.customer_id = data.new_id("FAN")

    @task
    def try_to_buy(self) -> None:
        sku = STATE["sku"]
        if not sku:
            return
        request = orchestrator_pb2.PlaceOrderRequest(
            channel=data.CHANNELS[self.channel_name],
            channel_order_id=data.new_id("FS"),
            customer_id=self.customer_id,
            method=common_pb2.DELIVERY_METHOD_HOME_STANDARD,
            address=data.customer_address(self.rng),
            lines=[
                orchestrator_pb2.OrderLineInput(
                    line_id="1", sku=str(sku), quantity=1, unit_price=data.money(14990)
                )
            ],
        )
        # A retry keeps the same channel_order_id: idempotent, never a second order.
        for _attempt in range(3):
            try:
                reply = self.orders.PlaceOrder(request, metadata=self.metadata, timeout=10)
            except grpc.RpcError as exc:
                if exc.code() in RETRIABLE:  # type: ignore[attr-defined]
                    continue
                sold_out = exc.code() == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
                if sold_out and len(STATE["orders"]) >= UNITS and not STATE.get("over"):  # type: ignore[arg-type]
                    # Sold out and every unit's order acknowledged: the sale is over, and with no
                    # call left that could still take a unit, the checks see the final state.
                    # Quit from a greenlet of its own: quitting stops every user, this one too.
                    STATE["over"] = True
                    gevent.spawn(self.environment.runner.quit)
                return  # sold out (expected) or a failure, already reported
            STATE["orders"].add((self.channel_name, reply.order.order_id))  # type: ignore[union-attr]
            # This customer got one; the next one takes their place in the crowd.
            self.customer_id = data.new_id("FAN")
            return
