"""Fuzzing every public method through a real gateway in front of the real inventory,
orchestrator, returns and tracking services (Redis, Kafka, PostgreSQL).

The methods come from the gateway's own route discovery, so an RPC a backend adds is fuzzed
without touching this file. Hypothesis generates, for each method, requests from its descriptor
— random field values, unknown enum numbers, extreme integers and timestamps, oversized lists —
and random bytes; each is sent with an admin, a channel and a store key, then straight to the
backend as an internal caller would. Whatever comes in, the answer is a precise status (or OK),
never UNKNOWN nor INTERNAL, and every process still serves.

Generation happens up front (no shrinking: the calls go to real servers); a failure names the
method, the caller, the request and the seed (TUTTI_FUZZ_SEED=<seed> replays the same run).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
import yaml
from google.protobuf import message_factory, text_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from redis.asyncio import Redis
from tutti.inventory.v1 import inventory_pb2 as ipb
from tutti.inventory.v1 import inventory_pb2_grpc
from tutti.orchestrator.v1 import orchestrator_pb2 as opb

from gateway.bootstrap import builder
from gateway.routes import Route, build_routes, discover_services
from gateway.settings import BACKENDS
from runtime import errors
from runtime.settings import CommonSettings
from services.orchestrator import bootstrap as orchestrator_bootstrap
from services.returns import bootstrap as returns_bootstrap
from services.tracking import bootstrap as tracking_bootstrap
from tests.gateway.conftest import gateway_settings
from tests.support import RunningService, internal_channel, random_id, running_service

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

# This module's own Redis db (others: 8, 10, 12-15; db 0 is the running stack's).
REDIS_DB = 11
STORE = random_id("fuzz-store")
KEYS = {"admin": random_id("key-admin"), "channel": random_id("key-web"), "store": random_id("key-store")}
# Calls made straight to a backend, without a key.
DIRECT = "direct"
SEED = int(os.environ.get("TUTTI_FUZZ_SEED") or random.randrange(2**32))
# Per method and caller: generated requests (TUTTI_FUZZ_EXAMPLES for a deeper run), and random byte
# strings.
MESSAGES = int(os.environ.get("TUTTI_FUZZ_EXAMPLES") or 20)
RANDOM_BYTES = 2
CONCURRENCY = 8
CALL_TIMEOUT = 15.0
# Server streams (watches) are followed this long for a first answer, then cancelled by us.
WATCH_SECONDS = 1.0

PRECISE = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)


# --- the stack -----------------------------------------------------------------------------------


@dataclasses.dataclass
class Stack:
    gateway: str
    services: dict[str, RunningService]


@pytest.fixture(scope="module")
def fuzz_credentials(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fuzz") / "credentials.yaml"
    document = {
        "defaults": {"rate_per_second": 100_000, "burst": 100_000},
        "credentials": [
            {"id": "fuzz-admin", "kind": "admin", "key": KEYS["admin"]},
            {"id": "fuzz-web", "kind": "channel", "channel": "web", "key": KEYS["channel"]},
            {"id": "fuzz-store", "kind": "store", "location_id": STORE, "key": KEYS["store"]},
        ],
    }
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture(scope="module")
async def stack(settings: CommonSettings, fuzz_credentials: Path) -> AsyncIterator[Stack]:
    """Every backend and the gateway on ephemeral ports; the orchestrator in a schema of its own
    (fuzzed admin calls publish and roll back sourcing rules), dropped afterwards."""
    from services.inventory.bootstrap import build as build_inventory

    redis_url = f"{settings.redis_url.rsplit('/', 1)[0]}/{REDIS_DB}"
    redis = Redis.from_url(redis_url)
    await redis.flushdb()
    await redis.aclose()
    base = dataclasses.replace(settings, redis_url=redis_url)
    schema = f"orchestrator_fuzz_{random_id('t').split('-')[1]}"
    orchestrator_settings = dataclasses.replace(
        orchestrator_bootstrap.OrchestratorSettings.from_env(), schema=schema, pool_size=4
    )

    async def build_orchestrator(common: CommonSettings, exits: AsyncExitStack) -> Any:
        return await orchestrator_bootstrap.build(common, exits, orchestrator_settings)

    addresses = dict(settings.addresses)
    services: dict[str, RunningService] = {}
    try:
        async with AsyncExitStack() as exits:
            for name, build in (
                ("inventory", build_inventory),
                ("orchestrator", build_orchestrator),
                ("returns", returns_bootstrap.build),
                ("tracking", tracking_bootstrap.build),
            ):
                common = dataclasses.replace(base, service=name, addresses=dict(addresses))
                services[name] = await exits.enter_async_context(running_service(common, build))
                addresses[name] = services[name].address
            common = dataclasses.replace(base, service="gateway", addresses=addresses)
            gateway = await exits.enter_async_context(
                running_service(common, builder(gateway_settings(fuzz_credentials)))
            )
            services["gateway"] = gateway
            await _seed(gateway.address)
            yield Stack(gateway.address, services)
    finally:
        conn = await asyncpg.connect(settings.database_url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


async def _seed(gateway: str) -> None:
    """The store the store key acts for, and SKU-1 stocked there, so that some fuzzed calls get
    past "not found"."""
    from tests.inventory.conftest import location

    admin = [("authorization", f"Bearer {KEYS['admin']}")]
    async with grpc.aio.insecure_channel(gateway) as channel:
        stub = inventory_pb2_grpc.InventoryServiceStub(channel)
        await stub.UpsertLocations(
            ipb.UpsertLocationsRequest(locations=[location(STORE)]), metadata=admin, timeout=10
        )
        await stub.RegisterSkus(
            ipb.RegisterSkusRequest(skus=[ipb.Sku(sku="SKU-1", name="one")]), metadata=admin, timeout=10
        )
        await stub.ReceiveStock(
            ipb.ReceiveStockRequest(
                movement_id=random_id("seed"),
                location_id=STORE,
                lines=[ipb.ReservationLine(sku="SKU-1", quantity=1_000)],
            ),
            metadata=admin,
            timeout=10,
        )


# --- requests from descriptors -------------------------------------------------------------------

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_RANGES = {
    FieldDescriptor.TYPE_INT32: _INT32,
    FieldDescriptor.TYPE_SINT32: _INT32,
    FieldDescriptor.TYPE_SFIXED32: _INT32,
    FieldDescriptor.TYPE_INT64: _INT64,
    FieldDescriptor.TYPE_SINT64: _INT64,
    FieldDescriptor.TYPE_SFIXED64: _INT64,
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
# Ids that exist in the fuzzed stack, so some calls go past "not found".
_KNOWN = st.sampled_from([STORE, "SKU-1", "web", "1", ""])
_MAX_DEPTH = 3


def _repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated) if hasattr(field, "is_repeated") else field.label == field.LABEL_REPEATED


def _integers(low: int, high: int) -> st.SearchStrategy[int]:
    edges = [low, high, 0, 1, -1] if low < 0 else [low, high, 1, 2**31 - 1]
    small = st.integers(-1000 if low < 0 else 0, 1000)
    return st.one_of(st.sampled_from(edges), small, st.integers(low, high))


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind in _RANGES:
        return _integers(*_RANGES[kind])
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_DOUBLE:
        return st.floats()
    if kind == FieldDescriptor.TYPE_FLOAT:
        return st.floats(width=32)
    if kind == FieldDescriptor.TYPE_STRING:
        return st.one_of(_TEXT, _KNOWN, st.just("x" * 300), st.just("a\x00b"))
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.one_of(st.binary(max_size=48), st.just(b"sku,location_id,on_hand\nSKU-1,X,5\n"))
    if kind == FieldDescriptor.TYPE_ENUM:
        known = sorted(field.enum_type.values_by_number)
        return st.one_of(st.sampled_from(known), st.sampled_from(known), _integers(*_INT32))
    raise AssertionError(f"no strategy for {field.full_name}")


def _value(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return message_strategy(field.message_type, depth + 1)
    return _scalar(field)


def _field(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any] | None:
    if field.type == FieldDescriptor.TYPE_MESSAGE and depth >= _MAX_DEPTH:
        return None
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        key, value = (field.message_type.fields_by_name[n] for n in ("key", "value"))
        return st.dictionaries(_scalar(key), _value(value, depth), max_size=3)
    if not _repeated(field):
        return _value(field, depth)
    item = _value(field, depth)
    if depth > 0:
        return st.lists(item, max_size=3)
    # Now and then a top-level list far longer than any sane request: one item repeated (nested
    # ones too would multiply into millions of values: runtime.validation refuses those whole).
    oversized = st.tuples(item, st.sampled_from([300, 1_500])).map(lambda pair: [pair[0]] * pair[1])
    return st.one_of(st.lists(item, max_size=3), st.lists(item, max_size=3), oversized)


def _timestamp(descriptor: Descriptor) -> st.SearchStrategy[Message]:
    cls = message_factory.GetMessageClass(descriptor)
    seconds = st.one_of(
        st.integers(0, 4_102_444_800),  # 1970..2100
        st.sampled_from([-62_135_596_801, 253_402_300_800, _INT64[0], _INT64[1]]),
    )
    nanos = st.one_of(st.just(0), st.integers(0, 999_999_999), st.sampled_from([-1, 10**9, _INT32[1]]))
    return st.builds(lambda s, n: cls(seconds=s, nanos=n), seconds, nanos)


_STRATEGIES: dict[tuple[str, int], st.SearchStrategy[Message]] = {}


def message_strategy(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Messages of ``descriptor``'s type with any subset of its fields set to generated values."""
    key = (descriptor.full_name, depth)
    if key in _STRATEGIES:
        return _STRATEGIES[key]
    if descriptor.full_name == "google.protobuf.Timestamp":
        return _timestamp(descriptor)
    cls = message_factory.GetMessageClass(descriptor)
    optional = {f.name: s for f in descriptor.fields if (s := _field(f, depth)) is not None}

    def build(values: dict[str, Any]) -> Message:
        message = cls()
        for name, value in values.items():
            field = descriptor.fields_by_name[name]
            target = getattr(message, name)
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                for k, v in value.items():
                    if isinstance(v, Message):
                        target[k].CopyFrom(v)
                    else:
                        target[k] = v
            elif _repeated(field):
                target.extend(value)
            elif isinstance(value, Message):
                target.CopyFrom(value)
            else:
                setattr(message, name, value)
        return message

    strategy = st.fixed_dictionaries({}, optional=optional).map(build)
    _STRATEGIES[key] = strategy
    return strategy


