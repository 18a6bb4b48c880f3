"""Keeps Redis' stock in step with the Kafka ledger across Redis restarts.

AOF ``everysec`` loses up to Redis' last second of writes on a power cut; a failover loses what
the replica had not received. Movements acknowledged in that second are on the ledger (acks wait
for it) but not in Redis. Redis' run_id changes on every restart, and mutating scripts refuse to
run until ``inv:ledger:armed`` holds the current run_id (lua/common.lua). The guard checks that
on start and every ``interval_s``; when they differ it runs the catch-up (``rebuild.catch_up``:
replay from the ledger what Redis lacks, then arm) and reports not ready meanwhile, so health says
NOT_SERVING until the stock is whole again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from services.inventory.adapters.redis_store import RedisStore

log = logging.getLogger(__name__)


class LedgerGuard:
    def __init__(
        self,
        store: RedisStore,
        catch_up: Callable[[], Awaitable[dict[str, int]]],
        *,
        interval_s: float = 0.5,
    ) -> None:
        self._store = store
        self._catch_up = catch_up
        self._interval_s = interval_s
        # Set while Redis' run_id is armed (its state was checked against the ledger).
        self.in_step = asyncio.Event()

    async def check_once(self) -> dict[str, int] | None:
        """Catches up when Redis' run_id is not the armed one; returns what was replayed, or None."""
        current, armed = await self._store.armed()
        if current == armed:
            self.in_step.set()
            return None
        if current.partition(":")[0] == armed.partition(":")[0]:
            # Same process, LASTSAVE moved (an RDB save): nothing lost, keep the cheap check cheap.
            await self._store.arm(current)
            self.in_step.set()
            return None
        self.in_step.clear()
        log.warning("Redis state not checked against the ledger (new run_id %s): catching up", current)
        counts = await self._catch_up()
        log.info("caught up with the ledger", extra=counts)
        self.in_step.set()
        return counts

    async def run(self) -> None:
        while True:
            try:
                await self.check_once()
            except (RedisError, KafkaError, OSError, TimeoutError) as exc:
                self.in_step.clear()
                log.warning("ledger check failed (%r); retrying", exc)
            except BaseException:
                # Not ready until a check succeeds; the runtime's supervisor logs the failure
                # and restarts this loop with backoff.
                self.in_step.clear()
                raise
            await asyncio.sleep(self._interval_s)
