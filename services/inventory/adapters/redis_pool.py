"""A Redis connection pool that waits for a free connection — within the caller's deadline.

redis-py's default pool fails at once (MaxConnectionsError) when every connection is in use: a
burst of calls then fails UNAVAILABLE with Redis healthy. This pool waits instead, for at most
what is left of the caller's deadline (runtime.deadlines), or ``timeout`` seconds for work
without a caller (relays, sweeps). A call still waiting then is answered RESOURCE_EXHAUSTED
with a retry hint: the service is busy, not broken.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import BlockingConnectionPool

from runtime import deadlines
from runtime.errors import ResourceExhausted

# Suggested to a caller refused because no connection came free in time.
RETRY_AFTER_SECONDS = 0.2


class DeadlineBoundPool(BlockingConnectionPool):
    def __init__(self, *, timeout: float = 5.0, **kwargs: Any) -> None:
        # The wait is bounded here, per call; the parent's own fixed timeout is not used.
        super().__init__(timeout=None, **kwargs)
        self.wait_seconds = timeout

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        # redis-py no longer passes arguments (command name, keys: deprecated); none are needed.
        wait = deadlines.timeout(self.wait_seconds)
        try:
            async with asyncio.timeout(wait):
                return await super().get_connection()
        except TimeoutError:
            raise ResourceExhausted(
                f"inventory is busy: no Redis connection came free within {wait:.3f}s "
                f"({self.max_connections} in use); retry in {RETRY_AFTER_SECONDS}s",
                retry_after_seconds=RETRY_AFTER_SECONDS,
            ) from None