def generate(route: Route, count: int, salt: int) -> list[bytes]:
    """``count`` encoded requests of the route's type plus RANDOM_BYTES random byte strings."""
    found: list[bytes] = []

    @seed(SEED + salt)
    @settings(
        max_examples=count + RANDOM_BYTES,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        deadline=None,
    )
    @given(
        st.one_of(
            message_strategy(route.descriptor.input_type).map(lambda m: m.SerializeToString()),
            st.binary(max_size=64),
        )
    )
    def collect(raw: bytes) -> None:
        found.append(raw)

    collect()
    return found


# --- calling -------------------------------------------------------------------------------------


@dataclasses.dataclass
class Outcome:
    route: Route
    who: str
    request: bytes
    code: grpc.StatusCode
    details: str
    trailers_bytes: int


def _describe(route: Route, raw: bytes) -> str:
    try:
        shown = text_format.MessageToString(route.request_type.FromString(raw), as_one_line=True)
    except Exception:  # only for the failure message
        shown = f"bytes {raw[:64].hex()}"
    return shown[:400]


async def call(channel: grpc.aio.Channel, route: Route, who: str, raw: bytes) -> Outcome:
    metadata = [("authorization", f"Bearer {KEYS[who]}")] if who in KEYS else []
    code, details, trailers = grpc.StatusCode.OK, "", 0
    try:
        if route.client_streaming:
            items = [raw, raw] if route.server_streaming else [raw]
            stream: Any = (
                channel.stream_stream(route.path)
                if route.server_streaming
                else channel.stream_unary(route.path)
            )(iter(items), metadata=metadata, timeout=CALL_TIMEOUT)
            if route.server_streaming:
                async for _ in stream:
                    pass
            else:
                await stream
        elif route.server_streaming:
            watch = channel.unary_stream(route.path)(raw, metadata=metadata, timeout=CALL_TIMEOUT)
            with contextlib.suppress(TimeoutError):  # a watch with nothing to say yet: stop following
                await asyncio.wait_for(watch.read(), WATCH_SECONDS)
            watch.cancel()
        else:
            await channel.unary_unary(route.path)(raw, metadata=metadata, timeout=CALL_TIMEOUT)
    except grpc.aio.AioRpcError as error:
        code, details = error.code(), error.details() or ""
        trailers = sum(len(k) + len(v) for k, v in (error.trailing_metadata() or ()))
    return Outcome(route, who, raw, code, details, trailers)


