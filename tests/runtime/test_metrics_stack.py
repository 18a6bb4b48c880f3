"""Every process serves its own /metrics, and the series move with the work done: the five
services run in-process on the real Kafka, Redis and PostgreSQL (each with its own registry and
metrics port), an order is placed through the gateway as a sales channel would, and each
process's scrape shows it."""

from __future__ import annotations

import asyncio
import dataclasses
import urllib.request
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tutti.common.v1 import common_pb2
from tutti.inventory.v1 import inventory_pb2 as ipb
from tutti.inventory.v1 import inventory_pb2_grpc
from tutti.orchestrator.v1 import orchestrator_pb2 as opb
from tutti.orchestrator.v1 import orchestrator_pb2_grpc

from gateway.bootstrap import builder
from runtime.kafka import ORDER_EVENTS
from runtime.settings import CommonSettings
from services.inventory.bootstrap import build as build_inventory
from services.orchestrator.bootstrap import build as build_orchestrator
from services.returns.bootstrap import build as build_returns
from services.tracking.bootstrap import build as build_tracking
from tests.gateway.conftest import KEYS, gateway_settings, write_credentials
from tests.gateway.test_stack_e2e import stocked_store
from tests.support import internal_channel, random_id, running_service, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

# A Redis database no other suite uses, so this module's stock is its own.
REDIS_DB = 12
PLACE_ORDER = {"rpc_service": "tutti.orchestrator.v1.OrderService", "rpc_method": "PlaceOrder"}

Samples = list[tuple[str, dict[str, str], float]]


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/plain")
        return str(reply.read().decode())


