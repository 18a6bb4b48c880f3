"""Tracking against the real Kafka and PostgreSQL: events published on the order and return
topics become timelines, searches, watch streams and KPIs read over gRPC."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2
from tutti.common.v1 import common_pb2
from tutti.events.v1 import envelope_pb2
from tutti.inventory.v1 import events_pb2 as inventory_events_pb2
from tutti.orchestrator.v1 import events_pb2 as orders_events_pb2
from tutti.orchestrator.v1 import orchestrator_pb2
from tutti.returns.v1 import events_pb2 as returns_events_pb2
from tutti.tracking.v1 import tracking_pb2, tracking_pb2_grpc

from runtime.kafka import (
    INVENTORY_MOVEMENTS,
    ORDER_EVENTS,
    RETURN_EVENTS,
    EventPublisher,
    build_envelope,
    create_producer,
)
from runtime.settings import CommonSettings
from services.tracking.bootstrap import build
from tests.support import internal_channel, random_id, running_service, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def tracking(settings: CommonSettings) -> AsyncIterator[tracking_pb2_grpc.TrackingServiceStub]:
    async with (
        running_service(CommonSettings.from_env("tracking"), build) as service,
        internal_channel(service.address) as channel,
    ):
        yield tracking_pb2_grpc.TrackingServiceStub(channel)


@pytest.fixture(scope="module")
async def publisher(settings: CommonSettings) -> AsyncIterator[EventPublisher]:
    producer = create_producer(settings.kafka_bootstrap, "tests-tracking")
    await producer.start()
    try:
        yield EventPublisher(producer, "tests")
    finally:
        await producer.stop()


def order_event(
    order_id: str, name: str, occurred_at: datetime, sequence: int = 0, **fields: Any
) -> envelope_pb2.EventEnvelope:
    """An orchestrator-like event: a Struct payload under the event type the orchestrator would use."""
    payload = struct_pb2.Struct()
    payload.update({"order_id": order_id, **fields})
    envelope = build_envelope(
        payload, source="orchestrator", key=order_id, occurred_at=occurred_at, sequence=sequence
    )
    envelope.type = f"tutti.orchestrator.v1.{name}"
    return envelope


async def timeline_of(
    stub: tracking_pb2_grpc.TrackingServiceStub, order_id: str, count: int
) -> tracking_pb2.GetOrderTimelineResponse:
    async def enough() -> tracking_pb2.GetOrderTimelineResponse | None:
        try:
            reply = await stub.GetOrderTimeline(tracking_pb2.GetOrderTimelineRequest(order_id=order_id))
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return reply if len(reply.entries) >= count else None

    return await wait_for(enough, timeout=30, interval=0.1, message=f"{count} entries for {order_id}")


def random_past_hour() -> datetime:
    """An hour of 2001 nobody else writes to, so KPI sums of that hour are this test's alone."""
    return datetime(2001, 1, 1, tzinfo=UTC) + timedelta(hours=random.randrange(365 * 24))


async def test_placing_an_order_produces_a_timeline_in_order_and_timestamped(tracking, publisher) -> None:
    order_id, customer_id = random_id("order"), random_id("cust")
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    steps = [
        ("OrderPlaced", {"customer_id": customer_id, "channel": "CHANNEL_WEB"}),
        (
            "OrderSourced",
            {"location_id": "store-lyon", "explanation": "nearest store with all lines in stock"},
        ),
        ("StockReserved", {"location_id": "store-lyon"}),
        ("OrderAccepted", {"location_id": "store-lyon"}),
        ("OrderPicked", {}),
        ("OrderReadyForCollection", {"location_id": "store-lyon"}),
        ("OrderCollected", {}),
    ]
    sent = []
    for i, (name, fields) in enumerate(steps):
        envelope = order_event(order_id, name, t0 + timedelta(minutes=i), sequence=i + 1, **fields)
        await publisher.publish_envelope(ORDER_EVENTS, envelope)
        sent.append(envelope)

    reply = await timeline_of(tracking, order_id, len(steps))

    assert [e.step for e in reply.entries] == [
        "placed",
        "sourced",
        "reserved",
        "accepted",
        "picked",
        "ready",
        "collected",
    ]
    assert [e.event_id for e in reply.entries] == [e.event_id for e in sent]
    assert [e.occurred_at.ToDatetime(tzinfo=UTC) for e in reply.entries] == [
        t0 + timedelta(minutes=i) for i in range(len(steps))
    ]
    assert all(e.received_at.seconds > 0 and e.source == "orchestrator" for e in reply.entries)
    sourced = reply.entries[1]
    assert sourced.type == "tutti.orchestrator.v1.OrderSourced"
    assert sourced.explanation == "nearest store with all lines in stock"
    assert list(sourced.location_ids) == ["store-lyon"]
    assert json_format.MessageToDict(sourced.details)["location_id"] == "store-lyon"
    assert reply.order.status == "collected"
    assert reply.order.customer_id == customer_id
    assert reply.order.channel == common_pb2.CHANNEL_WEB
    assert reply.order.entry_count == len(steps)
    assert reply.order.placed_at.ToDatetime(tzinfo=UTC) == t0


