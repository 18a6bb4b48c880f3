"""Fixtures of the returns suites: the REAL inventory service in-process on its own Redis db."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import grpc
import pytest
from tutti.inventory.v1 import inventory_pb2_grpc as igrpc
from tutti.returns.v1 import returns_pb2
from tutti.returns.v1 import returns_pb2_grpc as rgrpc

from gateway.bootstrap import builder
from gateway.settings import GatewaySettings
from runtime.settings import CommonSettings
from services.inventory.bootstrap import InventorySettings
from services.inventory.bootstrap import build as build_inventory
from services.returns.bootstrap import ReturnsSettings
from services.returns.bootstrap import build as build_returns
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


@asynccontextmanager
async def returns_behind_gateway(
    settings: CommonSettings, inventory: RunningService, credentials: Path, cfg: ReturnsSettings
) -> AsyncIterator[tuple[rgrpc.ReturnsServiceStub, str]]:
    """The real returns service (on the real inventory) behind a real gateway with these
    credentials: (its stub through the gateway, the gateway's address)."""
    addresses = {**settings.addresses, "inventory": inventory.address}

    async def build(s: CommonSettings, stack: AsyncExitStack):  # type: ignore[no-untyped-def]
        return await build_returns(dataclasses.replace(s, addresses=addresses), stack, cfg)

    async with running_service(settings, build) as returns:
        gw_settings = GatewaySettings(
            credentials_path=credentials, tls_cert=None, tls_key=None, default_timeout_seconds=10.0
        )
        services = {"returns": [returns_pb2.DESCRIPTOR.services_by_name["ReturnsService"]]}
        gw_common = dataclasses.replace(settings, addresses={**addresses, "returns": returns.address})
        async with (
            running_service(gw_common, builder(gw_settings, services=services)) as gateway,
            grpc.aio.insecure_channel(gateway.address) as channel,
        ):
            yield rgrpc.ReturnsServiceStub(channel), gateway.address