async def scrape(url: str) -> Samples:
    text = await asyncio.to_thread(_get, url)
    return [
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def value(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples named ``name`` whose labels include ``labels`` (0 when none)."""
    return sum(v for n, ls, v in samples if n == name and labels.items() <= ls.items())


def present(samples: Samples, name: str, **labels: str) -> bool:
    return any(n == name and labels.items() <= ls.items() for n, ls, _ in samples)


@pytest.fixture(scope="module")
async def stack(
    settings: CommonSettings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[dict[str, str]]:
    """name -> metrics URL, plus "grpc" -> the gateway's address."""
    credentials = write_credentials(tmp_path_factory.mktemp("metrics") / "credentials.yaml")
    base = dataclasses.replace(settings, redis_url=f"{settings.redis_url.rsplit('/', 1)[0]}/{REDIS_DB}")
    addresses = dict(settings.addresses)
    urls: dict[str, str] = {}
    async with AsyncExitStack() as stack:
        for name, build in (
            ("inventory", build_inventory),
            ("orchestrator", build_orchestrator),
            ("returns", build_returns),
            ("tracking", build_tracking),
        ):
            common = dataclasses.replace(base, service=name, addresses=dict(addresses))
            running = await stack.enter_async_context(running_service(common, build))
            addresses[name] = running.address
            urls[name] = running.metrics_url
            urls[f"{name}-grpc"] = running.address
        common = dataclasses.replace(base, service="gateway", addresses=addresses)
        gateway = await stack.enter_async_context(
            running_service(common, builder(gateway_settings(credentials)))
        )
        urls["gateway"] = gateway.metrics_url
        urls["grpc"] = gateway.address
        yield urls


async def test_every_process_serves_its_own_registry(stack: dict[str, str]) -> None:
    names = ("gateway", "inventory", "orchestrator", "returns", "tracking")
    assert len({stack[name] for name in names}) == 5
    scrapes = {name: await scrape(stack[name]) for name in names}
    for name, samples in scrapes.items():
        # Health checks answered while starting were timed by the server interceptor.
        health = "grpc.health.v1.Health"
        assert present(samples, "rpc_server_duration_seconds_count", rpc_service=health), name
    # Business series are each service's own: the orchestrator's counters are not in inventory's.
    assert present(scrapes["orchestrator"], "tutti_orders_placed_total", channel="web")
    assert not present(scrapes["inventory"], "tutti_orders_placed_total")
    assert present(scrapes["inventory"], "tutti_pos_transactions_total", kind="sale")
    assert present(scrapes["inventory"], "tutti_redis_pool_connections", pool="inventory", state="max")
    for name in ("orchestrator", "returns", "tracking"):
        assert present(scrapes[name], "tutti_db_pool_connections", pool=name, state="open"), name
    for name in ("inventory", "orchestrator", "returns"):
        assert present(scrapes[name], "tutti_outbox_backlog_events", outbox=name), name
        assert present(scrapes[name], "tutti_outbox_oldest_age_seconds", outbox=name), name


async def test_placing_an_order_moves_the_series_of_each_process_it_crosses(stack: dict[str, str]) -> None:
    location_id, skus = await stocked_store(stack["grpc"], 1)
    before = {name: await scrape(stack[name]) for name in ("gateway", "orchestrator", "inventory")}

    async with grpc.aio.insecure_channel(stack["grpc"]) as channel:
        reply = await orchestrator_pb2_grpc.OrderServiceStub(channel).PlaceOrder(
            opb.PlaceOrderRequest(
                channel=common_pb2.CHANNEL_WEB,
                channel_order_id=random_id("web"),
                customer_id=random_id("customer"),
                method=common_pb2.DELIVERY_METHOD_CLICK_AND_COLLECT,
                pickup_location_id=location_id,
                lines=[opb.OrderLineInput(line_id="1", sku=skus[0], quantity=1)],
            ),
            metadata=[("authorization", f"Bearer {KEYS['web']}")],
            timeout=15,
        )
    assert not reply.duplicate

    after = {name: await scrape(stack[name]) for name in ("gateway", "orchestrator", "inventory")}

    def moved(name: str, series: str, **labels: str) -> float:
        return value(after[name], series, **labels) - value(before[name], series, **labels)

    assert moved("orchestrator", "tutti_orders_placed_total", channel="web") == 1
    ok = {**PLACE_ORDER, "rpc_grpc_status_code": "0"}
    # Server side in the orchestrator and in the gateway; client side where the gateway forwards.
    assert moved("orchestrator", "rpc_server_duration_seconds_count", **ok) == 1
    assert moved("gateway", "rpc_server_duration_seconds_count", **ok) == 1
    assert moved("gateway", "rpc_client_duration_seconds_count", **ok) == 1
    assert moved("gateway", "tutti_gateway_admitted_calls_total", principal_kind="channel") == 1
    # The orchestrator reserved the stock with inventory: a client call there, a served one here.
    reserve = {"rpc_service": "tutti.inventory.v1.InventoryService", "rpc_method": "ReserveStock"}
    assert moved("orchestrator", "rpc_client_duration_seconds_count", **reserve) >= 1
    assert moved("inventory", "rpc_server_duration_seconds_count", **reserve) >= 1
    assert value(after["orchestrator"], "rpc_server_active_requests", **PLACE_ORDER) == 0


async def test_tracking_reports_its_consumer_lag_and_handles_the_order_events(stack: dict[str, str]) -> None:
    async def handled() -> Samples | None:
        samples = await scrape(stack["tracking"])
        lag = present(samples, "tutti_kafka_consumer_lag_records", consumer_group="tutti-tracking",
                      topic=ORDER_EVENTS.name)
        timed = value(samples, "tutti_event_handling_duration_seconds_count", consumer_group="tutti-tracking",
                      topic=ORDER_EVENTS.name)
        return samples if lag and timed > 0 else None

    samples = await wait_for(handled, timeout=30, interval=0.5, message="tracking's lag and handling series")
    partitions = {
        ls["partition"] for n, ls, _ in samples
        if n == "tutti_kafka_consumer_lag_records" and ls["topic"] == ORDER_EVENTS.name
    }
    assert partitions <= {str(p) for p in range(ORDER_EVENTS.partitions)} and partitions
    assert value(samples, "tutti_events_handled_total", consumer_group="tutti-tracking") > 0


async def test_refusals_are_counted_by_reason_and_by_principal_kind(stack: dict[str, str]) -> None:
    location_id, skus = await stocked_store(stack["grpc"], 1)
    before = {name: await scrape(stack[name]) for name in ("gateway", "orchestrator", "inventory")}
    async with grpc.aio.insecure_channel(stack["grpc"]) as channel:
        orders = orchestrator_pb2_grpc.OrderServiceStub(channel)
        # More than the store holds (10): no location can take it.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await orders.PlaceOrder(
                opb.PlaceOrderRequest(
                    channel=common_pb2.CHANNEL_WEB,
                    channel_order_id=random_id("web"),
                    customer_id=random_id("customer"),
                    method=common_pb2.DELIVERY_METHOD_CLICK_AND_COLLECT,
                    pickup_location_id=location_id,
                    lines=[opb.OrderLineInput(line_id="1", sku=skus[0], quantity=11)],
                ),
                metadata=[("authorization", f"Bearer {KEYS['web']}")],
                timeout=15,
            )
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        # The "limited" channel principal has a burst of 2: the third call in a row is refused.
        codes = []
        for _ in range(3):
            try:
                await orders.GetOrder(
                    opb.GetOrderRequest(order_id=random_id("order")),
                    metadata=[("authorization", f"Bearer {KEYS['limited']}")],
                    timeout=5,
                )
            except grpc.aio.AioRpcError as exc:
                codes.append(exc.code())
        assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
    # A reservation for more than is there, straight to inventory as the orchestrator makes them.
    async with internal_channel(stack["inventory-grpc"]) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as short:
            await inventory_pb2_grpc.InventoryServiceStub(channel).ReserveStock(
                ipb.ReserveStockRequest(
                    reservation_id=random_id("r"),
                    channel=common_pb2.CHANNEL_WEB,
                    lines=[ipb.ReservationLine(sku=skus[0], location_id=location_id, quantity=11)],
                ),
                timeout=5,
            )
        assert short.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    after = {name: await scrape(stack[name]) for name in ("gateway", "orchestrator", "inventory")}

    def moved(name: str, series: str, **labels: str) -> float:
        return value(after[name], series, **labels) - value(before[name], series, **labels)

    assert moved("orchestrator", "tutti_orders_refused_total", channel="web", reason="unsourceable") == 1
    assert moved("orchestrator", "tutti_orders_placed_total") == 0
    refused_code = {**PLACE_ORDER, "rpc_grpc_status_code": "9"}
    assert moved("orchestrator", "rpc_server_duration_seconds_count", **refused_code) == 1
    assert moved("gateway", "tutti_gateway_rate_limited_calls_total", principal_kind="channel") >= 1
    assert moved("gateway", "rpc_server_duration_seconds_count", rpc_grpc_status_code="8") >= 1
    assert moved("inventory", "tutti_reservations_refused_for_stock_total", channel="web") == 1