def _ts(moment: datetime) -> Any:
    from google.protobuf import timestamp_pb2

    out = timestamp_pb2.Timestamp()
    out.FromDatetime(moment)
    return out


async def test_the_orchestrators_own_events_build_the_timeline_and_kpis(tracking, publisher) -> None:
    order_id, customer_id, store = random_id("order"), random_id("cust"), random_id("store")
    hour = random_past_hour()
    eur = lambda minor: common_pb2.Money(currency="EUR", amount_minor=minor)  # noqa: E731
    placed = orders_events_pb2.OrderPlaced(
        order_id=order_id,
        customer_id=customer_id,
        channel=common_pb2.CHANNEL_CALL_CENTRE,
        method=common_pb2.DELIVERY_METHOD_CLICK_AND_COLLECT,
        pickup_location_id=store,
        promised_at=_ts(hour + timedelta(minutes=30)),
        placed_at=_ts(hour),
    )
    sourced = orders_events_pb2.OrderSourced(
        order_id=order_id,
        location_ids=[store],
        decision=orchestrator_pb2.SourcingDecision(
            order_id=order_id,
            sourced=True,
            explanation=f"{store} holds every line 1.2 km from the customer",
            shipments=[orchestrator_pb2.ShipmentPlan(location_id=store, cost=eur(120))],
            candidates=[orchestrator_pb2.CandidateScore(location_id="far-away-dc", cost=eur(900))],
        ),
    )
    fulfilment = [
        (orchestrator_pb2.FULFILMENT_EVENT_ACCEPTED, 2),
        (orchestrator_pb2.FULFILMENT_EVENT_PICKED, 10),
        (orchestrator_pb2.FULFILMENT_EVENT_READY_FOR_PICKUP, 20),
    ]
    await publisher.publish(ORDER_EVENTS, placed, key=order_id, occurred_at=hour, sequence=1)
    await publisher.publish(
        ORDER_EVENTS, sourced, key=order_id, occurred_at=hour + timedelta(minutes=1), sequence=2
    )
    for seq, (event, minute) in enumerate(fulfilment, start=3):
        update = orders_events_pb2.OrderFulfilmentUpdated(order_id=order_id, location_id=store, event=event)
        await publisher.publish(
            ORDER_EVENTS, update, key=order_id, occurred_at=hour + timedelta(minutes=minute), sequence=seq
        )
    status = orders_events_pb2.OrderStatusChanged(
        order_id=order_id,
        previous_status=orchestrator_pb2.ORDER_STATUS_PICKING,
        status=orchestrator_pb2.ORDER_STATUS_READY_FOR_PICKUP,
        location_ids=[store],
        customer_id=customer_id,
        channel=common_pb2.CHANNEL_CALL_CENTRE,
    )
    await publisher.publish(
        ORDER_EVENTS, status, key=order_id, occurred_at=hour + timedelta(minutes=20), sequence=6
    )

    reply = await timeline_of(tracking, order_id, 6)

    assert [e.step for e in reply.entries] == ["placed", "sourced", "accepted", "picked", "ready", "ready"]
    assert reply.entries[1].explanation == f"{store} holds every line 1.2 km from the customer"
    assert list(reply.order.location_ids) == [store]  # the candidate considered is not involved
    assert reply.order.status == "ready"
    assert reply.order.channel == common_pb2.CHANNEL_CALL_CENTRE

    by_store = await tracking.SearchOrders(tracking_pb2.SearchOrdersRequest(location_id=store))
    assert [o.order_id for o in by_store.orders] == [order_id]

    window = tracking_pb2.GetKpisRequest(channel=common_pb2.CHANNEL_CALL_CENTRE)
    window.start_time.FromDatetime(hour)
    window.end_time.FromDatetime(hour + timedelta(hours=1))
    kpis = (await tracking.GetKpis(window)).total
    assert (kpis.orders_placed, kpis.orders_prepared, kpis.orders_on_time, kpis.orders_late) == (1, 1, 1, 0)
    assert kpis.average_preparation_time.ToTimedelta() == timedelta(minutes=20)
    assert [(m.currency, m.amount_minor) for m in kpis.average_cost_per_order] == [("EUR", 120)]


