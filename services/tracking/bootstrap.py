"""Composition root of the tracking service."""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

from tutti.tracking.v1 import tracking_pb2, tracking_pb2_grpc

from runtime.errors import Unavailable
from runtime.grpc_server import Wiring
from runtime.kafka import INVENTORY_MOVEMENTS, ORDER_EVENTS, RETURN_EVENTS, EventConsumer
from runtime.metrics import Metrics
from runtime.postgres import apply_migrations, create_pool
from runtime.settings import CommonSettings, Env, SettingsError
from services.tracking.adapters.events import register_generated_types
from services.tracking.adapters.postgres import PostgresTimelineNotifications, PostgresTrackingStore
from services.tracking.entrypoints.events import EventHandler
from services.tracking.entrypoints.grpc import TrackingServicer
from services.tracking.service import TrackingService

SCHEMA = "tracking"
MIGRATIONS = Path(__file__).parent / "migrations"
# Topics keyed by order id: their key stands in for an order_id the payload lacks.
ORDER_KEYED_TOPICS = (ORDER_EVENTS.name, RETURN_EVENTS.name)
KNOWN_TOPICS = (ORDER_EVENTS.name, RETURN_EVENTS.name, INVENTORY_MOVEMENTS.name)


@dataclass(frozen=True, slots=True)
class TrackingSettings:
    consumer_group: str
    topics: tuple[str, ...]
    watch_poll_seconds: float
    pool_size: int

    @classmethod
    def from_env(cls, env: Env | None = None) -> TrackingSettings:
        env = env or Env()
        raw_topics = env.str(
            "TUTTI_TRACKING_TOPICS", f"{ORDER_EVENTS.name},{RETURN_EVENTS.name},{INVENTORY_MOVEMENTS.name}"
        )
        topics = tuple(t.strip() for t in raw_topics.split(",") if t.strip())
        unknown = [t for t in topics if t not in KNOWN_TOPICS]
        if not topics or unknown:
            raise SettingsError(
                f"TUTTI_TRACKING_TOPICS must be a comma-separated list of {', '.join(KNOWN_TOPICS)}, "
                f"got {raw_topics!r}"
            )
        return cls(
            consumer_group=env.str("TUTTI_TRACKING_CONSUMER_GROUP", "tutti-tracking"),
            topics=topics,
            watch_poll_seconds=env.float("TUTTI_TRACKING_WATCH_POLL_SECONDS", 5.0, minimum=0.1),
            pool_size=env.int("TUTTI_TRACKING_DB_POOL_SIZE", 10, minimum=2, maximum=200),
        )


async def build(
    settings: CommonSettings, stack: AsyncExitStack, tracking: TrackingSettings | None = None
) -> Wiring:
    tracking = tracking or TrackingSettings.from_env()
    register_generated_types()
    metrics = Metrics("tracking")
    await apply_migrations(settings.database_url, SCHEMA, [MIGRATIONS])
    pool = await create_pool(settings.database_url, SCHEMA, max_size=tracking.pool_size)
    stack.push_async_callback(pool.close)
    metrics.watch_pg_pool(SCHEMA, pool)

    store = PostgresTrackingStore(pool)
    notifications = PostgresTimelineNotifications(settings.database_url)
    service = TrackingService(store, notifications, watch_poll_seconds=tracking.watch_poll_seconds)
    handler = EventHandler(service, ORDER_KEYED_TOPICS)
    consumer = EventConsumer(
        bootstrap=settings.kafka_bootstrap,
        group_id=tracking.consumer_group,
        topics=tracking.topics,
        handler=handler,
        batch_handler=handler.batch,
        client_id="tutti-tracking",
        metrics=metrics,
        security=settings.kafka_security,
    )

    async def ready() -> None:
        await store.ping()
        if not consumer.started.is_set():
            raise Unavailable("event consumer not started")

    async def consume() -> None:
        await consumer.run()

    async def listen() -> None:
        await notifications.run()

    def register(server: object) -> None:
        tracking_pb2_grpc.add_TrackingServiceServicer_to_server(TrackingServicer(service), server)  # type: ignore[arg-type]

    return Wiring(
        register=register,
        service_names=[tracking_pb2.DESCRIPTOR.services_by_name["TrackingService"].full_name],
        ready=ready,
        background=(consume, listen),
        metrics=metrics,
    )
