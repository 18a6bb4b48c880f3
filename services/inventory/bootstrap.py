"""Composition root of the inventory service: Redis client, scripts, Kafka producer, outbox
relay, availability fan-out and the hold sweeper."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from contextlib import AsyncExitStack
from dataclasses import dataclass

import grpc
from redis.asyncio import Redis
from tutti.inventory.v1 import inventory_pb2, inventory_pb2_grpc

from runtime.grpc_server import Wiring
from runtime.kafka import create_producer
from runtime.metrics import Metrics
from runtime.settings import CommonSettings, Env
from services.inventory import rebuild
from services.inventory.adapters.ledger_guard import LedgerGuard
from services.inventory.adapters.metrics import PrometheusStockCounters
from services.inventory.adapters.redis_pool import DeadlineBoundPool
from services.inventory.adapters.redis_store import RedisStore
from services.inventory.adapters.relay import OutboxRelay
from services.inventory.adapters.watch import AvailabilityHub
from services.inventory.entrypoints.grpc import InventoryServicer
from services.inventory.service import InventoryService

log = logging.getLogger(__name__)


def redis_tls_options(ca_file: str | None) -> dict[str, str]:
    """redis-py arguments for a rediss:// URL checked against TUTTI_REDIS_CA_FILE (the URL's own
    ssl_ca_certs query parameter works too); nothing when no CA file is set."""
    return {} if ca_file is None else {"ssl_ca_certs": ca_file}


@dataclass(frozen=True, slots=True)
class InventorySettings:
    redis_url: str
    idempotency_ttl_s: int
    closed_reservation_ttl_s: int
    sweep_interval_s: float
    relay_batch: int
    relay_enabled: bool
    pos_ack_after_ledger_s: float
    ack_after_ledger_s: float
    snapshot_max_future_s: float
    pos_sale_retention_s: int
    # Redis connections at most; a call waits for a free one within its deadline, work without a
    # caller's deadline for redis_pool_timeout_s (adapters/redis_pool.py).
    redis_max_connections: int = 64
    redis_pool_timeout_s: float = 5.0

    @classmethod
    def from_env(cls, common: CommonSettings, environ: dict[str, str] | None = None) -> InventorySettings:
        env = Env(environ if environ is not None else dict(os.environ))
        return cls(
            redis_url=env.url("TUTTI_INVENTORY_REDIS_URL", common.redis_url, ("redis", "rediss", "unix")),
            idempotency_ttl_s=env.int("TUTTI_INVENTORY_IDEMPOTENCY_TTL_SECONDS", 7 * 86400, minimum=60),
            closed_reservation_ttl_s=env.int(
                "TUTTI_INVENTORY_CLOSED_RESERVATION_TTL_SECONDS", 7 * 86400, minimum=60
            ),
            sweep_interval_s=env.float("TUTTI_INVENTORY_SWEEP_INTERVAL_SECONDS", 0.5, minimum=0.05),
            relay_batch=env.int("TUTTI_INVENTORY_RELAY_BATCH", 500, minimum=1, maximum=10_000),
            relay_enabled=env.bool("TUTTI_INVENTORY_RELAY_ENABLED", True),
            pos_ack_after_ledger_s=env.float(
                "TUTTI_INVENTORY_POS_ACK_AFTER_LEDGER_SECONDS", 5.0, minimum=0.0
            ),
            ack_after_ledger_s=env.float(
                "TUTTI_INVENTORY_ACK_AFTER_LEDGER_SECONDS", 5.0, minimum=0.0
            ),
            snapshot_max_future_s=env.float(
                "TUTTI_INVENTORY_SNAPSHOT_MAX_FUTURE_SECONDS", 300.0, minimum=0.0
            ),
            pos_sale_retention_s=86400
            * env.int("TUTTI_INVENTORY_POS_SALE_RETENTION_DAYS", 60, minimum=1, maximum=3660),
            redis_max_connections=env.int(
                "TUTTI_INVENTORY_REDIS_MAX_CONNECTIONS", 64, minimum=4, maximum=10_000
            ),
            redis_pool_timeout_s=env.float("TUTTI_INVENTORY_REDIS_POOL_TIMEOUT_SECONDS", 5.0, minimum=0.01),
        )


async def build(
    settings: CommonSettings, stack: AsyncExitStack, inventory: InventorySettings | None = None
) -> Wiring:
    cfg = inventory or InventorySettings.from_env(settings)
    redis = Redis.from_pool(
        DeadlineBoundPool.from_url(
            cfg.redis_url,
            max_connections=cfg.redis_max_connections,
            timeout=cfg.redis_pool_timeout_s,
            health_check_interval=30,
            socket_keepalive=True,
            **redis_tls_options(settings.redis_ca_file),
        )
    )
    stack.push_async_callback(redis.aclose)
    metrics = Metrics("inventory")
    metrics.watch_redis_pool("inventory", redis)
    # The ledger checks (armed run_id, answers waiting for the relay's receipts) on their own
    # connections: one call covers every waiting answer.
    control = Redis.from_url(
        cfg.redis_url, max_connections=4, socket_keepalive=True, **redis_tls_options(settings.redis_ca_file)
    )
    stack.push_async_callback(control.aclose)
    store = RedisStore(
        redis,
        idempotency_ttl_s=cfg.idempotency_ttl_s,
        closed_ttl_s=cfg.closed_reservation_ttl_s,
        control=control,
    )
    hub = AvailabilityHub(redis, avail_channel=store.avail_channel, relayed_channel=store.relayed_channel)
    service = InventoryService(
        store,
        hub,
        pos_ack_after_ledger_s=cfg.pos_ack_after_ledger_s,
        ack_after_ledger_s=cfg.ack_after_ledger_s,
        snapshot_max_future_s=cfg.snapshot_max_future_s,
        pos_sale_retention_s=cfg.pos_sale_retention_s,
        counters=PrometheusStockCounters(metrics),
    )

    producer = create_producer(settings.kafka_bootstrap, "tutti-inventory", security=settings.kafka_security)
    producer_started = asyncio.Event()
    stack.push_async_callback(producer.stop)
    relay = OutboxRelay(redis, producer, relayed_channel=store.relayed_channel, batch=cfg.relay_batch)
    guard = LedgerGuard(
        store,
        lambda: rebuild.catch_up(
            redis,
            settings.kafka_bootstrap,
            closed_ttl_s=cfg.closed_reservation_ttl_s,
            security=settings.kafka_security,
        ),
    )
    metrics.watch_outbox("inventory", relay.backlog)

    async def start_producer() -> None:
        await producer.start()
        producer_started.set()

    async def relay_outbox() -> None:
        if not producer_started.is_set():
            await start_producer()
        if cfg.relay_enabled:
            await relay.run()

    async def sweep_holds() -> None:
        while True:
            released = await service.sweep_expired()
            if released:
                log.info("expired holds released", extra={"count": released})
                continue  # more may be waiting
            await asyncio.sleep(cfg.sweep_interval_s)

    async def fan_out() -> None:
        await hub.run()

    async def guard_ledger() -> None:
        await guard.run()

    async def ready() -> None:
        await store.ping()
        if not guard.in_step.is_set():
            raise ConnectionError("Redis' stock is being checked against the ledger (catch-up)")
        try:
            # Both come up within moments of start; wait a little rather than flap NOT_SERVING.
            await asyncio.wait_for(producer_started.wait(), timeout=2)
            await asyncio.wait_for(hub.ready.wait(), timeout=2)
        except TimeoutError:
            if not producer_started.is_set():
                raise ConnectionError("Kafka producer not started") from None
            raise ConnectionError("availability feed not subscribed") from None

    def register(server: grpc.aio.Server) -> None:
        inventory_pb2_grpc.add_InventoryServiceServicer_to_server(InventoryServicer(service), server)

    with contextlib.suppress(Exception):
        await asyncio.wait_for(start_producer(), timeout=10)

    return Wiring(
        register=register,
        service_names=[inventory_pb2.DESCRIPTOR.services_by_name["InventoryService"].full_name],
        ready=ready,
        background=(relay_outbox, sweep_holds, fan_out, guard_ledger),
        metrics=metrics,
    )