async def test_a_duplicated_event_leaves_the_timeline_unchanged(tracking, publisher) -> None:
    order_id = random_id("order")
    t0 = datetime.now(UTC)
    placed = order_event(order_id, "OrderPlaced", t0, customer_id=random_id("cust"), channel="CHANNEL_APP")
    await publisher.publish_envelope(ORDER_EVENTS, placed)
    before = await timeline_of(tracking, order_id, 1)

    await publisher.publish_envelope(ORDER_EVENTS, placed)
    await publisher.publish_envelope(ORDER_EVENTS, placed)
    # Same partition, published after the duplicates: once it shows, they were handled.
    await publisher.publish_envelope(
        ORDER_EVENTS, order_event(order_id, "OrderCancelled", t0 + timedelta(seconds=1))
    )
    after = await timeline_of(tracking, order_id, 2)

    assert [e.step for e in after.entries] == ["placed", "cancelled"]
    assert after.entries[0] == before.entries[0]
    assert after.order.entry_count == 2


async def test_out_of_order_delivery_still_reads_in_occurred_at_order(tracking, publisher) -> None:
    order_id = random_id("order")
    t0 = datetime.now(UTC) - timedelta(hours=1)
    shipped = order_event(order_id, "OrderShipped", t0 + timedelta(minutes=20), location_id="dc-north")
    picked = order_event(order_id, "OrderPicked", t0 + timedelta(minutes=10), location_id="dc-north")
    placed = order_event(order_id, "OrderPlaced", t0, customer_id=random_id("cust"), channel="CHANNEL_WEB")
    for envelope in (shipped, picked, placed):
        await publisher.publish_envelope(ORDER_EVENTS, envelope)

    reply = await timeline_of(tracking, order_id, 3)

    assert [e.step for e in reply.entries] == ["placed", "picked", "shipped"]
    assert reply.order.status == "shipped"
    # Learnt from the placing event although it arrived last.
    assert reply.order.channel == common_pb2.CHANNEL_WEB


async def test_return_events_join_the_order_timeline(tracking, publisher) -> None:
    order_id, return_id = random_id("order"), random_id("rma")
    t0 = datetime.now(UTC) - timedelta(days=2)
    await publisher.publish_envelope(
        ORDER_EVENTS, order_event(order_id, "OrderPlaced", t0, channel="CHANNEL_WEB")
    )
    requested = returns_events_pb2.ReturnRequested(
        order_id=order_id, return_id=return_id, location_id="store-paris", channel=common_pb2.CHANNEL_STORE
    )
    await publisher.publish(RETURN_EVENTS, requested, key=order_id, occurred_at=t0 + timedelta(days=1))
    refunded = returns_events_pb2.RefundIssued(
        order_id=order_id, return_id=return_id, location_id="store-paris"
    )
    await publisher.publish(
        RETURN_EVENTS, refunded, key=order_id, occurred_at=t0 + timedelta(days=1, hours=1)
    )

    reply = await timeline_of(tracking, order_id, 3)

    assert [e.step for e in reply.entries] == ["placed", "return_requested", "refunded"]
    assert reply.entries[1].return_id == return_id
    assert reply.entries[1].type == "tutti.returns.v1.ReturnRequested"
    assert json_format.MessageToDict(reply.entries[1].details)["channel"] == "CHANNEL_STORE"
    assert reply.order.channel == common_pb2.CHANNEL_WEB
    assert "store-paris" in reply.order.location_ids


