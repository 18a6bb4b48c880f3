"""A Hypothesis state machine over receive / reserve / confirm / release / expire / fulfil /
POS sale / safety stock / snapshot against the real Redis scripts (through the service layer),
checking after every step that the invariants hold and that the counters match a simple model:

* 0 <= reserved <= on_hand, no counter negative;
* the open quantities of live reservations sum to reserved, per SKU x location;
* ATP = max(0, on_hand - reserved - safety_stock).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, initialize, invariant, multiple, rule
from redis.asyncio import Redis

from runtime.errors import FailedPrecondition
from runtime.settings import CommonSettings
from services.inventory.adapters.redis_store import RedisStore
from services.inventory.domain import model
from services.inventory.service import InventoryService
from tests.inventory.conftest import STATEFUL_DB, redis_url
from tests.support import random_id

pytestmark = pytest.mark.integration

SKUS = 2
LOCS = 2
keys = st.tuples(st.integers(0, SKUS - 1), st.integers(0, LOCS - 1))
qty = st.integers(1, 4)


class InventoryMachine(RuleBasedStateMachine):
    reservations = Bundle("reservations")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        url = redis_url(CommonSettings.from_env("test"), STATEFUL_DB)
        self.redis = Redis.from_url(url)
        self.svc = InventoryService(RedisStore(self.redis))
        self.skus = [random_id("HSKU") for _ in range(SKUS)]
        self.locs = [random_id("HLOC") for _ in range(LOCS)]
        self.on_hand = {(s, x): 0 for s in range(SKUS) for x in range(LOCS)}
        self.safety = dict.fromkeys(self.on_hand, 0)
        self.last_as_of = dict.fromkeys(self.on_hand, 0)
        self.open: dict[str, dict[tuple[int, int], int]] = {}  # live reservations: open per line
        self.held: set[str] = set()

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.redis.aclose())
        self.loop.close()

    def reserved(self, key: tuple[int, int]) -> int:
        return sum(lines.get(key, 0) for lines in self.open.values())

    def atp(self, key: tuple[int, int]) -> int:
        return max(0, self.on_hand[key] - self.reserved(key) - self.safety[key])

    def line(self, key: tuple[int, int], q: int) -> model.Line:
        return model.Line(self.skus[key[0]], self.locs[key[1]], q)

    @initialize()
    def seed(self) -> None:
        self.run(self.svc.register_skus([model.Sku(s) for s in self.skus]))
        self.run(
            self.svc.upsert_locations(
                [model.Location(x, x, model.LocationType.STORE, 48.8, 2.3) for x in self.locs]
            )
        )
        for x in range(LOCS):
            lines = [model.Line(self.skus[s], self.locs[x], 8) for s in range(SKUS)]
            self.run(self.svc.receive(random_id("rcv"), self.locs[x], lines))
            for s in range(SKUS):
                self.on_hand[(s, x)] = 8

    @rule(key=keys, q=qty)
    def receive(self, key: tuple[int, int], q: int) -> None:
        self.run(self.svc.receive(random_id("rcv"), self.locs[key[1]], [self.line(key, q)]))
        self.on_hand[key] += q

    @rule(target=reservations, lines=st.dictionaries(keys, qty, min_size=1, max_size=3), hold=st.booleans())
    def reserve(self, lines: dict[tuple[int, int], int], hold: bool) -> Any:
        res_id = random_id("res")
        fits = all(q <= self.atp(k) for k, q in lines.items())
        try:
            self.run(
                self.svc.reserve(
                    res_id, [self.line(k, q) for k, q in lines.items()], "WEB", hold_ttl_s=600 if hold else 0
                )
            )
        except FailedPrecondition:
            assert not fits, "a reservation that fits was refused"
            return multiple()
        assert fits, "a reservation that does not fit was accepted (oversell)"
        self.open[res_id] = dict(lines)
        if hold:
            self.held.add(res_id)
        return res_id

    @rule(res_id=reservations)
    def confirm(self, res_id: str) -> None:
        if res_id not in self.open:
            return
        self.run(self.svc.confirm(res_id))
        self.held.discard(res_id)

    @rule(res_id=consumes(reservations))
    def release_all(self, res_id: str) -> None:
        if res_id not in self.open:
            return
        self.run(self.svc.release(res_id))
        del self.open[res_id]
        self.held.discard(res_id)

    @rule(res_id=reservations, data=st.data())
    def release_some(self, res_id: str, data: st.DataObject) -> None:
        lines = self.open.get(res_id)
        if not lines or not any(lines.values()):
            return
        key = data.draw(st.sampled_from(sorted(k for k, v in lines.items() if v > 0)))
        q = data.draw(st.integers(1, lines[key]))
        self.run(self.svc.release(res_id, [self.line(key, q)], request_id=random_id("rel")))
        lines[key] -= q
        if not any(lines.values()):
            del self.open[res_id]
            self.held.discard(res_id)

    @rule(res_id=reservations, data=st.data(), everything=st.booleans())
    def fulfil(self, res_id: str, data: st.DataObject, everything: bool) -> None:
        lines = self.open.get(res_id)
        if not lines or not any(lines.values()):
            return
        if everything:
            self.run(self.svc.fulfil(res_id))
            for k, v in lines.items():
                self.on_hand[k] -= v
            del self.open[res_id]
            self.held.discard(res_id)
            return
        key = data.draw(st.sampled_from(sorted(k for k, v in lines.items() if v > 0)))
        q = data.draw(st.integers(1, lines[key]))
        self.run(self.svc.fulfil(res_id, [self.line(key, q)], request_id=random_id("ship")))
        lines[key] -= q
        self.on_hand[key] -= q
        if not any(lines.values()):
            del self.open[res_id]
            self.held.discard(res_id)

    @rule()
    def expire_holds(self) -> None:
        """Time passes: every live hold's deadline moves to the past, then the sweeper runs."""
        if not self.held:
            return
        past = int(time.time() * 1000) - 1000

        async def age() -> int:
            for res_id in self.held:
                await self.redis.hset(f"inv:res:{res_id}", "exp", past)
                await self.redis.zadd("inv:holds", {res_id: past})
            return await self.svc.sweep_expired(limit=1000)

        swept = self.run(age())
        assert swept >= len(self.held)
        for res_id in self.held:
            del self.open[res_id]
        self.held.clear()

    @rule(key=keys, q=qty)
    def pos_sale(self, key: tuple[int, int], q: int) -> None:
        result = self.run(
            self.svc.pos_sale(
                random_id("T"), "S-1", self.locs[key[1]], False, [(self.skus[key[0]], q, False)]
            )
        )
        free = self.on_hand[key] - self.reserved(key)
        sold = min(q, free)
        assert result.shortfall.get(self.skus[key[0]], 0) == q - sold
        self.on_hand[key] -= sold

    @rule(key=keys, q=st.integers(0, 4))
    def set_safety(self, key: tuple[int, int], q: int) -> None:
        self.run(self.svc.set_safety_stock([self.line(key, q)]))
        self.safety[key] = q

    @rule(key=keys, q=st.integers(0, 20))
    def snapshot(self, key: tuple[int, int], q: int) -> None:
        # Counted now (Redis and this test share the clock): every earlier movement is in the
        # count, every later one comes on top. A count in the same millisecond as the last
        # applied one is not newer, so it is skipped.
        as_of = int(time.time() * 1000)
        ((_, applied, _, _),) = self.run(
            self.svc.apply_snapshot(random_id("snap"), as_of, [self.line(key, q)])
        )
        assert applied == (as_of > self.last_as_of[key])
        if applied:
            self.last_as_of[key] = as_of
            self.on_hand[key] = max(q, self.reserved(key))

    @invariant()
    def counters_hold(self) -> None:
        for s in range(SKUS):
            levels = self.run(self.svc.get_stock_levels(self.skus[s], [self.locs[x] for x in range(LOCS)]))
            for x, level in enumerate(levels):
                key = (s, x)
                c = level.counters
                assert not c.violations(), c
                assert c.on_hand == self.on_hand[key]
                assert c.reserved == self.reserved(key)
                assert c.safety_stock == self.safety[key]
                assert c.available_to_promise == max(0, c.on_hand - c.reserved - c.safety_stock)

    @invariant()
    def live_reservations_sum_to_reserved(self) -> None:
        async def read() -> dict[tuple[str, str], int]:
            total: dict[tuple[str, str], int] = {}
            for res_id in self.open:
                r = await self.svc.get_reservation(res_id)
                assert r.status in model.LIVE_STATUSES, r
                for line in r.lines:
                    total[(line.sku, line.location_id)] = (
                        total.get((line.sku, line.location_id), 0) + line.open
                    )
            return total

        stored = self.run(read())
        for s in range(SKUS):
            for x in range(LOCS):
                assert stored.get((self.skus[s], self.locs[x]), 0) == self.reserved((s, x))


InventoryMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_inventory_invariants_hold_under_random_operations() -> None:
    async def empty_db() -> None:
        r = Redis.from_url(redis_url(CommonSettings.from_env("test"), STATEFUL_DB))
        await r.flushdb()
        await r.aclose()

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(empty_db())
    finally:
        loop.close()
    InventoryMachine.TestCase().runTest()
