"""PostgreSQL store of the tracking schema: timeline entries, the order index, KPI sums, and
the LISTEN side of timeline notifications."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from runtime.postgres import claim_event
from services.tracking.domain.events import ChangeKey, Cost, TrackedEvent
from services.tracking.domain.model import (
    KpiKey,
    OrderFacts,
    OrderKey,
    SearchPage,
    SearchQuery,
    TimelineEntry,
)

log = logging.getLogger(__name__)

CONSUMER = "tracking"
NOTIFY_CHANNEL = "tutti_tracking_timeline"
MAX_TIMELINE_ENTRIES = 10_000
_BIGINT_MAX = 2**63 - 1


def _key_json(key: OrderKey | None) -> str | None:
    if key is None:
        return None
    return json.dumps([key[0].isoformat(), key[1], key[2], key[3]])


def _key_from_json(raw: str | None) -> OrderKey | None:
    if raw is None:
        return None
    parts = json.loads(raw)
    if len(parts) == 3:  # written before events had a position
        parts = [parts[0], parts[1], 0, parts[2]]
    moment, sequence, position, event_id = parts
    return datetime.fromisoformat(moment), int(sequence), int(position), str(event_id)


def _facts(row: asyncpg.Record) -> OrderFacts:
    last_key = None
    if row["last_occurred_at"] is not None:
        last_key = (row["last_occurred_at"], row["last_sequence"], row["last_position"], row["last_event_id"])
    cost = Cost(row["cost_currency"], row["cost_minor"]) if row["cost_currency"] is not None else None
    return OrderFacts(
        order_id=row["order_id"],
        first_seen_at=row["first_seen_at"],
        customer_id=row["customer_id"],
        channel=row["channel"],
        location_ids=tuple(row["location_ids"]),
        status=row["status"],
        last_key=last_key,
        entry_count=row["entry_count"],
        placed_at=row["placed_at"],
        prepared_at=row["prepared_at"],
        fulfilled_at=row["fulfilled_at"],
        cancelled_at=row["cancelled_at"],
        refused_at=row["refused_at"],
        returned_at=row["returned_at"],
        promised_at=row["promised_at"],
        promised_key=_key_from_json(row["promised_key"]),
        cost=cost,
        cost_key=_key_from_json(row["cost_key"]),
    )


_SAVE_ORDER = """
INSERT INTO order_index AS o (order_id, first_seen_at, updated_at, customer_id, channel,
    location_ids, status, last_occurred_at, last_sequence, last_event_id, entry_count, placed_at,
    prepared_at, cancelled_at, refused_at, returned_at, promised_at, promised_key, cost_currency,
    cost_minor, cost_key, fulfilled_at, last_position)
VALUES ($1, $2, now(), $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17::jsonb,
        $18, $19, $20::jsonb, $21, $22)
ON CONFLICT (order_id) DO UPDATE SET
    first_seen_at = EXCLUDED.first_seen_at, updated_at = now(), customer_id = EXCLUDED.customer_id,
    channel = EXCLUDED.channel, location_ids = EXCLUDED.location_ids, status = EXCLUDED.status,
    last_occurred_at = EXCLUDED.last_occurred_at, last_sequence = EXCLUDED.last_sequence,
    last_event_id = EXCLUDED.last_event_id, entry_count = EXCLUDED.entry_count,
    placed_at = EXCLUDED.placed_at, prepared_at = EXCLUDED.prepared_at,
    cancelled_at = EXCLUDED.cancelled_at, refused_at = EXCLUDED.refused_at,
    returned_at = EXCLUDED.returned_at, promised_at = EXCLUDED.promised_at,
    promised_key = EXCLUDED.promised_key, cost_currency = EXCLUDED.cost_currency,
    cost_minor = EXCLUDED.cost_minor, cost_key = EXCLUDED.cost_key,
    fulfilled_at = EXCLUDED.fulfilled_at, last_position = EXCLUDED.last_position