async def test_unknown_event_types_still_get_an_entry(tracking, publisher) -> None:
    order_id = random_id("order")
    envelope = order_event(order_id, "OrderPlaced", datetime.now(UTC))
    envelope.type = "tutti.future.v9.OrderTeleported"
    envelope.payload.type_url = "type.tutti.dev/tutti.future.v9.OrderTeleported"
    await publisher.publish_envelope(ORDER_EVENTS, envelope)

    reply = await timeline_of(tracking, order_id, 1)

    assert reply.entries[0].step == "teleported"
    assert reply.entries[0].type == "tutti.future.v9.OrderTeleported"
    assert not reply.entries[0].details.fields


async def test_stock_reserved_before_the_order_is_known_joins_its_trail(tracking, publisher) -> None:
    """Inventory's relay often beats the orchestrator's: the reservation of an order is the first
    thing tracking hears of it. It is recorded (under a UUID standing for the ledger id) and the
    placing event that follows still sets the order's status."""
    order_id, sku = random_id("order"), random_id("SKU")
    t0 = datetime.now(UTC)
    movement = inventory_events_pb2.StockMovementRecorded(
        kind=inventory_events_pb2.MOVEMENT_KIND_RESERVED, sku=sku, location_id="S1", order_id=order_id,
        reservation_id=order_id, reserved_delta=2,
    )
    ledger_id = f"inv-{int(t0.timestamp() * 1000)}-0-0"
    reserved = build_envelope(
        movement, source="inventory", key=sku, event_id=ledger_id, occurred_at=t0 + timedelta(milliseconds=5)
    )
    await publisher.publish_envelope(INVENTORY_MOVEMENTS, reserved)
    reply = await timeline_of(tracking, order_id, 1)
    entries = [(e.step, e.source, list(e.location_ids)) for e in reply.entries]
    assert entries == [("reserved", "inventory", ["S1"])]
    await publisher.publish_envelope(INVENTORY_MOVEMENTS, reserved)  # redelivered: same entry
    placed = order_event(order_id, "OrderPlaced", t0, customer_id="c-1")
    await publisher.publish_envelope(ORDER_EVENTS, placed)
    reply = await timeline_of(tracking, order_id, 2)
    assert [e.step for e in reply.entries] == ["placed", "reserved"]
    assert reply.order.status == "placed" and reply.order.entry_count == 2


async def test_a_malformed_event_is_skipped_without_stalling_the_partition(tracking, publisher) -> None:
    order_id = random_id("order")
    t0 = datetime.now(UTC)
    poison = order_event(order_id, "OrderPlaced", t0)
    poison.event_id = ""  # no id: nothing to de-duplicate on
    await publisher.publish_envelope(ORDER_EVENTS, poison)
    await publisher.publish_envelope(ORDER_EVENTS, order_event(order_id, "OrderCancelled", t0))

    reply = await timeline_of(tracking, order_id, 1)

    assert [e.step for e in reply.entries] == ["cancelled"]


async def test_an_event_the_database_refuses_is_skipped_and_its_batch_neighbours_kept(
    tracking, publisher
) -> None:
    order_id = random_id("order")
    t0 = datetime.now(UTC)
    # PostgreSQL's jsonb cannot hold U+0000: recording this event fails for good.
    poison = order_event(order_id, "OrderPlaced", t0, note="nul \x00 inside")
    await publisher.publish_envelope(ORDER_EVENTS, poison)
    await publisher.publish_envelope(
        ORDER_EVENTS, order_event(order_id, "OrderPicked", t0 + timedelta(seconds=1))
    )
    await publisher.publish_envelope(
        ORDER_EVENTS, order_event(order_id, "OrderShipped", t0 + timedelta(seconds=2))
    )

    reply = await timeline_of(tracking, order_id, 2)

    assert [e.step for e in reply.entries] == ["picked", "shipped"]


