"""PostgreSQL plumbing: pools per service schema, versioned migrations, inbox and outbox.

Each service owns one schema of the shared database (``orchestrator``, ``returns``,
``tracking``) and never reads another's: they talk through Kafka and gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
from tutti.events.v1 import envelope_pb2

from runtime import errors, telemetry
from runtime.kafka import PRODUCER_STATE_LOST, REFUSED_FOR_GOOD, RenewableProducer, Topic

log = logging.getLogger(__name__)

RUNTIME_MIGRATIONS = Path(__file__).parent / "migrations"
# The backlog gauge counts at most this many rows: past it the alert fires anyway, and the count
# stays a bounded index scan however far the relay has fallen behind.
BACKLOG_COUNT_CAP = 1_000_000


async def create_pool(dsn: str, schema: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        server_settings={"search_path": schema, "application_name": f"tutti-{schema}"},
        command_timeout=30,
    )
    assert pool is not None
    return pool


def _lock_id(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


async def apply_migrations(dsn: str, schema: str, directories: Sequence[Path]) -> list[str]:
    """Apply ``NNNN_name.sql`` files in order, each once, under an advisory lock so concurrent
    starters do not race. Returns the versions applied now."""
    conn = await asyncpg.connect(dsn)
    applied: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _lock_id(f"migrate:{schema}"))
        try:
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            await conn.execute(f'SET search_path TO "{schema}"')
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            files = sorted(
                (f for d in (RUNTIME_MIGRATIONS, *directories) for f in d.glob("*.sql")), key=lambda f: f.name
            )
            for file in files:
                version = file.stem
                if version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(file.read_text())
                    await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
                applied.append(version)
                log.info("migration applied", extra={"schema": schema, "version": version})
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _lock_id(f"migrate:{schema}"))
    finally:
        await conn.close()
    return applied


async def claim_event(conn: asyncpg.Connection, consumer: str, event_id: str) -> bool:
    """Record that ``consumer`` handles ``event_id``; False when it already did. Call inside the
    transaction that applies the event, so the claim and the effect commit together."""
    row = await conn.fetchrow(
        "INSERT INTO inbox (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING 1",
        consumer,
        event_id,
    )
    return row is not None


async def enqueue_event(
    conn: asyncpg.Connection, topic: Topic | str, envelope: envelope_pb2.EventEnvelope
) -> None:
    """Write an event to the outbox inside the caller's transaction."""
    name = topic.name if isinstance(topic, Topic) else topic
    headers = dict((k, v.decode()) for k, v in telemetry.inject_kafka_headers())
    await conn.execute(
        "INSERT INTO outbox (topic, key, event_id, payload, headers) VALUES ($1, $2, $3, $4, $5) "
        "ON CONFLICT (event_id) DO NOTHING",
        name,
        envelope.key,
        envelope.event_id,
        envelope.SerializeToString(),
        json.dumps(headers),
    )
    # Wake the relay now rather than at its next poll; delivered at commit.
    await conn.execute("SELECT pg_notify('tutti_outbox', '')")


