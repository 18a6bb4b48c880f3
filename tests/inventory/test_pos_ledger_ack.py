"""POS acknowledgements need positive proof that the sale is on the Kafka ledger (the relay's
receipt), not just the absence of its outbox entry. A service whose relay is off (its own Redis
db) stands in for a relay that is down; the tests run a relay of their own when they want one."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from redis.asyncio import Redis
from tutti.inventory.v1 import events_pb2, inventory_pb2_grpc
from tutti.inventory.v1 import inventory_pb2 as pb

from runtime.kafka import INVENTORY_MOVEMENTS, create_producer
from runtime.settings import CommonSettings
from services.inventory.adapters.redis_store import OUTBOX
from services.inventory.adapters.relay import OutboxRelay
from services.inventory.bootstrap import InventorySettings, build
from tests.inventory.conftest import redis_url, seed
from tests.inventory.test_pos_and_streams import on_hand, sale
from tests.support import internal_channel, random_id, read_events, running_service, wait_for

pytestmark = pytest.mark.integration

NO_RELAY_DB = 12
ACK_DEADLINE_S = 3.0


@pytest.fixture(scope="module")
async def no_relay(settings: CommonSettings) -> AsyncIterator[inventory_pb2_grpc.InventoryServiceStub]:
    url = redis_url(settings, NO_RELAY_DB)
    r = Redis.from_url(url)
    await r.flushdb()
    await r.aclose()
    common = dataclasses.replace(settings, redis_url=url)
    cfg = dataclasses.replace(
        InventorySettings.from_env(common, {}),
        relay_enabled=False,
        pos_ack_after_ledger_s=ACK_DEADLINE_S,
        # Seeding (locations, SKUs, receipts) answers once in Redis here: no relay would receipt it.
        ack_after_ledger_s=0.0,
    )
    async with (
        running_service(common, functools.partial(build, inventory=cfg)) as svc,
        internal_channel(svc.address) as ch,
    ):
        yield inventory_pb2_grpc.InventoryServiceStub(ch)


@pytest.fixture
async def redis(settings: CommonSettings) -> AsyncIterator[Redis]:
    r = Redis.from_url(redis_url(settings, NO_RELAY_DB))
    yield r
    await r.aclose()


@contextlib.asynccontextmanager
async def relay_running(redis: Redis, settings: CommonSettings) -> AsyncIterator[None]:
    producer = create_producer(settings.kafka_bootstrap, "tutti-inventory-test-relay")
    await producer.start()
    relay = OutboxRelay(redis, producer, relayed_channel=f"inv:relayed:{NO_RELAY_DB}")
    stop = asyncio.Event()

    async def relay_until_stopped() -> None:
        # Stopped by a flag rather than by cancelling: a blocked XREAD may swallow a cancellation.
        while not stop.is_set():
            await relay.relay_once(block_ms=100)

    task = asyncio.create_task(relay_until_stopped())
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)
        await producer.stop()


async def send_one(stub, request: pb.StreamPosSalesRequest, within: float) -> pb.StreamPosSalesResponse:
    call = stub.StreamPosSales()
    try:
        await call.write(request)
        return await asyncio.wait_for(call.read(), timeout=within)
    finally:
        call.cancel()


def movement_of(reference: str):
    def matches(env) -> bool:
        if env.type != "tutti.inventory.v1.StockMovementRecorded":
            return False
        m = events_pb2.StockMovementRecorded()
        env.payload.Unpack(m)
        return m.reference == reference

    return matches


async def test_no_ack_while_the_relay_is_down_then_acked_once_on_kafka(no_relay, redis, settings):
    (sku,), (store,) = await seed(no_relay, on_hand=10)
    started_ms = int(time.time() * 1000) - 1000
    terminal = random_id("T")
    request = sale(terminal, "S-1", store, sku, qty=2)

    began = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await send_one(no_relay, request, within=ACK_DEADLINE_S + 5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "not yet on the ledger" in (info.value.details() or "")
    assert time.monotonic() - began < ACK_DEADLINE_S + 2  # bounded by the ack deadline
    assert await on_hand(no_relay, sku, store) == 8  # recorded in Redis all the same

    async with relay_running(redis, settings):
        ack = await send_one(no_relay, request, within=ACK_DEADLINE_S + 5)  # the terminal resends
    assert ack.status == pb.POS_ACK_STATUS_ACCEPTED and ack.duplicate
    assert await on_hand(no_relay, sku, store) == 8  # counted once
    assert await redis.get(f"inv:onledger:pos:{terminal}:S-1")  # the relay's receipt
    (env,) = await read_events(
        settings.kafka_bootstrap,
        INVENTORY_MOVEMENTS.name,
        movement_of(f"pos:{terminal}:S-1"),
        from_beginning_ms=started_ms,
    )
    m = events_pb2.StockMovementRecorded()
    env.payload.Unpack(m)
    assert (m.kind, m.on_hand_delta, m.after.on_hand) == (events_pb2.MOVEMENT_KIND_POS_SOLD, -2, 8)


async def test_an_outbox_entry_lost_before_the_relay_saw_it_is_never_acked(no_relay, redis, settings):
    (sku,), (store,) = await seed(no_relay, on_hand=10)
    started_ms = int(time.time() * 1000) - 1000
    terminal = random_id("T")
    request = sale(terminal, "S-1", store, sku, qty=3)
    receipt = f"inv:onledger:pos:{terminal}:S-1".encode()

    async def entry_of_the_sale() -> bytes | None:
        for entry_id, fields in await redis.xrange(OUTBOX):
            if fields.get(b"r") == receipt:
                return entry_id
        return None

    sending = asyncio.create_task(send_one(no_relay, request, within=ACK_DEADLINE_S + 5))
    lost = await wait_for(entry_of_the_sale, timeout=ACK_DEADLINE_S, message="sale in the outbox")
    assert await redis.xdel(OUTBOX, lost) == 1  # lost before the relay saw it (trim, failover, AOF)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await sending
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "lost" in (info.value.details() or "")
    assert not await redis.exists(receipt)

    # Later entries relayed past the lost one prove nothing about it: the resend is only acked
    # once its movement (queued again from the sale's record) is really on Kafka.
    async with relay_running(redis, settings):
        await seed(no_relay, on_hand=1)
        ack = await send_one(no_relay, request, within=ACK_DEADLINE_S + 5)
    assert ack.status == pb.POS_ACK_STATUS_ACCEPTED and ack.duplicate
    assert await on_hand(no_relay, sku, store) == 7  # counted once
    (env,) = await read_events(
        settings.kafka_bootstrap,
        INVENTORY_MOVEMENTS.name,
        movement_of(f"pos:{terminal}:S-1"),
        from_beginning_ms=started_ms,
    )
    assert env.event_id == f"inv-{lost.decode()}-0"  # the original event id: consumers de-duplicate
    m = events_pb2.StockMovementRecorded()
    env.payload.Unpack(m)
    assert (m.on_hand_delta, m.after.on_hand) == (-3, 7)
