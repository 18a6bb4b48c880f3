"""Stock sync on the real service: snapshots with as-of times, receipts, adjustments,
transfers, quarantine, incoming supply and CSV onboarding."""

from __future__ import annotations

import time

import grpc
import pytest
from google.protobuf import timestamp_pb2
from tutti.common.v1 import common_pb2
from tutti.inventory.v1 import inventory_pb2 as pb

from tests.inventory.conftest import seed
from tests.support import random_id

pytestmark = pytest.mark.integration


def ts(ms: int) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromMilliseconds(ms)
    return out


async def counters(stub, sku: str, loc: str) -> pb.StockLevel:
    return (await stub.GetStockLevels(pb.GetStockLevelsRequest(sku=sku, location_ids=[loc]))).levels[0]


async def test_snapshot_keeps_newer_movements_and_ignores_older_snapshots(stub):
    (sku,), (loc,) = await seed(stub)
    now = int(time.time() * 1000)
    first = await stub.ApplyStockSnapshot(
        pb.ApplyStockSnapshotRequest(
            snapshot_id=random_id("snap"),
            as_of=ts(now - 60_000),
            source="WMS",
            lines=[pb.SnapshotLine(sku=sku, location_id=loc, on_hand=50)],
        )
    )
    assert first.results[0].applied and first.results[0].counters.on_hand == 50
    # A POS-like movement after the count...
    await stub.AdjustStock(
        pb.AdjustStockRequest(
            movement_id=random_id("adj"), sku=sku, location_id=loc, delta=-5, reason="damaged"
        )
    )
    # ...a snapshot counted BEFORE that movement but after the first one keeps the movement on top.
    second = await stub.ApplyStockSnapshot(
        pb.ApplyStockSnapshotRequest(
            snapshot_id=random_id("snap"),
            as_of=ts(now - 30_000),
            lines=[pb.SnapshotLine(sku=sku, location_id=loc, on_hand=40)],
        )
    )
    assert second.results[0].applied and second.results[0].counters.on_hand == 35
    # An older snapshot never overwrites.
    stale = await stub.ApplyStockSnapshot(
        pb.ApplyStockSnapshotRequest(
            snapshot_id=random_id("snap"),
            as_of=ts(now - 90_000),
            lines=[pb.SnapshotLine(sku=sku, location_id=loc, on_hand=999)],
        )
    )
    assert not stale.results[0].applied and stale.results[0].counters.on_hand == 35
    # A fresh snapshot (after the movement) is authoritative.
    fresh = await stub.ApplyStockSnapshot(
        pb.ApplyStockSnapshotRequest(
            snapshot_id=random_id("snap"),
            as_of=ts(int(time.time() * 1000) + 1),
            lines=[pb.SnapshotLine(sku=sku, location_id=loc, on_hand=20)],
        )
    )
    assert fresh.results[0].counters.on_hand == 20


async def test_snapshot_below_reserved_keeps_promises_and_reports_shortfall(stub):
    (sku,), (loc,) = await seed(stub, on_hand=10)
    await stub.ReserveStock(
        pb.ReserveStockRequest(
            reservation_id=random_id("r"),
            channel=common_pb2.CHANNEL_WEB,
            lines=[pb.ReservationLine(sku=sku, location_id=loc, quantity=6)],
        )
    )
    out = await stub.ApplyStockSnapshot(
        pb.ApplyStockSnapshotRequest(
            snapshot_id=random_id("snap"),
            as_of=ts(int(time.time() * 1000) + 1),
            lines=[pb.SnapshotLine(sku=sku, location_id=loc, on_hand=4)],
        )
    )
    r = out.results[0]
    assert (r.counters.on_hand, r.counters.reserved, r.shortfall) == (6, 6, 2)


