"""Composition root of the orchestrator: PostgreSQL pool, inventory channel, Kafka producer for
the outbox relay, the services and their background loops."""

from __future__ import annotations

import asyncio
import re
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

from tutti.orchestrator.v1 import orchestrator_pb2, orchestrator_pb2_grpc

from runtime.errors import InvalidArgument, Unavailable
from runtime.grpc_server import Wiring, client_channel
from runtime.kafka import INVENTORY_MOVEMENTS, EventConsumer, create_producer
from runtime.metrics import Metrics
from runtime.postgres import OutboxRelay, apply_migrations, create_pool
from runtime.settings import CommonSettings, Env, SettingsError
from services.orchestrator.adapters.inventory import GrpcInventory
from services.orchestrator.adapters.metrics import PrometheusOrderCounters
from services.orchestrator.entrypoints.events import LocationEvents
from services.orchestrator.entrypoints.grpc import OrderServicer, RulesServicer
from services.orchestrator.service import Config, OrderService, RulesBook, parse_document

SCHEMA = "orchestrator"
MIGRATIONS = Path(__file__).parent / "migrations"
DEFAULT_RULES = Path(__file__).parent / "rules" / "default.yaml"


@dataclass(frozen=True, slots=True)
class OrchestratorSettings:
    accept_timeout_seconds: float
    sweep_interval_seconds: float
    quote_ttl_seconds: float
    pool_size: int
    default_rules: Path
    schema: str = SCHEMA
    consumer_group: str = "tutti-orchestrator"
    abandoned_placement_seconds: float = 60.0

    @classmethod
    def from_env(cls, env: Env | None = None) -> OrchestratorSettings:
        env = env or Env()
        rules = Path(env.str("TUTTI_ORCHESTRATOR_DEFAULT_RULES", str(DEFAULT_RULES)))
        if not rules.is_file():
            raise SettingsError(
                f"TUTTI_ORCHESTRATOR_DEFAULT_RULES must name a rules file, got {str(rules)!r}"
            )
        schema = env.str("TUTTI_ORCHESTRATOR_SCHEMA", SCHEMA)
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", schema):
            raise SettingsError(
                f"TUTTI_ORCHESTRATOR_SCHEMA must be a lower-case SQL identifier, got {schema!r}"
            )
        return cls(
            accept_timeout_seconds=env.float("TUTTI_ORCHESTRATOR_ACCEPT_TIMEOUT_SECONDS", 900.0, minimum=1.0),
            sweep_interval_seconds=env.float("TUTTI_ORCHESTRATOR_SWEEP_INTERVAL_SECONDS", 30.0, minimum=0.1),
            quote_ttl_seconds=env.float("TUTTI_ORCHESTRATOR_QUOTE_TTL_SECONDS", 900.0, minimum=1.0),
            pool_size=env.int("TUTTI_ORCHESTRATOR_DB_POOL_SIZE", 20, minimum=4, maximum=200),
            default_rules=rules,
            schema=schema,
            consumer_group=env.str("TUTTI_ORCHESTRATOR_CONSUMER_GROUP", "tutti-orchestrator"),
            abandoned_placement_seconds=env.float(
                "TUTTI_ORCHESTRATOR_ABANDONED_PLACEMENT_SECONDS", 60.0, minimum=1.0
            ),
        )


async def build(
    settings: CommonSettings, stack: AsyncExitStack, orchestrator: OrchestratorSettings | None = None
) -> Wiring:
    orchestrator = orchestrator or OrchestratorSettings.from_env()
    default_document = orchestrator.default_rules.read_text()
    try:
        parse_document(default_document)
    except InvalidArgument as exc:
        raise SettingsError(f"TUTTI_ORCHESTRATOR_DEFAULT_RULES is not valid: {exc}") from None

    metrics = Metrics("orchestrator")
    await apply_migrations(settings.database_url, orchestrator.schema, [MIGRATIONS])
    pool = await create_pool(settings.database_url, orchestrator.schema, max_size=orchestrator.pool_size)
    stack.push_async_callback(pool.close)
    metrics.watch_pg_pool(orchestrator.schema, pool)

    channel = client_channel(settings.addresses["inventory"], metrics, settings.internal_tls)
    stack.push_async_callback(channel.close)
    inventory = GrpcInventory(channel)

    producer = create_producer(
        settings.kafka_bootstrap, "tutti-orchestrator", security=settings.kafka_security
    )
    await producer.start()
    stack.push_async_callback(producer.stop)
    relay = OutboxRelay(pool, producer, orchestrator.schema)
    metrics.watch_outbox(orchestrator.schema, relay.backlog)

    async def known_locations() -> set[str]:
        return {candidate.location_id for candidate in await inventory.locations()}

    rules = RulesBook(pool, default_document, locations=known_locations)
    await rules.ensure_live()
    service = OrderService(
        pool,
        inventory,
        rules,
        Config(
            accept_timeout_seconds=orchestrator.accept_timeout_seconds,
            sweep_interval_seconds=orchestrator.sweep_interval_seconds,
            quote_ttl_seconds=orchestrator.quote_ttl_seconds,
            abandoned_placement_seconds=orchestrator.abandoned_placement_seconds,
        ),
        counters=PrometheusOrderCounters(metrics),
        outbox=relay,
    )
    stack.push_async_callback(service.watchers.close)
    consumer = EventConsumer(
        bootstrap=settings.kafka_bootstrap,
        group_id=orchestrator.consumer_group,
        topics=[INVENTORY_MOVEMENTS.name],
        handler=LocationEvents(service),
        client_id="tutti-orchestrator",
        metrics=metrics,
        security=settings.kafka_security,
    )

    def register(server: object) -> None:
        orchestrator_pb2_grpc.add_OrderServiceServicer_to_server(OrderServicer(service), server)
        orchestrator_pb2_grpc.add_RulesServiceServicer_to_server(RulesServicer(rules), server)

    async def ready() -> None:
        async with pool.acquire() as conn:
            await conn.fetchval("SELECT 1")
        await inventory.ping()

    async def relay_outbox() -> None:
        await relay.run()

    async def sweep_unaccepted() -> None:
        await service.sweep_forever()

    async def follow_locations() -> None:
        await consumer.run()

    async def check_rules_locations() -> None:
        # Once inventory answers (it may start after this service): a warning per unknown id.
        while True:
            try:
                await rules.check_live_locations()
                return
            except Unavailable:
                await asyncio.sleep(5.0)

    return Wiring(
        register=register,  # type: ignore[arg-type]
        service_names=[
            orchestrator_pb2.DESCRIPTOR.services_by_name["OrderService"].full_name,
            orchestrator_pb2.DESCRIPTOR.services_by_name["RulesService"].full_name,
        ],
        ready=ready,
        background=(relay_outbox, sweep_unaccepted, follow_locations, check_rules_locations),
        metrics=metrics,
    )