async def health(address: str, *, internal: bool = True) -> int:
    """A backend over internal mTLS; the gateway's public port (internal=False) in plaintext."""
    async with internal_channel(address) if internal else grpc.aio.insecure_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return int(reply.status)


def public_routes() -> dict[str, Route]:
    return build_routes(discover_services(BACKENDS))


# --- the properties ------------------------------------------------------------------------------


async def fuzz(stack: Stack, callers: tuple[str, ...], address_of: Callable[[Route], str]) -> list[Outcome]:
    """Every public method, called at ``address_of(route)`` by each of ``callers`` with the
    generated requests; asserts every answer is precise and every process still serves."""
    routes = public_routes()
    assert len(routes) > 40  # every backend's services were discovered
    started = time.monotonic()
    work = [
        (route, who, raw)
        for salt, route in enumerate(routes.values())
        for raw in generate(route, MESSAGES, salt)
        for who in callers
    ]
    generated = time.monotonic() - started
    limit = asyncio.Semaphore(CONCURRENCY)
    # The gateway's public port in plaintext; a backend's internal port over mTLS, as the gateway.
    channels = {
        address: grpc.aio.insecure_channel(address) if address == stack.gateway else internal_channel(address)
        for address in map(address_of, routes.values())
    }
    try:

        async def one(item: tuple[Route, str, bytes]) -> Outcome:
            async with limit:
                return await call(channels[address_of(item[0])], *item)

        outcomes = await asyncio.gather(*(one(item) for item in work))
    finally:
        for channel in channels.values():
            await channel.close()
    elapsed = time.monotonic() - started

    imprecise = [o for o in outcomes if o.code not in PRECISE]
    assert not imprecise, f"seed {SEED}: " + "\n".join(
        f"{o.route.name} as {o.who}: {o.code.name} {o.details!r} for {_describe(o.route, o.request)}"
        for o in imprecise[:10]
    )
    oversized = [o for o in outcomes if o.trailers_bytes > 8 * 1024]
    assert not oversized, [(o.route.name, o.trailers_bytes) for o in oversized[:5]]
    for name, service in stack.services.items():
        assert not service.task.done(), f"{name} stopped"
        state = await health(service.address, internal=name != "gateway")
        assert state == health_pb2.HealthCheckResponse.SERVING, name
    codes: dict[str, int] = {}
    for o in outcomes:
        codes[o.code.name] = codes.get(o.code.name, 0) + 1
    print(  # the run's figures, shown with -s
        f"fuzz ({', '.join(callers)}): {len(outcomes)} calls over {len(routes)} methods in {elapsed:.1f}s "
        f"(generation {generated:.1f}s), seed {SEED}: {codes}"
    )
    return outcomes


