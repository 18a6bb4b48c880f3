"""Returns against the REAL inventory service (in-process, its own Redis db), PostgreSQL and
Kafka: restock visible in availability, quarantine not available, exchange reservation,
idempotent receipts, incoming supply, events on Kafka keyed by order id; online orders placed
through the real orchestrator get category and returnable flag from inventory's catalogue."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from tutti.common.v1 import common_pb2
from tutti.inventory.v1 import inventory_pb2 as ipb
from tutti.inventory.v1 import inventory_pb2_grpc as igrpc
from tutti.returns.v1 import events_pb2 as ev
from tutti.returns.v1 import returns_pb2 as pb
from tutti.returns.v1 import returns_pb2_grpc as rgrpc
from tutti.tracking.v1 import tracking_pb2, tracking_pb2_grpc

from runtime.kafka import RETURN_EVENTS, unpack
from runtime.settings import CommonSettings
from services.returns.adapters.rules_file import load_rules
from services.returns.bootstrap import ReturnsSettings
from services.returns.bootstrap import build as build_returns
from services.tracking.bootstrap import build as build_tracking
from tests.support import RunningService, internal_channel, random_id, read_events, running_service, wait_for

pytestmark = pytest.mark.integration

INVENTORY_REDIS_DB = 10


@pytest.fixture(scope="module")
async def returns(settings: CommonSettings, inventory: RunningService) -> AsyncIterator[RunningService]:
    addresses = {**settings.addresses, "inventory": inventory.address}
    cfg = ReturnsSettings(
        rules=load_rules(), pool_size=4, ready_dependencies=("inventory",), task_retry_seconds=0.5
    )

    async def build(s: CommonSettings, stack: AsyncExitStack):  # type: ignore[no-untyped-def]
        return await build_returns(dataclasses.replace(s, addresses=addresses), stack, cfg)

    async with running_service(settings, build) as svc:
        yield svc


@pytest.fixture(scope="module")
async def ret(returns: RunningService) -> AsyncIterator[rgrpc.ReturnsServiceStub]:
    async with internal_channel(returns.address) as channel:
        yield rgrpc.ReturnsServiceStub(channel)


async def store(
    inv: igrpc.InventoryServiceStub,
    *skus: str,
    stock: int = 0,
    category: str = "apparel",
    returnable: bool = True,
) -> str:
    """A new store carrying the SKUs (a stock record each, ``stock`` units on hand), registered
    in the catalogue with ``category`` and ``returnable``."""
    location_id = random_id("STORE")
    await inv.UpsertLocations(
        ipb.UpsertLocationsRequest(
            locations=[
                ipb.Location(
                    location_id=location_id,
                    name=location_id,
                    type=common_pb2.LOCATION_TYPE_STORE,
                    active=True,
                    capabilities=[ipb.FULFILMENT_CAPABILITY_CLICK_AND_COLLECT],
                )
            ]
        )
    )
    if skus:
        await inv.RegisterSkus(
            ipb.RegisterSkusRequest(
                skus=[
                    ipb.Sku(sku=sku, name=sku, category=category, returnable=returnable) for sku in skus
                ]
            )
        )
    for sku in skus:
        await inv.ReceiveStock(
            ipb.ReceiveStockRequest(
                movement_id=random_id("seed"),
                location_id=location_id,
                lines=[ipb.ReservationLine(sku=sku, location_id=location_id, quantity=max(stock, 1))],
            )
        )
        if stock == 0:
            await inv.AdjustStock(
                ipb.AdjustStockRequest(
                    movement_id=random_id("seed"), sku=sku, location_id=location_id, delta=-1, reason="seed"
                )
            )
    return location_id


async def level(inv: igrpc.InventoryServiceStub, sku: str, location_id: str) -> ipb.StockLevel:
    reply = await inv.GetStockLevels(ipb.GetStockLevelsRequest(sku=sku, location_ids=[location_id]))
    return next((lv for lv in reply.levels if lv.location_id == location_id), ipb.StockLevel())


async def available(inv: igrpc.InventoryServiceStub, sku: str, location_id: str) -> int:
    reply = await inv.GetAvailability(
        ipb.GetAvailabilityRequest(sku=sku, location_ids=[location_id], channel=common_pb2.CHANNEL_WEB)
    )
    return next((x.available for x in reply.availability.locations if x.location_id == location_id), 0)


def in_store_exchange(replacement_sku: str, store_id: str, **purchase: object) -> pb.CreateExchangeRequest:
    """Line "1" (one unit) swapped at the counter for ``replacement_sku``: the original received
    and the replacement collected at ``store_id``. ``purchase``: order_id=… or pos_receipt=…"""
    return pb.CreateExchangeRequest(
        request_id=random_id("req"),
        line=pb.ReturnLineRequest(line_id="1", quantity=1, reason=pb.RETURN_REASON_WRONG_SIZE),
        replacement_sku=replacement_sku,
        fulfilment=pb.EXCHANGE_FULFILMENT_COLLECT,
        location_id=store_id,
        method=pb.RETURN_METHOD_IN_STORE,
        receiving_location_id=store_id,
        channel=common_pb2.CHANNEL_STORE,
        **purchase,  # type: ignore[arg-type]
    )


def receipt(sold_at: datetime, *lines: tuple[str, str, int, int], location_id: str = "") -> pb.PosReceipt:
    ts = pb.PosReceipt().sold_at
    ts.FromDatetime(sold_at)
    return pb.PosReceipt(
        terminal_id=random_id("T"),
        sale_id=random_id("S"),
        location_id=location_id or "STORE-ELSEWHERE",
        sold_at=ts,
        lines=[
            pb.PosReceiptLine(
                line_id=lid,
                sku=sku,
                quantity=qty,
                unit_price=common_pb2.Money(currency="EUR", amount_minor=price),
            )
            for lid, sku, qty, price in lines
        ],
    )


async def sold(
    inv: igrpc.InventoryServiceStub,
    sold_at: datetime,
    *lines: tuple[str, str, int, int],
    location_id: str = "",
) -> pb.PosReceipt:
    """A till sale streamed to inventory as a terminal does it (at ``location_id``, or at a store
    of its own), and the receipt the customer brings back: returns checks one against the other."""
    location_id = location_id or await store(inv)
    ticket = receipt(sold_at, *lines, location_id=location_id)
    call = inv.StreamPosSales()
    await call.write(
        ipb.StreamPosSalesRequest(
            terminal_id=ticket.terminal_id,
            sale_id=ticket.sale_id,
            location_id=location_id,
            kind=ipb.POS_SALE_KIND_SALE,
            lines=[ipb.PosLine(sku=line.sku, quantity=line.quantity) for line in ticket.lines],
        )
    )
    await call.done_writing()
    acks = [ack async for ack in call]
    assert [a.status for a in acks] == [ipb.POS_ACK_STATUS_ACCEPTED], acks
    return ticket


async def test_returned_goods_restock_the_receiving_store_once(
    inv: igrpc.InventoryServiceStub, ret: rgrpc.ReturnsServiceStub, settings: CommonSettings
) -> None:
    sku = random_id("SKU")
    store_id = await store(inv, sku)
    assert await available(inv, sku, store_id) == 0
    started_ms = int(time.time() * 1000)
    created = await ret.CreateReturn(
        pb.CreateReturnRequest(
            request_id=random_id("req"),
            pos_receipt=await sold(inv, datetime.now(UTC) - timedelta(days=2), ("1", sku, 2, 1999)),
            lines=[pb.ReturnLineRequest(line_id="1", quantity=2, reason=pb.RETURN_REASON_WRONG_SIZE)],
            method=pb.RETURN_METHOD_IN_STORE,
            receiving_location_id=store_id,
            channel=common_pb2.CHANNEL_STORE,
        )
    )
    rma = created.rma
    request = pb.ReceiveReturnRequest(
        return_id=rma.return_id,
        location_id=store_id,
        lines=[pb.ReceivedLine(line_id="1", quantity=2, grade=pb.ITEM_GRADE_RESELLABLE)],
    )
    first = await ret.ReceiveReturn(request)
    assert first.receipt.items[0].disposition == pb.DISPOSITION_RESTOCK
    assert first.receipt.refund.total.amount_minor == 2 * 1999
    # Back on sale at once: the call returns after inventory applied the movement.
    assert await available(inv, sku, store_id) == 2
    second = await ret.ReceiveReturn(request)
    assert second.duplicate and second.receipt == first.receipt
    assert await available(inv, sku, store_id) == 2
    assert first.rma.status == pb.RETURN_STATUS_RECEIVED

    events = await read_events(
        settings.kafka_bootstrap,
        RETURN_EVENTS.name,
        lambda e: e.key == rma.order_id,
        count=5,
        from_beginning_ms=started_ms,
    )
    types = [e.type for e in events]
    assert types == [
        "tutti.returns.v1.ReturnRequested",
        "tutti.returns.v1.ReturnReceived",
        "tutti.returns.v1.ReturnLineGraded",
        "tutti.returns.v1.ReturnRestocked",
        "tutti.returns.v1.RefundIssued",
    ]
    restocked = unpack(events[3], ev.ReturnRestocked)
    assert (restocked.order_id, restocked.return_id, restocked.location_id, restocked.quantity) == (  # type: ignore[attr-defined]
        rma.order_id,
        rma.return_id,
        store_id,
        2,
    )


async def test_damaged_item_goes_to_quarantine_not_available_stock(
    inv: igrpc.InventoryServiceStub, ret: rgrpc.ReturnsServiceStub
) -> None:
    sku = random_id("SKU")
    store_id = await store(inv, sku)
    created = await ret.CreateReturn(
        pb.CreateReturnRequest(
            request_id=random_id("req"),
            pos_receipt=await sold(inv, datetime.now(UTC), ("1", sku, 1, 5000)),
            lines=[pb.ReturnLineRequest(line_id="1", quantity=1, reason=pb.RETURN_REASON_DEFECTIVE)],
            method=pb.RETURN_METHOD_IN_STORE,
            receiving_location_id=store_id,
            channel=common_pb2.CHANNEL_STORE,
        )
    )
    reply = await ret.ReceiveReturn(
        pb.ReceiveReturnRequest(
            return_id=created.rma.return_id,
            location_id=store_id,
            lines=[pb.ReceivedLine(line_id="1", quantity=1, grade=pb.ITEM_GRADE_DAMAGED)],
        )
    )
    assert reply.receipt.items[0].disposition == pb.DISPOSITION_QUARANTINE
    lv = await level(inv, sku, store_id)
    assert (lv.counters.on_hand, lv.counters.quarantined) == (0, 1)
    assert await available(inv, sku, store_id) == 0


async def test_return_in_transit_counts_as_incoming_supply_until_received(
    inv: igrpc.InventoryServiceStub, ret: rgrpc.ReturnsServiceStub
) -> None:
    sku = random_id("SKU")
    store_id = await store(inv, sku)
    created = await ret.CreateReturn(
        pb.CreateReturnRequest(
            request_id=random_id("req"),
            pos_receipt=await sold(inv, datetime.now(UTC), ("1", sku, 3, 1000)),
            lines=[pb.ReturnLineRequest(line_id="1", quantity=3, reason=pb.RETURN_REASON_CHANGED_MIND)],
            method=pb.RETURN_METHOD_CARRIER_LABEL,
            receiving_location_id=store_id,
            channel=common_pb2.CHANNEL_WEB,
        )
    )
    lv = await level(inv, sku, store_id)
    incoming = [s for s in lv.incoming if s.quantity]
    assert [s.quantity for s in incoming] == [3]
    assert incoming[0].expected_at.seconds == created.rma.expected_at.seconds
    await ret.ReceiveReturn(
        pb.ReceiveReturnRequest(
            return_id=created.rma.return_id,
            location_id=store_id,
            lines=[pb.ReceivedLine(line_id="1", quantity=3, grade=pb.ITEM_GRADE_RESELLABLE)],
        )
    )
    lv = await level(inv, sku, store_id)
    assert [s.quantity for s in lv.incoming if s.quantity] == []
    assert lv.counters.on_hand == 3


async def test_exchange_reserves_the_replacement(
    inv: igrpc.InventoryServiceStub, ret: rgrpc.ReturnsServiceStub
) -> None:
    sku_m, sku_l = random_id("SKU-M"), random_id("SKU-L")
    store_id = await store(inv, sku_m, sku_l, stock=2)
    ticket = await sold(inv, datetime.now(UTC), ("1", sku_m, 1, 3000))
    reply = await ret.CreateExchange(in_store_exchange(sku_l, store_id, pos_receipt=ticket))
    exchange = reply.exchange
    assert exchange.order_id == reply.rma.order_id and exchange.replacement_sku == sku_l
    reservation = await inv.GetReservation(ipb.GetReservationRequest(reservation_id=exchange.reservation_id))
    assert [(x.sku, x.location_id, x.open) for x in reservation.reservation.lines] == [(sku_l, store_id, 1)]
    assert await available(inv, sku_l, store_id) == 1


async def test_bad_input_gets_precise_statuses(
    inv: igrpc.InventoryServiceStub, ret: rgrpc.ReturnsServiceStub
) -> None:
    sku = random_id("SKU")
    store_id = await store(inv, sku)
    base = pb.CreateReturnRequest(
        request_id=random_id("req"),
        method=pb.RETURN_METHOD_IN_STORE,
        receiving_location_id=store_id,
        channel=common_pb2.CHANNEL_STORE,
    )

    async def code_of(request: pb.CreateReturnRequest) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await ret.CreateReturn(request)
        return info.value.code(), info.value.details() or ""

    too_many = pb.CreateReturnRequest()
    too_many.CopyFrom(base)
    too_many.pos_receipt.CopyFrom(await sold(inv, datetime.now(UTC), ("1", sku, 1, 100)))
    too_many.lines.append(pb.ReturnLineRequest(line_id="1", quantity=2, reason=pb.RETURN_REASON_OTHER))
    code, details = await code_of(too_many)
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "2 requested but 1 bought" in details

    expired = pb.CreateReturnRequest()
    expired.CopyFrom(too_many)
    expired.pos_receipt.CopyFrom(await sold(inv, datetime.now(UTC) - timedelta(days=90), ("1", sku, 1, 100)))
    del expired.lines[:]
    expired.lines.append(pb.ReturnLineRequest(line_id="1", quantity=1, reason=pb.RETURN_REASON_OTHER))
    code, details = await code_of(expired)
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "return window" in details

    unknown_line = pb.CreateReturnRequest()
    unknown_line.CopyFrom(expired)
    unknown_line.pos_receipt.CopyFrom(await sold(inv, datetime.now(UTC), ("1", sku, 1, 100)))
    unknown_line.lines[0].line_id = "7"
    code, details = await code_of(unknown_line)
    assert code == grpc.StatusCode.NOT_FOUND and "no line '7'" in details

    no_reason = pb.CreateReturnRequest()
    no_reason.CopyFrom(unknown_line)
    no_reason.lines[0].line_id = "1"
    no_reason.lines[0].reason = pb.RETURN_REASON_UNSPECIFIED
    code, details = await code_of(no_reason)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "lines[0].reason" in details

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await ret.GetReturn(pb.GetReturnRequest(return_id="RMA-NOPE"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_receipt_the_till_never_recorded_or_inflated_is_refused(
    inv: igrpc.InventoryServiceStub, ret: rgrpc.ReturnsServiceStub
) -> None:
    sku = random_id("SKU")
    store_id = await store(inv, sku)

    def returning(ticket: pb.PosReceipt, quantity: int = 1) -> pb.CreateReturnRequest:
        return pb.CreateReturnRequest(
            request_id=random_id("req"),
            pos_receipt=ticket,
            lines=[pb.ReturnLineRequest(line_id="1", quantity=quantity, reason=pb.RETURN_REASON_OTHER)],
            method=pb.RETURN_METHOD_IN_STORE,
            receiving_location_id=store_id,
            channel=common_pb2.CHANNEL_STORE,
        )

    forged = receipt(datetime.now(UTC), ("1", sku, 1, 100), location_id=store_id)  # never at a till
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await ret.CreateReturn(returning(forged))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "is not on record in inventory" in (info.value.details() or "")

    real = await sold(inv, datetime.now(UTC), ("1", sku, 1, 100), location_id=store_id)
    inflated = pb.PosReceipt()
    inflated.CopyFrom(real)
    inflated.lines[0].quantity = 5
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await ret.CreateReturn(returning(inflated, quantity=5))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "5 on the receipt but 1 in the recorded sale" in (info.value.details() or "")
    created = await ret.CreateReturn(returning(real))
    assert created.rma.return_id


async def test_history_lists_every_step_with_time(
    inv: igrpc.InventoryServiceStub, ret: rgrpc.ReturnsServiceStub
) -> None:
    sku = random_id("SKU")
    store_id = await store(inv, sku)
    created = await ret.CreateReturn(
        pb.CreateReturnRequest(
            request_id=random_id("req"),
            pos_receipt=await sold(inv, datetime.now(UTC), ("1", sku, 1, 1000)),
            lines=[pb.ReturnLineRequest(line_id="1", quantity=1, reason=pb.RETURN_REASON_WRONG_ITEM)],
            method=pb.RETURN_METHOD_IN_STORE,
            receiving_location_id=store_id,
            channel=common_pb2.CHANNEL_STORE,
        )
    )
    await ret.ReceiveReturn(
        pb.ReceiveReturnRequest(
            return_id=created.rma.return_id,
            location_id=store_id,
            lines=[pb.ReceivedLine(line_id="1", quantity=1, grade=pb.ITEM_GRADE_RESELLABLE)],
        )
    )
    listed = await ret.ListReturns(pb.ListReturnsRequest(order_id=created.rma.order_id))
    [rma] = listed.returns
    assert [s.type.rsplit(".", 1)[1] for s in rma.history] == [
        "ReturnRequested",
        "ReturnReceived",
        "ReturnLineGraded",
        "ReturnRestocked",
        "RefundIssued",
    ]
    assert all(s.occurred_at.seconds > 0 for s in rma.history)
    await wait_for(lambda: available(inv, sku, store_id), message="restocked unit available")


@pytest.fixture(scope="module")
async def tracking(settings: CommonSettings) -> AsyncIterator[tracking_pb2_grpc.TrackingServiceStub]:
    async with (
        running_service(CommonSettings.from_env("tracking"), build_tracking) as service,
        internal_channel(service.address) as channel,
    ):
        yield tracking_pb2_grpc.TrackingServiceStub(channel)


async def test_order_timeline_shows_the_return_steps(
    inv: igrpc.InventoryServiceStub,
    ret: rgrpc.ReturnsServiceStub,
    tracking: tracking_pb2_grpc.TrackingServiceStub,
) -> None:
    sku = random_id("SKU")
    store_id = await store(inv, sku)
    created = await ret.CreateReturn(
        pb.CreateReturnRequest(
            request_id=random_id("req"),
            pos_receipt=await sold(inv, datetime.now(UTC), ("1", sku, 1, 1000)),
            lines=[pb.ReturnLineRequest(line_id="1", quantity=1, reason=pb.RETURN_REASON_CHANGED_MIND)],
            method=pb.RETURN_METHOD_IN_STORE,
            receiving_location_id=store_id,
            channel=common_pb2.CHANNEL_STORE,
        )
    )
    rma = created.rma
    await ret.ReceiveReturn(
        pb.ReceiveReturnRequest(
            return_id=rma.return_id,
            location_id=store_id,
            lines=[pb.ReceivedLine(line_id="1", quantity=1, grade=pb.ITEM_GRADE_NEEDS_REFURBISHMENT)],
        )
    )

    async def timeline() -> list[tracking_pb2.TimelineEntry]:
        try:
            reply = await tracking.GetOrderTimeline(
                tracking_pb2.GetOrderTimelineRequest(order_id=rma.order_id)
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:  # not consumed yet
                return []
            raise
        return list(reply.entries) if len(reply.entries) >= 5 else []

    entries = await wait_for(timeline, timeout=30, message="five return steps on the order's timeline")
    assert [e.type.rsplit(".", 1)[1] for e in entries] == [
        "ReturnRequested",
        "ReturnReceived",
        "ReturnLineGraded",
        "ReturnQuarantined",
        "RefundIssued",
    ]
    assert all(e.return_id == rma.return_id and e.source == "returns" for e in entries)
    assert all(e.occurred_at.seconds > 0 for e in entries)
    assert store_id in entries[-2].location_ids


@pytest.fixture(scope="module")
async def orchestrator(settings: CommonSettings, inventory: RunningService) -> AsyncIterator[RunningService]:
    from services.orchestrator.bootstrap import build as build_orchestrator

    addresses = {**settings.addresses, "inventory": inventory.address}

    async def build(s: CommonSettings, stack: AsyncExitStack):  # type: ignore[no-untyped-def]
        return await build_orchestrator(dataclasses.replace(s, addresses=addresses), stack)

    async with running_service(settings, build) as svc:
        yield svc


@pytest.fixture(scope="module")
async def ret_orders(
    settings: CommonSettings, inventory: RunningService, orchestrator: RunningService
) -> AsyncIterator[rgrpc.ReturnsServiceStub]:
    """Returns wired to the real orchestrator (readiness on both channels)."""
    addresses = {**settings.addresses, "inventory": inventory.address, "orchestrator": orchestrator.address}
    cfg = ReturnsSettings(
        rules=load_rules(),
        pool_size=4,
        ready_dependencies=("inventory", "orchestrator"),
        task_retry_seconds=0.5,
    )

    async def build(s: CommonSettings, stack: AsyncExitStack):  # type: ignore[no-untyped-def]
        return await build_returns(dataclasses.replace(s, addresses=addresses), stack, cfg)

    async with (
        running_service(settings, build) as svc,
        internal_channel(svc.address) as channel,
    ):
        yield rgrpc.ReturnsServiceStub(channel)


async def test_online_order_returned_in_a_store_restocks_that_store(
    inv: igrpc.InventoryServiceStub, orchestrator: RunningService, ret_orders: rgrpc.ReturnsServiceStub
) -> None:
    sku = random_id("SKU")
    pickup = await store(inv, sku, stock=3)
    other_store = await store(inv, sku)
    order_id = await collected_order(orchestrator, pickup, sku, quantity=2, unit_price_minor=4500)

    before = await available(inv, sku, other_store)
    created = await ret_orders.CreateReturn(
        pb.CreateReturnRequest(
            request_id=random_id("req"),
            order_id=order_id,
            lines=[pb.ReturnLineRequest(line_id="1", quantity=1, reason=pb.RETURN_REASON_WRONG_SIZE)],
            method=pb.RETURN_METHOD_IN_STORE,
            receiving_location_id=other_store,
            channel=common_pb2.CHANNEL_STORE,
        )
    )
    assert created.rma.purchase_channel == common_pb2.CHANNEL_WEB
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await ret_orders.CreateReturn(
            pb.CreateReturnRequest(
                request_id=random_id("req"),
                order_id=order_id,
                lines=[pb.ReturnLineRequest(line_id="1", quantity=2, reason=pb.RETURN_REASON_WRONG_SIZE)],
                method=pb.RETURN_METHOD_IN_STORE,
                receiving_location_id=other_store,
            )
        )
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "1 already returned" in (info.value.details() or "")

    await ret_orders.ReceiveReturn(
        pb.ReceiveReturnRequest(
            return_id=created.rma.return_id,
            location_id=other_store,
            lines=[pb.ReceivedLine(line_id="1", quantity=1, grade=pb.ITEM_GRADE_RESELLABLE)],
        )
    )
    assert await available(inv, sku, other_store) == before + 1

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await ret_orders.CreateReturn(
            pb.CreateReturnRequest(
                request_id=random_id("req"),
                order_id=random_id("ORD-unknown"),
                lines=[pb.ReturnLineRequest(line_id="1", quantity=1, reason=pb.RETURN_REASON_OTHER)],
                method=pb.RETURN_METHOD_IN_STORE,
                receiving_location_id=other_store,
            )
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def collected_order(
    orchestrator: RunningService, pickup: str, *skus: str, quantity: int = 1, unit_price_minor: int = 2500
) -> str:
    """A web click-and-collect order of ``quantity`` of each SKU (lines "1", "2"...) at ``pickup``,
    placed through the real orchestrator and collected; returns its order id."""
    from tutti.orchestrator.v1 import orchestrator_pb2 as opb
    from tutti.orchestrator.v1 import orchestrator_pb2_grpc as ogrpc

    async with internal_channel(orchestrator.address) as channel:
        orders = ogrpc.OrderServiceStub(channel)
        placed = await orders.PlaceOrder(
            opb.PlaceOrderRequest(
                channel=common_pb2.CHANNEL_WEB,
                channel_order_id=random_id("web"),
                customer_id=random_id("C"),
                method=common_pb2.DELIVERY_METHOD_CLICK_AND_COLLECT,
                pickup_location_id=pickup,
                lines=[
                    opb.OrderLineInput(
                        line_id=str(i),
                        sku=sku,
                        quantity=quantity,
                        unit_price=common_pb2.Money(currency="EUR", amount_minor=unit_price_minor),
                    )
                    for i, sku in enumerate(skus, start=1)
                ],
            )
        )
        order = placed.order
        for location_id in dict.fromkeys(line.location_id for line in order.lines):
            for event in (
                opb.FULFILMENT_EVENT_ACCEPTED,
                opb.FULFILMENT_EVENT_PICKED,
                opb.FULFILMENT_EVENT_READY_FOR_PICKUP,
                opb.FULFILMENT_EVENT_COLLECTED,
            ):
                await orders.UpdateFulfilment(
                    opb.UpdateFulfilmentRequest(
                        order_id=order.order_id,
                        location_id=location_id,
                        event=event,
                        update_id=random_id("upd"),
                    )
                )
        return order.order_id


def return_request(order_id: str, line_id: str, location_id: str, reason: int) -> pb.CreateReturnRequest:
    return pb.CreateReturnRequest(
        request_id=random_id("req"),
        order_id=order_id,
        lines=[pb.ReturnLineRequest(line_id=line_id, quantity=1, reason=reason)],  # type: ignore[arg-type]
        method=pb.RETURN_METHOD_IN_STORE,
        receiving_location_id=location_id,
        channel=common_pb2.CHANNEL_STORE,
    )


async def test_online_order_of_non_returnable_items_is_refused_with_the_reason(
    inv: igrpc.InventoryServiceStub, orchestrator: RunningService, ret_orders: rgrpc.ReturnsServiceStub
) -> None:
    voucher, gift_card, shirt = random_id("VOUCHER"), random_id("GIFTCARD"), random_id("SHIRT")
    pickup = await store(inv, shirt, stock=2)
    # Marked non-returnable in the catalogue (category not in the rules' list).
    await store(inv, voucher, stock=2, category="vouchers", returnable=False)
    # A category the returns rules list as non-returnable (returnable flag left true).
    await store(inv, gift_card, stock=2, category="gift-card", returnable=True)
    for sku in (voucher, gift_card):  # stock at the pickup store too, so one store serves the order
        await inv.ReceiveStock(
            ipb.ReceiveStockRequest(
                movement_id=random_id("seed"),
                location_id=pickup,
                lines=[ipb.ReservationLine(sku=sku, location_id=pickup, quantity=2)],
            )
        )
    order_id = await collected_order(orchestrator, pickup, voucher, gift_card, shirt)

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await ret_orders.CreateReturn(return_request(order_id, "1", pickup, pb.RETURN_REASON_CHANGED_MIND))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"line 1 ({voucher}): the item is marked non-returnable" in (info.value.details() or "")
    failure = error_details_pb2.PreconditionFailure()
    status = rpc_status.from_call(info.value)
    assert status is not None and status.details[0].Unpack(failure)
    assert [v.subject for v in failure.violations] == [f"{order_id}/1"]

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await ret_orders.CreateReturn(return_request(order_id, "2", pickup, pb.RETURN_REASON_DEFECTIVE))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"line 2 ({gift_card}): category 'gift-card' is not returnable" in (info.value.details() or "")

    # Nothing was created for the refused lines; the returnable line of the same order goes through.
    assert not (await ret_orders.ListReturns(pb.ListReturnsRequest(order_id=order_id))).returns
    created = await ret_orders.CreateReturn(
        return_request(order_id, "3", pickup, pb.RETURN_REASON_WRONG_SIZE)
    )
    assert [(x.sku, x.category) for x in created.rma.lines] == [(shirt, "apparel")]


async def test_category_disposition_rule_matches_an_online_order_line(
    inv: igrpc.InventoryServiceStub, orchestrator: RunningService, ret_orders: rgrpc.ReturnsServiceStub
) -> None:
    # default.yaml: damaged/needs_refurbishment + category electronics + reason defective → vendor.
    headphones = random_id("HEADPHONES")
    pickup = await store(inv, headphones, stock=2, category="electronics")
    order_id = await collected_order(orchestrator, pickup, headphones)
    created = await ret_orders.CreateReturn(return_request(order_id, "1", pickup, pb.RETURN_REASON_DEFECTIVE))
    assert created.rma.lines[0].category == "electronics"
    received = await ret_orders.ReceiveReturn(
        pb.ReceiveReturnRequest(
            return_id=created.rma.return_id,
            location_id=pickup,
            lines=[pb.ReceivedLine(line_id="1", quantity=1, grade=pb.ITEM_GRADE_DAMAGED)],
        )
    )
    (item,) = received.receipt.items
    assert (item.disposition, item.rule) == (pb.DISPOSITION_RETURN_TO_VENDOR, "disposition_rules[1]")
    assert (await level(inv, headphones, pickup)).counters.quarantined == 0


async def test_sku_inventory_no_longer_knows_is_returnable_without_category(
    inv: igrpc.InventoryServiceStub,
    orchestrator: RunningService,
    ret_orders: rgrpc.ReturnsServiceStub,
    settings: CommonSettings,
) -> None:
    from redis.asyncio import Redis

    forgotten, shirt = random_id("GONE"), random_id("SHIRT")
    pickup = await store(inv, forgotten, shirt, stock=2, category="gift-card", returnable=False)
    order_id = await collected_order(orchestrator, pickup, forgotten, shirt)
    # The catalogue entry disappears after the sale (e.g. lost with a Redis rebuild).
    redis = Redis.from_url(settings.redis_url.rsplit("/", 1)[0] + f"/{INVENTORY_REDIS_DB}")
    try:
        assert await redis.hdel("inv:skus", forgotten) == 1
    finally:
        await redis.aclose()
    created = await ret_orders.CreateReturn(
        return_request(order_id, "1", pickup, pb.RETURN_REASON_WRONG_SIZE)
    )
    assert [(x.sku, x.category) for x in created.rma.lines] == [(forgotten, "")]
    # The other line of the same order still gets its catalogue facts.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await ret_orders.CreateReturn(return_request(order_id, "2", pickup, pb.RETURN_REASON_WRONG_SIZE))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "marked non-returnable" in (info.value.details() or "")


async def test_online_return_is_unavailable_and_creates_nothing_while_inventory_is_down(
    settings: CommonSettings,
    inv: igrpc.InventoryServiceStub,
    orchestrator: RunningService,
    ret_orders: rgrpc.ReturnsServiceStub,
) -> None:
    shirt = random_id("SHIRT")
    pickup = await store(inv, shirt, stock=2)
    order_id = await collected_order(orchestrator, pickup, shirt)
    # Nothing listens on port 1: every inventory call of this returns instance fails UNAVAILABLE.
    addresses = {**settings.addresses, "inventory": "127.0.0.1:1", "orchestrator": orchestrator.address}
    cfg = ReturnsSettings(
        rules=load_rules(), pool_size=2, ready_dependencies=("orchestrator",), task_retry_seconds=0.5
    )

    async def build(s: CommonSettings, stack: AsyncExitStack):  # type: ignore[no-untyped-def]
        return await build_returns(dataclasses.replace(s, addresses=addresses), stack, cfg)

    async with (
        running_service(settings, build) as svc,
        internal_channel(svc.address) as channel,
    ):
        cut_off = rgrpc.ReturnsServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await cut_off.CreateReturn(return_request(order_id, "1", pickup, pb.RETURN_REASON_WRONG_SIZE))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "catalogue" in (info.value.details() or "")
    assert not (await ret_orders.ListReturns(pb.ListReturnsRequest(order_id=order_id))).returns


async def test_exchange_replacement_collected_in_store_is_fulfilled_once(
    inv: igrpc.InventoryServiceStub,
    orchestrator: RunningService,
    ret_orders: rgrpc.ReturnsServiceStub,
    tracking: tracking_pb2_grpc.TrackingServiceStub,
    settings: CommonSettings,
) -> None:
    shirt_m, shirt_l = random_id("SHIRT-M"), random_id("SHIRT-L")
    pickup = await store(inv, shirt_m, shirt_l, stock=3)
    elsewhere = await store(inv)
    order_id = await collected_order(orchestrator, pickup, shirt_m)
    started_ms = int(time.time() * 1000)
    created = await ret_orders.CreateExchange(in_store_exchange(shirt_l, pickup, order_id=order_id))
    exchange = created.exchange
    assert not exchange.HasField("handed_over_at")
    on_hand = (await level(inv, shirt_l, pickup)).counters.on_hand

    async def refused(request: pb.HandOverExchangeRequest) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await ret_orders.HandOverExchange(request)
        return info.value.code(), info.value.details() or ""

    code, details = await refused(
        pb.HandOverExchangeRequest(exchange_id=exchange.exchange_id, location_id=elsewhere)
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert pickup in details and elsewhere in details
    code, details = await refused(pb.HandOverExchangeRequest(location_id=pickup))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "exchange_id" in details
    code, _ = await refused(pb.HandOverExchangeRequest(exchange_id="EXC-NOPE", location_id=pickup))
    assert code == grpc.StatusCode.NOT_FOUND

    request = pb.HandOverExchangeRequest(
        exchange_id=exchange.exchange_id, location_id=pickup, update_id=random_id("scan")
    )
    handed = await ret_orders.HandOverExchange(request)
    assert not handed.duplicate and handed.exchange.HasField("handed_over_at")
    assert handed.exchange.handover_update_id == request.update_id
    reservation = (
        await inv.GetReservation(ipb.GetReservationRequest(reservation_id=exchange.reservation_id))
    ).reservation
    assert reservation.status == ipb.RESERVATION_STATUS_FULFILLED
    assert (await level(inv, shirt_l, pickup)).counters.on_hand == on_hand - 1

    again = await ret_orders.HandOverExchange(request)
    assert again.duplicate and again.exchange == handed.exchange
    assert (await level(inv, shirt_l, pickup)).counters.on_hand == on_hand - 1

    rma = (await ret_orders.GetReturn(pb.GetReturnRequest(return_id=exchange.return_id))).rma
    assert rma.exchange.handed_over_at == handed.exchange.handed_over_at
    assert [s.type for s in rma.history].count("tutti.returns.v1.ExchangeHandedOver") == 1

    code, details = await refused_cancel(ret_orders, exchange.return_id)
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "handed over" in details
    reservation = (
        await inv.GetReservation(ipb.GetReservationRequest(reservation_id=exchange.reservation_id))
    ).reservation
    assert reservation.status == ipb.RESERVATION_STATUS_FULFILLED

    [event] = await read_events(
        settings.kafka_bootstrap,
        RETURN_EVENTS.name,
        lambda e: e.key == order_id and e.type == "tutti.returns.v1.ExchangeHandedOver",
        from_beginning_ms=started_ms,
    )
    payload = unpack(event, ev.ExchangeHandedOver)
    assert (payload.order_id, payload.exchange_id, payload.return_id, payload.location_id) == (
        order_id,
        exchange.exchange_id,
        exchange.return_id,
        pickup,
    )
    assert (payload.sku, payload.quantity, payload.fulfilment) == (
        shirt_l,
        1,
        pb.EXCHANGE_FULFILMENT_COLLECT,
    )

    async def handed_over_step() -> list[tracking_pb2.TimelineEntry]:
        try:
            reply = await tracking.GetOrderTimeline(tracking_pb2.GetOrderTimelineRequest(order_id=order_id))
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return []
            raise
        return [e for e in reply.entries if e.type == "tutti.returns.v1.ExchangeHandedOver"]

    [entry] = await wait_for(handed_over_step, timeout=30, message="the handover on the order's timeline")
    assert entry.step == "exchange_handed_over" and pickup in entry.location_ids


async def refused_cancel(stub: rgrpc.ReturnsServiceStub, return_id: str) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.CancelReturn(pb.CancelReturnRequest(return_id=return_id, reason="changed plans"))
    return info.value.code(), info.value.details() or ""
