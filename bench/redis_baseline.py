"""The raw Redis baseline: EVALSHA from Python (redis.asyncio on uvloop, as the inventory
service calls it), ``concurrency`` coroutines for ``duration`` seconds, in its own process.

Two scripts: a trivial one (``return 1``: the cost of a round trip through redis-py) and a
reservation-shaped one (idempotency check, ATP check, increment, reservation key with a TTL,
outbox stream entry — what an atomic reservation has to do). Prints one JSON object per script.

Keys live under a random ``bench:`` prefix in the database given (default 9, never db 0's
data) and are deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid

import redis.asyncio as redis

from bench.procs import run_uvloop

TRIVIAL = "return 1"

# KEYS: stock hash of one SKU, reservation key, outbox stream.
# ARGV: location, quantity, reservation id, ttl seconds.
RESERVATION = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local on_hand = tonumber(redis.call('HGET', KEYS[1], ARGV[1] .. ':on_hand') or '0')
local reserved = tonumber(redis.call('HGET', KEYS[1], ARGV[1] .. ':reserved') or '0')
local qty = tonumber(ARGV[2])
if on_hand - reserved < qty then return -1 end
redis.call('HINCRBY', KEYS[1], ARGV[1] .. ':reserved', qty)
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[4])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', 10000, '*', 'type', 'StockReserved', 'reservation', ARGV[3],
  'location', ARGV[1], 'quantity', ARGV[2])
return 1
"""


def percentile(sorted_values: list[float], pct: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(pct / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


async def measure(
    client: redis.Redis, script: str, prefix: str, concurrency: int, duration: float
) -> dict[str, object]:
    sha = await client.script_load(script)
    stock, stream = f"{prefix}:stock:{{SKU-1}}", f"{prefix}:outbox"
    if script is RESERVATION:
        await client.hset(stock, mapping={"DC-1:on_hand": 10**15, "DC-1:reserved": 0})
    latencies: list[float] = []
    failures = 0
    stop_at = time.perf_counter() + duration

    async def worker(index: int) -> None:
        nonlocal failures
        n = 0
        while True:
            start = time.perf_counter()
            if start >= stop_at:
                return
            try:
                if script is RESERVATION:
                    n += 1
                    await client.evalsha(
                        sha, 3, stock, f"{prefix}:res:{index}:{n}", stream, "DC-1", 1, f"r-{index}-{n}", 30
                    )
                else:
                    await client.evalsha(sha, 0)
            except redis.RedisError:
                failures += 1
                continue
            latencies.append(time.perf_counter() - start)

    began = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "calls": len(latencies),
        "failures": failures,
        "rps": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 50) * 1e3,
        "p90_ms": percentile(latencies, 90) * 1e3,
        "p99_ms": percentile(latencies, 99) * 1e3,
        "avg_ms": (sum(latencies) / len(latencies) * 1e3) if latencies else 0.0,
    }


async def cleanup(client: redis.Redis, prefix: str) -> None:
    batch: list[str] = []
    async for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            await client.unlink(*batch)
            batch.clear()
    if batch:
        await client.unlink(*batch)


async def run(url: str, scripts: list[str], concurrency: int, duration: float, warmup: float) -> None:
    client = redis.Redis.from_url(url, max_connections=concurrency)
    prefix = f"bench:{uuid.uuid4().hex[:8]}"
    try:
        for name in scripts:
            script = TRIVIAL if name == "trivial" else RESERVATION
            if warmup > 0:
                await measure(client, script, prefix, concurrency, warmup)
            result = await measure(client, script, prefix, concurrency, duration)
            print(json.dumps({"script": name, "concurrency": concurrency, **result}), flush=True)
    finally:
        await cleanup(client, prefix)
        await client.aclose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.redis_baseline", description=__doc__)
    parser.add_argument("--url", default="redis://127.0.0.1:16379/9")
    parser.add_argument("--script", action="append", choices=["trivial", "reservation"])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    args = parser.parse_args(argv)
    scripts = args.script or ["trivial", "reservation"]
    run_uvloop(run(args.url, scripts, args.concurrency, args.duration, args.warmup))


if __name__ == "__main__":
    main()
