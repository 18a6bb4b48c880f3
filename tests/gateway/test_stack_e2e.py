"""End to end as a sales channel sees Tutti: the gateway in front of the real inventory,
orchestrator, returns and tracking services (Redis, Kafka, PostgreSQL), driven with the
`tutti` CLI and the public stubs."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import grpc
import pytest
import yaml
from aiokafka.admin import AIOKafkaAdminClient
from google.protobuf.json_format import MessageToDict
from tutti.common.v1 import common_pb2
from tutti.inventory.v1 import inventory_pb2 as pb
from tutti.inventory.v1 import inventory_pb2_grpc
from tutti.orchestrator.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from tutti.tracking.v1 import tracking_pb2, tracking_pb2_grpc

from gateway.bootstrap import builder
from runtime.kafka import ORDER_EVENTS, create_producer
from runtime.settings import CommonSettings
from services.orchestrator import bootstrap as orchestrator_bootstrap
from services.returns import bootstrap as returns_bootstrap
from services.tracking import bootstrap as tracking_bootstrap
from tests.gateway.conftest import KEYS, gateway_settings, write_credentials
from tests.gateway.test_cli_e2e import REDIS_DB, tutti
from tests.support import random_id, read_events, running_service, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

# The module's store, and the store app credential that acts for it.
SHOP = random_id("e2e-store")
SHOP_KEY = random_id("key-shop")


@pytest.fixture(scope="module")
def stack_credentials(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = write_credentials(tmp_path_factory.mktemp("stack") / "credentials.yaml")
    document = yaml.safe_load(path.read_text())
    document["credentials"].append({"id": "shop", "kind": "store", "location_id": SHOP, "key": SHOP_KEY})
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture(scope="module")
async def full_stack(settings: CommonSettings, stack_credentials: Path) -> AsyncIterator[str]:
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
            running_service(common, builder(gateway_settings(stack_credentials)))
        )
        yield gateway.address


def auth(who: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {SHOP_KEY if who == 'shop' else KEYS[who]}")]


@pytest.fixture(scope="module")
async def shop(full_stack: str) -> tuple[str, list[str]]:
    """One store for the module, set up before the orchestrator first reads (and caches) the
    locations: a location created later is only seen once its cache expires."""
    location_id, skus = await stocked_store(full_stack, 3, SHOP)
    return location_id, skus


async def stocked_store(
    gateway: str, sku_count: int, location_id: str | None = None
) -> tuple[str, list[str]]:
    """A store near Paris with 10 units of new SKUs, set up by the admin through the gateway."""
    location_id = location_id or random_id("e2e-store")
    skus = [random_id("E2E-SKU") for _ in range(sku_count)]
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


async def test_channels_stores_and_terminals_read_the_catalogue_through_the_gateway(
    full_stack: str, shop: tuple[str, list[str]]
) -> None:
    sku = shop[1][0]
    async with grpc.aio.insecure_channel(full_stack) as channel:
        stub = inventory_pb2_grpc.InventoryServiceStub(channel)
        for who in ("web", "store-a", "terminal-a"):
            reply = await stub.GetSkus(pb.GetSkusRequest(skus=[sku]), metadata=auth(who), timeout=10)
            assert [(s.sku, s.name) for s in reply.skus] == [(sku, "E2E thing")]
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetSkus(pb.GetSkusRequest(), metadata=auth("web"), timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "skus" in (info.value.details() or "")


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


async def test_the_dashboard_figures_follow_orders_from_the_cli(
    full_stack: str, shop: tuple[str, list[str]]
) -> None:
    """`tutti kpis`: per channel, from tracking's sums, for back-office eyes only."""

    async def app_kpis() -> dict:
        code, out, err = await tutti(full_stack, "--json", "kpis", "--channel", "app", key=KEYS["admin"])
        assert code == 0, err
        reply = json.loads(out)
        return next((c for c in reply.get("channels", []) if c.get("channel") == "CHANNEL_APP"), {})

    before = int((await app_kpis()).get("orders_placed", 0))
    location_id, sku = shop[0], shop[1][1]
    code, _, err = await tutti(
        full_stack, "order", "place", "--customer", random_id("customer"), "--line", f"{sku}:1",
        "--method", "click_and_collect", "--pickup", location_id, key=KEYS["app"],
    )
    assert code == 0, err

    async def counted() -> bool:
        return int((await app_kpis()).get("orders_placed", 0)) > before

    await wait_for(counted, timeout=30, message="the app's order counted in its KPIs")
    code, out, err = await tutti(full_stack, "kpis", key=KEYS["admin"])
    assert code == 0, err
    header = out.splitlines()[2].split()
    assert header[:4] == ["channel", "placed", "cancelled", "stock-outs"], out
    assert any(line.split()[0] == "app" for line in out.splitlines()[4:]), out
    assert "all channels" in out

    code, _, err = await tutti(full_stack, "kpis", key=KEYS["app"])
    assert code == 1 and "PERMISSION_DENIED" in err, err


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


