"""End to end as a sales channel sees Tutti: the gateway in front of the real inventory,
orchestrator, returns and tracking services (Redis, Kafka, PostgreSQL), driven with the
`tutti` CLI and the public stubs."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import grpc
import pytest
from tutti.common.v1 import common_pb2
from tutti.inventory.v1 import inventory_pb2 as pb
from tutti.inventory.v1 import inventory_pb2_grpc
from tutti.orchestrator.v1 import orchestrator_pb2, orchestrator_pb2_grpc

from gateway.bootstrap import builder
from runtime.settings import CommonSettings
from services.orchestrator import bootstrap as orchestrator_bootstrap
from services.returns import bootstrap as returns_bootstrap
from services.tracking import bootstrap as tracking_bootstrap
from tests.gateway.conftest import KEYS, gateway_settings
from tests.gateway.test_cli_e2e import REDIS_DB, tutti
from tests.support import random_id, running_service, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.integration]



@pytest.fixture(scope="module")
async def full_stack(settings: CommonSettings, credentials_file: Path) -> AsyncIterator[str]:
    from services.inventory.bootstrap import build as build_inventory

    base = dataclasses.replace(settings, redis_url=f"{settings.redis_url.rsplit('/', 1)[0]}/{REDIS_DB}")
    addresses = dict(settings.addresses)
    async with AsyncExitStack() as stack:
        for name, build in (
            ("inventory", build_inventory),
            ("orchestrator", orchestrator_bootstrap.build),
            ("returns", returns_bootstrap.build),
            ("tracking", tracking_bootstrap.build),
        ):
            common = dataclasses.replace(base, service=name, addresses=dict(addresses))
            running = await stack.enter_async_context(running_service(common, build))
            addresses[name] = running.address
        common = dataclasses.replace(base, service="gateway", addresses=addresses)
        gateway = await stack.enter_async_context(
            running_service(common, builder(gateway_settings(credentials_file)))
        )
        yield gateway.address


def auth(who: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {KEYS[who]}")]


@pytest.fixture(scope="module")
async def shop(full_stack: str) -> tuple[str, list[str]]:
    """One store for the module, set up before the orchestrator first reads (and caches) the
    locations: a location created later is only seen once its cache expires."""
    location_id, skus = await stocked_store(full_stack, 3)
    return location_id, skus


async def stocked_store(gateway: str, sku_count: int) -> tuple[str, list[str]]:
    """A store near Paris with 10 units of new SKUs, set up by the admin through the gateway."""
    location_id, skus = random_id("e2e-store"), [random_id("E2E-SKU") for _ in range(sku_count)]
    async with grpc.aio.insecure_channel(gateway) as channel:
        stub = inventory_pb2_grpc.InventoryServiceStub(channel)
        await stub.UpsertLocations(
            pb.UpsertLocationsRequest(
                locations=[
                    pb.Location(
                        location_id=location_id,
                        name="E2E store",
                        type=common_pb2.LOCATION_TYPE_STORE,
                        active=True,
                        point=common_pb2.GeoPoint(latitude=48.8566, longitude=2.3522),
                        daily_capacity=1000,
                        capabilities=[
                            pb.FULFILMENT_CAPABILITY_CLICK_AND_COLLECT,
                            pb.FULFILMENT_CAPABILITY_SHIP_FROM_STORE,
                        ],
                    )
                ]
            ),
            metadata=auth("admin"),
            timeout=10,
        )
        await stub.RegisterSkus(
            pb.RegisterSkusRequest(skus=[pb.Sku(sku=sku, name="E2E thing") for sku in skus]),
            metadata=auth("admin"),
            timeout=10,
        )
        await stub.ReceiveStock(
            pb.ReceiveStockRequest(
                movement_id=random_id("mv"),
                location_id=location_id,
                lines=[pb.ReservationLine(sku=sku, quantity=10) for sku in skus],
            ),
            metadata=auth("admin"),
            timeout=10,
        )
    return location_id, skus


async def test_a_channel_places_and_follows_its_order_and_no_other_channel_sees_it(
    full_stack: str, shop: tuple[str, list[str]]
) -> None:
    location_id, sku = shop[0], shop[1][0]
    customer = random_id("customer")
    code, out, err = await tutti(
        full_stack,
        "--json",
        "order",
        "place",
        "--customer",
        customer,
        "--line",
        f"{sku}:2",
        "--method",
        "click_and_collect",
        "--pickup",
        location_id,
        key=KEYS["web"],
    )
    assert code == 0, err
    order = json.loads(out)["order"]
    order_id = order["order_id"]
    assert order["channel"] == "CHANNEL_WEB"

    code, out, err = await tutti(full_stack, "order", "get", order_id, key=KEYS["web"])
    assert code == 0, err
    assert order_id in out and sku in out

    async with grpc.aio.insecure_channel(full_stack) as channel:
        orders = orchestrator_pb2_grpc.OrderServiceStub(channel)
        for call in (
            orders.GetOrder(
                orchestrator_pb2.GetOrderRequest(order_id=order_id), metadata=auth("app"), timeout=10
            ),
            orders.CancelOrder(
                orchestrator_pb2.CancelOrderRequest(order_id=order_id), metadata=auth("app"), timeout=10
            ),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
        listed = await orders.ListOrders(
            orchestrator_pb2.ListOrdersRequest(customer_id=customer), metadata=auth("app"), timeout=10
        )
        assert order_id not in [o.order_id for o in listed.orders]

    code, out, err = await tutti(
        full_stack, "--json", "order", "list", "--customer", customer, key=KEYS["web"]
    )
    assert code == 0, err
    assert order_id in [o["order_id"] for o in json.loads(out).get("orders", [])]

    async def timeline_has_steps() -> str | None:
        code, out, _ = await tutti(full_stack, "timeline", order_id, key=KEYS["web"])
        return out if code == 0 and order_id in out else None

    out = await wait_for(timeline_has_steps, timeout=30, message="the order's timeline in tracking")
    code, _, err = await tutti(full_stack, "timeline", order_id, key=KEYS["app"])
    assert code == 1 and "NOT_FOUND" in err


async def test_quote_watch_and_cancel_from_the_cli(full_stack: str, shop: tuple[str, list[str]]) -> None:
    location_id, sku = shop[0], shop[1][1]
    code, out, err = await tutti(
        full_stack,
        "quote",
        "--line",
        f"{sku}:1",
        "--customer",
        "c",
        "--postal-code",
        "75001",
        "--city",
        "Paris",
        "--country",
        "FR",
        "--lat",
        "48.86",
        "--lon",
        "2.34",
        key=KEYS["web"],
    )
    assert code == 0, err
    assert "quote" in out

    code, out, err = await tutti(
        full_stack,
        "--json",
        "order",
        "place",
        "--customer",
        random_id("customer"),
        "--line",
        f"{sku}:1",
        "--method",
        "click_and_collect",
        "--pickup",
        location_id,
        key=KEYS["web"],
    )
    assert code == 0, err
    order_id = json.loads(out)["order"]["order_id"]
    code, out, err = await tutti(
        full_stack, "--json", "order", "watch", order_id, "--count", "1", key=KEYS["web"]
    )
    assert code == 0, err
    assert json.loads(out.splitlines()[0])["order"]["order_id"] == order_id
    code, out, err = await tutti(
        full_stack, "order", "cancel", order_id, "--reason", "changed mind", key=KEYS["web"]
    )
    assert code == 0, err
    assert "cancel" in out.lower()


async def test_rules_administration_needs_an_admin_key(full_stack: str) -> None:
    rules = Path(orchestrator_bootstrap.__file__).parent / "rules" / "default.yaml"
    code, out, err = await tutti(full_stack, "rules", "validate", str(rules))
    assert code == 0, err
    assert out.startswith("valid")
    code, out, err = await tutti(full_stack, "rules", "simulate", str(rules), "--orders", "20")
    assert code == 0, err
    assert "orders sourced differently" in out
    code, _, err = await tutti(full_stack, "rules", "validate", str(rules), key=KEYS["web"])
    assert code == 1 and "PERMISSION_DENIED" in err
