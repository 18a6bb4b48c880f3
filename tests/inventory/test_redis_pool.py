"""The inventory's Redis pool waits for a free connection within the caller's deadline instead
of failing at once when every connection is in use (real Redis)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from runtime import deadlines
from runtime.errors import ResourceExhausted
from runtime.settings import CommonSettings
from services.inventory.adapters.redis_pool import DeadlineBoundPool
from tests.inventory.conftest import SERVICE_DB, redis_url

pytestmark = pytest.mark.integration


@pytest.fixture
async def small(settings: CommonSettings) -> AsyncIterator[Redis]:
    client = Redis.from_pool(
        DeadlineBoundPool.from_url(redis_url(settings, SERVICE_DB), max_connections=2, timeout=5.0)
    )
    yield client
    await client.aclose()


async def test_a_burst_larger_than_the_pool_waits_for_connections_and_every_command_succeeds(
    small: Redis,
) -> None:
    replies = await asyncio.gather(*(small.execute_command("PING") for _ in range(200)))
    assert all(replies)
    assert len(small.connection_pool._in_use_connections) == 0  # every connection given back


async def test_a_call_whose_deadline_passes_while_waiting_is_resource_exhausted_with_a_retry_hint(
    small: Redis,
) -> None:
    # Both connections busy for 1 s (BLPOP on a key nobody pushes to).
    busy = [asyncio.create_task(small.blpop([f"none-{i}"], timeout=1)) for i in range(2)]
    await asyncio.sleep(0.1)
    with deadlines.caller_deadline(0.2), pytest.raises(ResourceExhausted) as info:
        await small.execute_command("PING")
    assert info.value.retry_after_seconds and "no Redis connection" in info.value.message
    await asyncio.gather(*busy)
    assert await small.execute_command("PING")  # and the pool is whole again
