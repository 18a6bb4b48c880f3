"""Composition root of the returns service."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import grpc
from tutti.returns.v1 import returns_pb2, returns_pb2_grpc

from runtime.errors import Unavailable
from runtime.grpc_server import Wiring, client_channel
from runtime.kafka import create_producer
from runtime.metrics import Metrics
from runtime.postgres import OutboxRelay, apply_migrations, create_pool
from runtime.settings import CommonSettings, Env, SettingsError
from services.returns.adapters.inventory import InventoryClient
from services.returns.adapters.metrics import PrometheusReturnCounters
from services.returns.adapters.orders import OrchestratorOrders
from services.returns.adapters.postgres import PgReturnsStore
from services.returns.adapters.rules_file import DEFAULT_RULES_FILE, load_rules
from services.returns.domain.rules import ReturnRules
from services.returns.entrypoints.grpc import ReturnsServicer
from services.returns.service import ReturnsService, TaskWorker

SCHEMA = "returns"
MIGRATIONS = Path(__file__).parent / "migrations"
DEPENDENCIES = ("inventory", "orchestrator")


@dataclass(frozen=True, slots=True)
class ReturnsSettings:
    rules: ReturnRules
    pool_size: int
    # gRPC services whose channel must be connected for the service to report SERVING.
    ready_dependencies: tuple[str, ...]
    task_retry_seconds: float
    check_till_receipts: bool = True

    @classmethod
    def from_env(cls, env: Env | None = None) -> ReturnsSettings:
        env = env or Env()
        raw = env.str("TUTTI_RETURNS_READY_DEPENDENCIES", ",".join(DEPENDENCIES))
        deps = tuple(d.strip() for d in raw.split(",") if d.strip())
        if any(d not in DEPENDENCIES for d in deps):
            raise SettingsError(
                f"TUTTI_RETURNS_READY_DEPENDENCIES must list some of {', '.join(DEPENDENCIES)}, got {raw!r}"
            )
        return cls(
            rules=load_rules(env.str("TUTTI_RETURNS_RULES_FILE", str(DEFAULT_RULES_FILE))),
            pool_size=env.int("TUTTI_RETURNS_DB_POOL_SIZE", 10, minimum=2, maximum=200),
            ready_dependencies=deps,
            task_retry_seconds=env.float("TUTTI_RETURNS_TASK_RETRY_SECONDS", 1.0, minimum=0.05),
            check_till_receipts=env.bool("TUTTI_RETURNS_CHECK_TILL_RECEIPTS", True),
        )


async def _channel_ready(name: str, channel: grpc.aio.Channel) -> None:
    state = channel.get_state(try_to_connect=True)
    if state == grpc.ChannelConnectivity.READY:
        return
    try:
        await asyncio.wait_for(channel.channel_ready(), timeout=2.0)
    except TimeoutError:
        raise Unavailable(f"{name} is not reachable") from None


async def build(
    settings: CommonSettings, stack: AsyncExitStack, returns: ReturnsSettings | None = None
) -> Wiring:
    returns = returns or ReturnsSettings.from_env()
    metrics = Metrics("returns")
    await apply_migrations(settings.database_url, SCHEMA, [MIGRATIONS])
    pool = await create_pool(settings.database_url, SCHEMA, max_size=returns.pool_size)
    stack.push_async_callback(pool.close)
    metrics.watch_pg_pool(SCHEMA, pool)
    producer = create_producer(settings.kafka_bootstrap, "tutti-returns", security=settings.kafka_security)
    await producer.start()
    stack.push_async_callback(producer.stop)
    channels = {
        name: client_channel(settings.addresses[name], metrics, settings.internal_tls)
        for name in DEPENDENCIES
    }
    for channel in channels.values():
        stack.push_async_callback(channel.close)

    store = PgReturnsStore(pool)
    inventory = InventoryClient(channels["inventory"])
    orders = OrchestratorOrders(channels["orchestrator"], catalogue=inventory)
    relay = OutboxRelay(pool, producer, SCHEMA)
    counters = PrometheusReturnCounters(metrics)
    service = ReturnsService(
        store,
        orders,
        inventory,
        returns.rules,
        check_till_receipts=returns.check_till_receipts,
        counters=counters,
        outbox=relay,
    )
    metrics.watch_outbox(SCHEMA, relay.backlog)
    worker = TaskWorker(
        store,
        inventory,
        poll_seconds=returns.task_retry_seconds,
        counters=counters,
        retry_base=timedelta(seconds=returns.task_retry_seconds),
    )

    async def ready() -> None:
        await store.ping()
        for name in returns.ready_dependencies:
            await _channel_ready(name, channels[name])

    async def relay_outbox() -> None:
        await relay.run()

    async def retry_inventory_effects() -> None:
        await worker.run()

    async def check_rules_locations() -> None:
        await service.check_rules_locations()

    def register(server: grpc.aio.Server) -> None:
        returns_pb2_grpc.add_ReturnsServiceServicer_to_server(ReturnsServicer(service), server)

    return Wiring(
        register=register,
        service_names=[returns_pb2.DESCRIPTOR.services_by_name["ReturnsService"].full_name],
        ready=ready,
        background=(relay_outbox, retry_inventory_effects, check_rules_locations),
        metrics=metrics,
    )
