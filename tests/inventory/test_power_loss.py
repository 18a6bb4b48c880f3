"""A power cut with AOF ``appendfsync everysec``: Redis loses its last writes, the ledger has them.

A dedicated Redis (own port and directory, AOF on, everysec) serves a real inventory while POS
terminals stream sales and channels reserve stock. The size of the AOF is recorded in the middle of
the traffic, more operations are acknowledged, then Redis is killed with SIGKILL and its AOF cut
back to that size — what a power failure does to the writes of the last second that were not yet
fsynced. Redis restarts on the shortened file. Every acknowledged sale and reservation must then be
counted exactly once (counters equal to a model of the acknowledged operations), reservation
records included, and later movements continue after the ledger's sequence numbers.

Twice: once with inventory restarted on the cut Redis (catch-up before serving), once with
inventory left running (it sees Redis' new run_id and catches up, refusing mutations meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from redis.asyncio import Redis
from tutti.common.v1 import common_pb2
from tutti.inventory.v1 import events_pb2, inventory_pb2_grpc
from tutti.inventory.v1 import inventory_pb2 as pb

from runtime.kafka import INVENTORY_MOVEMENTS
from runtime.settings import CommonSettings
from services.inventory.bootstrap import build
from services.inventory.rebuild import scan_ledger
from tests.inventory.conftest import seed
from tests.support import RunningService, internal_channel, random_id, running_service, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.restarts]

INITIAL = 100_000
TERMINALS = 4
RESERVERS = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DedicatedRedis:
    """redis-server on its own port and directory: AOF on, fsync every second, no RDB, no rewrite."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
                "--auto-aof-rewrite-percentage", "0", "--aof-load-truncated", "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return
            time.sleep(0.05)
        raise RuntimeError("dedicated redis did not start")

    def aof(self) -> Path:
        (incr,) = (self.dir / "appendonlydir").glob("*.incr.aof")
        return incr

    def power_cut(self, keep_bytes: int) -> int:
        """SIGKILL, then the AOF cut back to ``keep_bytes`` (the unsynced tail a power loss takes),
        repaired to the last whole command as Redis would on load. Returns the bytes cut."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        aof = self.aof()
        cut = aof.stat().st_size - keep_bytes
        with aof.open("r+b") as f:
            f.truncate(keep_bytes)
        subprocess.run(
            ["redis-check-aof", "--fix", str(aof)], input=b"y\n", capture_output=True, check=False
        )
        return cut

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def dedicated_redis() -> Iterator[DedicatedRedis]:
    if not shutil.which("redis-server"):
        pytest.skip("redis-server not installed")
    directory = Path(tempfile.mkdtemp(prefix="tutti-powercut-"))
    server = DedicatedRedis(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.asynccontextmanager
async def inventory_on(settings: CommonSettings, url: str) -> AsyncIterator[
    tuple[RunningService, inventory_pb2_grpc.InventoryServiceStub]
]:
    s = dataclasses.replace(settings, redis_url=url)
    async with running_service(s, build) as svc, internal_channel(svc.address) as ch:
        yield svc, inventory_pb2_grpc.InventoryServiceStub(ch)


@dataclasses.dataclass
class Model:
    """What the acknowledged operations say the counters are."""

    sold: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)
    reserved: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)
    reservations: dict[str, tuple[str, str, int, bool]] = dataclasses.field(default_factory=dict)
    sales: int = 0

    @property
    def acked(self) -> int:
        return self.sales + len(self.reservations)


async def _retry(call):  # type: ignore[no-untyped-def]
    """Retries an idempotent call until it is acknowledged (UNAVAILABLE while Redis catches up)."""
    for _ in range(200):
        try:
            return await call()
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            await asyncio.sleep(0.1)
    raise AssertionError("never acknowledged")


async def traffic(
    stub: inventory_pb2_grpc.InventoryServiceStub,
    skus: list[str],
    locs: list[str],
    model: Model,
    stop: asyncio.Event,
) -> None:
    """POS terminals streaming sales and channels reserving, until ``stop``; only acknowledged
    operations enter the model, and nothing is in flight when this returns."""

    async def terminal(t: int) -> None:
        terminal_id, loc = random_id(f"T{t}"), locs[t % len(locs)]
        n = 0
        while not stop.is_set():
            sku, qty = skus[n % len(skus)], 1 + n % 3
            request = pb.StreamPosSalesRequest(
                terminal_id=terminal_id,
                sale_id=f"S-{n}",
                location_id=loc,
                kind=pb.POS_SALE_KIND_SALE,
                lines=[pb.PosLine(sku=sku, quantity=qty)],
            )

            async def once(request: pb.StreamPosSalesRequest = request) -> pb.StreamPosSalesResponse:
                call = stub.StreamPosSales()
                await call.write(request)
                await call.done_writing()
                acks = [a async for a in call]
                return acks[0]

            ack = await _retry(once)
            assert ack.status == pb.POS_ACK_STATUS_ACCEPTED, ack.error
            if not ack.duplicate:
                model.sales += 1
                model.sold[(sku, loc)] = model.sold.get((sku, loc), 0) + qty
            n += 1

    async def reserver(w: int) -> None:
        n = 0
        while not stop.is_set():
            sku, loc, qty = skus[(n + w) % len(skus)], locs[(n + w) % len(locs)], 1 + n % 2
            held = n % 2 == 0
            rid = random_id(f"R{w}")
            await _retry(
                lambda rid=rid, sku=sku, loc=loc, qty=qty, held=held: stub.ReserveStock(
                    pb.ReserveStockRequest(
                        reservation_id=rid,
                        channel=common_pb2.CHANNEL_WEB,
                        hold_ttl_seconds=3600 if held else 0,
                        lines=[pb.ReservationLine(sku=sku, location_id=loc, quantity=qty)],
                    )
                )
            )
            model.reservations[rid] = (sku, loc, qty, held)
            model.reserved[(sku, loc)] = model.reserved.get((sku, loc), 0) + qty
            n += 1

    await asyncio.gather(*(terminal(t) for t in range(TERMINALS)), *(reserver(w) for w in range(RESERVERS)))


async def check(
    stub: inventory_pb2_grpc.InventoryServiceStub, skus: list[str], locs: list[str], model: Model
) -> dict[tuple[str, str], int]:
    """Counters equal the model; every acknowledged reservation is there. Returns the sequences."""
    seqs = {}
    for sku in skus:
        reply = await stub.GetStockLevels(pb.GetStockLevelsRequest(sku=sku, location_ids=locs))
        for level in reply.levels:
            key = (sku, level.location_id)
            assert level.counters.on_hand == INITIAL - model.sold.get(key, 0), key
            assert level.counters.reserved == model.reserved.get(key, 0), key
            seqs[key] = level.sequence
    for rid, (sku, loc, qty, held) in model.reservations.items():
        r = (await stub.GetReservation(pb.GetReservationRequest(reservation_id=rid))).reservation
        assert r.status == (pb.RESERVATION_STATUS_HELD if held else pb.RESERVATION_STATUS_CONFIRMED), rid
        assert [(x.sku, x.location_id, x.quantity) for x in r.lines] == [(sku, loc, qty)], rid
    return seqs


async def run_until(model: Model, count: int, task: asyncio.Task[None]) -> None:
    await wait_for(lambda: model.acked >= count or task.done(), timeout=20, interval=0.01,
                   message=f"{count} acknowledged operations")
    if task.done():
        task.result()


async def load_and_cut(
    stub: inventory_pb2_grpc.InventoryServiceStub,
    redis: DedicatedRedis,
    skus: list[str],
    locs: list[str],
    model: Model,
    *,
    before: int,
    after: int,
) -> tuple[int, int, dict[tuple[str, str], int]]:
    """Traffic; the AOF size noted after ``before`` more acks; ``after`` more acks; power cut.
    Returns (acks after the noted size, bytes cut, sequences just before the cut)."""
    stop = asyncio.Event()
    task = asyncio.create_task(traffic(stub, skus, locs, model, stop))
    await run_until(model, model.acked + before, task)
    keep, acked_at_mark = redis.aof().stat().st_size, model.acked
    await run_until(model, model.acked + after, task)
    stop.set()
    await task
    seqs = await check(stub, skus, locs, model)  # all there before the cut
    cut = redis.power_cut(keep)
    return model.acked - acked_at_mark, cut, seqs


async def fresh_sale(stub: inventory_pb2_grpc.InventoryServiceStub, sku: str, loc: str, model: Model) -> None:
    """One sale, resent (same ids) while inventory answers UNAVAILABLE."""
    request = pb.StreamPosSalesRequest(
        terminal_id=random_id("T"), sale_id="after", location_id=loc,
        kind=pb.POS_SALE_KIND_SALE, lines=[pb.PosLine(sku=sku, quantity=1)],
    )

    async def once() -> pb.StreamPosSalesResponse:
        call = stub.StreamPosSales()
        await call.write(request)
        await call.done_writing()
        (ack,) = [a async for a in call]
        return ack

    ack = await _retry(once)
    assert ack.status == pb.POS_ACK_STATUS_ACCEPTED, ack.error
    model.sold[(sku, loc)] = model.sold.get((sku, loc), 0) + 1


def caught_up(caplog: pytest.LogCaptureFixture) -> list[dict[str, int]]:
    """What each catch-up replayed (the guard logs it)."""
    return [
        {k: getattr(r, k) for k in ("movements", "reservations", "mismatched_counters")}
        for r in caplog.records
        if r.getMessage() == "caught up with the ledger" and hasattr(r, "movements")
    ]


async def test_acknowledged_sales_and_reservations_survive_a_power_cut(
    settings: CommonSettings, dedicated_redis: DedicatedRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="services.inventory.adapters.ledger_guard")
    started, started_ms = time.monotonic(), int(time.time() * 1000)
    model = Model()
    direct = Redis.from_url(dedicated_redis.url)
    try:
        # 1. Inventory restarted on the cut Redis: it catches up before it serves.
        async with inventory_on(settings, dedicated_redis.url) as (_, stub):
            skus, locs = await seed(stub, skus=4, locations=2, on_hand=INITIAL)
            await asyncio.sleep(1.5)  # the seed is fsynced; the cut only takes later writes
            lost_window, cut, seqs = await load_and_cut(
                stub, dedicated_redis, skus, locs, model, before=150, after=250
            )
        assert cut > 0 and lost_window >= 250
        dedicated_redis.start()
        # What the cut Redis holds on its own: less than was acknowledged (the proof of a loss).
        stale_oh = 0
        for sku in skus:
            for loc in locs:
                stale_oh += int(await direct.hget(f"inv:{{{sku}}}:c:{loc}", "oh") or 0)
        assert stale_oh > sum(INITIAL - model.sold.get((s, x), 0) for s in skus for x in locs)
        caplog.clear()
        async with inventory_on(settings, dedicated_redis.url) as (_, stub):
            after = await check(stub, skus, locs, model)
            (first,) = caught_up(caplog)
            assert first["movements"] > 0 and first["reservations"] > 0
            assert first["mismatched_counters"] == 0
            assert after == seqs  # the sequences continue from the ledger's, not from the stale ones
            await fresh_sale(stub, skus[0], locs[0], model)
            after = await check(stub, skus, locs, model)
            assert after[(skus[0], locs[0])] == seqs[(skus[0], locs[0])] + 1

            # 2. Inventory left running: it notices Redis' new run_id and catches up meanwhile.
            await asyncio.sleep(1.5)
            lost_window, cut, seqs = await load_and_cut(
                stub, dedicated_redis, skus, locs, model, before=100, after=200
            )
            assert cut > 0
            dedicated_redis.start()
            await fresh_sale(stub, skus[1], locs[1], model)  # UNAVAILABLE until caught up, then once
            after = await check(stub, skus, locs, model)
            seqs[(skus[1], locs[1])] += 1
            assert after == seqs
            (_, second) = caught_up(caplog)
            assert second["movements"] > 0 and second["mismatched_counters"] == 0
        # On the ledger, no sequence number of these SKUs was ever given to two movements.
        events: dict[tuple[str, str, int], set[str]] = {}
        async for envelope, _ in scan_ledger(settings.kafka_bootstrap, INVENTORY_MOVEMENTS.name, started_ms):
            if envelope.type == "tutti.inventory.v1.StockMovementRecorded":
                m = events_pb2.StockMovementRecorded()
                envelope.payload.Unpack(m)
                if m.sku in skus:
                    events.setdefault((m.sku, m.location_id, m.sequence), set()).add(envelope.event_id)
        assert events and all(len(ids) == 1 for ids in events.values())
        print(
            f"power cut: {model.sales} sales and {len(model.reservations)} reservations acknowledged, "
            f"all counted once; replayed from the ledger: {first}, {second}; "
            f"{time.monotonic() - started:.1f}s",
            file=sys.stderr,
        )
    finally:
        await direct.aclose()
    assert time.monotonic() - started < 60
