"""The `tutti` CLI as an operator runs it: a subprocess against a running gateway in front of
the real inventory service (Redis, Kafka). Backends whose code is not written yet are stood in
for by a health-only server so the gateway is SERVING."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from tutti.common.v1 import common_pb2
from tutti.inventory.v1 import inventory_pb2 as pb
from tutti.inventory.v1 import inventory_pb2_grpc

from gateway.bootstrap import builder
from gateway.settings import BACKENDS
from runtime.settings import CommonSettings
from tests.gateway.conftest import KEYS, gateway_settings
from tests.support import random_id, running_service

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

# The gateway suite's own Redis db (the inventory suite uses 12-15; db 0 is the running stack's).
REDIS_DB = 10
TUTTI = Path(sys.executable).parent / "tutti"


@pytest.fixture(scope="module")
async def stack(
    settings: CommonSettings, health_only_backend: str, credentials_file: Path
) -> AsyncIterator[str]:
    from services.inventory.bootstrap import build as build_inventory

    base = dataclasses.replace(settings, redis_url=f"{settings.redis_url.rsplit('/', 1)[0]}/{REDIS_DB}")
    addresses = {name: health_only_backend for name in BACKENDS}
    async with running_service(base, build_inventory) as inventory:
        addresses["inventory"] = inventory.address
        common = dataclasses.replace(base, addresses={**settings.addresses, **addresses})
        async with running_service(common, builder(gateway_settings(credentials_file))) as gateway:
            yield gateway.address


async def tutti(gateway: str, *args: str, key: str | None = KEYS["admin"]) -> tuple[int, str, str]:
    """Run the CLI without blocking the event loop the gateway runs in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUTTI_")}
    command = [str(TUTTI)] if TUTTI.exists() else [sys.executable, "-m", "gateway.cli"]
    argv = [*command, "--gateway", gateway, *(["--key", key] if key else []), *args]
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    return process.returncode or 0, out.decode(), err.decode()


async def setup_location_and_sku(gateway: str) -> tuple[str, str]:
    location_id, sku = random_id("cli-store"), random_id("CLI-SKU")
    async with grpc.aio.insecure_channel(gateway) as channel:
        stub = inventory_pb2_grpc.InventoryServiceStub(channel)
        admin = [("authorization", f"Bearer {KEYS['admin']}")]
        await stub.UpsertLocations(
            pb.UpsertLocationsRequest(
                locations=[
                    pb.Location(
                        location_id=location_id,
                        name="CLI store",
                        type=common_pb2.LOCATION_TYPE_STORE,
                        active=True,
                        point=common_pb2.GeoPoint(latitude=48.85, longitude=2.35),
                        capabilities=[pb.FULFILMENT_CAPABILITY_CLICK_AND_COLLECT],
                    )
                ]
            ),
            metadata=admin,
            timeout=10,
        )
        await stub.RegisterSkus(
            pb.RegisterSkusRequest(skus=[pb.Sku(sku=sku, name="CLI thing")]), metadata=admin, timeout=10
        )
    return location_id, sku


async def test_stock_import_then_availability_in_a_table_and_as_json(stack: str, tmp_path: Path) -> None:
    location_id, sku = await setup_location_and_sku(stack)
    csv = tmp_path / "stock.csv"
    csv.write_text(f"sku,location_id,on_hand\n{sku},{location_id},12\n")

    code, out, err = await tutti(stack, "stock", "import", str(csv))
    assert code == 0, err
    assert "applied" in out and "1" in out

    code, out, err = await tutti(stack, "availability", "get", sku, key=KEYS["web"])
    assert code == 0, err
    assert location_id in out and "12" in out
    assert out.splitlines()[1].split()[0] == "location"  # a table with headers

    code, out, err = await tutti(
        stack, "--json", "availability", "get", sku, "--location", location_id, key=KEYS["web"]
    )
    assert code == 0, err
    reply = json.loads(out)
    assert reply["availability"]["channel"] == "CHANNEL_WEB"  # the web key's own channel
    assert reply["availability"]["locations"][0]["on_hand"] == "12"

    code, out, err = await tutti(
        stack, "--json", "availability", "watch", sku, "--count", "1", key=KEYS["web"]
    )
    assert code == 0, err
    first = json.loads(out.splitlines()[0])
    assert first["availability"]["sku"] == sku


async def test_the_cli_reports_refusals_with_their_status(stack: str, tmp_path: Path) -> None:
    code, _, err = await tutti(stack, "availability", "get", "ANY", key=None)
    assert code == 1
    assert "UNAUTHENTICATED" in err

    csv = tmp_path / "stock.csv"
    csv.write_text("sku,location_id,on_hand\nA,B,1\n")
    code, _, err = await tutti(stack, "stock", "import", str(csv), key=KEYS["web"])
    assert code == 1
    assert "PERMISSION_DENIED" in err and "ImportStockCsv" in err

    code, _, err = await tutti(stack, "availability", "get", "", key=KEYS["web"])
    assert code == 1
    assert "INVALID_ARGUMENT" in err and "sku" in err


async def test_a_usage_mistake_exits_2(stack: str) -> None:
    code, _, err = await tutti(stack, "order", "place", "--line", "A:x", "--customer", "c")
    assert code == 2
    assert "quantity must be an integer" in err
