"""The PostgreSQL store and notifications, on the real server: cross-replica watch wake-ups and
batched recording."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from runtime.postgres import apply_migrations, create_pool
from runtime.settings import CommonSettings
from services.tracking.adapters.postgres import PostgresTimelineNotifications, PostgresTrackingStore
from services.tracking.bootstrap import MIGRATIONS, SCHEMA
from services.tracking.domain.events import RawEvent
from services.tracking.service import TrackingService
from tests.support import random_id, wait_for

pytestmark = pytest.mark.integration


async def test_an_entry_recorded_by_one_replica_wakes_watchers_of_another(settings: CommonSettings) -> None:
    await apply_migrations(settings.database_url, SCHEMA, [MIGRATIONS])
    # Replica A only listens; replica B only records, through its own pool.
    listener = PostgresTimelineNotifications(settings.database_url)
    listening = asyncio.create_task(listener.run())
    pool = await create_pool(settings.database_url, SCHEMA, max_size=2)
    try:
        await wait_for(listener.listening.is_set, message="listener connected")
        recorder = TrackingService(PostgresTrackingStore(pool), listener)
        order_id, other_order = random_id("order"), random_id("order")
        async with listener.subscribe(order_id) as wake, listener.subscribe(other_order) as other_wake:
            recorded = await recorder.record(
                RawEvent(
                    event_id=str(uuid.uuid4()),
                    type="tutti.orchestrator.v1.OrderPlaced",
                    occurred_at=datetime.now(UTC),
                    source="orchestrator",
                    key=order_id,
                    sequence=1,
                    topic="tutti.orders.events.v1",
                    payload={"order_id": order_id},
                    keyed_by_order=True,
                )
            )
            assert recorded
            await asyncio.wait_for(wake.wait(), timeout=5)
            assert not other_wake.is_set()
    finally:
        listening.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listening
        await pool.close()


async def test_a_batch_with_duplicates_and_several_orders_records_each_event_once(
    settings: CommonSettings,
) -> None:
    await apply_migrations(settings.database_url, SCHEMA, [MIGRATIONS])
    pool = await create_pool(settings.database_url, SCHEMA, max_size=2)
    try:
        store = PostgresTrackingStore(pool)
        service = TrackingService(store, PostgresTimelineNotifications(settings.database_url))
        a, b = random_id("order"), random_id("order")
        t0 = datetime.now(UTC)

        def event(order_id: str, name: str, minutes: int, event_id: str | None = None) -> RawEvent:
            return RawEvent(
                event_id=event_id or str(uuid.uuid4()),
                type=f"tutti.orchestrator.v1.{name}",
                occurred_at=t0 + timedelta(minutes=minutes),
                source="orchestrator",
                key=order_id,
                sequence=0,
                topic="tutti.orders.events.v1",
                payload={"order_id": order_id, "channel": "CHANNEL_WEB"},
                keyed_by_order=True,
            )

        placed_a = event(a, "OrderPlaced", 0)
        batch = [
            event(a, "OrderShipped", 30),
            placed_a,
            placed_a,
            event(b, "OrderPlaced", 1),
            event(b, "Mystery", 2),
        ]
        assert await service.record_batch(batch) == 4
        assert await service.record_batch(batch) == 0

        facts_a, timeline_a = await service.get_timeline(a)
        assert [e.step for e in timeline_a] == ["placed", "shipped"]
        assert (facts_a.entry_count, facts_a.status, facts_a.placed_at) == (2, "shipped", t0)
        facts_b, timeline_b = await service.get_timeline(b)
        assert [e.step for e in timeline_b] == ["placed", "mystery"]
        assert facts_b.entry_count == 2
    finally:
        await pool.close()