class OutboxRelay:
    """Moves outbox rows to Kafka in id order, then deletes them.

    One relay at a time per schema (a transaction-scoped advisory lock), so per-key order is
    kept across replicas. A crash between send and delete re-sends: consumers de-duplicate.
    """

    def __init__(self, pool: asyncpg.Pool, producer: RenewableProducer, schema: str, *, batch: int = 500,
                 idle_poll_seconds: float = 0.5) -> None:
        self._pool = pool
        self._producer = producer
        self._lock = _lock_id(f"outbox:{schema}")
        self._batch = batch
        self._idle = idle_poll_seconds
        self._wake = asyncio.Event()

    async def run(self) -> None:
        async with self._pool.acquire() as listener:
            await listener.add_listener("tutti_outbox", self._on_notify)
            try:
                backoff = 0.1
                while True:
                    try:
                        moved = await self.relay_once()
                        backoff = 0.1
                    except PRODUCER_STATE_LOST as exc:
                        # Rows stay in the outbox; the next pass resends them with a new producer.
                        log.warning("Kafka lost the outbox producer's state (%r); renewing it", exc)
                        await self._producer.renew()
                        continue
                    except Exception as exc:
                        if not errors.is_retriable(exc):
                            raise
                        # Kafka or PostgreSQL away: rows stay in the outbox until they are back.
                        log.warning("outbox relay waiting for its dependencies: %r", exc)
                        await asyncio.sleep(backoff)
                        backoff = min(backoff * 2, 5.0)
                        continue
                    if moved < self._batch:
                        self._wake.clear()
                        with contextlib.suppress(asyncio.TimeoutError):
                            await asyncio.wait_for(self._wake.wait(), timeout=self._idle)
            finally:
                await listener.remove_listener("tutti_outbox", self._on_notify)

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def backlog(self) -> tuple[int, float | None]:
        """Rows waiting (up to ``BACKLOG_COUNT_CAP``) and the age in seconds of the oldest."""
        row = await self._pool.fetchrow(
            "SELECT (SELECT count(*) FROM (SELECT 1 FROM outbox WHERE parked_at IS NULL LIMIT $1) AS capped)"
            " AS waiting, extract(epoch FROM clock_timestamp() - (SELECT created_at FROM outbox"
            " WHERE parked_at IS NULL ORDER BY id LIMIT 1))"
            "::float8 AS age",
            BACKLOG_COUNT_CAP,
        )
        assert row is not None
        return int(row["waiting"]), row["age"]

    async def relay_once(self) -> int:
        async with self._pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", self._lock):
                return 0
            rows = await conn.fetch(
                "SELECT id, topic, key, payload, headers FROM outbox WHERE parked_at IS NULL"
                " ORDER BY id LIMIT $1",
                self._batch,
            )
            if not rows:
                return 0
            parked: list[tuple[int, str]] = []
            pending: list[tuple[int, asyncio.Future[Any]]] = []
            for row in rows:
                try:
                    future = await self._producer.send(
                        row["topic"],
                        value=bytes(row["payload"]),
                        key=row["key"].encode(),
                        headers=[(k, v.encode()) for k, v in json.loads(row["headers"]).items()],
                    )
                except REFUSED_FOR_GOOD as exc:
                    parked.append((row["id"], repr(exc)))
                    continue
                pending.append((row["id"], future))
            results = await asyncio.gather(*(future for _, future in pending), return_exceptions=True)
            sent: list[int] = []
            for (row_id, _), result in zip(pending, results, strict=True):
                if isinstance(result, REFUSED_FOR_GOOD):
                    parked.append((row_id, repr(result)))
                elif isinstance(result, BaseException):
                    raise result  # nothing recorded: the whole batch is sent again (consumers de-duplicate)
                else:
                    sent.append(row_id)
            # Only the rows sent: a row with a lower id whose transaction committed after the
            # SELECT is visible to this DELETE (read committed) but was never published.
            await conn.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", sent)
            for row_id, reason in parked:
                log.error("outbox row %d refused by Kafka for good; parked: %s", row_id, reason)
                await conn.execute(
                    "UPDATE outbox SET parked_at = now(), parked_reason = $2 WHERE id = $1",
                    row_id,
                    reason[:500],
                )
            return len(rows)

    async def parked(self, limit: int = 100) -> list[asyncpg.Record]:
        """Rows Kafka refused for good, oldest first."""
        return await self._pool.fetch(
            "SELECT id, topic, key, created_at, parked_at, parked_reason FROM outbox"
            " WHERE parked_at IS NOT NULL ORDER BY id LIMIT $1",
            limit,
        )

    async def unpark(self, row_id: int) -> bool:
        """Relay a row again from the next pass. True while the row is in the outbox (parked
        until now, or already waiting); False when it is not — relayed rows are deleted, so an
        id no longer there was sent (or never existed)."""
        row = await self._pool.fetchrow(
            "UPDATE outbox SET parked_at = NULL, parked_reason = '' WHERE id = $1 RETURNING id", row_id
        )
        return row is not None