async def test_search_by_customer_store_channel_and_status(tracking, publisher) -> None:
    customer_id, store = random_id("cust"), random_id("store")
    orders = [random_id("order") for _ in range(3)]
    t0 = datetime.now(UTC)
    for order_id in orders:
        await publisher.publish_envelope(
            ORDER_EVENTS,
            order_event(order_id, "OrderPlaced", t0, customer_id=customer_id, channel="CHANNEL_APP"),
        )
    await publisher.publish_envelope(
        ORDER_EVENTS, order_event(orders[0], "OrderSourced", t0 + timedelta(seconds=1), location_ids=[store])
    )
    await timeline_of(tracking, orders[0], 2)
    for order_id in orders[1:]:
        await timeline_of(tracking, order_id, 1)

    by_customer = await tracking.SearchOrders(tracking_pb2.SearchOrdersRequest(customer_id=customer_id))
    assert sorted(o.order_id for o in by_customer.orders) == sorted(orders)
    assert by_customer.next_page_token == ""

    by_store = await tracking.SearchOrders(tracking_pb2.SearchOrdersRequest(location_id=store))
    assert [o.order_id for o in by_store.orders] == [orders[0]]
    assert by_store.orders[0].status == "sourced"

    filtered = await tracking.SearchOrders(
        tracking_pb2.SearchOrdersRequest(
            customer_id=customer_id, channel=common_pb2.CHANNEL_APP, status="placed"
        )
    )
    assert sorted(o.order_id for o in filtered.orders) == sorted(orders[1:])
    none = await tracking.SearchOrders(
        tracking_pb2.SearchOrdersRequest(customer_id=customer_id, channel=common_pb2.CHANNEL_WEB)
    )
    assert list(none.orders) == []

    pages, token = [], ""
    while True:
        page = await tracking.SearchOrders(
            tracking_pb2.SearchOrdersRequest(customer_id=customer_id, page_size=2, page_token=token)
        )
        pages.append([o.order_id for o in page.orders])
        token = page.next_page_token
        if not token:
            break
    assert [len(p) for p in pages] == [2, 1]
    assert sorted(o for page in pages for o in page) == sorted(orders)


async def test_watch_streams_existing_entries_then_new_ones(tracking, publisher) -> None:
    order_id = random_id("order")
    t0 = datetime.now(UTC)
    await publisher.publish_envelope(
        ORDER_EVENTS, order_event(order_id, "OrderPlaced", t0, channel="CHANNEL_WEB")
    )
    await timeline_of(tracking, order_id, 1)

    call = tracking.WatchOrderTimeline(tracking_pb2.WatchOrderTimelineRequest(order_id=order_id))
    try:
        first = await asyncio.wait_for(call.read(), timeout=10)
        assert (first.entry.step, first.existing) == ("placed", True)

        await publisher.publish_envelope(
            ORDER_EVENTS, order_event(order_id, "OrderShipped", t0 + timedelta(minutes=5), location_id="dc-1")
        )
        second = await asyncio.wait_for(call.read(), timeout=15)
        assert (second.entry.step, second.existing) == ("shipped", False)
        assert second.entry.order_id == order_id
    finally:
        call.cancel()


async def test_watching_an_order_before_its_first_event(tracking, publisher) -> None:
    order_id = random_id("order")
    call = tracking.WatchOrderTimeline(tracking_pb2.WatchOrderTimelineRequest(order_id=order_id))
    try:
        await publisher.publish_envelope(
            ORDER_EVENTS, order_event(order_id, "OrderPlaced", datetime.now(UTC))
        )
        first = await asyncio.wait_for(call.read(), timeout=15)
        assert first.entry.step == "placed"
    finally:
        call.cancel()