"""


def _order_args(facts: OrderFacts) -> tuple[object, ...]:
    last = facts.last_key
    return (
        facts.order_id,
        facts.first_seen_at,
        facts.customer_id,
        facts.channel,
        list(facts.location_ids),
        facts.status,
        last[0] if last else None,
        min(last[1], _BIGINT_MAX) if last else None,
        last[3] if last else None,
        facts.entry_count,
        facts.placed_at,
        facts.prepared_at,
        facts.cancelled_at,
        facts.refused_at,
        facts.returned_at,
        facts.promised_at,
        _key_json(facts.promised_key),
        facts.cost.currency if facts.cost else None,
        facts.cost.amount_minor if facts.cost else None,
        _key_json(facts.cost_key),
        facts.fulfilled_at,
        last[2] if last else 0,
    )


class _Recording:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def claim(self, event_id: str) -> bool:
        return await claim_event(self._conn, CONSUMER, event_id)

    async def lock_orders(self, order_ids: Sequence[str]) -> dict[str, OrderFacts | None]:
        ordered = sorted(set(order_ids))
        # A placeholder row (entry_count 0) for unseen orders, so there is a row to lock; reads
        # ignore placeholders, and the first save fills it.
        await self._conn.execute(
            "INSERT INTO order_index (order_id, first_seen_at) "
            "SELECT o, now() FROM unnest($1::text[]) AS o ORDER BY o ON CONFLICT DO NOTHING",
            ordered,
        )
        rows = await self._conn.fetch(
            "SELECT * FROM order_index WHERE order_id = ANY($1::text[]) ORDER BY order_id FOR UPDATE", ordered
        )
        found: dict[str, OrderFacts | None] = dict.fromkeys(ordered)
        for row in rows:
            if row["entry_count"] > 0:
                found[row["order_id"]] = _facts(row)
        return found

    async def recorded_steps(self, changes: Sequence[ChangeKey]) -> dict[ChangeKey, set[str]]:
        rows = await self._conn.fetch(
            "SELECT order_id, source, sequence, step FROM timeline_entries"
            " JOIN unnest($1::text[], $2::text[], $3::bigint[]) AS c(o, so, sq)"
            " ON order_id = c.o AND source = c.so AND sequence = c.sq",
            [c[0] for c in changes],
            [c[1] for c in changes],
            [min(c[2], _BIGINT_MAX) for c in changes],
        )
        found: dict[ChangeKey, set[str]] = {}
        for row in rows:
            found.setdefault((row["order_id"], row["source"], int(row["sequence"])), set()).add(row["step"])
        return found

    async def insert_entries(self, events: Sequence[TrackedEvent]) -> dict[str, datetime]:
        rows = await self._conn.fetch(
            """
            INSERT INTO timeline_entries (event_id, order_id, type, step, occurred_at, sequence, source,
                                          topic, details, explanation, location_ids, return_id, decoded,
                                          position)
            SELECT e, o, t, st, oc, sq, so, tp, d::jsonb, ex,
                   ARRAY(SELECT jsonb_array_elements_text(l::jsonb)), r, dc, po
            FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
                        $6::bigint[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[],
                        $12::text[], $13::bool[], $14::integer[])
                 AS u(e, o, t, st, oc, sq, so, tp, d, ex, l, r, dc, po)
            ON CONFLICT (event_id) DO NOTHING
            RETURNING event_id, received_at
            """,
            [e.event_id for e in events],
            [e.order_id for e in events],
            [e.type for e in events],
            [e.step for e in events],
            [e.occurred_at for e in events],
            [min(e.sequence, _BIGINT_MAX) for e in events],
            [e.source for e in events],
            [e.topic for e in events],
            [json.dumps(e.details) for e in events],
            [e.explanation for e in events],
            [json.dumps(list(e.location_ids)) for e in events],
            [e.return_id for e in events],
            [e.decoded for e in events],
            [e.position for e in events],
        )
        return {row["event_id"]: row["received_at"] for row in rows}

    async def save_orders(self, facts: Sequence[OrderFacts]) -> None:
        await self._conn.executemany(_SAVE_ORDER, [_order_args(f) for f in facts])

    async def add_kpis(self, delta: Mapping[KpiKey, int]) -> None:
        # One statement; rows in key order so concurrent transactions lock them in the same order.
        items = sorted(delta.items())
        await self._conn.execute(
            """
            INSERT INTO kpi_hourly AS k (channel, bucket, metric, value)
            SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::bigint[])
            ON CONFLICT (bucket, channel, metric) DO UPDATE SET value = k.value + EXCLUDED.value
            """,
            [k[0] for k, _ in items],
            [k[1] for k, _ in items],
            [k[2] for k, _ in items],
            [v for _, v in items],
        )


def _entry(row: asyncpg.Record) -> TimelineEntry:
    return TimelineEntry(
        event_id=row["event_id"],
        order_id=row["order_id"],
        step=row["step"],
        type=row["type"],
        occurred_at=row["occurred_at"],
        source=row["source"],
        sequence=row["sequence"],
        details=json.loads(row["details"]),
        received_at=row["received_at"],
        explanation=row["explanation"],
        location_ids=tuple(row["location_ids"]),
        return_id=row["return_id"],
        position=row["position"],
    )


class PostgresTrackingStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @contextlib.asynccontextmanager
    async def recording(self) -> AsyncIterator[_Recording]:
        async with self._pool.acquire() as conn, conn.transaction():
            yield _Recording(conn)

    async def timeline(self, order_id: str) -> list[TimelineEntry]:
        rows = await self._pool.fetch(
            "SELECT * FROM timeline_entries WHERE order_id = $1 "
            "ORDER BY occurred_at, sequence, position, event_id LIMIT $2",
            order_id,
            MAX_TIMELINE_ENTRIES,
        )
        return [_entry(r) for r in rows]

    async def order(self, order_id: str) -> OrderFacts | None:
        row = await self._pool.fetchrow(
            "SELECT * FROM order_index WHERE order_id = $1 AND entry_count > 0", order_id
        )
        return _facts(row) if row is not None else None

    async def search(self, query: SearchQuery) -> SearchPage:
        conditions: list[str] = ["entry_count > 0"]
        args: list[Any] = []

        def arg(value: object) -> str:
            args.append(value)
            return f"${len(args)}"

        if query.customer_id:
            conditions.append(f"customer_id = {arg(query.customer_id)}")
        if query.location_id:
            conditions.append(f"location_ids @> ARRAY[{arg(query.location_id)}]::text[]")
        if query.channel:
            conditions.append(f"channel = {arg(query.channel)}")
        if query.status:
            conditions.append(f"status = {arg(query.status)}")
        if query.after:
            conditions.append(f"(first_seen_at, order_id) < ({arg(query.after[0])}, {arg(query.after[1])})")
        where = f"WHERE {' AND '.join(conditions)}"
        # Only $n placeholders are interpolated; every value travels as a parameter.
        sql = (
            f"SELECT * FROM order_index {where} "  # noqa: S608
            f"ORDER BY first_seen_at DESC, order_id DESC LIMIT {arg(query.page_size + 1)}"
        )
        rows = await self._pool.fetch(sql, *args)
        orders = [_facts(r) for r in rows[: query.page_size]]
        next_after = None
        if len(rows) > query.page_size:
            next_after = (orders[-1].first_seen_at, orders[-1].order_id)
        return SearchPage(orders=orders, next_after=next_after)

    async def kpi_sums(
        self, start: datetime, end: datetime, channel: str | None
    ) -> dict[tuple[str, str], int]:
        rows = await self._pool.fetch(
            """
            SELECT channel, metric, sum(value)::bigint AS value FROM kpi_hourly
            WHERE bucket >= $1 AND bucket < $2 AND ($3::text IS NULL OR channel = $3)
            GROUP BY channel, metric
            """,
            start,
            end,
            channel,
        )
        return {(r["channel"], r["metric"]): r["value"] for r in rows}

    async def ping(self) -> None:
        await self._pool.fetchval("SELECT 1")


class PostgresTimelineNotifications:
    """LISTENs on one dedicated connection per process and wakes the watchers of the order named
    by each notification. Every replica's watchers wake whichever replica recorded the entry."""

    def __init__(self, dsn: str, *, keepalive_seconds: float = 10.0) -> None:
        self._dsn = dsn
        self._keepalive = keepalive_seconds
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self.listening = asyncio.Event()

    @contextlib.asynccontextmanager
    async def subscribe(self, order_id: str) -> AsyncIterator[asyncio.Event]:
        wake = asyncio.Event()
        self._watchers.setdefault(order_id, set()).add(wake)
        try:
            yield wake
        finally:
            watchers = self._watchers.get(order_id)
            if watchers is not None:
                watchers.discard(wake)
                if not watchers:
                    del self._watchers[order_id]

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        for wake in self._watchers.get(payload, ()):
            wake.set()

    def _wake_all(self) -> None:
        for watchers in self._watchers.values():
            for wake in watchers:
                wake.set()

    async def run(self) -> None:
        """Listen until cancelled; raises when the connection is lost (the runtime restarts it)."""
        conn = await asyncpg.connect(self._dsn)
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _c: lost.set())
        try:
            await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
            self.listening.set()
            # Anything recorded while we were not listening: let every watcher re-read.
            self._wake_all()
            while not lost.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), timeout=self._keepalive)
                if not lost.is_set():
                    await conn.fetchval("SELECT 1", timeout=self._keepalive)
            raise ConnectionError("tracking notification connection lost")
        finally:
            self.listening.clear()
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)
