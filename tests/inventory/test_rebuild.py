"""Recovery: the Redis state rebuilt from the Kafka ledger equals the state before the loss."""

from __future__ import annotations

import time

import pytest
from google.protobuf import timestamp_pb2
from redis.asyncio import Redis
from tutti.common.v1 import common_pb2
from tutti.inventory.v1 import inventory_pb2 as pb

from services.inventory.adapters.redis_store import RedisStore
from services.inventory.domain import model
from services.inventory.rebuild import dump_state, rebuild
from services.inventory.service import InventoryService
from tests.inventory.conftest import REBUILD_DB, redis_url, seed
from tests.support import random_id, wait_for

pytestmark = pytest.mark.integration
WEB = common_pb2.CHANNEL_WEB


def line(sku: str, loc: str, qty: int) -> pb.ReservationLine:
    return pb.ReservationLine(sku=sku, location_id=loc, quantity=qty)


async def test_rebuild_from_the_ledger_equals_the_state_before_the_loss(stub, service_redis, settings):
    started_ms = int(time.time() * 1000) - 5000
    (a, b, c), (store, dc) = await seed(stub, skus=3, locations=2, on_hand=20)
    now = int(time.time() * 1000)
    as_of = timestamp_pb2.Timestamp()
    as_of.FromMilliseconds(now - 1000)
    expected = timestamp_pb2.Timestamp()
    expected.FromMilliseconds(now + 86_400_000)

    # A mix of every kind of movement.
    await stub.ApplyStockSnapshot(
        pb.ApplyStockSnapshotRequest(
            snapshot_id=random_id("snap"),
            as_of=as_of,
            lines=[pb.SnapshotLine(sku=c, location_id=dc, on_hand=30)],
        )
    )
    await stub.SetSafetyStock(
        pb.SetSafetyStockRequest(lines=[pb.SafetyStockLine(sku=a, location_id=dc, safety_stock=2)])
    )
    await stub.SetIncomingSupply(
        pb.SetIncomingSupplyRequest(
            sku=b,
            location_id=dc,
            supply=pb.IncomingSupply(supply_id="PO-1", quantity=40, expected_at=expected, source="PO"),
        )
    )
    await stub.ReceiveStock(
        pb.ReceiveStockRequest(
            movement_id=random_id("rcv"), location_id=dc, supply_id="PO-1", lines=[line(b, "", 10)]
        )
    )
    held = random_id("hold")
    await stub.ReserveStock(
        pb.ReserveStockRequest(
            reservation_id=held, channel=WEB, hold_ttl_seconds=3600, lines=[line(a, store, 2), line(b, dc, 3)]
        )
    )
    firm = random_id("firm")
    await stub.ReserveStock(
        pb.ReserveStockRequest(
            reservation_id=firm,
            channel=common_pb2.CHANNEL_APP,
            order_id=random_id("ord"),
            lines=[line(a, dc, 4), line(c, dc, 5)],
        )
    )
    confirmed = random_id("conf")
    await stub.ReserveStock(
        pb.ReserveStockRequest(
            reservation_id=confirmed, channel=WEB, hold_ttl_seconds=3600, lines=[line(c, store, 6)]
        )
    )
    await stub.ConfirmReservation(pb.ConfirmReservationRequest(reservation_id=confirmed, order_id="O-9"))
    await stub.ReleaseReservation(
        pb.ReleaseReservationRequest(reservation_id=confirmed, lines=[line(c, store, 1)], request_id="rel-1")
    )
    await stub.FulfilReservation(
        pb.FulfilReservationRequest(reservation_id=firm, lines=[line(a, dc, 4)], request_id="ship-1")
    )
    released = random_id("gone")
    await stub.ReserveStock(
        pb.ReserveStockRequest(reservation_id=released, channel=WEB, lines=[line(b, store, 1)])
    )
    await stub.ReleaseReservation(pb.ReleaseReservationRequest(reservation_id=released))
    expiring = random_id("exp")
    await stub.ReserveStock(
        pb.ReserveStockRequest(
            reservation_id=expiring, channel=WEB, hold_ttl_seconds=1, lines=[line(a, store, 1)]
        )
    )
    terminal = random_id("T")
    call = stub.StreamPosSales()
    await call.write(
        pb.StreamPosSalesRequest(
            terminal_id=terminal,
            sale_id="S-1",
            location_id=store,
            kind=pb.POS_SALE_KIND_SALE,
            lines=[pb.PosLine(sku=b, quantity=2)],
        )
    )
    await call.write(
        pb.StreamPosSalesRequest(
            terminal_id=terminal,
            sale_id="S-2",
            location_id=store,
            kind=pb.POS_SALE_KIND_RETURN,
            lines=[pb.PosLine(sku=a, quantity=1, damaged=True)],
        )
    )
    await call.done_writing()
    assert [ack.status async for ack in call] == [pb.POS_ACK_STATUS_ACCEPTED] * 2
    await stub.TransferStock(
        pb.TransferStockRequest(
            movement_id=random_id("x"), sku=c, from_location_id=dc, to_location_id=store, quantity=3
        )
    )
    await stub.QuarantineStock(
        pb.QuarantineStockRequest(movement_id=random_id("q"), sku=b, location_id=store, quantity=2)
    )
    await stub.AdjustStock(
        pb.AdjustStockRequest(movement_id=random_id("adj"), sku=a, location_id=dc, delta=-1)
    )

    async def expired() -> bool:
        r = await stub.GetReservation(pb.GetReservationRequest(reservation_id=expiring))
        return r.reservation.status == pb.RESERVATION_STATUS_EXPIRED

    await wait_for(expired, timeout=10, message="hold swept")

    async def drained() -> bool:
        return await service_redis.xlen("inv:outbox") == 0

    await wait_for(drained, timeout=15, message="outbox relayed to Kafka")
    skus = [a, b, c]
    before = await dump_state(service_redis, skus, [store, dc])
    assert len(before["reservations"]) == 5 and before["counters"]

    # The loss: an empty Redis db, rebuilt from the ledger alone.
    target = Redis.from_url(redis_url(settings, REBUILD_DB))
    try:
        await target.flushdb()
        counts = await rebuild(settings.kafka_bootstrap, target, since_ms=started_ms, skus=set(skus))
        assert counts["counters"] == len(before["counters"])
        after = await dump_state(target, skus, [store, dc])
        assert after == before

        # Till sales are readable again for returns, as they were recorded.
        svc = InventoryService(RedisStore(target))
        original = InventoryService(RedisStore(service_redis))
        for sale_id in ("S-1", "S-2"):
            assert await svc.get_pos_sale(terminal, sale_id) == await original.get_pos_sale(terminal, sale_id)

        # Retries after the rebuild never count twice.
        result = await svc.pos_sale(terminal, "S-1", store, False, [(b, 2, False)])
        assert result.duplicate
        _, dup = await svc.reserve(
            held, [model.Line(a, store, 2), model.Line(b, dc, 3)], "WEB", hold_ttl_s=3600
        )
        assert dup
        assert await dump_state(target, skus, [store, dc]) == before
    finally:
        await target.aclose()