async def test_kpis_move_with_the_events(tracking, publisher) -> None:
    hour = random_past_hour()
    window = tracking_pb2.GetKpisRequest()
    window.start_time.FromDatetime(hour)
    window.end_time.FromDatetime(hour + timedelta(hours=1))
    window.channel = common_pb2.CHANNEL_MARKETPLACE

    prepared, cancelled, refused = random_id("order"), random_id("order"), random_id("order")
    promised = (hour + timedelta(minutes=50)).isoformat()
    events = [
        order_event(
            prepared,
            "OrderPlaced",
            hour,
            channel="CHANNEL_MARKETPLACE",
            promised_at=promised,
            delivery_cost={"currency": "EUR", "amount_minor": "600"},
        ),
        order_event(prepared, "OrderShipped", hour + timedelta(minutes=40)),
        order_event(prepared, "OrderDelivered", hour + timedelta(minutes=45)),
        order_event(cancelled, "OrderPlaced", hour + timedelta(minutes=1), channel="CHANNEL_MARKETPLACE"),
        order_event(cancelled, "OrderCancelled", hour + timedelta(minutes=2), reason="customer changed mind"),
        order_event(refused, "OrderPlaced", hour + timedelta(minutes=3), channel="CHANNEL_MARKETPLACE"),
        order_event(refused, "OrderUnsourceable", hour + timedelta(minutes=4), reason="no stock anywhere"),
    ]
    for envelope in events:
        await publisher.publish_envelope(ORDER_EVENTS, envelope)
    # Duplicates must not count twice.
    await publisher.publish_envelope(ORDER_EVENTS, events[0])
    await publisher.publish_envelope(ORDER_EVENTS, events[1])

    async def settled() -> tracking_pb2.GetKpisResponse | None:
        reply = await tracking.GetKpis(window)
        return (
            reply
            if reply.total.orders_placed == 3
            and reply.total.orders_prepared == 1
            and reply.total.orders_refused == 1
            and reply.total.orders_cancelled == 1
            else None
        )

    reply = await wait_for(settled, timeout=30, interval=0.2, message="KPIs of the test hour")
    # Published after the duplicates on the same partition: once it shows, they were handled.
    await publisher.publish_envelope(
        ORDER_EVENTS, order_event(prepared, "OrderReviewed", hour + timedelta(hours=2))
    )
    await timeline_of(tracking, prepared, 4)
    reply = await tracking.GetKpis(window)

    assert [c.channel for c in reply.channels] == [common_pb2.CHANNEL_MARKETPLACE]
    kpis = reply.channels[0]
    assert kpis.channel_name == "CHANNEL_MARKETPLACE"
    assert (kpis.orders_placed, kpis.orders_cancelled, kpis.orders_refused, kpis.orders_prepared) == (
        3,
        1,
        1,
        1,
    )
    assert kpis.cancellation_rate == pytest.approx(1 / 3)
    assert kpis.refusal_rate == pytest.approx(1 / 3)
    assert kpis.average_preparation_time.ToTimedelta() == timedelta(minutes=40)
    assert (kpis.orders_on_time, kpis.orders_late, kpis.on_time_rate) == (1, 0, 1.0)
    assert [(m.currency, m.amount_minor) for m in kpis.average_cost_per_order] == [("EUR", 600)]
    assert reply.start_time.ToDatetime(tzinfo=UTC) == hour


async def test_bad_requests_get_precise_statuses(tracking) -> None:
    cases = [
        (
            tracking.GetOrderTimeline(tracking_pb2.GetOrderTimelineRequest()),
            grpc.StatusCode.INVALID_ARGUMENT,
            "order_id",
        ),
        (
            tracking.GetOrderTimeline(tracking_pb2.GetOrderTimelineRequest(order_id="has space")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "order_id",
        ),
        (
            tracking.GetOrderTimeline(tracking_pb2.GetOrderTimelineRequest(order_id=random_id("nobody"))),
            grpc.StatusCode.NOT_FOUND,
            "no event",
        ),
        (
            tracking.SearchOrders(tracking_pb2.SearchOrdersRequest(page_token="not-a-token")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "page_token",
        ),
        (
            tracking.SearchOrders(tracking_pb2.SearchOrdersRequest(page_size=10_000)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "page_size",
        ),
        (
            tracking.SearchOrders(tracking_pb2.SearchOrdersRequest(channel=99)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "channel",
        ),
    ]
    for call, code, mentions in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == code
        assert mentions in caught.value.details()

    window = tracking_pb2.GetKpisRequest()
    window.start_time.FromDatetime(datetime(2026, 1, 2, tzinfo=UTC))
    window.end_time.FromDatetime(datetime(2026, 1, 1, tzinfo=UTC))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await tracking.GetKpis(window)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    watch = tracking.WatchOrderTimeline(tracking_pb2.WatchOrderTimelineRequest(order_id=""))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await watch.read()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
