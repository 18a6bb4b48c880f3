"""Fixtures of the inventory suite: the real service (in-process, ephemeral port) on the real
Redis and Kafka. Inventory tests use their own Redis db indexes (13-15) so they never touch
db 0, and random SKU / location ids so runs never see each other's data."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import grpc
import pytest
from redis.asyncio import Redis
from tutti.common.v1 import common_pb2
from tutti.inventory.v1 import inventory_pb2 as pb
from tutti.inventory.v1 import inventory_pb2_grpc

from runtime.settings import CommonSettings
from services.inventory.bootstrap import build
from tests.support import RunningService, internal_channel, random_id, running_service

SERVICE_DB = 13
STATEFUL_DB = 14
REBUILD_DB = 15


def redis_url(settings: CommonSettings, db: int) -> str:
    base = settings.redis_url.rsplit("/", 1)[0]
    return f"{base}/{db}"


@pytest.fixture(scope="session")
async def inventory(settings: CommonSettings) -> AsyncIterator[RunningService]:
    # The suite's own db: emptied once per session so it never grows without bound.
    r = Redis.from_url(redis_url(settings, SERVICE_DB))
    await r.flushdb()
    await r.aclose()
    s = dataclasses.replace(settings, redis_url=redis_url(settings, SERVICE_DB))
    async with running_service(s, build) as svc:
        yield svc


@pytest.fixture(scope="session")
async def channel(inventory: RunningService) -> AsyncIterator[grpc.aio.Channel]:
    async with internal_channel(inventory.address) as ch:
        yield ch


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> inventory_pb2_grpc.InventoryServiceStub:
    return inventory_pb2_grpc.InventoryServiceStub(channel)


@pytest.fixture
async def service_redis(settings: CommonSettings) -> AsyncIterator[Redis]:
    r = Redis.from_url(redis_url(settings, SERVICE_DB))
    yield r
    await r.aclose()


def location(
    location_id: str, *, kind: int = common_pb2.LOCATION_TYPE_STORE, active: bool = True
) -> pb.Location:
    return pb.Location(
        location_id=location_id,
        name=f"Location {location_id}",
        type=kind,  # type: ignore[arg-type]
        point=common_pb2.GeoPoint(latitude=48.85, longitude=2.35),
        capabilities=[pb.FULFILMENT_CAPABILITY_CLICK_AND_COLLECT, pb.FULFILMENT_CAPABILITY_SHIP_FROM_STORE],
        opening_hours=[pb.OpeningHours(weekday=pb.WEEKDAY_MONDAY, opens="09:00", closes="19:00")],
        daily_capacity=200,
        active=active,
        time_zone="Europe/Paris",
    )


async def seed(
    stub: inventory_pb2_grpc.InventoryServiceStub, *, skus: int = 1, locations: int = 1, on_hand: int = 0
) -> tuple[list[str], list[str]]:
    """Registers fresh SKUs and locations; receives ``on_hand`` of each SKU at each location."""
    sku_ids = [random_id("SKU") for _ in range(skus)]
    loc_ids = [random_id("LOC") for _ in range(locations)]
    await stub.UpsertLocations(pb.UpsertLocationsRequest(locations=[location(x) for x in loc_ids]))
    await stub.RegisterSkus(
        pb.RegisterSkusRequest(
            skus=[pb.Sku(sku=s, name=s, category="test", returnable=True) for s in sku_ids]
        )
    )
    if on_hand:
        for loc in loc_ids:
            await stub.ReceiveStock(
                pb.ReceiveStockRequest(
                    movement_id=random_id("rcv"),
                    location_id=loc,
                    lines=[pb.ReservationLine(sku=s, quantity=on_hand) for s in sku_ids],
                )
            )
    return sku_ids, loc_ids
