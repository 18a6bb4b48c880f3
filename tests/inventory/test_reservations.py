"""Reservations through the real gRPC service on the real Redis: no oversell under
concurrency, all-or-nothing, idempotency, precise errors, holds that expire."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from tutti.common.v1 import common_pb2
from tutti.inventory.v1 import inventory_pb2 as pb

from tests.inventory.conftest import seed
from tests.support import random_id, wait_for

pytestmark = pytest.mark.integration
WEB = common_pb2.CHANNEL_WEB


def line(sku: str, loc: str, qty: int) -> pb.ReservationLine:
    return pb.ReservationLine(sku=sku, location_id=loc, quantity=qty)


async def levels(stub, sku: str, loc: str) -> pb.StockCounters:
    reply = await stub.GetStockLevels(pb.GetStockLevelsRequest(sku=sku, location_ids=[loc]))
    return reply.levels[0].counters


async def test_1000_concurrent_one_unit_reservations_on_100_units_exactly_100_succeed(stub):
    (sku,), (loc,) = await seed(stub, on_hand=100)

    async def reserve(i: int) -> grpc.StatusCode:
        try:
            await stub.ReserveStock(
                pb.ReserveStockRequest(
                    reservation_id=random_id(f"flash{i}"), channel=WEB, lines=[line(sku, loc, 1)]
                )
            )
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK

    codes = await asyncio.gather(*(reserve(i) for i in range(1000)))
    assert codes.count(grpc.StatusCode.OK) == 100
    assert codes.count(grpc.StatusCode.FAILED_PRECONDITION) == 900
    counters = await levels(stub, sku, loc)
    assert (counters.on_hand, counters.reserved, counters.available_to_promise) == (100, 100, 0)
    av = await stub.GetAvailability(pb.GetAvailabilityRequest(sku=sku, channel=WEB))
    assert av.availability.network_available == 0


async def test_multi_line_reservation_is_all_or_nothing_and_names_the_short_lines(stub):
    (a, b), (l1, l2) = await seed(stub, skus=2, locations=2, on_hand=5)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ReserveStock(
            pb.ReserveStockRequest(
                reservation_id=random_id("res"),
                channel=WEB,
                lines=[line(a, l1, 2), line(b, l2, 6), line(a, l2, 5)],
            )
        )
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "lines[1]" in info.value.details() and "lines[0]" not in info.value.details()
    status = rpc_status.from_call(info.value)
    failure = error_details_pb2.PreconditionFailure()
    status.details[0].Unpack(failure)
    assert [v.subject for v in failure.violations] == ["lines[1]"]
    for sku, loc in ((a, l1), (b, l2), (a, l2)):
        assert (await levels(stub, sku, loc)).reserved == 0


async def test_reserve_is_idempotent_by_reservation_id(stub):
    (sku,), (loc,) = await seed(stub, on_hand=10)
    request = pb.ReserveStockRequest(
        reservation_id=random_id("res"), channel=WEB, lines=[line(sku, loc, 4)], order_id=random_id("ord")
    )
    first = await stub.ReserveStock(request)
    again = await stub.ReserveStock(request)
    assert not first.duplicate and again.duplicate
    assert again.reservation == first.reservation
    assert (await levels(stub, sku, loc)).reserved == 4
    other = pb.ReserveStockRequest(
        reservation_id=request.reservation_id, channel=WEB, lines=[line(sku, loc, 5)]
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ReserveStock(other)
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS


@pytest.mark.parametrize(
    ("mutate", "code", "field"),
    [
        (
            lambda r, s, loc: r.lines.append(line(s, loc, 0)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "lines[0].quantity",
        ),
        (
            lambda r, s, loc: r.lines.append(line(s, loc, -3)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "lines[0].quantity",
        ),
        (
            lambda r, s, loc: r.lines.append(line("bad sku!", loc, 1)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "lines[0].sku",
        ),
        (
            lambda r, s, loc: r.lines.extend(line(f"{s}-{i}", loc, 1) for i in range(101)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "lines",
        ),
        (
            lambda r, s, loc: r.lines.append(line("SKU-unknown-zzz", loc, 1)),
            grpc.StatusCode.NOT_FOUND,
            "lines[0].sku",
        ),
        (
            lambda r, s, loc: r.lines.append(line(s, "LOC-unknown-zzz", 1)),
            grpc.StatusCode.NOT_FOUND,
            "lines[0].location_id",
        ),
        (
            lambda r, s, loc: (r.lines.append(line(s, loc, 1)), r.ClearField("reservation_id")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "reservation_id",
        ),
        (
            lambda r, s, loc: (r.lines.append(line(s, loc, 1)), setattr(r, "hold_ttl_seconds", -1)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "hold_ttl_seconds",
        ),
    ],
)
async def test_bad_reservations_get_precise_errors_and_change_nothing(stub, mutate, code, field):
    (sku,), (loc,) = await seed(stub, on_hand=3)
    request = pb.ReserveStockRequest(reservation_id=random_id("res"), channel=WEB)
    mutate(request, sku, loc)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ReserveStock(request)
    assert info.value.code() == code
    assert field in info.value.details()
    assert (await levels(stub, sku, loc)).reserved == 0


async def test_confirm_release_fulfil(stub):
    (a, b), (loc,) = await seed(stub, skus=2, on_hand=10)
    res_id = random_id("res")
    await stub.ReserveStock(
        pb.ReserveStockRequest(
            reservation_id=res_id, channel=WEB, hold_ttl_seconds=600, lines=[line(a, loc, 3), line(b, loc, 2)]
        )
    )
    confirmed = await stub.ConfirmReservation(
        pb.ConfirmReservationRequest(reservation_id=res_id, order_id="O-1")
    )
    assert confirmed.reservation.status == pb.RESERVATION_STATUS_CONFIRMED
    assert not confirmed.reservation.HasField("expires_at")
    # Partial release needs a request id and is idempotent by it.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ReleaseReservation(
            pb.ReleaseReservationRequest(reservation_id=res_id, lines=[line(a, loc, 1)])
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "request_id" in info.value.details()
    partial = pb.ReleaseReservationRequest(
        reservation_id=res_id, lines=[line(a, loc, 1)], request_id="cancel-1"
    )
    await stub.ReleaseReservation(partial)
    await stub.ReleaseReservation(partial)
    assert (await levels(stub, a, loc)).reserved == 2
    # Fulfil more than open: refused, nothing applied.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.FulfilReservation(
            pb.FulfilReservationRequest(
                reservation_id=res_id, lines=[line(a, loc, 1), line(b, loc, 3)], request_id="ship-0"
            )
        )
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "lines[1]" in info.value.details()
    shipped = await stub.FulfilReservation(
        pb.FulfilReservationRequest(reservation_id=res_id, lines=[line(a, loc, 2)], request_id="ship-1")
    )
    assert shipped.reservation.status == pb.RESERVATION_STATUS_CONFIRMED
    a_counters = await levels(stub, a, loc)
    assert (a_counters.on_hand, a_counters.reserved) == (8, 0)
    done = await stub.FulfilReservation(pb.FulfilReservationRequest(reservation_id=res_id))
    assert done.reservation.status == pb.RESERVATION_STATUS_FULFILLED
    b_counters = await levels(stub, b, loc)
    assert (b_counters.on_hand, b_counters.reserved) == (8, 0)
    # Releasing a closed reservation is a harmless no-op.
    again = await stub.ReleaseReservation(pb.ReleaseReservationRequest(reservation_id=res_id))
    assert again.reservation.status == pb.RESERVATION_STATUS_FULFILLED
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ConfirmReservation(pb.ConfirmReservationRequest(reservation_id=random_id("res")))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_expired_holds_are_given_back_by_the_sweeper(stub):
    (sku,), (loc,) = await seed(stub, on_hand=5)
    res_id = random_id("cart")
    await stub.ReserveStock(
        pb.ReserveStockRequest(
            reservation_id=res_id, channel=WEB, hold_ttl_seconds=1, lines=[line(sku, loc, 5)]
        )
    )
    assert (await levels(stub, sku, loc)).available_to_promise == 0

    async def expired() -> bool:
        r = await stub.GetReservation(pb.GetReservationRequest(reservation_id=res_id))
        return r.reservation.status == pb.RESERVATION_STATUS_EXPIRED

    await wait_for(expired, timeout=10, message="hold expired")
    counters = await levels(stub, sku, loc)
    assert (counters.reserved, counters.available_to_promise) == (0, 5)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ConfirmReservation(pb.ConfirmReservationRequest(reservation_id=res_id))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_channel_policy_buffers_and_excludes_locations(stub):
    (sku,), (store, dc) = await seed(stub, locations=2, on_hand=10)
    await stub.SetSafetyStock(
        pb.SetSafetyStockRequest(lines=[pb.SafetyStockLine(sku=sku, location_id=dc, safety_stock=2)])
    )
    channel = common_pb2.CHANNEL_CALL_CENTRE  # a channel no other test configures
    await stub.SetChannelPolicy(
        pb.SetChannelPolicyRequest(
            policy=pb.ChannelPolicy(channel=channel, buffer_units=3, excluded_location_ids=[store])
        )
    )
    try:
        view = (await stub.GetAvailability(pb.GetAvailabilityRequest(sku=sku, channel=channel))).availability
        assert [(x.location_id, x.available, x.available_to_promise) for x in view.locations] == [(dc, 5, 8)]
        assert view.network_available == 5
        raw = (await stub.GetAvailability(pb.GetAvailabilityRequest(sku=sku))).availability
        assert raw.network_available == 18
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ReserveStock(
                pb.ReserveStockRequest(
                    reservation_id=random_id("r"), channel=channel, lines=[line(sku, store, 1)]
                )
            )
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ReserveStock(
                pb.ReserveStockRequest(
                    reservation_id=random_id("r"), channel=channel, lines=[line(sku, dc, 6)]
                )
            )
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        await stub.ReserveStock(
            pb.ReserveStockRequest(reservation_id=random_id("r"), channel=channel, lines=[line(sku, dc, 5)])
        )
    finally:
        await stub.SetChannelPolicy(pb.SetChannelPolicyRequest(policy=pb.ChannelPolicy(channel=channel)))


async def test_unknown_sku_and_location_on_reads_are_not_found(stub):
    (sku,), _ = await seed(stub)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetAvailability(pb.GetAvailabilityRequest(sku=random_id("SKU")))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and "sku" in info.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.BatchGetAvailability(pb.BatchGetAvailabilityRequest(skus=[sku], location_ids=["NOPE-1"]))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and "location_ids[0]" in info.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetLocation(pb.GetLocationRequest(location_id="NOPE-1"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.BatchGetAvailability(pb.BatchGetAvailabilityRequest(skus=["x"] * 1001))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "skus" in info.value.details()