async def test_the_timeline_records_every_step_in_order_and_a_duplicated_event_changes_nothing(
    settings: CommonSettings, full_stack: str, shop: tuple[str, list[str]]
) -> None:
    """As a channel and a store app see it: web places a click & collect order, the store takes
    it through to collection, and the order's trail shows each step once, in order, timestamped."""
    location_id, sku = shop[0], shop[1][2]
    started_ms = int(time.time() * 1000) - 1000
    code, out, err = await tutti(
        full_stack, "--json", "order", "place", "--customer", random_id("customer"),
        "--line", f"{sku}:1", "--method", "click_and_collect", "--pickup", location_id, key=KEYS["web"],
    )
    assert code == 0, err
    order_id = json.loads(out)["order"]["order_id"]

    async with grpc.aio.insecure_channel(full_stack) as channel:
        orders = orchestrator_pb2_grpc.OrderServiceStub(channel)
        tracking = tracking_pb2_grpc.TrackingServiceStub(channel)
        # The channel follows the trail from the moment PlaceOrder returned, before tracking
        # may have recorded anything; another channel may not.
        watch = tracking.WatchOrderTimeline(
            tracking_pb2.WatchOrderTimelineRequest(order_id=order_id), metadata=auth("web")
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in tracking.WatchOrderTimeline(
                tracking_pb2.WatchOrderTimelineRequest(order_id=order_id), metadata=auth("app"), timeout=10
            ):
                pass
        assert info.value.code() == grpc.StatusCode.NOT_FOUND

        # Another store may not report on this store's work.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await orders.UpdateFulfilment(
                orchestrator_pb2.UpdateFulfilmentRequest(
                    order_id=order_id, location_id=location_id, update_id=random_id("scan"),
                    event=orchestrator_pb2.FULFILMENT_EVENT_ACCEPTED,
                ),
                metadata=auth("store-b"), timeout=10,
            )
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED

        for event in ("ACCEPTED", "PICKED", "READY_FOR_PICKUP", "COLLECTED"):
            await orders.UpdateFulfilment(
                orchestrator_pb2.UpdateFulfilmentRequest(
                    order_id=order_id, update_id=random_id("scan"),
                    event=orchestrator_pb2.FulfilmentEvent.Value(f"FULFILMENT_EVENT_{event}"),
                ),  # no location: the gateway fills in the store's own
                metadata=auth("shop"), timeout=10,
            )

        async def timeline() -> tracking_pb2.GetOrderTimelineResponse:
            return await tracking.GetOrderTimeline(
                tracking_pb2.GetOrderTimelineRequest(order_id=order_id), metadata=auth("web"), timeout=10
            )

        async def collected() -> tracking_pb2.GetOrderTimelineResponse | None:
            with_steps = await timeline()
            seen = {e.step for e in with_steps.entries}
            return with_steps if {"collected", "reserved", "fulfilled"} <= seen else None

        before = await wait_for(collected, timeout=30, message="the collection on the order's timeline")
        watched = []
        async for reply in watch:
            watched.append(reply.entry.event_id)
            if len(watched) == len(before.entries):
                break
        watch.cancel()
        assert sorted(watched) == sorted(e.event_id for e in before.entries)
        orchestrated = [e for e in before.entries if e.source == "orchestrator"]
        steps = [(e.step, e.type.rsplit(".", 1)[-1]) for e in orchestrated]
        # Each change in the order it happened: the fact (placing, sourcing, a store's report),
        # then the order-level status it leads to — each lifecycle step once: a status change
        # whose step the fact already records is kept as "status_changed".
        assert steps == [
            ("placed", "OrderPlaced"),
            ("sourced", "OrderSourced"),
            ("status_changed", "OrderStatusChanged"),
            ("accepted", "OrderFulfilmentUpdated"),
            ("status_changed", "OrderStatusChanged"),
            ("picked", "OrderFulfilmentUpdated"),
            ("picking", "OrderStatusChanged"),
            ("ready", "OrderFulfilmentUpdated"),
            ("status_changed", "OrderStatusChanged"),
            ("collected", "OrderFulfilmentUpdated"),
            ("status_changed", "OrderStatusChanged"),
        ], steps
        times = [e.occurred_at.ToNanoseconds() for e in before.entries]
        assert all(times) and times == sorted(times)
        assert all(e.received_at.ToNanoseconds() for e in before.entries)
        sourced = orchestrated[1]
        assert [e.position for e in orchestrated[:3]] == [0, 1, 2]
        # What happened to the stock, from inventory's ledger: reserved at the store, then
        # fulfilled by the collection (after it). The order's status stays "collected".
        stock = [(e.step, e.location_ids[0]) for e in before.entries if e.source == "inventory"]
        assert stock == [("reserved", location_id), ("fulfilled", location_id)], stock
        fulfilled = next(e for e in before.entries if e.step == "fulfilled")
        assert fulfilled.occurred_at.ToNanoseconds() >= orchestrated[-1].occurred_at.ToNanoseconds() - 10**6
        assert sourced.explanation and location_id in sourced.location_ids
        assert before.order.status == "collected" and before.order.entry_count == len(before.entries)

        # The store sees its own work; unauthenticated callers see nothing.
        as_store = await tracking.GetOrderTimeline(
            tracking_pb2.GetOrderTimelineRequest(order_id=order_id), metadata=auth("shop"), timeout=10
        )
        assert [e.event_id for e in as_store.entries] == [e.event_id for e in before.entries]
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await tracking.GetOrderTimeline(
                tracking_pb2.GetOrderTimelineRequest(order_id=order_id), timeout=10
            )
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED

        # Kafka delivers at least once: the very same OrderPlaced envelope arrives again.
        (placed,) = await read_events(
            settings.kafka_bootstrap, ORDER_EVENTS.name,
            lambda e: e.key == order_id and e.type.endswith("OrderPlaced"), from_beginning_ms=started_ms,
        )
        producer = create_producer(settings.kafka_bootstrap, "test-duplicate")
        await producer.start()
        try:
            sent = await producer.send_and_wait(
                ORDER_EVENTS.name, value=placed.SerializeToString(), key=order_id.encode(),
                headers=[("event-type", placed.type.encode())],
            )
        finally:
            await producer.stop()

        async def tracking_consumed_the_duplicate() -> bool:
            admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
            await admin.start()
            try:
                offsets = await admin.list_consumer_group_offsets("tutti-tracking")
            finally:
                await admin.close()
            where = (sent.topic, sent.partition)
            committed = [o.offset for tp, o in offsets.items() if (tp.topic, tp.partition) == where]
            return bool(committed) and committed[0] > sent.offset

        await wait_for(
            tracking_consumed_the_duplicate, timeout=30, message="tracking committed past the duplicate"
        )
        after = await timeline()
        assert [MessageToDict(e) for e in after.entries] == [MessageToDict(e) for e in before.entries]
        assert after.order.entry_count == before.order.entry_count
