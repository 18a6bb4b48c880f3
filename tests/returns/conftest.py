"""Fixtures of the returns suites: the REAL inventory service in-process on its own Redis db."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest
from tutti.inventory.v1 import inventory_pb2_grpc as igrpc

from runtime.settings import CommonSettings
from services.inventory.bootstrap import InventorySettings
from services.inventory.bootstrap import build as build_inventory
from tests.support import RunningService, internal_channel, running_service

INVENTORY_REDIS_DB = 10


@pytest.fixture(scope="module")
async def inventory(settings: CommonSettings) -> AsyncIterator[RunningService]:
    redis_url = settings.redis_url.rsplit("/", 1)[0] + f"/{INVENTORY_REDIS_DB}"
    cfg = dataclasses.replace(InventorySettings.from_env(settings), redis_url=redis_url)

    async def build(s: CommonSettings, stack: AsyncExitStack):  # type: ignore[no-untyped-def]
        return await build_inventory(s, stack, cfg)

    async with running_service(settings, build) as svc:
        yield svc


@pytest.fixture(scope="module")
async def inv(inventory: RunningService) -> AsyncIterator[igrpc.InventoryServiceStub]:
    async with internal_channel(inventory.address) as channel:
        yield igrpc.InventoryServiceStub(channel)
