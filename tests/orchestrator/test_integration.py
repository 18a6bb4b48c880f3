"""The orchestrator end to end on the real servers: PostgreSQL (a schema of its own per run),
Kafka, and the REAL inventory service running in-process on Redis (its own db index)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
import grpc
import pytest
import yaml
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from tutti.common.v1 import common_pb2
from tutti.inventory.v1 import inventory_pb2 as inv
from tutti.inventory.v1 import inventory_pb2_grpc
from tutti.orchestrator.v1 import events_pb2, orchestrator_pb2_grpc
from tutti.orchestrator.v1 import orchestrator_pb2 as pb

from runtime.kafka import ORDER_EVENTS
from runtime.settings import CommonSettings
from services.orchestrator.bootstrap import DEFAULT_RULES, OrchestratorSettings
from services.orchestrator.bootstrap import build as build_orchestrator
from services.orchestrator.service import order_id_for, placement_reservation_ids
from tests.support import (
    RunningService,
    internal_channel,
    internal_credentials,
    random_id,
    read_events,
    running_service,
    wait_for,
)

pytestmark = pytest.mark.integration

PARIS = common_pb2.GeoPoint(latitude=48.8566, longitude=2.3522)
WEB = common_pb2.CHANNEL_WEB
HOME = common_pb2.DELIVERY_METHOD_HOME_STANDARD
COLLECT = common_pb2.DELIVERY_METHOD_CLICK_AND_COLLECT


def east(km: float) -> common_pb2.GeoPoint:
    return common_pb2.GeoPoint(latitude=PARIS.latitude, longitude=PARIS.longitude + km / 73.0)


@pytest.fixture(scope="module")
async def schema(settings: CommonSettings) -> AsyncIterator[str]:
    name = f"orchestrator_test_{random_id('s').split('-')[1]}"
    yield name
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture(scope="module")
async def orchestrator(
    settings: CommonSettings, inventory: RunningService, schema: str
) -> AsyncIterator[RunningService]:
    addresses = {**settings.addresses, "inventory": inventory.address}
    s = dataclasses.replace(settings, addresses=addresses)
    config = OrchestratorSettings(
        accept_timeout_seconds=3600,
        sweep_interval_seconds=3600,
        quote_ttl_seconds=600,
        pool_size=8,
        default_rules=DEFAULT_RULES,
        schema=schema,
        consumer_group=random_id("orchestrator-test"),
    )

    async def build(common: CommonSettings, stack: Any) -> Any:
        return await build_orchestrator(common, stack, config)

    async with running_service(s, build) as svc:
        yield svc


@asynccontextmanager
async def own_orchestrator(
    settings: CommonSettings, inventory: RunningService, **overrides: Any
) -> AsyncIterator[tuple[RunningService, str]]:
    """An orchestrator of the test's own (its schema, group and sweeper settings) in front of the
    module's inventory; yields it and its schema, which is dropped afterwards."""
    schema = f"orchestrator_test_{random_id('t').split('-')[1]}"
    config = OrchestratorSettings(
        **{
            "accept_timeout_seconds": 3600,
            "sweep_interval_seconds": 3600,
            "quote_ttl_seconds": 600,
            "pool_size": 4,
            "default_rules": DEFAULT_RULES,
            "schema": schema,
            "consumer_group": random_id("orchestrator-test"),
            **overrides,
        }
    )

    async def build(common: CommonSettings, stack: Any) -> Any:
        return await build_orchestrator(common, stack, config)

    s = dataclasses.replace(settings, addresses={**settings.addresses, "inventory": inventory.address})
    try:
        async with running_service(s, build) as svc:
            yield svc, schema
    finally:
        conn = await asyncpg.connect(settings.database_url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


@pytest.fixture(scope="module")
async def channels(
    inventory: RunningService, orchestrator: RunningService
) -> AsyncIterator[tuple[grpc.aio.Channel, grpc.aio.Channel]]:
    async with (
        internal_channel(inventory.address) as a,
        internal_channel(orchestrator.address) as b,
    ):
        yield a, b


@pytest.fixture
def stock(channels: tuple[grpc.aio.Channel, grpc.aio.Channel]) -> inventory_pb2_grpc.InventoryServiceStub:
    return inventory_pb2_grpc.InventoryServiceStub(channels[0])


@pytest.fixture
def orders(channels: tuple[grpc.aio.Channel, grpc.aio.Channel]) -> orchestrator_pb2_grpc.OrderServiceStub:
    return orchestrator_pb2_grpc.OrderServiceStub(channels[1])


@pytest.fixture
def rules(channels: tuple[grpc.aio.Channel, grpc.aio.Channel]) -> orchestrator_pb2_grpc.RulesServiceStub:
    return orchestrator_pb2_grpc.RulesServiceStub(channels[1])


@pytest.fixture
async def db(
    settings: CommonSettings, schema: str, orchestrator: RunningService
) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(settings.database_url, server_settings={"search_path": schema})
    yield conn
    await conn.close()


ALL_CAPABILITIES = [
    inv.FULFILMENT_CAPABILITY_SHIP,
    inv.FULFILMENT_CAPABILITY_CLICK_AND_COLLECT,
    inv.FULFILMENT_CAPABILITY_SHIP_FROM_STORE,
    inv.FULFILMENT_CAPABILITY_EXPRESS,
]


async def network(
    stock: inventory_pb2_grpc.InventoryServiceStub,
    stores: dict[str, tuple[float, dict[str, int]]],
) -> dict[str, str]:
    """Creates stores (name -> (km east of Paris, {sku: units})) with fresh ids; returns name -> id."""
    ids = {name: random_id(f"ST-{name}") for name in stores}
    await stock.UpsertLocations(
        inv.UpsertLocationsRequest(
            locations=[
                inv.Location(
                    location_id=ids[name],
                    name=name,
                    type=common_pb2.LOCATION_TYPE_STORE,
                    point=east(km),
                    capabilities=ALL_CAPABILITIES,
                    daily_capacity=500,
                    active=True,
                    time_zone="Europe/Paris",
                )
                for name, (km, _) in stores.items()
            ]
        )
    )
    skus = sorted({sku for _, units in stores.values() for sku in units})
    await stock.RegisterSkus(
        inv.RegisterSkusRequest(skus=[inv.Sku(sku=s, name=s, category="t", returnable=True) for s in skus])
    )
    for name, (_, units) in stores.items():
        if units:
            await stock.ReceiveStock(
                inv.ReceiveStockRequest(
                    movement_id=random_id("rcv"),
                    location_id=ids[name],
                    lines=[inv.ReservationLine(sku=s, quantity=q) for s, q in units.items()],
                )
            )
    return ids


async def available(stock: inventory_pb2_grpc.InventoryServiceStub, sku: str, location_id: str) -> int:
    reply = await stock.GetAvailability(inv.GetAvailabilityRequest(sku=sku, location_ids=[location_id]))
    return sum(loc.available_to_promise for loc in reply.availability.locations)


def order_request(
    skus: dict[str, int], *, method: int = HOME, pickup: str = "", **kw: Any
) -> pb.PlaceOrderRequest:
    return pb.PlaceOrderRequest(
        channel=kw.pop("channel", WEB),
        channel_order_id=kw.pop("channel_order_id", random_id("web")),
        customer_id=kw.pop("customer_id", random_id("cust")),
        method=method,
        address=common_pb2.PostalAddress(
            line1="1 rue de Rivoli", postal_code="75001", city="Paris", country="FR", point=PARIS
        ),
        pickup_location_id=pickup,
        lines=[
            pb.OrderLineInput(line_id=str(i + 1), sku=s, quantity=q) for i, (s, q) in enumerate(skus.items())
        ],
        **kw,
    )


def now_ms() -> int:
    return int(time.time() * 1000)


async def test_place_order_reserves_persists_and_publishes(orders, stock, db, settings) -> None:  # type: ignore[no-untyped-def]
    a, b = random_id("SKU"), random_id("SKU")
    ids = await network(stock, {"near": (2, {a: 5, b: 5}), "far": (30, {a: 5, b: 5})})
    started = now_ms()
    request = order_request({a: 2, b: 1})
    reply = await orders.PlaceOrder(request)
    order = reply.order
    assert not reply.duplicate
    assert order.status == pb.ORDER_STATUS_SOURCED
    assert {li.location_id for li in order.lines} == {ids["near"]}
    assert order.promised_at.seconds > 0 and order.rules_version >= 1
    # Inventory holds the reservation, named after the order.
    reservation = await stock.GetReservation(
        inv.GetReservationRequest(reservation_id=order.lines[0].reservation_id)
    )
    assert reservation.reservation.order_id == order.order_id
    assert {(li.sku, li.location_id, li.open) for li in reservation.reservation.lines} == {
        (a, ids["near"], 2),
        (b, ids["near"], 1),
    }
    assert await available(stock, a, ids["near"]) == 3
    # PostgreSQL holds the order, its lines and the explained decision.
    row = await db.fetchrow("SELECT status, customer_id FROM orders WHERE order_id = $1", order.order_id)
    assert await db.fetchval("SELECT count(*) FROM placements WHERE order_id = $1", order.order_id) == 0
    assert row["status"] == "sourced" and row["customer_id"] == request.customer_id
    assert await db.fetchval("SELECT count(*) FROM order_lines WHERE order_id = $1", order.order_id) == 2
    decision = json.loads(
        await db.fetchval("SELECT decision FROM sourcing_decisions WHERE order_id = $1", order.order_id)
    )
    assert decision["explanation"].startswith(f"{ids['near']} serves all 2 line(s)")
    # Kafka carries the events, keyed by order id, with the conventions tracking relies on.
    events = await read_events(
        settings.kafka_bootstrap,
        ORDER_EVENTS.name,
        lambda e: e.key == order.order_id,
        count=3,
        from_beginning_ms=started,
    )
    assert [e.type for e in events] == [
        "tutti.orchestrator.v1.OrderPlaced",
        "tutti.orchestrator.v1.OrderSourced",
        "tutti.orchestrator.v1.OrderStatusChanged",
    ]
    placed = events_pb2.OrderPlaced()
    events[0].payload.Unpack(placed)
    assert (placed.order_id, placed.customer_id, placed.channel) == (order.order_id, request.customer_id, WEB)
    sourced = events_pb2.OrderSourced()
    events[1].payload.Unpack(sourced)
    assert list(sourced.location_ids) == [ids["near"]] and sourced.decision.explanation

    # A retry returns the same order and reserves nothing more.
    again = await orders.PlaceOrder(request)
    assert again.duplicate and again.order.order_id == order.order_id
    assert await available(stock, a, ids["near"]) == 3
    # The same channel order id with other content is refused.
    changed = pb.PlaceOrderRequest()
    changed.CopyFrom(request)
    changed.lines[0].quantity = 3
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await orders.PlaceOrder(changed)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS

    got = await orders.GetOrder(pb.GetOrderRequest(order_id=order.order_id))
    assert got.order == order
    listed = await orders.ListOrders(pb.ListOrdersRequest(customer_id=request.customer_id))
    assert [o.order_id for o in listed.orders] == [order.order_id]
    explained = await orders.GetSourcingDecision(pb.GetSourcingDecisionRequest(order_id=order.order_id))
    assert len(explained.decisions) == 1
    assert {c.location_id for c in explained.decisions[0].candidates} == set(ids.values())
    assert explained.decisions[0].trigger == pb.SOURCING_TRIGGER_ORDER_PLACED


async def test_a_retry_after_an_attempt_gave_its_stock_back_reserves_again(orders, stock) -> None:  # type: ignore[no-untyped-def]
    """An attempt that reserved and then released (its caller's deadline cancelled it) leaves a
    spent reservation under the order's id: the retry must hold real stock, not that one."""
    a = random_id("SKU")
    ids = await network(stock, {"near": (2, {a: 5})})
    request = order_request({a: 2})
    spent = order_id_for("web", request.channel_order_id)
    await stock.ReserveStock(
        inv.ReserveStockRequest(
            reservation_id=spent, order_id=spent, channel=WEB,
            lines=[inv.ReservationLine(sku=a, location_id=ids["near"], quantity=2)],
        )
    )
    await stock.ReleaseReservation(inv.ReleaseReservationRequest(reservation_id=spent, reason="deadline"))
    assert await available(stock, a, ids["near"]) == 5

    order = (await orders.PlaceOrder(request)).order
    assert order.order_id == spent
    (reservation_id,) = {li.reservation_id for li in order.lines}
    assert reservation_id != spent
    held = (await stock.GetReservation(inv.GetReservationRequest(reservation_id=reservation_id))).reservation
    assert held.status in (inv.RESERVATION_STATUS_HELD, inv.RESERVATION_STATUS_CONFIRMED)
    assert await available(stock, a, ids["near"]) == 3


async def test_unsourceable_order_refused_and_holds_nothing(orders, stock, db) -> None:  # type: ignore[no-untyped-def]
    a, b = random_id("SKU"), random_id("SKU")
    ids = await network(stock, {"s1": (2, {a: 5}), "s2": (3, {b: 1})})
    request = order_request({a: 2, b: 3})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await orders.PlaceOrder(request)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"({b} x3): no eligible location has it available" in caught.value.details()
    assert await available(stock, a, ids["s1"]) == 5
    assert (
        await db.fetchval("SELECT count(*) FROM orders WHERE channel_order_id = $1", request.channel_order_id)
        == 0
    )
    # Refused, it holds nothing, so it leaves nothing for the sweeper either.
    order_id = order_id_for("web", request.channel_order_id)
    assert await db.fetchval("SELECT count(*) FROM placements WHERE order_id = $1", order_id) == 0


async def test_bad_input_names_the_field(orders) -> None:  # type: ignore[no-untyped-def]
    request = order_request({"": 0})
    request.channel = common_pb2.CHANNEL_UNSPECIFIED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await orders.PlaceOrder(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(caught.value)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    status.details[0].Unpack(bad)
    assert {v.field for v in bad.field_violations} >= {"channel", "lines[0].sku", "lines[0].quantity"}
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await orders.GetOrder(pb.GetOrderRequest(order_id="o-nope"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_rejected_lines_are_reallocated(orders, stock, settings) -> None:  # type: ignore[no-untyped-def]
    a = random_id("SKU")
    ids = await network(stock, {"near": (1, {a: 5}), "next": (6, {a: 5})})
    placed = (await orders.PlaceOrder(order_request({a: 2}))).order
    assert placed.lines[0].location_id == ids["near"]
    started = now_ms()
    reply = await orders.UpdateFulfilment(
        pb.UpdateFulfilmentRequest(
            update_id=random_id("upd"),
            order_id=placed.order_id,
            location_id=ids["near"],
            event=pb.FULFILMENT_EVENT_REJECTED,
            line_ids=["1"],
            reason="not found on the shelf",
        )
    )
    line = reply.order.lines[0]
    assert list(reply.reallocated_line_ids) == ["1"]
    assert line.location_id == ids["next"] and line.status == pb.LINE_STATUS_SOURCED
    assert "rejected by" in line.reason and "not found on the shelf" in line.reason
    # The units the rejecting store could not find are not promised again from it: released from
    # the order and quarantined there (until found). The new store's units are held.
    assert await available(stock, a, ids["near"]) == 3
    (level,) = (
        await stock.GetStockLevels(inv.GetStockLevelsRequest(sku=a, location_ids=[ids["near"]]))
    ).levels
    assert (level.counters.reserved, level.counters.quarantined) == (0, 2)
    assert await available(stock, a, ids["next"]) == 3
    decisions = (
        await orders.GetSourcingDecision(pb.GetSourcingDecisionRequest(order_id=placed.order_id))
    ).decisions
    assert [d.trigger for d in decisions] == [pb.SOURCING_TRIGGER_ORDER_PLACED, pb.SOURCING_TRIGGER_REJECTED]
    assert "not found on the shelf" in decisions[1].reason
    rejected = next(c for c in decisions[1].candidates if c.location_id == ids["near"])
    assert not rejected.eligible and "not found on the shelf" in rejected.reason
    events = await read_events(
        settings.kafka_bootstrap,
        ORDER_EVENTS.name,
        lambda e: e.key == placed.order_id and e.type == "tutti.orchestrator.v1.OrderLinesReallocated",
        from_beginning_ms=started,
    )
    moved = events_pb2.OrderLinesReallocated()
    events[0].payload.Unpack(moved)
    assert (moved.from_location_id, list(moved.location_ids)) == (ids["near"], [ids["next"]])
    assert moved.promise_kept and moved.trigger == pb.SOURCING_TRIGGER_REJECTED

    # The second store rejects too: nowhere left, the line is cancelled and nothing held.
    reply = await orders.UpdateFulfilment(
        pb.UpdateFulfilmentRequest(
            update_id=random_id("upd"),
            order_id=placed.order_id,
            location_id=ids["next"],
            event=pb.FULFILMENT_EVENT_REJECTED,
            reason="damaged",
        )
    )
    assert list(reply.cancelled_line_ids) == ["1"]
    assert reply.order.status == pb.ORDER_STATUS_CANCELLED
    # Nothing held any more; the damaged units are out of available stock, in quarantine.
    (level,) = (
        await stock.GetStockLevels(inv.GetStockLevelsRequest(sku=a, location_ids=[ids["next"]]))
    ).levels
    assert (level.counters.reserved, level.counters.quarantined) == (0, 2)
    assert await available(stock, a, ids["next"]) == 3


async def test_location_offline_moves_open_lines(orders, stock) -> None:  # type: ignore[no-untyped-def]
    a = random_id("SKU")
    ids = await network(stock, {"near": (1, {a: 5}), "next": (6, {a: 5})})
    placed = (await orders.PlaceOrder(order_request({a: 1}))).order
    reply = await orders.ReportLocationOffline(
        pb.ReportLocationOfflineRequest(location_id=ids["near"], reason="power cut")
    )
    assert list(reply.reallocated_order_ids) == [placed.order_id]
    order = (await orders.GetOrder(pb.GetOrderRequest(order_id=placed.order_id))).order
    assert order.lines[0].location_id == ids["next"]
    assert "went offline: power cut" in order.lines[0].reason


async def test_cancellation_releases_stock(orders, stock, settings) -> None:  # type: ignore[no-untyped-def]
    a, b = random_id("SKU"), random_id("SKU")
    ids = await network(stock, {"s": (1, {a: 5, b: 5})})
    placed = (await orders.PlaceOrder(order_request({a: 2, b: 3}))).order
    assert await available(stock, b, ids["s"]) == 2
    started = now_ms()
    one = (
        await orders.CancelOrder(
            pb.CancelOrderRequest(order_id=placed.order_id, line_ids=["2"], reason="customer changed mind")
        )
    ).order
    assert [li.status for li in one.lines] == [pb.LINE_STATUS_SOURCED, pb.LINE_STATUS_CANCELLED]
    assert await available(stock, b, ids["s"]) == 5
    assert await available(stock, a, ids["s"]) == 3
    # A retry changes nothing.
    await orders.CancelOrder(pb.CancelOrderRequest(order_id=placed.order_id, line_ids=["2"]))
    assert await available(stock, b, ids["s"]) == 5
    whole = (await orders.CancelOrder(pb.CancelOrderRequest(order_id=placed.order_id))).order
    assert whole.status == pb.ORDER_STATUS_CANCELLED
    assert await available(stock, a, ids["s"]) == 5
    events = await read_events(
        settings.kafka_bootstrap,
        ORDER_EVENTS.name,
        lambda e: e.key == placed.order_id and e.type == "tutti.orchestrator.v1.OrderLinesCancelled",
        count=2,
        from_beginning_ms=started,
    )
    last = events_pb2.OrderLinesCancelled()
    events[1].payload.Unpack(last)
    assert last.whole_order and list(last.line_ids) == ["1"]


async def test_fulfilment_moves_state_and_stock(orders, stock) -> None:  # type: ignore[no-untyped-def]
    a = random_id("SKU")
    ids = await network(stock, {"s": (1, {a: 5})})
    placed = (await orders.PlaceOrder(order_request({a: 2}))).order
    statuses = []
    for event in (
        pb.FULFILMENT_EVENT_ACCEPTED,
        pb.FULFILMENT_EVENT_PICKED,
        pb.FULFILMENT_EVENT_PACKED,
        pb.FULFILMENT_EVENT_SHIPPED,
        pb.FULFILMENT_EVENT_SHIPPED,
        pb.FULFILMENT_EVENT_DELIVERED,
    ):
        reply = await orders.UpdateFulfilment(
            pb.UpdateFulfilmentRequest(
                order_id=placed.order_id, location_id=ids["s"], event=event, update_id=random_id("upd")
            )
        )
        statuses.append(reply.order.status)
    assert statuses == [
        pb.ORDER_STATUS_ACCEPTED,
        pb.ORDER_STATUS_PICKING,
        pb.ORDER_STATUS_PICKING,
        pb.ORDER_STATUS_SHIPPED,
        pb.ORDER_STATUS_SHIPPED,
        pb.ORDER_STATUS_DELIVERED,
    ]
    levels = await stock.GetStockLevels(inv.GetStockLevelsRequest(sku=a, location_ids=[ids["s"]]))
    assert (levels.levels[0].counters.on_hand, levels.levels[0].counters.reserved) == (3, 0)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await orders.CancelOrder(pb.CancelOrderRequest(order_id=placed.order_id, line_ids=["1"]))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await orders.UpdateFulfilment(
            pb.UpdateFulfilmentRequest(
                update_id=random_id("upd"),
                order_id=placed.order_id,
                location_id=ids["s"],
                event=pb.FULFILMENT_EVENT_ACCEPTED,
                line_ids=["1"],
            )
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_click_and_collect_quote_place_and_collect(orders, stock) -> None:  # type: ignore[no-untyped-def]
    a = random_id("SKU")
    ids = await network(stock, {"chosen": (4, {a: 3}), "other": (1, {a: 9})})
    quote = await orders.QuoteDelivery(
        pb.QuoteDeliveryRequest(
            channel=WEB,
            pickup_location_id=ids["chosen"],
            address=common_pb2.PostalAddress(point=PARIS),
            lines=[pb.OrderLineInput(line_id="1", sku=a, quantity=2)],
        )
    )
    by_method = {o.method: o for o in quote.options}
    assert COLLECT in by_method and HOME in by_method
    assert list(by_method[COLLECT].location_ids) == [ids["chosen"]]
    placed = (
        await orders.PlaceOrder(
            order_request({a: 2}, method=COLLECT, pickup=ids["chosen"], quote_id=quote.quote_id)
        )
    ).order
    assert placed.promised_at == by_method[COLLECT].promised_at
    assert placed.quote_id == quote.quote_id
    for event in (
        pb.FULFILMENT_EVENT_ACCEPTED,
        pb.FULFILMENT_EVENT_READY_FOR_PICKUP,
        pb.FULFILMENT_EVENT_COLLECTED,
    ):
        reply = await orders.UpdateFulfilment(
            pb.UpdateFulfilmentRequest(
                order_id=placed.order_id, location_id=ids["chosen"], event=event, update_id=random_id("upd")
            )
        )
    assert reply.order.status == pb.ORDER_STATUS_COLLECTED
    levels = await stock.GetStockLevels(inv.GetStockLevelsRequest(sku=a, location_ids=[ids["chosen"]]))
    assert (levels.levels[0].counters.on_hand, levels.levels[0].counters.reserved) == (1, 0)
    # A quote for other lines cannot be used.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await orders.PlaceOrder(
            order_request({a: 1}, method=COLLECT, pickup=ids["chosen"], quote_id=quote.quote_id)
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "differ from quote" in caught.value.details()


async def test_watch_order_streams_changes(orders, stock) -> None:  # type: ignore[no-untyped-def]
    a = random_id("SKU")
    ids = await network(stock, {"s": (1, {a: 5})})
    placed = (await orders.PlaceOrder(order_request({a: 1}))).order
    stream = orders.WatchOrder(pb.WatchOrderRequest(order_id=placed.order_id))
    first = await stream.read()
    assert first.order.status == pb.ORDER_STATUS_SOURCED
    await orders.CancelOrder(pb.CancelOrderRequest(order_id=placed.order_id))
    second = await stream.read()
    assert second.order.status == pb.ORDER_STATUS_CANCELLED
    assert await stream.read() == grpc.aio.EOF
    assert ids


async def test_rule_validation_errors(rules) -> None:  # type: ignore[no-untyped-def]
    doc = yaml.safe_load(DEFAULT_RULES.read_text())
    doc["weights"]["distnce"] = 2
    doc["split"]["max_splits"] = 0
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await rules.CreateDraftRules(pb.CreateDraftRulesRequest(document=yaml.safe_dump(doc)))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "weights.distnce: unknown field" in caught.value.details()
    report = await rules.ValidateRules(pb.ValidateRulesRequest(document=yaml.safe_dump(doc)))
    assert not report.valid
    assert {v.field for v in report.violations} == {"weights.distnce", "split.max_splits"}
    broken = await rules.ValidateRules(pb.ValidateRulesRequest(document="weights: [1,\n"))
    assert not broken.valid and "not valid YAML or JSON" in broken.violations[0].description


async def test_a_retried_draft_is_stored_once(rules) -> None:  # type: ignore[no-untyped-def]
    document = DEFAULT_RULES.read_text()
    key = random_id("draft")
    first = await rules.CreateDraftRules(pb.CreateDraftRulesRequest(document=document, request_id=key))
    again = await rules.CreateDraftRules(pb.CreateDraftRulesRequest(document=document, request_id=key))
    assert again.version.version == first.version.version
    other = await rules.CreateDraftRules(pb.CreateDraftRulesRequest(document=document))
    assert other.version.version > first.version.version  # no key: a new draft each time
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await rules.CreateDraftRules(
            pb.CreateDraftRulesRequest(document=document + "\n# changed\n", request_id=key)
        )
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await rules.CreateDraftRules(pb.CreateDraftRulesRequest(document=document, request_id="bad id!"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_rules_versioning_publish_and_rollback(rules) -> None:  # type: ignore[no-untyped-def]
    live = (await rules.GetRules(pb.GetRulesRequest())).version
    doc = yaml.safe_load(DEFAULT_RULES.read_text())
    doc["name"] = "Default, renamed"
    draft = (
        await rules.CreateDraftRules(
            pb.CreateDraftRulesRequest(document=json.dumps(doc), author="ops", comment="rename")
        )
    ).version
    assert draft.status == pb.RULE_VERSION_STATUS_DRAFT
    published = (await rules.PublishRules(pb.PublishRulesRequest(version=draft.version))).version
    assert published.status == pb.RULE_VERSION_STATUS_LIVE
    assert (await rules.GetRules(pb.GetRulesRequest())).version.version == draft.version
    back = (await rules.RollbackRules(pb.RollbackRulesRequest())).version
    assert back.version == live.version and back.status == pb.RULE_VERSION_STATUS_LIVE
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await rules.PublishRules(pb.PublishRulesRequest(version=draft.version))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    versions = (await rules.ListRuleVersions(pb.ListRuleVersionsRequest())).versions
    listed = [v.version for v in versions]  # newest first; other tests add drafts of their own
    assert listed[0] == draft.version and live.version in listed and listed == sorted(listed, reverse=True)


async def test_publishing_rules_naming_a_location_inventory_does_not_know_is_refused_naming_the_field(
    rules: orchestrator_pb2_grpc.RulesServiceStub, stock: inventory_pb2_grpc.InventoryServiceStub
) -> None:
    ids = await network(stock, {"known": (1.0, {random_id("SKU"): 1})})
    doc = yaml.safe_load(DEFAULT_RULES.read_text())
    ghost = random_id("ST-ghost")
    doc["eligibility"][1]["exclude_locations"] = [ids["known"], ghost]
    doc["store_priority"]["locations"] = {ghost: 0.9}
    draft = (await rules.CreateDraftRules(pb.CreateDraftRulesRequest(document=yaml.safe_dump(doc)))).version
    live = (await rules.GetRules(pb.GetRulesRequest())).version.version
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await rules.PublishRules(pb.PublishRulesRequest(version=draft.version))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    first = f"eligibility[1].exclude_locations[1]: {ghost!r} is not a location"
    assert caught.value.details().startswith(first)
    status = rpc_status.from_call(caught.value)
    bad = error_details_pb2.BadRequest()
    status.details[0].Unpack(bad)
    assert [v.field for v in bad.field_violations] == [
        "eligibility[1].exclude_locations[1]",
        f"store_priority.locations.{ghost}",
    ]
    assert (await rules.GetRules(pb.GetRulesRequest())).version.version == live  # nothing published
    doc["eligibility"][1]["exclude_locations"] = [ids["known"]]
    doc["store_priority"]["locations"] = {ids["known"]: 0.9}
    fixed = (await rules.CreateDraftRules(pb.CreateDraftRulesRequest(document=yaml.safe_dump(doc)))).version
    published = (await rules.PublishRules(pb.PublishRulesRequest(version=fixed.version))).version
    assert published.status == pb.RULE_VERSION_STATUS_LIVE
    await rules.RollbackRules(pb.RollbackRulesRequest(version=live))


async def test_simulation_report(orders, rules, stock) -> None:  # type: ignore[no-untyped-def]
    a, b = random_id("SKU"), random_id("SKU")
    ids = await network(stock, {"sa": (1, {a: 50}), "sb": (2, {b: 50})})
    placed = [(await orders.PlaceOrder(order_request({a: 1, b: 1}))).order for _ in range(3)]
    assert all(len({li.location_id for li in o.lines}) == 2 for o in placed)
    before = {(a, ids["sa"]): await available(stock, a, ids["sa"])}
    doc = yaml.safe_load(DEFAULT_RULES.read_text())
    doc["name"] = "No splits"
    doc["split"] = {"max_splits": 1, "keep_together": True}
    doc["fallbacks"] = []
    draft = (await rules.CreateDraftRules(pb.CreateDraftRulesRequest(document=yaml.safe_dump(doc)))).version
    report = await rules.SimulateRules(pb.SimulateRulesRequest(version=draft.version, order_count=3))
    assert report.draft_version == draft.version
    assert report.live.orders == 3 and report.live.split_orders == 3 and report.live.shipments == 6
    assert report.draft.unsourced == 3 and report.changed_orders == 3
    assert {e.order_id for e in report.examples} == {o.order_id for o in placed}
    assert {(x.location_id, x.live_lines, x.draft_lines) for x in report.load} == {
        (ids["sa"], 3, 0),
        (ids["sb"], 3, 0),
    }
    assert any(s.startswith("split orders: -3") for s in report.summary)
    # Nothing was reserved by the simulation.
    assert {(a, ids["sa"]): await available(stock, a, ids["sa"])} == before
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await rules.SimulateRules(pb.SimulateRulesRequest(version=draft.version, order_count=20_000))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_health_serving(orchestrator) -> None:  # type: ignore[no-untyped-def]
    from tools.stack import health

    credentials = internal_credentials()

    async def state() -> str:
        return await health(orchestrator.address, credentials=credentials)

    assert await wait_for(state, message="orchestrator health") == "serving"


async def test_concurrent_retries_place_one_order(orders, stock) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    a = random_id("SKU")
    ids = await network(stock, {"s": (1, {a: 10})})
    request = order_request({a: 2})
    replies = await asyncio.gather(*(orders.PlaceOrder(request) for _ in range(5)))
    assert len({r.order.order_id for r in replies}) == 1
    assert sorted(r.duplicate for r in replies) == [False, True, True, True, True]
    assert await available(stock, a, ids["s"]) == 8


async def test_lines_not_accepted_in_time_are_reallocated(settings, inventory, stock) -> None:  # type: ignore[no-untyped-def]
    a = random_id("SKU")
    ids = await network(stock, {"slow": (1, {a: 5}), "quick": (6, {a: 5})})
    own = own_orchestrator(settings, inventory, accept_timeout_seconds=1, sweep_interval_seconds=0.2)
    async with own as (svc, _), internal_channel(svc.address) as ch:
        stub = orchestrator_pb2_grpc.OrderServiceStub(ch)
        placed = (await stub.PlaceOrder(order_request({a: 1}))).order
        assert placed.lines[0].location_id == ids["slow"]

        async def moved() -> pb.Order | None:
            order = (await stub.GetOrder(pb.GetOrderRequest(order_id=placed.order_id))).order
            return order if order.lines[0].location_id == ids["quick"] else None

        order = await wait_for(moved, timeout=15, message="line re-sourced after the accept timeout")
        assert "did not accept within 1 s" in order.lines[0].reason
        assert await available(stock, a, ids["slow"]) == 5
        # The new store accepts in time: the line stays.
        await stub.UpdateFulfilment(
            pb.UpdateFulfilmentRequest(
                update_id=random_id("upd"),
                order_id=placed.order_id, location_id=ids["quick"], event=pb.FULFILMENT_EVENT_ACCEPTED
            )
        )
        decisions = (
            await stub.GetSourcingDecision(pb.GetSourcingDecisionRequest(order_id=placed.order_id))
        ).decisions
        assert decisions[-1].trigger == pb.SOURCING_TRIGGER_ACCEPT_TIMEOUT


async def test_re_sourcing_refused_for_good_is_parked_not_retried_and_done_once_retried_after_the_fix(
    settings: CommonSettings, inventory: RunningService, stock: inventory_pb2_grpc.InventoryServiceStub
) -> None:
    from redis.asyncio import Redis

    from tests.orchestrator.conftest import INVENTORY_REDIS_DB

    a = random_id("SKU")
    ids = await network(stock, {"slow": (1, {a: 5}), "quick": (6, {a: 5})})
    redis = Redis.from_url(settings.redis_url.rsplit("/", 1)[0] + f"/{INVENTORY_REDIS_DB}")
    own = own_orchestrator(settings, inventory, accept_timeout_seconds=1, sweep_interval_seconds=0.2)
    try:
        async with own as (svc, _), internal_channel(svc.address) as ch:
            stub = orchestrator_pb2_grpc.OrderServiceStub(ch)
            placed = (await stub.PlaceOrder(order_request({a: 1}))).order
            assert placed.lines[0].location_id == ids["slow"]
            # Inventory forgets the SKU (its data reset under an orchestrator that kept its orders).
            entry = await redis.hget("inv:skus", a)
            await redis.hdel("inv:skus", a)

            async def parked() -> list[pb.ParkedTask]:
                reply = await stub.ListParkedTasks(pb.ListParkedTasksRequest())
                return [t for t in reply.tasks if t.order_id == placed.order_id]

            [task] = await wait_for(parked, timeout=15, message="re-sourcing parked")
            assert task.kind == "accept_timeout" and task.location_id == ids["slow"]
            assert f"unknown SKU {a}" in task.reason  # why, as inventory said it
            await asyncio.sleep(1.0)  # five sweeps: a parked task is not retried
            assert [t.attempts for t in await parked()] == [1]

            still = await stub.RetryParkedTask(pb.RetryParkedTaskRequest(task_id=task.task_id))
            assert still.state == pb.TASK_STATE_PARKED and a in still.reason
            await redis.hset("inv:skus", a, entry)  # the fix
            done = await stub.RetryParkedTask(pb.RetryParkedTaskRequest(task_id=task.task_id))
            assert (done.state, done.reason) == (pb.TASK_STATE_DONE, "")
            again = await stub.RetryParkedTask(pb.RetryParkedTaskRequest(task_id=task.task_id))
            assert again.state == pb.TASK_STATE_DONE  # idempotent
            order = (await stub.GetOrder(pb.GetOrderRequest(order_id=placed.order_id))).order
            assert order.lines[0].location_id == ids["quick"]
            assert await parked() == []
    finally:
        await redis.aclose()


async def test_location_deactivated_in_inventory_moves_open_lines(orders, stock) -> None:  # type: ignore[no-untyped-def]
    a = random_id("SKU")
    ids = await network(stock, {"near": (1, {a: 5}), "next": (6, {a: 5})})
    placed = (await orders.PlaceOrder(order_request({a: 1}))).order
    assert placed.lines[0].location_id == ids["near"]
    near = (await stock.GetLocation(inv.GetLocationRequest(location_id=ids["near"]))).location
    near.active = False
    await stock.UpsertLocations(inv.UpsertLocationsRequest(locations=[near]))

    async def moved() -> pb.Order | None:
        order = (await orders.GetOrder(pb.GetOrderRequest(order_id=placed.order_id))).order
        return order if order.lines[0].location_id == ids["next"] else None

    order = await wait_for(moved, timeout=60, message="line re-sourced after the location was deactivated")
    assert "deactivated in inventory" in order.lines[0].reason


async def test_concurrent_orders_never_oversell_and_re_source(orders, stock) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    a = random_id("SKU")
    ids = await network(stock, {"near": (1, {a: 3}), "far": (9, {a: 20})})
    replies = await asyncio.gather(*(orders.PlaceOrder(order_request({a: 1})) for _ in range(6)))
    served = [r.order.lines[0].location_id for r in replies]
    levels = await stock.GetStockLevels(inv.GetStockLevelsRequest(sku=a))
    reserved = {lv.location_id: lv.counters.reserved for lv in levels.levels}
    # Every order is served; the near store never gives more than it has (orders that lost the
    # race for it were re-sourced to the far store), and what orders say matches inventory.
    assert reserved[ids["near"]] <= 3
    assert reserved == {loc: served.count(loc) for loc in set(served)} | {
        loc: 0 for loc in ids.values() if loc not in served
    }
    assert sum(reserved.values()) == 6


async def test_stock_held_by_a_placement_that_died_before_recording_its_order_is_given_back(  # type: ignore[no-untyped-def]
    settings, inventory, stock
) -> None:
    """A PlaceOrder killed between its reservation and its commit leaves units held with no
    order. The sweeper gives them back once the placement is abandoned — not while another
    process is still placing that order — and the channel's retry then holds fresh stock."""
    from services.orchestrator.adapters import postgres as pg
    from services.orchestrator.service import _placement_lock

    a = random_id("SKU")
    ids = await network(stock, {"near": (2, {a: 5})})
    dead, live = order_request({a: 2}), order_request({a: 1})
    own = own_orchestrator(settings, inventory, sweep_interval_seconds=0.2, abandoned_placement_seconds=1)
    async with own as (svc, schema), internal_channel(svc.address) as ch:
        conn = await asyncpg.connect(settings.database_url, server_settings={"search_path": schema})
        try:
            # The second one is still being placed somewhere: its lock is held.
            live_lock = _placement_lock(order_id_for("web", live.channel_order_id))
            await conn.execute("SELECT pg_advisory_lock($1)", live_lock)
            # What each leaves behind, exactly as PlaceOrder writes it: the placement row,
            # committed, then the reservation under the placement's first id. The live one
            # starts first, so any sweep that releases the dead one has passed over it.
            for request in (live, dead):
                order_id = order_id_for("web", request.channel_order_id)
                generation = await pg.placement_generation(conn, order_id)
                await pg.begin_placement(conn, order_id, generation, datetime.now(UTC))
                await stock.ReserveStock(
                    inv.ReserveStockRequest(
                        reservation_id=placement_reservation_ids(order_id, generation)[0],
                        order_id=order_id,
                        channel=WEB,
                        lines=[
                            inv.ReservationLine(sku=a, location_id=ids["near"], quantity=li.quantity)
                            for li in request.lines
                        ],
                    )
                )
            assert await available(stock, a, ids["near"]) == 2

            async def released() -> bool:
                # Marked once its reservations are given back.
                return await conn.fetchval(
                    "SELECT released_at IS NOT NULL FROM placements WHERE order_id = $1",
                    order_id_for("web", dead.channel_order_id),
                )

            await wait_for(released, timeout=15, message="the dead placement released")
            assert await available(stock, a, ids["near"]) == 4  # the live one still holds its unit

            # The channel retries the dead order: it is placed on fresh reservation ids.
            stub = orchestrator_pb2_grpc.OrderServiceStub(ch)
            order = (await stub.PlaceOrder(dead)).order
            (reservation_id,) = {li.reservation_id for li in order.lines}
            assert reservation_id == placement_reservation_ids(order.order_id, 2)[0]
            assert await available(stock, a, ids["near"]) == 2
            left = await conn.fetchval(
                "SELECT count(*) FROM placements WHERE order_id = $1", order.order_id
            )
            assert left == 0

            # The other process dies too: its lock goes, and so does the unit it held.
            await conn.execute("SELECT pg_advisory_unlock($1)", live_lock)

            async def live_given_back() -> bool:
                return await available(stock, a, ids["near"]) == 3

            await wait_for(live_given_back, timeout=15, message="the second placement's unit given back")
        finally:
            await conn.close()
