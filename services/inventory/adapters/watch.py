"""In-process fan-out of availability changes: one Redis pub/sub subscription per process
(channel ``inv:avail:<db>``, published by the same Lua script that changes the counters) feeds
every WatchAvailability stream of the process through bounded queues. The same subscription
follows ``inv:relayed`` (the outbox relay's progress) so POS acks can wait until a sale is on
the Kafka ledger."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any

from redis.asyncio import Redis

from runtime.errors import Unavailable

log = logging.getLogger(__name__)


class Subscription:
    def __init__(
        self, hub: AvailabilityHub, skus: Collection[str], locations: Collection[str], max_queue: int
    ) -> None:
        self._hub = hub
        self.skus = frozenset(skus)
        self.locations = frozenset(locations)
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(max_queue)
        self.error: str | None = None

    def wants(self, change: dict[str, Any]) -> bool:
        if "views" in change:  # a location or a channel policy changed: every watch re-reads
            return True
        return (not self.skus or change["s"] in self.skus) and (
            not self.locations or change["l"] in self.locations
        )

    def offer(self, change: dict[str, Any]) -> None:
        try:
            self.queue.put_nowait(change)
        except asyncio.QueueFull:
            self.close("the watch fell behind; reconnect to get a fresh snapshot")

    def close(self, error: str) -> None:
        if self.error is None:
            self.error = error
            # Make room for the end marker.
            while self.queue.full():
                self.queue.get_nowait()
            self.queue.put_nowait(None)

    async def changes(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            item = await self.queue.get()
            if item is None:
                raise Unavailable(self.error or "watch closed")
            yield item

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *_: object) -> None:
        self._hub.unsubscribe(self)


class AvailabilityHub:
    def __init__(
        self, redis: Redis, *, avail_channel: str, relayed_channel: str, max_queue: int = 10_000
    ) -> None:
        self._redis = redis
        self._avail_channel = avail_channel
        self._relayed_channel = relayed_channel
        self._subs: set[Subscription] = set()
        self._max_queue = max_queue
        self.ready = asyncio.Event()
        self._progress = asyncio.Condition()

    async def wait_relayed(self, still_pending: Callable[[], Awaitable[bool]], limit_s: float) -> bool:
        """Waits until ``still_pending`` (does the sale still wait for the relay?) turns false, checking
        whenever the relay reports progress (and every 250 ms in case a notice was missed).
        Returns False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit_s
        while await still_pending():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            async with self._progress:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._progress.wait(), timeout=min(remaining, 0.25))
        return True

    def subscribe(self, skus: Collection[str], locations: Collection[str]) -> Subscription:
        if not self.ready.is_set():
            raise Unavailable("availability feed is not connected yet; retry")
        sub = Subscription(self, skus, locations, self._max_queue)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    @property
    def watchers(self) -> int:
        return len(self._subs)

    async def run(self) -> None:
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(self._avail_channel, self._relayed_channel)
        self.ready.set()
        try:
            while True:
                message = await pubsub.get_message(timeout=1.0)
                if message is None:
                    continue
                if message["channel"] == self._relayed_channel.encode():
                    async with self._progress:
                        self._progress.notify_all()
                    continue
                for change in json.loads(message["data"]):
                    for sub in list(self._subs):
                        if sub.wants(change):
                            sub.offer(change)
        finally:
            # Changes may be missed while reconnecting: watchers must resubscribe for a fresh snapshot.
            self.ready.clear()
            for sub in list(self._subs):
                sub.close("availability feed reconnecting; watch again")
            self._subs.clear()
            await pubsub.aclose()
