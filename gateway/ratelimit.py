"""Per-principal token buckets, in process.

Each gateway replica keeps its own buckets: with N replicas behind a load balancer a caller
gets up to N times its configured rate. That is the documented trade-off for not putting a
shared store on the hot path of every call. Pure: no gRPC here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(slots=True)
class TokenBucket:
    rate: float  # tokens added per second
    burst: float  # capacity
    tokens: float = field(default=-1.0)
    updated: float = 0.0

    def take(self, now: float) -> float:
        """Take one token. Returns 0 when granted, else the seconds until one is available."""
        if self.tokens < 0:  # first use: full bucket
            self.tokens = self.burst
            self.updated = now
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimiter:
    """One bucket per principal id, created on first use with that principal's rate and burst."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def acquire(self, key: str, rate: float, burst: int) -> float:
        """0 when the call may proceed, else the seconds the caller should wait before retrying."""
        bucket = self._buckets.get(key)
        if bucket is None or bucket.rate != rate or bucket.burst != burst:
            bucket = self._buckets[key] = TokenBucket(rate, float(burst))
        return bucket.take(self._clock())
