"""Promises a new user checks through the gateway, on the real services (inventory,
orchestrator, returns, tracking) running in-process behind a real gateway, with keys of every
kind: what the docs say each caller gets is what it gets.

Isolated: the orchestrator has a schema of its own, inventory a Redis db of its own, tracking a
consumer group of its own; every id is random."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
import yaml
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from tutti.common.v1 import common_pb2
from tutti.inventory.v1 import inventory_pb2 as ipb
from tutti.inventory.v1 import inventory_pb2_grpc as igrpc
from tutti.orchestrator.v1 import orchestrator_pb2 as opb
from tutti.orchestrator.v1 import orchestrator_pb2_grpc as ogrpc
from tutti.returns.v1 import returns_pb2 as rpb
from tutti.returns.v1 import returns_pb2_grpc as rgrpc
from tutti.tracking.v1 import tracking_pb2 as tpb
from tutti.tracking.v1 import tracking_pb2_grpc as tgrpc

from gateway.bootstrap import builder
from gateway.settings import GatewaySettings
from runtime.settings import CommonSettings
from services.inventory.bootstrap import build as build_inventory
from services.orchestrator.bootstrap import DEFAULT_RULES, OrchestratorSettings
from services.orchestrator.bootstrap import build as build_orchestrator
from services.returns.adapters.rules_file import load_rules
from services.returns.bootstrap import ReturnsSettings
from services.returns.bootstrap import build as build_returns
from services.tracking.bootstrap import TrackingSettings
from services.tracking.bootstrap import build as build_tracking
from tests.orchestrator.test_integration import ALL_CAPABILITIES, east, network, order_request
from tests.support import internal_channel, random_id, running_service, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

REDIS_DB = 12
KEYS = ("admin", "web", "app", "store_a", "store_b", "store_c")


@dataclasses.dataclass
class Stack:
    inv: igrpc.InventoryServiceStub
    orders: ogrpc.OrderServiceStub
    rules: ogrpc.RulesServiceStub
    returns: rgrpc.ReturnsServiceStub
    tracking: tgrpc.TrackingServiceStub
    direct_orders: ogrpc.OrderServiceStub
    keys: dict[str, str]
    ids: dict[str, str]  # store_a (stocked, fulfils), store_b (takes returns), store_c (unrelated), dc
    sku: str  # stocked at store A
    dc_sku: str  # stocked only at the DC, whose daily capacity is 1

    def auth(self, who: str) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.keys[who]}")]


@pytest.fixture(scope="module")
async def stack(settings: CommonSettings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    base = settings.redis_url.rsplit("/", 1)[0]
    inv_settings = dataclasses.replace(settings, redis_url=f"{base}/{REDIS_DB}")
    schema = f"orchestrator_test_{random_id('p').split('-')[1]}"
    async with AsyncExitStack() as stack:
        inventory = await stack.enter_async_context(running_service(inv_settings, build_inventory))
        inv_channel = await stack.enter_async_context(internal_channel(inventory.address))
        inv = igrpc.InventoryServiceStub(inv_channel)
        sku, dc_sku = random_id("SKU-P"), random_id("SKU-D")
        ids = await network(inv, {"store_a": (2, {sku: 20}), "store_b": (4, {}), "store_c": (6, {})})
        ids["dc"] = random_id("DC")
        await inv.UpsertLocations(
            ipb.UpsertLocationsRequest(
                locations=[
                    ipb.Location(
                        location_id=ids["dc"],
                        name="full DC",
                        type=common_pb2.LOCATION_TYPE_DISTRIBUTION_CENTRE,
                        point=east(30),
                        capabilities=ALL_CAPABILITIES,
                        daily_capacity=1,
                        active=True,
                        time_zone="Europe/Paris",
                    )
                ]
            )
        )
        await inv.RegisterSkus(
            ipb.RegisterSkusRequest(skus=[ipb.Sku(sku=dc_sku, name=dc_sku, category="t", returnable=True)])
        )
        await inv.ReceiveStock(
            ipb.ReceiveStockRequest(
                movement_id=random_id("rcv"),
                location_id=ids["dc"],
                lines=[ipb.ReservationLine(sku=dc_sku, quantity=50)],
            )
        )

        addresses = {**settings.addresses, "inventory": inventory.address}
        config = OrchestratorSettings(
            accept_timeout_seconds=3600,
            sweep_interval_seconds=3600,
            quote_ttl_seconds=600,
            pool_size=4,
            default_rules=DEFAULT_RULES,
            schema=schema,
            consumer_group=random_id("orchestrator-test"),
        )

        async def orchestrator_build(common: CommonSettings, exits: AsyncExitStack) -> Any:
            return await build_orchestrator(dataclasses.replace(common, addresses=addresses), exits, config)

        orchestrator = await stack.enter_async_context(running_service(settings, orchestrator_build))
        addresses["orchestrator"] = orchestrator.address
        returns_config = ReturnsSettings(
            rules=load_rules(),
            pool_size=4,
            ready_dependencies=("inventory", "orchestrator"),
            task_retry_seconds=0.5,
        )

        async def returns_build(common: CommonSettings, exits: AsyncExitStack) -> Any:
            return await build_returns(
                dataclasses.replace(common, addresses=addresses), exits, returns_config
            )

        returns = await stack.enter_async_context(running_service(settings, returns_build))
        addresses["returns"] = returns.address
        tracking_config = dataclasses.replace(
            TrackingSettings.from_env(), consumer_group=random_id("tracking-test")
        )

        async def tracking_build(common: CommonSettings, exits: AsyncExitStack) -> Any:
            return await build_tracking(common, exits, tracking_config)

        tracking = await stack.enter_async_context(running_service(settings, tracking_build))
        addresses["tracking"] = tracking.address

        keys = {who: random_id(f"key-{who}") for who in KEYS}
        credentials = [
            {"id": "back-office", "kind": "admin", "key": keys["admin"]},
            {"id": "web-shop", "kind": "channel", "channel": "CHANNEL_WEB", "key": keys["web"]},
            {"id": "mobile-app", "kind": "channel", "channel": "CHANNEL_APP", "key": keys["app"]},
            *(
                {"id": f"{store}-app", "kind": "store", "location_id": ids[store], "key": keys[store]}
                for store in ("store_a", "store_b", "store_c")
            ),
        ]
        path = Path(tmp_path_factory.mktemp("promises")) / "credentials.yaml"
        path.write_text(
            yaml.safe_dump({"defaults": {"rate_per_second": 1000, "burst": 1000}, "credentials": credentials})
        )
        gw_settings = GatewaySettings(
            credentials_path=path, tls_cert=None, tls_key=None, default_timeout_seconds=10.0
        )
        gateway = await stack.enter_async_context(
            running_service(dataclasses.replace(settings, addresses=addresses), builder(gw_settings))
        )
        channel = await stack.enter_async_context(grpc.aio.insecure_channel(gateway.address))
        direct = await stack.enter_async_context(internal_channel(orchestrator.address))
        try:
            yield Stack(
                inv=igrpc.InventoryServiceStub(channel),
                orders=ogrpc.OrderServiceStub(channel),
                rules=ogrpc.RulesServiceStub(channel),
                returns=rgrpc.ReturnsServiceStub(channel),
                tracking=tgrpc.TrackingServiceStub(channel),
                direct_orders=ogrpc.OrderServiceStub(direct),
                keys=keys,
                ids=ids,
                sku=sku,
                dc_sku=dc_sku,
            )
        finally:
            conn = await asyncpg.connect(settings.database_url)
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            finally:
                await conn.close()


async def refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


def details_of(error: grpc.aio.AioRpcError, kind: type) -> Any:
    status = rpc_status.from_call(error)
    assert status is not None, "no rich status"
    for detail in status.details:
        message = kind()
        if detail.Unpack(message):
            return message
    raise AssertionError(f"no {kind.__name__} in {error.details()}")


async def place(s: Stack, who: str = "web", **kw: Any) -> opb.Order:
    request = order_request({kw.pop("sku", s.sku): kw.pop("quantity", 1)}, **kw)
    request.ClearField("channel")  # the gateway fills in the key's own
    reply = await s.orders.PlaceOrder(request, metadata=s.auth(who))
    return reply.order


async def fulfil(s: Stack, order: opb.Order, *events: int, who: str = "store_a") -> opb.Order:
    for event in events:
        reply = await s.orders.UpdateFulfilment(
            opb.UpdateFulfilmentRequest(order_id=order.order_id, event=event, update_id=random_id("upd")),
            metadata=s.auth(who),
        )
        order = reply.order
    return order


# --- B1: update_id is required --------------------------------------------------------------


async def test_a_fulfilment_update_without_update_id_is_refused_naming_it(stack: Stack) -> None:
    order = await place(stack)
    for call in (
        stack.orders.UpdateFulfilment(
            opb.UpdateFulfilmentRequest(order_id=order.order_id, event=opb.FULFILMENT_EVENT_ACCEPTED),
            metadata=stack.auth("store_a"),
        ),
        # The orchestrator itself agrees with the gateway and the contract.
        stack.direct_orders.UpdateFulfilment(
            opb.UpdateFulfilmentRequest(
                order_id=order.order_id, location_id=stack.ids["store_a"], event=opb.FULFILMENT_EVENT_ACCEPTED
            )
        ),
    ):
        error = await refused(call)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        fields = [v.field for v in details_of(error, error_details_pb2.BadRequest).field_violations]
        assert "update_id" in fields


# --- B2: an unknown SKU is named as the caller's field --------------------------------------


async def test_an_unknown_sku_is_named_by_the_callers_field(stack: Stack) -> None:
    unknown = random_id("SKU-NOPE")
    request = order_request({stack.sku: 1, unknown: 1})
    request.ClearField("channel")
    error = await refused(stack.orders.PlaceOrder(request, metadata=stack.auth("web")))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "lines[1].sku" in error.details() and unknown in error.details()
    assert "skus[" not in error.details()
    (violation,) = details_of(error, error_details_pb2.PreconditionFailure).violations
    assert violation.subject == "lines[1].sku"


# --- B3: cancelling is idempotent -----------------------------------------------------------


async def test_cancelling_twice_answers_ok_both_times(stack: Stack) -> None:
    order = await place(stack)
    first = await stack.orders.CancelOrder(
        opb.CancelOrderRequest(order_id=order.order_id), metadata=stack.auth("web")
    )
    again = await stack.orders.CancelOrder(
        opb.CancelOrderRequest(order_id=order.order_id), metadata=stack.auth("web")
    )
    assert first.order.status == again.order.status == opb.ORDER_STATUS_CANCELLED


# --- B4: each lifecycle step once on the timeline -------------------------------------------


async def test_each_lifecycle_step_appears_once_on_the_timeline(stack: Stack) -> None:
    order = await place(
        stack, method=common_pb2.DELIVERY_METHOD_CLICK_AND_COLLECT, pickup=stack.ids["store_a"]
    )
    await fulfil(
        stack,
        order,
        opb.FULFILMENT_EVENT_ACCEPTED,
        opb.FULFILMENT_EVENT_PICKED,
        opb.FULFILMENT_EVENT_READY_FOR_PICKUP,
    )

    async def timeline() -> tpb.GetOrderTimelineResponse | None:
        try:
            reply = await stack.tracking.GetOrderTimeline(
                tpb.GetOrderTimelineRequest(order_id=order.order_id), metadata=stack.auth("web")
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return reply if reply.order.status == "ready" else None

    reply = await wait_for(timeline, timeout=30, message="the timeline reaches ready")
    steps = Counter(entry.step for entry in reply.entries)
    for step in ("placed", "sourced", "accepted", "picked", "ready"):
        assert steps[step] == 1, (step, steps)
    repeated = {step: n for step, n in steps.items() if n > 1 and step != "status_changed"}
    assert not repeated, steps
    # The status changes are still there, told apart, with their details.
    changes = [e for e in reply.entries if e.step == "status_changed"]
    assert changes and all(e.type.endswith("OrderStatusChanged") for e in changes)


# --- B5, B6, B8, B11: returns as each caller sees them --------------------------------------


async def shipped_web_order(stack: Stack) -> opb.Order:
    order = await place(stack)
    return await fulfil(stack, order, opb.FULFILMENT_EVENT_ACCEPTED, opb.FULFILMENT_EVENT_SHIPPED)


def return_of(order: opb.Order, receiving: str, **kw: Any) -> rpb.CreateReturnRequest:
    return rpb.CreateReturnRequest(
        request_id=random_id("req"),
        order_id=order.order_id,
        lines=[
            rpb.ReturnLineRequest(
                line_id=order.lines[0].line_id,
                quantity=kw.pop("quantity", 1),
                reason=rpb.RETURN_REASON_CHANGED_MIND,
            )
        ],
        method=rpb.RETURN_METHOD_IN_STORE,
        receiving_location_id=receiving,
        **kw,
    )


async def test_the_store_taking_back_a_return_reads_the_order_and_its_returns(stack: Stack) -> None:
    order = await shipped_web_order(stack)
    store_b = stack.ids["store_b"]
    # Before any return, store B has nothing to do with the order.
    error = await refused(
        stack.orders.GetOrder(opb.GetOrderRequest(order_id=order.order_id), metadata=stack.auth("store_b"))
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    created = await stack.returns.CreateReturn(return_of(order, store_b), metadata=stack.auth("web"))

    got = await stack.orders.GetOrder(
        opb.GetOrderRequest(order_id=order.order_id), metadata=stack.auth("store_b")
    )
    assert got.order.order_id == order.order_id
    listed = await stack.returns.ListReturns(
        rpb.ListReturnsRequest(order_id=order.order_id), metadata=stack.auth("store_b")
    )
    assert [r.return_id for r in listed.returns] == [created.rma.return_id]
    # Its channel and its fulfilling store still read it; another channel or store does not.
    for who in ("web", "store_a"):
        await stack.orders.GetOrder(opb.GetOrderRequest(order_id=order.order_id), metadata=stack.auth(who))
        await stack.returns.ListReturns(
            rpb.ListReturnsRequest(order_id=order.order_id), metadata=stack.auth(who)
        )
    for who in ("app", "store_c"):
        for call in (
            stack.orders.GetOrder(opb.GetOrderRequest(order_id=order.order_id), metadata=stack.auth(who)),
            stack.returns.ListReturns(
                rpb.ListReturnsRequest(order_id=order.order_id), metadata=stack.auth(who)
            ),
        ):
            assert (await refused(call)).code() == grpc.StatusCode.NOT_FOUND


async def test_a_stores_return_is_on_the_store_channel(stack: Stack) -> None:
    order = await shipped_web_order(stack)
    store_b = stack.ids["store_b"]
    created = await stack.returns.CreateReturn(return_of(order, store_b), metadata=stack.auth("store_b"))
    assert created.rma.channel == common_pb2.CHANNEL_STORE
    error = await refused(
        stack.returns.CreateReturn(
            return_of(order, store_b, channel=common_pb2.CHANNEL_WEB), metadata=stack.auth("store_b")
        )
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "CHANNEL_STORE" in error.details()


async def test_another_channel_does_not_see_the_orders_customer(stack: Stack) -> None:
    order = await shipped_web_order(stack)
    # The app takes a return of a web order (any channel takes any return).
    created = await stack.returns.CreateReturn(
        return_of(order, stack.ids["store_b"]), metadata=stack.auth("app")
    )
    assert created.rma.channel == common_pb2.CHANNEL_APP
    assert created.rma.customer_id == ""
    seen = await stack.returns.GetReturn(
        rpb.GetReturnRequest(return_id=created.rma.return_id), metadata=stack.auth("app")
    )
    assert seen.rma.customer_id == ""
    # The purchase channel and the back-office see the customer.
    for who in ("web", "admin"):
        listed = await stack.returns.ListReturns(
            rpb.ListReturnsRequest(order_id=order.order_id), metadata=stack.auth(who)
        )
        assert [r.customer_id for r in listed.returns] == [order.customer_id]


async def test_refused_return_quantities_are_not_a_stock_error(stack: Stack) -> None:
    order = await shipped_web_order(stack)
    error = await refused(
        stack.returns.CreateReturn(
            return_of(order, stack.ids["store_b"], quantity=5), metadata=stack.auth("web")
        )
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    violations = details_of(error, error_details_pb2.PreconditionFailure).violations
    assert violations and {v.type for v in violations} == {"RETURN_POLICY"}


# --- B7: a store's raw counters are its own -------------------------------------------------


async def test_a_store_reads_only_its_own_stock_levels(stack: Stack) -> None:
    own = await stack.inv.GetStockLevels(
        ipb.GetStockLevelsRequest(sku=stack.sku, location_ids=[stack.ids["store_a"]]),
        metadata=stack.auth("store_a"),
    )
    assert [level.location_id for level in own.levels] == [stack.ids["store_a"]]
    for names in ([], [stack.ids["dc"]], [stack.ids["store_a"], stack.ids["dc"]]):
        error = await refused(
            stack.inv.GetStockLevels(
                ipb.GetStockLevelsRequest(sku=stack.sku, location_ids=names), metadata=stack.auth("store_a")
            )
        )
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    every = await stack.inv.GetStockLevels(
        ipb.GetStockLevelsRequest(sku=stack.dc_sku), metadata=stack.auth("admin")
    )
    assert [level.location_id for level in every.levels] == [stack.ids["dc"]]


# --- B9: a full DC says capacity ------------------------------------------------------------


async def test_a_full_dc_is_explained_by_its_capacity(stack: Stack) -> None:
    first = await place(stack, sku=stack.dc_sku)
    assert {line.location_id for line in first.lines} == {stack.ids["dc"]}
    error = await refused(
        stack.orders.PlaceOrder(
            _web(order_request({stack.dc_sku: 1})),
            metadata=stack.auth("web"),
        )
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "capacity exhausted (1/1 orders today)" in error.details()
    assert stack.ids["dc"] in error.details()
    assert "no eligible location has it available" not in error.details()


def _web(request: opb.PlaceOrderRequest) -> opb.PlaceOrderRequest:
    request.ClearField("channel")
    return request


# --- B10: rule versions without gaps --------------------------------------------------------


async def test_retried_drafts_leave_no_gap_in_rule_versions(stack: Stack) -> None:
    document = DEFAULT_RULES.read_text()
    request_id = random_id("draft")
    versions = []
    for rid in (request_id, request_id, request_id, random_id("draft")):
        reply = await stack.rules.CreateDraftRules(
            opb.CreateDraftRulesRequest(document=document, author="t", comment="c", request_id=rid),
            metadata=stack.auth("admin"),
        )
        versions.append(reply.version.version)
    assert versions[0] == versions[1] == versions[2]
    assert versions[3] == versions[0] + 1


# --- B12: why an order went where it did ----------------------------------------------------


async def test_channels_and_stores_read_the_decisions_of_their_orders(stack: Stack) -> None:
    order = await place(stack)
    for who in ("web", "store_a", "admin"):
        reply = await stack.orders.GetSourcingDecision(
            opb.GetSourcingDecisionRequest(order_id=order.order_id), metadata=stack.auth(who)
        )
        assert reply.decisions and reply.decisions[0].explanation
    for who in ("app", "store_c"):
        error = await refused(
            stack.orders.GetSourcingDecision(
                opb.GetSourcingDecisionRequest(order_id=order.order_id), metadata=stack.auth(who)
            )
        )
        assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_many_reads_at_once_stay_scoped(stack: Stack) -> None:
    """The lookups the gateway makes do not mix callers up under concurrency."""
    order = await place(stack)
    calls = [
        stack.orders.GetOrder(opb.GetOrderRequest(order_id=order.order_id), metadata=stack.auth(who))
        for who in ("web", "app") * 5
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(r, opb.GetOrderResponse) for r in results[0::2])
    assert all(
        isinstance(r, grpc.aio.AioRpcError) and r.code() == grpc.StatusCode.NOT_FOUND for r in results[1::2]
    )
