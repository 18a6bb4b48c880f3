"""runtime.metrics on real servers: the status each call is recorded with (server and client
side), calls in flight, the /metrics endpoint, and the outbox probes on PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import asyncpg
import grpc
import pytest
from google.protobuf import empty_pb2
from redis.asyncio import Redis

from runtime import errors
from runtime.grpc_server import Wiring, client_channel
from runtime.kafka import ORDER_EVENTS, build_envelope
from runtime.metrics import Metrics, serving_metrics
from runtime.postgres import OutboxRelay, apply_migrations, create_pool, enqueue_event
from runtime.settings import CommonSettings
from services.inventory.adapters.redis_store import OUTBOX
from services.inventory.adapters.relay import OutboxRelay as RedisOutboxRelay
from tests.support import internal_channel, internal_tls, random_id, running_service, wait_for

SERVICE = "tutti.test.v1.Probe"
# A Redis database no other suite uses: the probe reads the one outbox stream key.
REDIS_DB = 14
# The server's address and registry, and the Held method's "entered" and "release" events.
Probe = tuple[str, Metrics, asyncio.Event, asyncio.Event]


def count(metrics: Metrics, name: str, **labels: str) -> float:
    return sum(
        sample.value
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


@pytest.fixture
async def probe(settings: CommonSettings) -> AsyncIterator[Probe]:
    """A server whose methods answer OK, fail in each way, hold until released, or stream."""
    metrics = Metrics("test")
    entered, release = asyncio.Event(), asyncio.Event()

    async def ok(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    async def refused(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        raise errors.FailedPrecondition("not enough stock")

    async def broken(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        raise RuntimeError("a bug")

    async def aborted(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
        return b""

    async def held(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        entered.set()
        await release.wait()
        return b""

    async def stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        for _ in range(3):
            yield request

    identity = lambda b: b  # noqa: E731
    unary = {name: grpc.unary_unary_rpc_method_handler(f, identity, identity)
             for name, f in (("Ok", ok), ("Refused", refused), ("Broken", broken), ("Aborted", aborted),
                             ("Held", held))}
    handler = grpc.method_handlers_generic_handler(
        SERVICE, {**unary, "Stream": grpc.unary_stream_rpc_method_handler(stream, identity, identity)}
    )

    async def build(settings: CommonSettings, stack: AsyncExitStack) -> Wiring:
        return Wiring(
            register=lambda s: s.add_generic_rpc_handlers((handler,)),
            service_names=[SERVICE],
            metrics=metrics,
        )

    async with running_service(settings, build) as svc:
        yield svc.address, metrics, entered, release


async def test_each_call_is_recorded_with_the_status_its_caller_received(
    probe: Probe,
) -> None:
    address, server, _, _ = probe
    client = Metrics("client")
    expected = {"Ok": "0", "Refused": "9", "Broken": "13", "Aborted": "5"}
    async with client_channel(address, client, internal_tls()) as channel:
        for method, code in expected.items():
            call = channel.unary_unary(f"/{SERVICE}/{method}")
            try:
                assert await call(b"x", timeout=5) == b"x"
            except grpc.aio.AioRpcError as exc:
                assert str(exc.code().value[0]) == code
        replies = [r async for r in channel.unary_stream(f"/{SERVICE}/Stream")(b"s", timeout=5)]
    assert replies == [b"s"] * 3
    for method, code in expected.items():
        labels = {"rpc_service": SERVICE, "rpc_method": method, "rpc_grpc_status_code": code}
        assert count(server, "rpc_server_duration_seconds_count", **labels) == 1, method
        assert count(client, "rpc_client_duration_seconds_count", **labels) == 1, method
    stream = {"rpc_service": SERVICE, "rpc_method": "Stream", "rpc_grpc_status_code": "0"}
    assert count(server, "rpc_server_duration_seconds_count", **stream) == 1
    # Streams are timed on the server only: their length is a subscription's, not a latency.
    assert count(client, "rpc_client_duration_seconds_count", rpc_method="Stream") == 0


async def test_a_call_is_in_flight_until_it_answers(probe: Probe) -> None:
    address, server, entered, release = probe
    held = {"rpc_service": SERVICE, "rpc_method": "Held"}
    async with internal_channel(address) as channel:
        call = channel.unary_unary(f"/{SERVICE}/Held")(b"", timeout=10)
        await asyncio.wait_for(entered.wait(), timeout=5)
        assert count(server, "rpc_server_active_requests", **held) == 1
        release.set()
        await call
    await wait_for(lambda: count(server, "rpc_server_active_requests", **held) == 0, message="call done")
    assert count(server, "rpc_server_duration_seconds_count", **held, rpc_grpc_status_code="0") == 1


async def test_a_cancelled_client_call_is_recorded_as_cancelled(
    probe: Probe,
) -> None:
    address, server, entered, _ = probe
    client = Metrics("client")
    async with client_channel(address, client, internal_tls()) as channel:
        waiting = asyncio.ensure_future(channel.unary_unary(f"/{SERVICE}/Held")(b"", timeout=10))
        await asyncio.wait_for(entered.wait(), timeout=5)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    held = {"rpc_service": SERVICE, "rpc_method": "Held", "rpc_grpc_status_code": "1"}  # CANCELLED
    assert count(client, "rpc_client_duration_seconds_count", **held) == 1
    await wait_for(lambda: count(server, "rpc_server_duration_seconds_count", **held) == 1,
                   message="the server saw the cancellation")


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return str(reply.read().decode())


async def test_metrics_are_served_over_http_until_the_block_ends() -> None:
    metrics = Metrics("test")
    metrics.counter("things", "Things.").inc(3)
    ports: list[int] = []
    with serving_metrics(metrics, "127.0.0.1:0", ports.append):
        text = await asyncio.to_thread(_get, f"http://127.0.0.1:{ports[0]}/metrics")
        assert "tutti_things_total 3.0" in text
        assert "# TYPE rpc_server_duration_seconds histogram" in text
    with pytest.raises(OSError):
        await asyncio.to_thread(_get, f"http://127.0.0.1:{ports[0]}/metrics")
    with serving_metrics(metrics, None) as port:
        assert port is None


def test_a_busy_metrics_port_stops_the_process_naming_the_variable() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        expected = f"127.0.0.1:{busy} \\(TUTTI_ORCHESTRATOR_METRICS_ADDR\\)"
        with (
            pytest.raises(OSError, match=expected),
            serving_metrics(Metrics("orchestrator"), f"127.0.0.1:{busy}"),
        ):
            pass


@pytest.mark.integration
async def test_the_postgres_outbox_probe_counts_waiting_events_and_the_age_of_the_oldest(
    settings: CommonSettings,
) -> None:
    schema = f"metrics_{random_id('t').split('-')[1]}"
    await apply_migrations(settings.database_url, schema, [])
    pool = await create_pool(settings.database_url, schema, max_size=2)
    try:
        relay = OutboxRelay(pool, producer=None, schema=schema)  # type: ignore[arg-type]  # never relays here
        assert await relay.backlog() == (0, None)
        async with pool.acquire() as conn:
            for _ in range(3):
                envelope = build_envelope(empty_pb2.Empty(), source="test", key="k")
                await enqueue_event(conn, ORDER_EVENTS, envelope)
            await conn.execute("UPDATE outbox SET created_at = now() - interval '42 seconds' WHERE id = "
                               "(SELECT min(id) FROM outbox)")
        waiting, age = await relay.backlog()
        assert waiting == 3
        assert age is not None and 42 <= age < 120
        metrics = Metrics("test")
        metrics.watch_outbox(schema, relay.backlog)
        await metrics.sample_once()
        assert count(metrics, "tutti_outbox_backlog_events", outbox=schema) == 3
        assert count(metrics, "tutti_outbox_oldest_age_seconds", outbox=schema) >= 42
    finally:
        await pool.close()
        conn = await asyncpg.connect(settings.database_url)
        try:
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        finally:
            await conn.close()


@pytest.mark.integration
async def test_the_redis_outbox_probe_reads_the_stream(settings: CommonSettings) -> None:
    redis = Redis.from_url(f"{settings.redis_url.rsplit('/', 1)[0]}/{REDIS_DB}")
    try:
        await redis.delete(OUTBOX)
        relay = RedisOutboxRelay(redis, producer=None, relayed_channel="unused")  # type: ignore[arg-type]
        assert await relay.backlog() == (0, None)
        # Stream ids are the millisecond of the append: one a minute ago, one now.
        now_ms = int((await redis.time())[0]) * 1000
        await redis.xadd(OUTBOX, {"m": "[]"}, id=f"{now_ms - 60_000}-0")
        await redis.xadd(OUTBOX, {"m": "[]"})
        waiting, age = await relay.backlog()
        assert waiting == 2
        assert age is not None and 55 <= age < 120
    finally:
        await redis.delete(OUTBOX)
        await redis.aclose()