async def test_every_public_method_answers_any_input_precisely(stack: Stack) -> None:
    await fuzz(stack, tuple(KEYS), lambda route: stack.gateway)


async def test_every_backend_answers_any_input_precisely_when_called_directly(stack: Stack) -> None:
    """As an internal caller would (the orchestrator calling inventory, a tool behind the
    gateway): the services' own checks, without the gateway's in front."""
    await fuzz(stack, (DIRECT,), lambda route: stack.services[route.backend].address)


def _rich(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    return status_pb2.Status.FromString(dict(error.trailing_metadata())["grpc-status-details-bin"])


async def _refused(call: Callable[[], Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call()
    return info.value


async def test_huge_refusals_fit_in_trailers_with_a_count_of_the_rest(stack: Stack) -> None:
    admin = [("authorization", f"Bearer {KEYS['admin']}")]
    async with grpc.aio.insecure_channel(stack.gateway) as channel:
        inventory = inventory_pb2_grpc.InventoryServiceStub(channel)
        # 1,000 unknown SKUs: NOT_FOUND naming the first ones, counting the rest.
        error = await _refused(
            lambda: inventory.GetSkus(
                ipb.GetSkusRequest(skus=[random_id("NOPE") for _ in range(1_000)]), metadata=admin, timeout=30
            )
        )
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert len(error.details().encode()) <= errors.MAX_STATUS_MESSAGE_BYTES
        assert error.details().startswith("skus[0]: unknown SKU NOPE-")
        assert "and 995 more unknown SKUs" in error.details()
        # A 10,000-line snapshot whose every line is bad: INVALID_ARGUMENT, first violations named.
        snapshot = ipb.ApplyStockSnapshotRequest(
            snapshot_id=random_id("snap"),
            lines=[ipb.SnapshotLine(sku="", location_id="", on_hand=-1) for _ in range(10_000)],
        )
        snapshot.as_of.GetCurrentTime()
        error = await _refused(lambda: inventory.ApplyStockSnapshot(snapshot, metadata=admin, timeout=60))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        bad = error_details_pb2.BadRequest()
        assert _rich(error).details[0].Unpack(bad)
        assert bad.field_violations[0].field.startswith("lines[0]")
        assert bad.field_violations[-1].description.startswith("and ")
        assert len(bad.field_violations) <= errors.MAX_VIOLATIONS + 1
        # An order of 60 bad lines, as a channel: the orchestrator's violations, bounded.
        order = opb.PlaceOrderRequest(
            channel_order_id=random_id("co"),
            customer_id="c",
            lines=[opb.OrderLineInput(line_id=str(i), sku="SKU-1", quantity=0) for i in range(60)],
        )
        orders = channel.unary_unary("/tutti.orchestrator.v1.OrderService/PlaceOrder")
        error = await _refused(
            lambda: orders(
                order.SerializeToString(),
                metadata=[("authorization", f"Bearer {KEYS['channel']}")],
                timeout=30,
            )
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        bad = error_details_pb2.BadRequest()
        assert _rich(error).details[0].Unpack(bad)
        assert "lines[0].quantity" in [v.field for v in bad.field_violations]
        assert bad.field_violations[-1].description.startswith("and ")
        assert len(bad.field_violations) <= errors.MAX_VIOLATIONS + 1
        assert "more" in error.details()


async def test_a_pos_stream_with_a_bad_key_is_unauthenticated_for_a_python_client(stack: Stack) -> None:
    sales = [
        ipb.StreamPosSalesRequest(
            terminal_id="t", sale_id=str(i), location_id=STORE, kind=ipb.POS_SALE_KIND_SALE
        )
        for i in range(100)
    ]
    async with grpc.aio.insecure_channel(stack.gateway) as channel:
        stub = inventory_pb2_grpc.InventoryServiceStub(channel)
        for metadata in ([("authorization", "Bearer not-a-key")], []):
            for _ in range(5):
                call = stub.StreamPosSales(iter(sales), metadata=metadata, timeout=10)
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    async for _ in call:
                        pass
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, info.value.details()
        # With a good key, an ill-formed sale (after good ones) ends the stream, precisely.
        ill_formed = ipb.StreamPosSalesRequest(terminal_id="t", sale_id="x", location_id=STORE, kind=9)  # type: ignore[arg-type]
        call = stub.StreamPosSales(
            iter([*sales[:3], ill_formed, *sales[3:]]),
            metadata=[("authorization", f"Bearer {KEYS['store']}")],
            timeout=10,
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in call:
                pass
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
        assert info.value.details() == "kind: 9 is not a known tutti.inventory.v1.PosSaleKind value"