async def test_receive_adjust_transfer_quarantine_are_idempotent_and_atomic(stub):
    (sku,), (a, b) = await seed(stub, locations=2)
    receipt = pb.ReceiveStockRequest(
        movement_id=random_id("rcv"),
        location_id=a,
        lines=[pb.ReservationLine(sku=sku, quantity=12)],
        reason="PO-1",
    )
    first = await stub.ReceiveStock(receipt)
    again = await stub.ReceiveStock(receipt)
    assert not first.duplicate and again.duplicate
    assert (await counters(stub, sku, a)).counters.on_hand == 12
    moved = await stub.TransferStock(
        pb.TransferStockRequest(
            movement_id=random_id("xfer"), sku=sku, from_location_id=a, to_location_id=b, quantity=5
        )
    )
    assert (moved.from_level.counters.on_hand, moved.to_level.counters.on_hand) == (7, 5)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.AdjustStock(
            pb.AdjustStockRequest(movement_id=random_id("adj"), sku="SKU-nope-2", location_id=a, delta=1)
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and info.value.details().startswith("sku:")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.QuarantineStock(
            pb.QuarantineStockRequest(movement_id=random_id("q"), sku=sku, location_id=a, quantity=99)
        )
    assert (
        info.value.code() == grpc.StatusCode.FAILED_PRECONDITION and f"{sku} at {a}" in info.value.details()
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.TransferStock(
            pb.TransferStockRequest(
                movement_id=random_id("xfer"), sku=sku, from_location_id=a, to_location_id=b, quantity=8
            )
        )
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (await counters(stub, sku, b)).counters.on_hand == 5
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.AdjustStock(
            pb.AdjustStockRequest(movement_id=random_id("adj"), sku=sku, location_id=a, delta=0)
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "delta" in info.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.TransferStock(
            pb.TransferStockRequest(
                movement_id=random_id("xfer"),
                sku=sku,
                from_location_id=a,
                to_location_id="NOPE-9",
                quantity=1,
            )
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and "to_location_id" in info.value.details()
    q = await stub.QuarantineStock(
        pb.QuarantineStockRequest(
            movement_id=random_id("q"), sku=sku, location_id=a, quantity=3, reason="damaged"
        )
    )
    assert (q.level.counters.on_hand, q.level.counters.quarantined) == (4, 3)
    back = await stub.ReleaseQuarantine(
        pb.ReleaseQuarantineRequest(
            movement_id=random_id("uq"),
            sku=sku,
            location_id=a,
            quantity=2,
            resolution=pb.QUARANTINE_RESOLUTION_RESTOCK,
        )
    )
    assert (back.level.counters.on_hand, back.level.counters.quarantined) == (6, 1)
    gone = await stub.ReleaseQuarantine(
        pb.ReleaseQuarantineRequest(
            movement_id=random_id("uq"),
            sku=sku,
            location_id=a,
            quantity=1,
            resolution=pb.QUARANTINE_RESOLUTION_DISPOSE,
        )
    )
    assert (gone.level.counters.on_hand, gone.level.counters.quarantined) == (6, 0)
    returned = await stub.ReceiveStock(
        pb.ReceiveStockRequest(
            movement_id=random_id("ret"),
            location_id=b,
            condition=pb.STOCK_CONDITION_QUARANTINED,
            lines=[pb.ReservationLine(sku=sku, quantity=1)],
            reason="return R-1",
        )
    )
    assert returned.levels[0].counters.quarantined == 1


async def test_incoming_supply_is_shown_and_consumed_by_receipts(stub):
    (sku,), (loc,) = await seed(stub)
    when = int(time.time() * 1000) + 86_400_000
    level = (
        await stub.SetIncomingSupply(
            pb.SetIncomingSupplyRequest(
                sku=sku,
                location_id=loc,
                supply=pb.IncomingSupply(supply_id="PO-7", quantity=20, expected_at=ts(when), source="PO"),
            )
        )
    ).level
    assert [(s.supply_id, s.quantity) for s in level.incoming] == [("PO-7", 20)]
    av = (await stub.GetAvailability(pb.GetAvailabilityRequest(sku=sku))).availability
    assert av.locations[0].incoming == 20 and av.locations[0].next_incoming_at.ToMilliseconds() == when
    await stub.ReceiveStock(
        pb.ReceiveStockRequest(
            movement_id=random_id("rcv"),
            location_id=loc,
            supply_id="PO-7",
            lines=[pb.ReservationLine(sku=sku, quantity=15)],
        )
    )
    level = await counters(stub, sku, loc)
    assert level.counters.on_hand == 15 and [s.quantity for s in level.incoming] == [5]


async def test_csv_import_validates_everything_before_applying(stub):
    (s1, s2), (loc,) = await seed(stub, skus=2)
    now = ts(int(time.time() * 1000))
    bad = f"sku,location_id,on_hand\n{s1},{loc},5\n{s2},{loc},-1\n".encode()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ImportStockCsv(pb.ImportStockCsvRequest(import_id=random_id("csv"), csv=bad, as_of=now))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "row 3" in info.value.details()
    assert (await counters(stub, s1, loc)).counters.on_hand == 0
    unknown = f"sku,location_id,on_hand\n{s1},{loc},5\nSKU-nope-1,{loc},1\n".encode()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ImportStockCsv(
            pb.ImportStockCsvRequest(import_id=random_id("csv"), csv=unknown, as_of=now)
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and "csv:row 3.sku" in info.value.details()
    assert (await counters(stub, s1, loc)).counters.on_hand == 0
    good = f"sku,location_id,on_hand,safety_stock\n{s1},{loc},5,1\n{s2},{loc},7,\n".encode()
    out = await stub.ImportStockCsv(pb.ImportStockCsvRequest(import_id=random_id("csv"), csv=good, as_of=now))
    assert (out.applied, out.skipped) == (2, 0)
    c1 = (await counters(stub, s1, loc)).counters
    assert (c1.on_hand, c1.safety_stock, c1.available_to_promise) == (5, 1, 4)
    assert (await counters(stub, s2, loc)).counters.on_hand == 7


async def test_locations_are_listed_and_filtered(stub):
    _, (a, b) = await seed(stub, locations=2)
    got = await stub.GetLocation(pb.GetLocationRequest(location_id=a))
    assert got.location.opening_hours[0].opens == "09:00"
    listed = await stub.ListLocations(
        pb.ListLocationsRequest(
            types=[common_pb2.LOCATION_TYPE_STORE],
            capabilities=[pb.FULFILMENT_CAPABILITY_SHIP_FROM_STORE],
            active_only=True,
        )
    )
    ids = {x.location_id for x in listed.locations}
    assert {a, b} <= ids
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.UpsertLocations(
            pb.UpsertLocationsRequest(
                locations=[
                    pb.Location(
                        location_id=random_id("LOC"),
                        name="x",
                        type=common_pb2.LOCATION_TYPE_STORE,
                        point=common_pb2.GeoPoint(latitude=123, longitude=0),
                    )
                ]
            )
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "locations[0].point.latitude" in info.value.details()


async def test_snapshot_dated_too_far_in_the_future_is_refused_and_nothing_applied(stub):
    (sku,), (loc,) = await seed(stub, on_hand=10)
    now = int(time.time() * 1000)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ApplyStockSnapshot(
            pb.ApplyStockSnapshotRequest(
                snapshot_id=random_id("snap"),
                as_of=ts(now + 3_600_000),  # an ERP clock an hour ahead
                lines=[pb.SnapshotLine(sku=sku, location_id=loc, on_hand=99)],
            )
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith("as_of: ") and "future" in info.value.details()
    level = await counters(stub, sku, loc)
    assert (level.counters.on_hand, level.HasField("snapshot_as_of")) == (10, False)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ImportStockCsv(
            pb.ImportStockCsvRequest(
                import_id=random_id("csv"),
                csv=f"sku,location_id,on_hand\n{sku},{loc},99\n".encode(),
                as_of=ts(now + 3_600_000),
            )
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "as_of" in info.value.details()
    # Within the allowed skew (default 5 minutes) a count is accepted, and real counts after it
    # are no longer held off for long.
    ok = await stub.ApplyStockSnapshot(
        pb.ApplyStockSnapshotRequest(
            snapshot_id=random_id("snap"),
            as_of=ts(now + 60_000),
            lines=[pb.SnapshotLine(sku=sku, location_id=loc, on_hand=7)],
        )
    )
    assert ok.results[0].applied and ok.results[0].counters.on_hand == 7


async def test_snapshot_older_than_trimmed_movements_is_refused(stub, service_redis):
    (sku,), (loc, fresh) = await seed(stub, locations=2, on_hand=10)
    now = int(time.time() * 1000)
    eight_days = 8 * 86400 * 1000
    # A movement recorded 9 days ago, trimmed (7-day history) when the next one is recorded.
    await service_redis.zadd(f"inv:{{{sku}}}:mv:{loc}", {"0:4": now - 9 * 86400 * 1000})
    await stub.AdjustStock(
        pb.AdjustStockRequest(movement_id=random_id("adj"), sku=sku, location_id=loc, delta=1)
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ApplyStockSnapshot(
            pb.ApplyStockSnapshotRequest(
                snapshot_id=random_id("snap"),
                as_of=ts(now - eight_days),
                lines=[pb.SnapshotLine(sku=sku, location_id=loc, on_hand=3)],
            )
        )
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert info.value.details().startswith("as_of: older than the 7-day movement history")
    assert (await counters(stub, sku, loc)).counters.on_hand == 11
    # Where nothing was trimmed every movement since an old count is still known: it applies.
    ok = await stub.ApplyStockSnapshot(
        pb.ApplyStockSnapshotRequest(
            snapshot_id=random_id("snap"),
            as_of=ts(now - eight_days),
            lines=[pb.SnapshotLine(sku=sku, location_id=fresh, on_hand=3)],
        )
    )
    assert ok.results[0].applied and ok.results[0].counters.on_hand == 3 + 10
