"""What Redis' AOF fsync policy costs inventory's writes: ``everysec`` against ``always``.

For each run (policies interleaved, minutes apart at most: ``everysec, always, everysec, always``
by default) a dedicated redis-server (own port and directory, AOF on with the policy, no RDB) and
one inventory process (``python -m services.inventory``, relay on, acks after the ledger as in
production) are started; ``--workers`` reservers (ReserveStock, one line, firm) and as many POS
terminals (one StreamPosSales stream each, one sale at a time, waiting for its ack) run for
``--seconds``. Prints one JSON line per run: calls/s and p50/p99 per kind. Everything started is
stopped, by its own pid, and its directory deleted.

    python -m bench.fsync [--seconds 10] [--workers 8] [--policies everysec,always,everysec,always]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import grpc
from tutti.common.v1 import common_pb2
from tutti.inventory.v1 import inventory_pb2 as pb
from tutti.inventory.v1 import inventory_pb2_grpc

from bench.procs import ROOT, free_port, port_open, run_uvloop

LOCATIONS = 4
SKUS = 20


def start_redis(directory: Path, policy: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(  # noqa: S603 - our own redis-server, fixed arguments
        [
            shutil.which("redis-server") or "redis-server",
            "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
            "--appendonly", "yes", "--appendfsync", policy, "--save", "",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not port_open(f"127.0.0.1:{port}"):
        if time.monotonic() > deadline:
            raise RuntimeError("redis-server did not start")
        time.sleep(0.05)
    return proc, port


def start_inventory(redis_port: int, log: Path, ledger_acks: bool) -> tuple[subprocess.Popen[bytes], str]:
    address = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "TUTTI_INVENTORY_ADDR": address,
        "TUTTI_INVENTORY_METRICS_ADDR": f"127.0.0.1:{free_port()}",
        "TUTTI_INVENTORY_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "OTEL_TRACES_EXPORTER": "none",
    }
    if not ledger_acks:  # acknowledged once in Redis, as before reservations waited for the ledger
        env["TUTTI_INVENTORY_POS_ACK_AFTER_LEDGER_SECONDS"] = "0"
        env["TUTTI_INVENTORY_ACK_AFTER_LEDGER_SECONDS"] = "0"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.inventory"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return proc, address


async def wait_serving(address: str, deadline_s: float = 30) -> None:
    from tools.stack import health

    deadline = time.monotonic() + deadline_s
    while await health(address) != "serving":
        if time.monotonic() > deadline:
            raise RuntimeError(f"inventory at {address} not SERVING within {deadline_s:.0f}s")
        await asyncio.sleep(0.2)


async def seed(stub: inventory_pb2_grpc.InventoryServiceStub, tag: str) -> tuple[list[str], list[str]]:
    skus = [f"SKU-{tag}-{i}" for i in range(SKUS)]
    locs = [f"LOC-{tag}-{i}" for i in range(LOCATIONS)]
    await stub.UpsertLocations(
        pb.UpsertLocationsRequest(
            locations=[
                pb.Location(
                    location_id=x, name=x, type=common_pb2.LOCATION_TYPE_STORE,
                    point=common_pb2.GeoPoint(latitude=48.85, longitude=2.35), active=True,
                    time_zone="Europe/Paris", daily_capacity=100,
                )
                for x in locs
            ]
        )
    )
    await stub.RegisterSkus(
        pb.RegisterSkusRequest(skus=[pb.Sku(sku=s, name=s, category="bench") for s in skus])
    )
    for loc in locs:
        await stub.ReceiveStock(
            pb.ReceiveStockRequest(
                movement_id=f"seed-{tag}-{loc}", location_id=loc,
                lines=[pb.ReservationLine(sku=s, quantity=10_000_000) for s in skus],
            )
        )
    return skus, locs


async def load(address: str, seconds: float, workers: int, tag: str) -> dict[str, object]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = inventory_pb2_grpc.InventoryServiceStub(channel)
        skus, locs = await seed(stub, tag)
        lat: dict[str, list[float]] = {"reserve": [], "pos_sale": []}
        errors = {"reserve": 0, "pos_sale": 0}
        stop_at = time.monotonic() + seconds

        async def reserver(w: int) -> None:
            n = 0
            while time.monotonic() < stop_at:
                request = pb.ReserveStockRequest(
                    reservation_id=f"r-{tag}-{w}-{n}", channel=common_pb2.CHANNEL_WEB,
                    lines=[
                        pb.ReservationLine(sku=skus[n % SKUS], location_id=locs[w % LOCATIONS], quantity=1)
                    ],
                )
                t0 = time.perf_counter()
                try:
                    await stub.ReserveStock(request)
                    lat["reserve"].append(time.perf_counter() - t0)
                except grpc.aio.AioRpcError:
                    errors["reserve"] += 1
                n += 1

        async def terminal(w: int) -> None:
            call = stub.StreamPosSales()
            n = 0
            try:
                while time.monotonic() < stop_at:
                    t0 = time.perf_counter()
                    await call.write(
                        pb.StreamPosSalesRequest(
                            terminal_id=f"T-{tag}-{w}", sale_id=f"S-{n}", location_id=locs[w % LOCATIONS],
                            kind=pb.POS_SALE_KIND_SALE, lines=[pb.PosLine(sku=skus[n % SKUS], quantity=1)],
                        )
                    )
                    ack = await call.read()
                    if ack is grpc.aio.EOF or ack.status != pb.POS_ACK_STATUS_ACCEPTED:
                        errors["pos_sale"] += 1
                        break
                    lat["pos_sale"].append(time.perf_counter() - t0)
                    n += 1
                await call.done_writing()
            except grpc.aio.AioRpcError:
                errors["pos_sale"] += 1

        started = time.monotonic()
        await asyncio.gather(*(reserver(w) for w in range(workers)), *(terminal(w) for w in range(workers)))
        elapsed = time.monotonic() - started
    out: dict[str, object] = {}
    for kind, values in lat.items():
        values.sort()
        out[kind] = {
            "calls": len(values),
            "calls_per_s": round(len(values) / elapsed, 1),
            "p50_ms": round(statistics.median(values) * 1000, 2) if values else None,
            "p99_ms": round(values[int(len(values) * 0.99)] * 1000, 2) if values else None,
            "errors": errors[kind],
        }
    return out


def one_run(variant: str, seconds: float, workers: int) -> dict[str, object]:
    """``variant``: an appendfsync policy, ``/redis-ack`` appended to acknowledge once in Redis."""
    policy, _, acks = variant.partition("/")
    directory = Path(tempfile.mkdtemp(prefix=f"tutti-fsync-{policy}-"))
    redis_proc, port = start_redis(directory, policy)
    inventory = None
    try:
        inventory, address = start_inventory(port, directory / "inventory.log", acks != "redis-ack")
        run_uvloop(wait_serving(address))
        result = run_uvloop(load(address, seconds, workers, uuid.uuid4().hex[:8]))
        run = {"appendfsync": policy, "acks": acks or "ledger", "seconds": seconds, "workers": workers}
        return {**run, **result}
    finally:
        for proc in (inventory, redis_proc):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        shutil.rmtree(directory, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fsync", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=8, help="reservers, and as many POS terminals")
    parser.add_argument(
        "--policies",
        default="everysec,always,everysec,always",
        help="comma-separated; everysec/redis-ack: acks not waiting for the ledger",
    )
    args = parser.parse_args()
    for policy in args.policies.split(","):
        print(json.dumps(one_run(policy, args.seconds, args.workers)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
