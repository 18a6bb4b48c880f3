"""POS sale streams, availability watch streams and the Kafka ledger, end to end on the real
service, Redis and Kafka."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from tutti.common.v1 import common_pb2
from tutti.inventory.v1 import events_pb2
from tutti.inventory.v1 import inventory_pb2 as pb

from runtime.kafka import INVENTORY_AVAILABILITY, INVENTORY_MOVEMENTS
from tests.inventory.conftest import seed
from tests.support import random_id, read_events, wait_for

pytestmark = pytest.mark.integration


def sale(
    terminal: str, sale_id: str, loc: str, sku: str, qty: int = 1, kind: int = pb.POS_SALE_KIND_SALE
) -> pb.StreamPosSalesRequest:
    return pb.StreamPosSalesRequest(
        terminal_id=terminal,
        sale_id=sale_id,
        location_id=loc,
        kind=kind,  # type: ignore[arg-type]
        lines=[pb.PosLine(sku=sku, quantity=qty)],
    )


async def on_hand(stub, sku: str, loc: str) -> int:
    reply = await stub.GetStockLevels(pb.GetStockLevelsRequest(sku=sku, location_ids=[loc]))
    return reply.levels[0].counters.on_hand


async def test_pos_batch_resent_after_a_dropped_stream_counts_once(stub):
    (sku,), (store,) = await seed(stub, on_hand=50)
    terminal = random_id("T")
    batch = [sale(terminal, f"S-{i}", store, sku, qty=i + 1) for i in range(5)]  # 1+2+3+4+5 = 15 units

    call = stub.StreamPosSales()
    for request in batch:
        await call.write(request)
    first_acks = [await call.read() for _ in range(2)]
    assert [a.sale_id for a in first_acks] == ["S-0", "S-1"]
    call.cancel()  # the store's network drops; the terminal never saw acks for S-2..S-4

    call = stub.StreamPosSales()
    for request in batch:
        await call.write(request)
    await call.done_writing()
    acks = [ack async for ack in call]
    assert [a.sale_id for a in acks] == [r.sale_id for r in batch]
    assert all(a.status == pb.POS_ACK_STATUS_ACCEPTED for a in acks)
    assert acks[0].duplicate and acks[1].duplicate
    assert await on_hand(stub, sku, store) == 50 - 15


async def test_pos_rejects_bad_sales_without_ending_the_stream_and_reports_shortfall(stub):
    (sku,), (store,) = await seed(stub, on_hand=3)
    await stub.ReserveStock(
        pb.ReserveStockRequest(
            reservation_id=random_id("r"),
            channel=common_pb2.CHANNEL_WEB,
            lines=[pb.ReservationLine(sku=sku, location_id=store, quantity=2)],
        )
    )
    terminal = random_id("T")
    call = stub.StreamPosSales()
    await call.write(sale(terminal, "bad-1", store, "SKU-does-not-exist"))
    await call.write(sale(terminal, "bad-2", store, sku, qty=0))
    await call.write(sale(terminal, "ok-1", store, sku, qty=2))
    await call.write(sale(terminal, "ret-1", store, sku, qty=1, kind=pb.POS_SALE_KIND_RETURN))
    await call.done_writing()
    acks = {a.sale_id: a async for a in call}
    assert acks["bad-1"].status == pb.POS_ACK_STATUS_REJECTED and "NOT_FOUND" in acks["bad-1"].error
    assert acks["bad-2"].status == pb.POS_ACK_STATUS_REJECTED and "lines[0].quantity" in acks["bad-2"].error
    # 2 sold but only 1 unit was free: on_hand stays at reserved, 1 unit reported to re-source.
    assert acks["ok-1"].status == pb.POS_ACK_STATUS_ACCEPTED and dict(acks["ok-1"].shortfall) == {sku: 1}
    assert acks["ret-1"].status == pb.POS_ACK_STATUS_ACCEPTED
    levels = (await stub.GetStockLevels(pb.GetStockLevelsRequest(sku=sku))).levels[0].counters
    assert (levels.on_hand, levels.reserved) == (3, 2)


async def test_pos_sale_shows_up_on_a_watch_stream_and_on_kafka(stub, settings):
    (sku,), (store, _dc) = await seed(stub, locations=2, on_hand=10)
    started_ms = int(time.time() * 1000) - 1000
    watch = stub.WatchAvailability(pb.WatchAvailabilityRequest(skus=[sku], channel=common_pb2.CHANNEL_WEB))
    snapshot = await watch.read()
    assert snapshot.snapshot and snapshot.snapshot_complete
    assert snapshot.availability.network_available == 20

    terminal = random_id("T")
    call = stub.StreamPosSales()
    await call.write(sale(terminal, "S-1", store, sku, qty=3))
    ack = await call.read()
    assert ack.status == pb.POS_ACK_STATUS_ACCEPTED
    await call.done_writing()

    change = await asyncio.wait_for(watch.read(), timeout=5)
    assert not change.snapshot
    (loc,) = change.availability.locations
    assert (loc.location_id, loc.on_hand, loc.available) == (store, 7, 7)
    assert change.availability.network_available == 17
    watch.cancel()

    reference = f"pos:{terminal}:S-1"

    def is_sale(env) -> bool:
        if env.type != "tutti.inventory.v1.StockMovementRecorded":
            return False
        m = events_pb2.StockMovementRecorded()
        env.payload.Unpack(m)
        return m.reference == reference

    (env,) = await read_events(
        settings.kafka_bootstrap, INVENTORY_MOVEMENTS.name, is_sale, from_beginning_ms=started_ms
    )
    movement = events_pb2.StockMovementRecorded()
    env.payload.Unpack(movement)
    assert env.key == sku
    assert movement.kind == events_pb2.MOVEMENT_KIND_POS_SOLD
    assert (movement.on_hand_delta, movement.after.on_hand, movement.location_id) == (-3, 7, store)

    def is_availability(env) -> bool:
        return env.key == f"{sku}@{store}" and env.sequence == movement.sequence

    (avail,) = await read_events(
        settings.kafka_bootstrap, INVENTORY_AVAILABILITY.name, is_availability, from_beginning_ms=started_ms
    )
    changed = events_pb2.AvailabilityChanged()
    avail.payload.Unpack(changed)
    assert changed.counters.available_to_promise == 7


async def test_watch_filters_and_never_goes_backwards(stub):
    (a, b), (loc,) = await seed(stub, skus=2, on_hand=5)
    watch = stub.WatchAvailability(pb.WatchAvailabilityRequest(skus=[a]))
    first = await watch.read()
    assert first.availability.sku == a
    await stub.AdjustStock(
        pb.AdjustStockRequest(movement_id=random_id("adj"), sku=b, location_id=loc, delta=1)
    )
    await stub.AdjustStock(
        pb.AdjustStockRequest(movement_id=random_id("adj"), sku=a, location_id=loc, delta=2)
    )
    change = await asyncio.wait_for(watch.read(), timeout=5)
    assert change.availability.sku == a and change.availability.locations[0].on_hand == 7
    watch.cancel()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.WatchAvailability(pb.WatchAvailabilityRequest(skus=["SKU-unknown-1"])).read()
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_relay_drains_the_outbox(stub, service_redis):
    await seed(stub, on_hand=1)
    await wait_for(lambda: _empty(service_redis), timeout=15, message="outbox drained")


async def _empty(redis) -> bool:
    return await redis.xlen("inv:outbox") == 0


async def test_watch_started_during_writes_misses_nothing_and_never_goes_backwards(stub):
    (sku,), (loc,) = await seed(stub, on_hand=1)

    async def write(n: int) -> None:
        for _ in range(n):
            await stub.AdjustStock(
                pb.AdjustStockRequest(movement_id=random_id("adj"), sku=sku, location_id=loc, delta=1)
            )

    writer = asyncio.create_task(write(40))
    watch = stub.WatchAvailability(pb.WatchAvailabilityRequest(skus=[sku], location_ids=[loc]))
    seen: list[tuple[int, int]] = []
    first = await watch.read()
    seen.append((first.availability.locations[0].sequence, first.availability.locations[0].on_hand))
    while seen[-1][1] < 41:
        message = await asyncio.wait_for(watch.read(), timeout=5)
        (changed,) = message.availability.locations
        seen.append((changed.sequence, changed.on_hand))
    await writer
    watch.cancel()
    sequences = [s for s, _ in seen]
    assert sequences == sorted(set(sequences)), "a change was repeated or went backwards"
    # Every change after the snapshot is there: one unit per sequence step.
    assert [q - seen[0][1] for _, q in seen] == [s - seen[0][0] for s, _ in seen]


async def test_an_open_watch_follows_policy_and_location_changes(stub):
    """A channel's view changes without any stock moving when its policy or a location does:
    an open watch gets a fresh snapshot of each SKU whose view moved, and nothing for others."""
    from tests.inventory.conftest import location

    (sku,), (store, dc) = await seed(stub, locations=2, on_hand=10)
    channel = common_pb2.CHANNEL_CALL_CENTRE  # reset below, like the policy test does
    watch = stub.WatchAvailability(pb.WatchAvailabilityRequest(skus=[sku], channel=channel))

    async def next_message() -> pb.WatchAvailabilityResponse:
        return await asyncio.wait_for(watch.read(), timeout=5)

    def shown(message: pb.WatchAvailabilityResponse) -> dict[str, int]:
        return {x.location_id: x.available for x in message.availability.locations}

    try:
        first = await next_message()
        assert first.snapshot and shown(first) == {store: 10, dc: 10}

        await stub.SetChannelPolicy(
            pb.SetChannelPolicyRequest(
                policy=pb.ChannelPolicy(channel=channel, buffer_units=3, excluded_location_ids=[store])
            )
        )
        update = await next_message()
        assert update.snapshot and shown(update) == {dc: 7}  # the store is gone from the view
        assert update.availability.network_available == 7

        # Another channel's policy leaves this view as it is: nothing is sent for it.
        await stub.SetChannelPolicy(
            pb.SetChannelPolicyRequest(policy=pb.ChannelPolicy(channel=common_pb2.CHANNEL_APP))
        )
        await stub.UpsertLocations(pb.UpsertLocationsRequest(locations=[location(dc, active=False)]))
        update = await next_message()
        assert update.snapshot and shown(update) == {}  # the DC closed: nothing left to sell
        await stub.UpsertLocations(pb.UpsertLocationsRequest(locations=[location(dc)]))
        update = await next_message()
        assert update.snapshot and shown(update) == {dc: 7}

        # And stock changes still arrive as changes, in the channel's current view.
        await stub.AdjustStock(
            pb.AdjustStockRequest(movement_id=random_id("adj"), sku=sku, location_id=dc, delta=1)
        )
        change = await next_message()
        assert not change.snapshot and shown(change) == {dc: 8}
    finally:
        watch.cancel()
        await stub.SetChannelPolicy(pb.SetChannelPolicyRequest(policy=pb.ChannelPolicy(channel=channel)))


async def test_a_till_sale_is_kept_as_recorded_for_returns_to_check(stub):
    (sku,), (store,) = await seed(stub, on_hand=10)
    terminal = random_id("T")
    call = stub.StreamPosSales()
    await call.write(sale(terminal, "S-1", store, sku, qty=2))
    await call.write(sale(terminal, "S-1", store, sku, qty=2))  # a resend changes nothing
    await call.done_writing()
    assert [a.status async for a in call] == [pb.POS_ACK_STATUS_ACCEPTED] * 2

    recorded = (await stub.GetPosSale(pb.GetPosSaleRequest(terminal_id=terminal, sale_id="S-1"))).sale
    assert (recorded.location_id, recorded.kind) == (store, pb.POS_SALE_KIND_SALE)
    assert [(x.sku, x.quantity) for x in recorded.lines] == [(sku, 2)]
    assert abs(recorded.recorded_at.ToMilliseconds() - time.time() * 1000) < 60_000

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetPosSale(pb.GetPosSaleRequest(terminal_id=terminal, sale_id="S-never"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no till sale S-never" in info.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetPosSale(pb.GetPosSaleRequest(terminal_id="", sale_id="S-1"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
