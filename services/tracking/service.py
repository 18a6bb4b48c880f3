"""Tracking's use cases: record an event (timeline entry, order facts and KPIs in one
transaction, once per event id) and read timelines, searches and KPIs back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Protocol

from runtime.errors import NotFound
from services.tracking.domain import queries
from services.tracking.domain.events import (
    ChangeKey,
    RawEvent,
    Skipped,
    TrackedEvent,
    extract,
    fold_repeated_steps,
    status_changes_to_fold,
)
from services.tracking.domain.model import (
    ChannelReport,
    KpiKey,
    OrderFacts,
    SearchPage,
    TimelineEntry,
    apply,
    build_report,
    kpi_delta,
)

log = logging.getLogger(__name__)


class RecordingTransaction(Protocol):
    """One transaction of the store; everything done through it commits together."""

    async def claim(self, event_id: str) -> bool:
        """False when this event was already recorded."""

    async def lock_orders(self, order_ids: Sequence[str]) -> dict[str, OrderFacts | None]:
        """The orders' facts (None when unseen), locked until the end of the transaction, in
        order_id order so concurrent transactions cannot deadlock — unseen orders included, so
        two replicas seeing an order's first events at once are serialised too."""

    async def recorded_steps(self, changes: Sequence[ChangeKey]) -> dict[ChangeKey, set[str]]:
        """The steps already recorded for each change (order, source, sequence)."""

    async def insert_entries(self, events: Sequence[TrackedEvent]) -> dict[str, datetime]:
        """Insert the timeline entries (watchers are notified at commit); event_id → received_at
        of those inserted (an entry whose event_id exists already is left alone)."""

    async def save_orders(self, facts: Sequence[OrderFacts]) -> None: ...

    async def add_kpis(self, delta: Mapping[KpiKey, int]) -> None:
        """Add to the KPI sums, locking rows in key order (callers pass one merged delta)."""


class TrackingStore(Protocol):
    def recording(self) -> AbstractAsyncContextManager[RecordingTransaction]: ...

    async def timeline(self, order_id: str) -> list[TimelineEntry]: ...

    async def order(self, order_id: str) -> OrderFacts | None: ...

    async def search(self, query: queries.SearchQuery) -> SearchPage: ...

    async def kpi_sums(
        self, start: datetime, end: datetime, channel: str | None
    ) -> dict[tuple[str, str], int]: ...


class TimelineNotifications(Protocol):
    def subscribe(self, order_id: str) -> AbstractAsyncContextManager[asyncio.Event]:
        """An event set whenever an entry of ``order_id`` may have been recorded."""


class TrackingService:
    def __init__(
        self,
        store: TrackingStore,
        notifications: TimelineNotifications,
        *,
        watch_poll_seconds: float = 5.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._notifications = notifications
        self._watch_poll = watch_poll_seconds
        self._clock = clock

    # --- writes -----------------------------------------------------------------------------

    async def record(self, raw: RawEvent) -> bool:
        """Record one event; True when it added an entry, False for a duplicate or an event
        about no order. Raises (so the consumer does not commit) when the store fails."""
        return await self.record_batch([raw]) == 1

    async def record_batch(self, raws: Sequence[RawEvent]) -> int:
        """Record events in one transaction: claims, entries, order facts and KPI sums commit
        together or not at all. Returns how many entries were added (duplicates and events
        about no order add none)."""
        tracked: list[TrackedEvent] = []
        for raw in raws:
            result = extract(raw)
            if isinstance(result, Skipped):
                log.debug("event not tracked: %s", result.reason, extra=dict(result.extra))
            else:
                tracked.append(result)
        if not tracked:
            return 0
        async with self._store.recording() as tx:
            fresh = [event for event in tracked if await tx.claim(event.event_id)]
            if not fresh:
                return 0
            before = await tx.lock_orders(sorted({e.order_id for e in fresh}))
            # Once the orders are locked: each lifecycle step of a change appears once.
            changes = status_changes_to_fold(fresh)
            recorded = await tx.recorded_steps(sorted(changes)) if changes else {}
            fresh = fold_repeated_steps(fresh, recorded)
            received = await tx.insert_entries(fresh)
            after = dict(before)
            for event in fresh:
                if event.event_id in received:
                    after[event.order_id] = apply(after[event.order_id], event, received[event.event_id])
            changed = [
                facts for order_id, facts in after.items() if facts is not None and facts != before[order_id]
            ]
            if not changed:
                return 0
            await tx.save_orders(changed)
            delta: dict[KpiKey, int] = {}
            for facts in changed:
                for key, value in kpi_delta(before[facts.order_id], facts).items():
                    delta[key] = delta.get(key, 0) + value
            delta = {key: value for key, value in delta.items() if value}
            if delta:
                await tx.add_kpis(delta)
        return len(received)

    # --- reads ------------------------------------------------------------------------------

    async def get_timeline(self, order_id: str) -> tuple[OrderFacts, list[TimelineEntry]]:
        queries.require_order_id(order_id)
        facts = await self._store.order(order_id)
        if facts is None:
            raise NotFound(f"no event of order {order_id!r} has been recorded")
        return facts, await self._store.timeline(order_id)

    def watch_timeline(self, order_id: str) -> AsyncIterator[tuple[TimelineEntry, bool]]:
        """(entry, existing) pairs: the recorded entries first, then new ones as recorded."""
        queries.require_order_id(order_id)
        return self._watch(order_id)

    async def _watch(self, order_id: str) -> AsyncIterator[tuple[TimelineEntry, bool]]:
        seen: set[str] = set()
        # Subscribe before the first read, so nothing recorded in between is missed.
        async with self._notifications.subscribe(order_id) as wake:
            for entry in await self._store.timeline(order_id):
                seen.add(entry.event_id)
                yield entry, True
            while True:
                # A notification is the fast path; the poll covers a listener reconnecting.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=self._watch_poll)
                wake.clear()
                for entry in await self._store.timeline(order_id):
                    if entry.event_id not in seen:
                        seen.add(entry.event_id)
                        yield entry, False

    async def search_orders(self, query: queries.SearchQuery) -> tuple[list[OrderFacts], str]:
        page = await self._store.search(query)
        token = queries.encode_page_token(page.next_after) if page.next_after else ""
        return page.orders, token

    async def get_kpis(
        self, start: datetime | None, end: datetime | None, channel: str | None
    ) -> tuple[datetime, datetime, list[ChannelReport], ChannelReport]:
        start, end = queries.kpi_window(start, end, self._clock())
        sums = await self._store.kpi_sums(start, end, channel)
        channels, total = build_report(sums)
        return start, end, channels, total
